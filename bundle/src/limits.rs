//! The largest sizes a checkpoint or a manifest may declare, and the one checked conversion
//! from a number read from a file to a size.
//!
//! Every hyperparameter the exporter reads (a pickle's `hparams`, a `config.json`) and every
//! number the runtime reads from `manifest.json` goes through [`check`] before it sizes a
//! buffer, a loop or a graph dimension: a value outside its [`Limit`] is an error naming the
//! value and the limit, never a huge allocation, a wrapped product or a panic. The limits sit
//! here, in the contract crate, because both sides must agree: the exporter refuses to write a
//! bundle the runtime would refuse to open.
//!
//! The maxima are far above every released model of the families (DALL·E 1: 64 layers,
//! dim 3968, 1280 positions; CLIP ViT-L/14: 1024 wide, 77 text positions, 336 px) and far
//! below what would make a product of two of them overflow `u64` or a single table exceed
//! memory: products of limited values are still computed with checked arithmetic
//! ([`checked_product`]).

use std::fmt;

/// An inclusive range a value read from a file must lie in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub min: u64,
    pub max: u64,
}

impl Limit {
    const fn new(min: u64, max: u64) -> Limit {
        Limit { min, max }
    }
}

/// Transformer layers (`depth`, `num_hidden_layers`).
pub const LAYERS: Limit = Limit::new(1, 1024);
/// Attention heads.
pub const HEADS: Limit = Limit::new(1, 1024);
/// Width of one attention head.
pub const HEAD_DIM: Limit = Limit::new(1, 4096);
/// Model, hidden, intermediate, codebook and projection widths.
pub const WIDTH: Limit = Limit::new(1, 1 << 17);
/// Vocabulary and codebook sizes.
pub const VOCAB: Limit = Limit::new(1, 1 << 24);
/// Text positions (DALLE-pytorch `text_seq_len`, CLIP `max_position_embeddings`).
pub const TEXT_LENGTH: Limit = Limit::new(1, 1 << 16);
/// Image side in pixels.
pub const IMAGE_SIDE: Limit = Limit::new(1, 1 << 14);
/// Image tokens per side (`image_grid`, `fmap`).
pub const IMAGE_GRID: Limit = Limit::new(1, 256);
/// Positions of one decoder sequence (text plus image tokens).
pub const SEQUENCE: Limit = Limit::new(1, 1 << 17);
/// Image channels.
pub const CHANNELS: Limit = Limit::new(1, 64);
/// Stride-2 downsampling layers of a VAE.
pub const DOWNSAMPLE_LAYERS: Limit = Limit::new(1, 16);
/// Residual blocks per group or stage (zero allowed).
pub const BLOCKS: Limit = Limit::new(0, 256);
/// Batch sizes a manifest's `dim_ranges` may promise.
pub const BATCH: Limit = Limit::new(1, 1 << 16);

/// A value outside its limit, or a product of values that overflows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("`{name}` = {value} is outside the supported range {min}..={max}")]
    OutOfRange {
        name: String,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("`{name}` overflows: {expression}")]
    Overflow { name: String, expression: String },
}

impl LimitError {
    /// The name of the value the error is about.
    pub fn name(&self) -> &str {
        match self {
            LimitError::OutOfRange { name, .. } | LimitError::Overflow { name, .. } => name,
        }
    }
}

/// `value` (as read: `i64` from a pickle, `u64` from JSON, ...) as a `usize` inside `limit`;
/// `name` says where it came from (`hparams.depth`, `token_layout.image_grid`).
pub fn check<T>(name: &str, value: T, limit: Limit) -> Result<usize, LimitError>
where
    T: TryInto<u64> + Copy + fmt::Display,
{
    let out_of_range = || LimitError::OutOfRange {
        name: name.to_string(),
        value: value.to_string(),
        min: limit.min,
        max: limit.max,
    };
    let v: u64 = value.try_into().map_err(|_| out_of_range())?;
    if v < limit.min || v > limit.max {
        return Err(out_of_range());
    }
    usize::try_from(v).map_err(|_| out_of_range())
}

/// The product of `factors` (each a `(name, value)`), or an overflow error naming `name` and
/// the factors.
pub fn checked_product(name: &str, factors: &[(&str, usize)]) -> Result<usize, LimitError> {
    factors
        .iter()
        .try_fold(1usize, |acc, (_, v)| acc.checked_mul(*v))
        .ok_or_else(|| LimitError::Overflow {
            name: name.to_string(),
            expression: factors
                .iter()
                .map(|(n, v)| {
                    if n.is_empty() {
                        v.to_string()
                    } else {
                        format!("{n} {v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" × "),
        })
}

/// The sum of `terms`, or an overflow error naming `name` and the terms.
pub fn checked_sum(name: &str, terms: &[(&str, u64)]) -> Result<u64, LimitError> {
    terms
        .iter()
        .try_fold(0u64, |acc, (_, v)| acc.checked_add(*v))
        .ok_or_else(|| LimitError::Overflow {
            name: name.to_string(),
            expression: terms
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(" + "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_limit_name_the_value_and_the_limit() {
        assert_eq!(check("hparams.depth", 12i64, LAYERS), Ok(12));
        let e = check("hparams.depth", 1i64 << 31, LAYERS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`hparams.depth` = 2147483648 is outside the supported range 1..=1024"
        );
        let e = check("hparams.heads", -3i64, HEADS).unwrap_err();
        assert!(e.to_string().contains("= -3 is outside"), "{e}");
        let e = check("num_tokens", 0usize, VOCAB).unwrap_err();
        assert!(
            e.to_string()
                .contains("= 0 is outside the supported range 1..="),
            "{e}"
        );
        assert_eq!(check("blocks", 0u64, BLOCKS), Ok(0));
    }

    #[test]
    fn products_and_sums_report_overflow() {
        assert_eq!(checked_product("n", &[("a", 3), ("b", 4)]), Ok(12));
        let e = checked_product("grid²", &[("grid", usize::MAX), ("grid", 2)]).unwrap_err();
        assert!(e.to_string().starts_with("`grid²` overflows: grid "), "{e}");
        let e = checked_sum("total", &[("a", u64::MAX), ("b", 1)]).unwrap_err();
        assert!(
            e.to_string().contains("a 18446744073709551615 + b 1"),
            "{e}"
        );
    }
}
