//! dVAE hyperparameters (models.md §1.1), validated.

use crate::error::{ExportError, Result};
use dalle_bundle::limits::{self, Limit};

/// Number of resolution groups; a class attribute (not stored in checkpoints) fixed at 4.
pub const GROUP_COUNT: usize = 4;

/// `logit_laplace_eps` of `dall_e/utils.py`.
pub const LOGIT_LAPLACE_EPS: f32 = 0.1;

/// Spatial reduction from pixels to tokens: 2^(GROUP_COUNT-1).
pub const DOWNSAMPLE: usize = 1 << (GROUP_COUNT - 1);

/// Encoder hyperparameters (`dall_e.encoder.Encoder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    pub n_hid: usize,
    pub n_blk_per_group: usize,
    pub input_channels: usize,
    pub vocab_size: usize,
}

/// Decoder hyperparameters (`dall_e.decoder.Decoder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    pub n_init: usize,
    pub n_hid: usize,
    pub n_blk_per_group: usize,
    pub output_channels: usize,
    pub vocab_size: usize,
}

impl EncoderConfig {
    /// The released model (n_hid 256, 2 blocks per group, RGB, 8192 codes).
    pub fn released() -> EncoderConfig {
        EncoderConfig {
            n_hid: 256,
            n_blk_per_group: 2,
            input_channels: 3,
            vocab_size: 8192,
        }
    }

    /// `post_gain = 1 / n_layers²` with `n_layers = group_count * n_blk_per_group`.
    pub fn post_gain(&self) -> f32 {
        post_gain(self.n_blk_per_group)
    }

    /// Rejects values the reference asserts against (`dall_e/encoder.py`).
    pub fn validate(&self) -> Result<()> {
        check("encoder", "n_hid", self.n_hid, limits::WIDTH)?;
        check("encoder", "n_blk_per_group", self.n_blk_per_group, BLOCKS)?;
        check(
            "encoder",
            "input_channels",
            self.input_channels,
            limits::CHANNELS,
        )?;
        check("encoder", "vocab_size", self.vocab_size, limits::VOCAB)?;
        if !self.n_hid.is_multiple_of(4) {
            return Err(ExportError::Unsupported(format!(
                "encoder n_hid {} must be a multiple of 4 (blocks use n_out/4 hidden channels)",
                self.n_hid
            )));
        }
        Ok(())
    }
}

impl DecoderConfig {
    /// The released model (n_init 128, n_hid 256, 2 blocks per group, RGB, 8192 codes).
    pub fn released() -> DecoderConfig {
        DecoderConfig {
            n_init: 128,
            n_hid: 256,
            n_blk_per_group: 2,
            output_channels: 3,
            vocab_size: 8192,
        }
    }

    pub fn post_gain(&self) -> f32 {
        post_gain(self.n_blk_per_group)
    }

    /// Rejects values the reference asserts against (`dall_e/decoder.py`).
    pub fn validate(&self) -> Result<()> {
        check("decoder", "n_init", self.n_init, limits::WIDTH)?;
        check("decoder", "n_hid", self.n_hid, limits::WIDTH)?;
        check("decoder", "n_blk_per_group", self.n_blk_per_group, BLOCKS)?;
        check(
            "decoder",
            "output_channels",
            self.output_channels,
            limits::CHANNELS,
        )?;
        check("decoder", "vocab_size", self.vocab_size, limits::VOCAB)?;
        if !self.n_hid.is_multiple_of(4) {
            return Err(ExportError::Unsupported(format!(
                "decoder n_hid {} must be a multiple of 4",
                self.n_hid
            )));
        }
        Ok(())
    }
}

fn post_gain(n_blk_per_group: usize) -> f32 {
    let n_layers = (GROUP_COUNT * n_blk_per_group) as f32;
    1.0 / (n_layers * n_layers)
}

/// Every size must be positive and within its limit. The reference's attrs validators also
/// impose floors (`n_hid >= 64`, `vocab_size >= 512`, `n_init >= 8`) that only guard
/// training-time choices; smaller test configurations are accepted here.
fn check(part: &str, name: &str, value: usize, limit: Limit) -> Result<()> {
    limits::check(&format!("{part} {name}"), value, limit)?;
    Ok(())
}

/// Blocks per group: at least one (the reference asserts `n_blk_per_group >= 1`).
const BLOCKS: Limit = Limit {
    min: 1,
    max: limits::BLOCKS.max,
};
