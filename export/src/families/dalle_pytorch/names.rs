//! DALLE-pytorch's state-dict names: the one place that knows them (models.md §2.4).
//!
//! Per-layer keys differ between versions and options only in their wrapper nesting
//! (`layers.{i}.0.fn.fn.fn.to_qkv.weight` without shift tokens, `...fn.fn.fn.fn.fn.to_qkv...`
//! with them, `blocks.{i}.f.net.fn.fn.fn.to_qkv...` when reversible). A branch's tensors are
//! matched exactly, against the few nestings the reference's module tree produces
//! ([`wrapper_depths`]); a name that is none of them is an error that lists the near misses.

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

/// Tensors of the module at the end of an attention branch's wrapper chain.
pub const TO_QKV: &str = "to_qkv.weight";
pub const TO_OUT_WEIGHT: &str = "to_out.0.weight";
pub const TO_OUT_BIAS: &str = "to_out.0.bias";
/// Tensors of the module at the end of a feed-forward branch's wrapper chain.
pub const FF_IN_WEIGHT: &str = "net.0.weight";
pub const FF_IN_BIAS: &str = "net.0.bias";
pub const FF_OUT_WEIGHT: &str = "net.3.weight";
pub const FF_OUT_BIAS: &str = "net.3.bias";

/// How many `fn.` wrappers lie between a branch's root (LayerScale) and its attention or
/// feed-forward module, newest layout first. Each wrapper is a module with a `fn` child:
/// `PreNorm` always; `CachedAs`/`NonCached` around attention (v1.2 on) and around each
/// `PreShiftToken` (with shift tokens); `PreShiftToken` itself. Before v1.2 there was no
/// `CachedAs`: one wrapper less without shift tokens, two less with them.
pub fn wrapper_depths(branch: Branch, shift_tokens: bool) -> &'static [usize] {
    match (branch, shift_tokens) {
        // PreNorm → CachedAs → Attention; PreNorm → Attention.
        (Branch::Attention, false) => &[3, 2],
        // PreNorm → CachedAs → PreShiftToken → CachedAs → Attention; PreNorm → PreShiftToken → Attention.
        (Branch::Attention, true) => &[5, 3],
        // PreNorm → FeedForward.
        (Branch::FeedForward, false) => &[2],
        // PreNorm → CachedAs → PreShiftToken → FeedForward; PreNorm → PreShiftToken → FeedForward.
        (Branch::FeedForward, true) => &[4, 3],
    }
}

/// `{prefix}fn.fn.…{leaf}` with `depth` wrappers.
pub fn wrapped(prefix: &str, depth: usize, leaf: &str) -> String {
    format!("{prefix}{}{leaf}", "fn.".repeat(depth))
}

