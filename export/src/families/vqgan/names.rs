//! VQGAN weight names: the one place that spells them, for both naming schemes.
//!
//! taming-transformers' `VQModel`/`GumbelVQ` state dict (`taming/models/vqgan.py`,
//! `taming/modules/diffusionmodules/model.py`) and min-dalle's `detoker.pt`
//! (`min_dalle/models/vqgan_detokenizer.py`) name the decoder identically
//! (`decoder.{conv_in|mid.{block_1,attn_1,block_2}|up.{i}.{block,attn}.{j}|up.{i}.upsample.conv|
//! norm_out|conv_out}`, `post_quant_conv`); they differ only in the codebook, and only taming
//! has the encoder side (`encoder.*`, `quant_conv`, `quantize.proj` for Gumbel).

use super::config::VqKind;

/// The codebook `[n_embed, embed_dim]`.
pub fn codebook(kind: VqKind) -> &'static str {
    match kind {
        VqKind::VectorQuantizer => "quantize.embedding.weight",
        VqKind::Gumbel => "quantize.embed.weight",
        VqKind::MinDalle => "embedding.weight",
    }
}

/// Gumbel's code-logit projection (1×1 conv, `quantize.proj`).
pub const GUMBEL_PROJ: &str = "quantize.proj";
pub const QUANT_CONV: &str = "quant_conv";
pub const POST_QUANT_CONV: &str = "post_quant_conv";
pub const DECODER: &str = "decoder";
pub const ENCODER: &str = "encoder";

/// Prefix of everything a taming Lightning checkpoint holds for the training losses
/// (LPIPS and the discriminator): not part of the model that runs.
pub const LOSS_PREFIX: &str = "loss.";

/// `{net}.conv_in`.
pub fn conv_in(net: &str) -> String {
    format!("{net}.conv_in")
}

/// `{net}.norm_out`.
pub fn norm_out(net: &str) -> String {
    format!("{net}.norm_out")
}

/// `{net}.conv_out`.
pub fn conv_out(net: &str) -> String {
    format!("{net}.conv_out")
}

/// `{net}.mid.{part}` (`block_1`, `attn_1`, `block_2`).
pub fn mid(net: &str, part: &str) -> String {
    format!("{net}.mid.{part}")
}

/// Decoder level `i`: `decoder.up.{i}`; encoder level: `encoder.down.{i}`.
pub fn level(net: &str, level: usize) -> String {
    let dir = if net == ENCODER { "down" } else { "up" };
    format!("{net}.{dir}.{level}")
}

/// `{level}.block.{j}`.
pub fn block(level_prefix: &str, j: usize) -> String {
    format!("{level_prefix}.block.{j}")
}

/// `{level}.attn.{j}`.
pub fn attn(level_prefix: &str, j: usize) -> String {
    format!("{level_prefix}.attn.{j}")
}

/// `{level}.upsample` (its conv is `.conv`).
pub fn upsample(level_prefix: &str) -> String {
    format!("{level_prefix}.upsample")
}

/// `{level}.downsample` (its conv is `.conv`).
pub fn downsample(level_prefix: &str) -> String {
    format!("{level_prefix}.downsample")
}

/// `{prefix}.{child}`.
pub fn child(prefix: &str, child: &str) -> String {
    format!("{prefix}.{child}")
}

/// A module's `weight`.
pub fn weight(prefix: &str) -> String {
    format!("{prefix}.weight")
}

/// A module's `bias`.
pub fn bias(prefix: &str) -> String {
    format!("{prefix}.bias")
}

/// The node scope of a module prefix: `decoder.up.4.block.0` → `decoder/up/4/block/0`.
pub fn scope(prefix: &str) -> String {
    prefix.replace('.', "/")
}
