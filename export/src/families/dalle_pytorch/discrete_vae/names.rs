//! `DiscreteVAE`'s state-dict names: the one place that knows the `nn.Sequential` indices
//! (models.md §2.6; lucidrains/DALLE-pytorch v1.6.6, `DiscreteVAE.__init__`).
//!
//! ```text
//! codebook.weight                                   [num_tokens, codebook_dim]
//! encoder.{i}.0            i < L                    Conv2d 4×4 stride 2 (then ReLU at .1)
//! encoder.{L+j}.net.{0,2,4}  j < R                  ResBlock convs 3×3, 3×3, 1×1
//! encoder.{L+R}                                     Conv2d 1×1 → num_tokens
//! decoder.0                (R > 0 only)             Conv2d 1×1 codebook_dim → hidden_dim
//! decoder.{1+j}.net.{0,2,4}  j < R                  ResBlock
//! decoder.{o+i}.0          i < L, o = R+1 or 0      ConvTranspose2d 4×4 stride 2 (ReLU at .1)
//! decoder.{o+L}                                     Conv2d 1×1 → channels
//! ```
//! (L = num_layers, R = num_resnet_blocks; every conv has `.weight` and `.bias`.)

use super::config::DiscreteVaeConfig;

/// The codebook (`nn.Embedding`).
pub const CODEBOOK: &str = "codebook.weight";

/// Stride-2 conv `i` (0-based) of the encoder.
pub fn encoder_down(i: usize) -> String {
    format!("encoder.{i}.0")
}

/// Resnet block `j` (0-based) of the encoder.
pub fn encoder_res(cfg: &DiscreteVaeConfig, j: usize) -> String {
    format!("encoder.{}", cfg.num_layers + j)
}

/// The encoder's 1×1 logits conv.
pub fn encoder_logits(cfg: &DiscreteVaeConfig) -> String {
    format!("encoder.{}", cfg.num_layers + cfg.num_resnet_blocks)
}

/// The decoder's 1×1 input conv (present only with resnet blocks).
pub fn decoder_input() -> String {
    "decoder.0".to_string()
}

/// Resnet block `j` (0-based) of the decoder.
pub fn decoder_res(j: usize) -> String {
    format!("decoder.{}", 1 + j)
}

/// Index of the decoder's first transposed conv.
fn decoder_up_offset(cfg: &DiscreteVaeConfig) -> usize {
    if cfg.num_resnet_blocks > 0 {
        cfg.num_resnet_blocks + 1
    } else {
        0
    }
}

/// Transposed conv `i` (0-based) of the decoder.
pub fn decoder_up(cfg: &DiscreteVaeConfig, i: usize) -> String {
    format!("decoder.{}.0", decoder_up_offset(cfg) + i)
}

/// The decoder's 1×1 output conv.
pub fn decoder_output(cfg: &DiscreteVaeConfig) -> String {
    format!("decoder.{}", decoder_up_offset(cfg) + cfg.num_layers)
}

/// Conv `k` (0..3) of a `ResBlock`'s `net` (Sequential indices 0, 2, 4).
pub fn res_conv(block: &str, k: usize) -> String {
    format!("{block}.net.{}", 2 * k)
}

/// A conv's weight.
pub fn weight(prefix: &str) -> String {
    format!("{prefix}.weight")
}

/// A conv's bias.
pub fn bias(prefix: &str) -> String {
    format!("{prefix}.bias")
}

/// The node scope of a weight prefix: `encoder.3.net.0` → `encoder/3/net/0`.
pub fn scope(prefix: &str) -> String {
    prefix.replace('.', "/")
}