/// The name of `leaf` (e.g. [`TO_QKV`]) in the branch at `prefix`: exactly one of the known
/// nestings must be present. Otherwise the error names what was looked for and the tensors
/// under the branch that come close (a corrupted wrapper segment, a misspelt leaf).
pub fn find_one(
    w: &Weights,
    prefix: &str,
    branch: Branch,
    shift_tokens: bool,
    leaf: &str,
) -> Result<String> {
    let candidates: Vec<String> = wrapper_depths(branch, shift_tokens)
        .iter()
        .map(|&d| wrapped(prefix, d, leaf))
        .collect();
    let found: Vec<&String> = candidates.iter().filter(|n| w.contains(n)).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let near = near_misses(w, prefix, branch, shift_tokens, leaf, &candidates);
            Err(ExportError::Weights(format!(
                "{}: missing tensor `{}`{}{}",
                w.source(),
                candidates[0],
                if candidates.len() > 1 {
                    format!(
                        " (or, from older DALLE-pytorch versions, {})",
                        candidates[1..]
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    String::new()
                },
                if near.is_empty() {
                    String::new()
                } else {
                    format!("; near misses: {}", near.join(", "))
                }
            )))
        }
        many => Err(ExportError::Weights(format!(
            "{}: the branch `{prefix}` holds `{leaf}` at several nestings: {}",
            w.source(),
            many.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Every tensor a branch's module has, by leaf name.
fn branch_leaves(branch: Branch) -> &'static [&'static str] {
    match branch {
        Branch::Attention => &[TO_QKV, TO_OUT_WEIGHT, TO_OUT_BIAS],
        Branch::FeedForward => &[FF_IN_WEIGHT, FF_IN_BIAS, FF_OUT_WEIGHT, FF_OUT_BIAS],
    }
}

/// Whether `name` is a correctly nested tensor of the branch at `prefix` (any of its leaves,
/// LayerScale, PreNorm's norms).
fn is_known(name: &str, prefix: &str, branch: Branch, shift_tokens: bool) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    rest == "scale"
        || ["fn.norm.", "fn.norm_out."].iter().any(|n| {
            rest.strip_prefix(n)
                .is_some_and(|p| p == "weight" || p == "bias")
        })
        || wrapper_depths(branch, shift_tokens).iter().any(|&d| {
            branch_leaves(branch)
                .iter()
                .any(|leaf| rest == wrapped("", d, leaf))
        })
}

/// Remaining tensors under `prefix` that are not correctly nested tensors of the branch but
/// end in `leaf` or are within a few edits of a candidate name (closest first, at most five,
/// quoted).
fn near_misses(
    w: &Weights,
    prefix: &str,
    branch: Branch,
    shift_tokens: bool,
    leaf: &str,
    candidates: &[String],
) -> Vec<String> {
    let mut near: Vec<(usize, String)> = w
        .find(prefix, "")
        .into_iter()
        .filter(|n| !is_known(n, prefix, branch, shift_tokens))
        .filter_map(|n| {
            let d = candidates
                .iter()
                .map(|c| edit_distance(n.as_bytes(), c.as_bytes()))
                .min()
                .unwrap_or(usize::MAX);
            (d <= 3 || n.ends_with(leaf)).then_some((d, n))
        })
        .collect();
    near.sort();
    near.into_iter()
        .take(5)
        .map(|(_, n)| format!("`{n}`"))
        .collect()
}

/// Levenshtein distance (names are short: a few dozen bytes).
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;
    use std::collections::BTreeMap;

    fn weights(names: &[&str]) -> Weights {
        let t = TensorData::from_f32(vec![1], &[0.0]).unwrap();
        Weights::new(
            "ckpt",
            names
                .iter()
                .map(|n| (n.to_string(), t.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    const P: &str = "transformer.layers.layers.0.0.";

    #[test]
    fn known_nestings_are_found_exactly() {
        let w = weights(&["transformer.layers.layers.0.0.fn.fn.fn.to_qkv.weight"]);
        assert_eq!(
            find_one(&w, P, Branch::Attention, false, TO_QKV).unwrap(),
            "transformer.layers.layers.0.0.fn.fn.fn.to_qkv.weight"
        );
        let w = weights(&["transformer.layers.layers.0.0.fn.fn.to_qkv.weight"]);
        assert!(find_one(&w, P, Branch::Attention, false, TO_QKV).is_ok());
        let w = weights(&["transformer.layers.layers.0.0.fn.fn.fn.fn.fn.to_qkv.weight"]);
        assert!(find_one(&w, P, Branch::Attention, true, TO_QKV).is_ok());
    }

    #[test]
    fn corrupted_names_are_not_matched_and_are_reported() {
        // Matched by prefix and suffix before: a corrupted wrapper segment.
        let bad = "transformer.layers.layers.0.0.fn.fX.fn.to_qkv.weight";
        let err = find_one(&weights(&[bad]), P, Branch::Attention, false, TO_QKV)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing tensor `transformer.layers.layers.0.0.fn.fn.fn.to_qkv.weight`")
                && err.contains(&format!("near misses: `{bad}`")),
            "{err}"
        );
        // Extra wrappers, a misspelt leaf.
        for bad in [
            "transformer.layers.layers.0.0.fn.fn.fn.fn.to_qkv.weight",
            "transformer.layers.layers.0.0.fn.fn.fn.to_qkw.weight",
            "transformer.layers.layers.0.0.xfn.fn.fn.to_qkv.weight",
        ] {
            let err = find_one(&weights(&[bad]), P, Branch::Attention, false, TO_QKV)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        let both = weights(&[
            "transformer.layers.layers.0.0.fn.fn.fn.to_qkv.weight",
            "transformer.layers.layers.0.0.fn.fn.to_qkv.weight",
        ]);
        let err = find_one(&both, P, Branch::Attention, false, TO_QKV)
            .unwrap_err()
            .to_string();
        assert!(err.contains("several nestings"), "{err}");
    }
}
