//! DALLE-pytorch's state-dict names: the one place that knows them (models.md §2.4).
//!
//! Per-layer keys differ between versions and options only in their wrapper nesting
//! (`layers.{i}.0.fn.fn.fn.to_qkv.weight` without shift tokens, `...fn.fn.fn.fn.fn.to_qkv...`
//! with them, `blocks.{i}.f.net.fn.fn.fn.to_qkv...` when reversible), so a branch's tensors are
//! found by suffix under the branch's prefix, and exactly one match is required.

use crate::error::{ExportError, Result};
use crate::weights::Weights;

pub const TEXT_EMB: &str = "text_emb.weight";
pub const IMAGE_EMB: &str = "image_emb.weight";
/// `share_input_output_emb`: `SharedEmbedding` views into `to_logits.1` duplicated in the state dict.
pub const SHARED_TEXT_EMB: [&str; 2] = ["text_emb.linear.weight", "text_emb.linear.bias"];
pub const SHARED_IMAGE_EMB: [&str; 2] = ["image_emb.linear.weight", "image_emb.linear.bias"];
pub const TEXT_POS_EMB: &str = "text_pos_emb.weight";
pub const IMAGE_POS_EMB_ROWS: &str = "image_pos_emb.weights.0";
pub const IMAGE_POS_EMB_COLS: &str = "image_pos_emb.weights.1";
/// Rotary frequencies, a persistent buffer: `[1, text_len + image_seq_len, rot]`.
pub const ROTARY_POS_EMB: &str = "transformer.pos_emb";
pub const LOGITS_NORM: &str = "to_logits.0";
pub const LOGITS_LINEAR: &str = "to_logits.1";

/// The two residual branches of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    Attention,
    FeedForward,
}

/// Prefix of a layer branch: `transformer.layers.layers.{i}.{0|1}.` (sequential) or
/// `transformer.layers.blocks.{i}.{f|g}.net.` (reversible).
pub fn branch_prefix(layer: usize, branch: Branch, reversible: bool) -> String {
    match (reversible, branch) {
        (false, Branch::Attention) => format!("transformer.layers.layers.{layer}.0."),
        (false, Branch::FeedForward) => format!("transformer.layers.layers.{layer}.1."),
        (true, Branch::Attention) => format!("transformer.layers.blocks.{layer}.f.net."),
        (true, Branch::FeedForward) => format!("transformer.layers.blocks.{layer}.g.net."),
    }
}

/// LayerScale's `scale` `[1, 1, dim]`, at the branch root.
pub fn scale(prefix: &str) -> String {
    format!("{prefix}scale")
}

/// PreNorm's input LayerNorm (`{prefix}fn.norm.{weight|bias}`).
pub fn norm(prefix: &str, param: &str) -> String {
    format!("{prefix}fn.norm.{param}")
}

/// PreNorm's output LayerNorm with `sandwich_norm`.
pub fn norm_out(prefix: &str, param: &str) -> String {
    format!("{prefix}fn.norm_out.{param}")
}

/// Suffixes inside an attention branch.
pub const TO_QKV: &str = ".to_qkv.weight";
pub const TO_OUT_WEIGHT: &str = ".to_out.0.weight";
pub const TO_OUT_BIAS: &str = ".to_out.0.bias";
/// Suffixes inside a feed-forward branch.
pub const FF_IN_WEIGHT: &str = ".net.0.weight";
pub const FF_IN_BIAS: &str = ".net.0.bias";
pub const FF_OUT_WEIGHT: &str = ".net.3.weight";
pub const FF_OUT_BIAS: &str = ".net.3.bias";

/// The one tensor under `prefix` whose name ends with `suffix`.
pub fn find_one(w: &Weights, prefix: &str, suffix: &str) -> Result<String> {
    let found = w.find(prefix, suffix);
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ExportError::Weights(format!(
            "{}: no tensor `{prefix}…{suffix}`",
            w.source()
        ))),
        many => Err(ExportError::Weights(format!(
            "{}: several tensors match `{prefix}…{suffix}`: {}",
            w.source(),
            many.join(", ")
        ))),
    }
}
