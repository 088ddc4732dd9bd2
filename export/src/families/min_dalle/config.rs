//! A min-dalle model's sizes, read from its tensors' shapes (no table of known models: mini,
//! mega and any other consistent size are told apart by their weights).

use super::names;
use crate::error::{ExportError, Result};
use crate::weights::Weights;

/// min-dalle samples `logits[:, :2**14]`: the VQGAN's codebook (mega's 31 extra ids and the
/// start row of every model are never sampled).
pub const MAX_IMAGE_CODES: usize = 1 << 14;

/// The head width of both released models (the head count is not in the files).
pub const DEFAULT_HEAD_DIM: usize = 64;

/// Sizes of one model (min-dalle's constructor arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinDalleConfig {
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// `embed_count`.
    pub dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// `glu_embed_count` (encoder and decoder).
    pub encoder_glu: usize,
    pub decoder_glu: usize,
    /// `text_vocab_count`.
    pub text_vocab: usize,
    /// `text_token_count` (64).
    pub text_length: usize,
    /// Rows of the decoder's `embed_tokens` and `lm_head` (`image_vocab_count + 1`).
    pub decoder_vocab: usize,
    /// Decoder positions (`IMAGE_TOKEN_COUNT`, 256).
    pub image_length: usize,
    /// Tokens per side of the square image grid.
    pub grid: usize,
    /// Codes sampled: `min(image_vocab_count, 2^14)`.
    pub image_codes: usize,
    /// The id fed at position 0.
    pub start_token: usize,
}

fn shape2(w: &Weights, name: &str) -> Result<(usize, usize)> {
    match w.shape_of(name) {
        Some(&[a, b]) if a > 0 && b > 0 => Ok((a, b)),
        Some(other) => Err(ExportError::Weights(format!(
            "{}: `{name}` has shape {other:?}, expected two non-zero dims",
            w.source()
        ))),
        None => Err(ExportError::Weights(format!(
            "{}: missing tensor `{name}`: not a min-dalle {} file",
            w.source(),
            if name == names::LM_HEAD {
                "decoder"
            } else {
                "encoder/decoder"
            }
        ))),
    }
}

impl MinDalleConfig {
    /// Reads the sizes. `heads`: the head count (default: `dim / 64`); `start_token`: the id
    /// fed first (default: the last sampled code, min-dalle's `2**14 − 1` for mini and mega).
    pub fn from_weights(
        enc: &Weights,
        dec: &Weights,
        heads: Option<usize>,
        start_token: Option<usize>,
    ) -> Result<MinDalleConfig> {
        let (text_vocab, dim) = shape2(enc, names::EMBED_TOKENS)?;
        let (text_length, enc_pos_dim) = shape2(enc, names::EMBED_POSITIONS)?;
        let (decoder_vocab, dec_dim) = shape2(dec, names::EMBED_TOKENS)?;
        let (image_length, dec_pos_dim) = shape2(dec, names::EMBED_POSITIONS)?;
        shape2(dec, names::LM_HEAD)?;
        for (what, d) in [
            ("encoder embed_positions", enc_pos_dim),
            ("decoder embed_tokens", dec_dim),
            ("decoder embed_positions", dec_pos_dim),
        ] {
            if d != dim {
                return Err(ExportError::Weights(format!(
                    "{what} has width {d}, the encoder's embed_tokens {dim}: not one model"
                )));
            }
        }
        let (encoder_glu, _) = shape2(enc, &names::layer(0, "glu.fc0.weight"))?;
        let (decoder_glu, _) = shape2(dec, &names::layer(0, "glu.fc0.weight"))?;
        let encoder_layers = names::layer_count(enc.names());
        let decoder_layers = names::layer_count(dec.names());
        let heads = match heads {
            Some(h) => h,
            None if dim.is_multiple_of(DEFAULT_HEAD_DIM) => dim / DEFAULT_HEAD_DIM,
            None => {
                return Err(ExportError::Weights(format!(
                    "width {dim} is not a multiple of {DEFAULT_HEAD_DIM}: pass the head count \
                     with --heads"
                )));
            }
        };
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(ExportError::Weights(format!(
                "{heads} heads do not divide the width {dim}"
            )));
        }
        let head_dim = dim / heads;
        let grid = image_length.isqrt();
        if grid * grid != image_length {
            return Err(ExportError::Weights(format!(
                "the decoder has {image_length} positions, not a square image grid"
            )));
        }
        if text_length < 2 || decoder_vocab < 2 {
            return Err(ExportError::Weights(format!(
                "{text_length} text positions and {decoder_vocab} decoder ids are too few"
            )));
        }
        let image_codes = (decoder_vocab - 1).min(MAX_IMAGE_CODES);
        let start_token = start_token.unwrap_or(image_codes - 1);
        if start_token >= decoder_vocab {
            return Err(ExportError::Weights(format!(
                "start token {start_token} is outside the decoder's {decoder_vocab} ids"
            )));
        }
        if encoder_layers == 0 || decoder_layers == 0 {
            return Err(ExportError::Weights("no `layers.0.*` tensors".into()));
        }
        Ok(MinDalleConfig {
            encoder_layers,
            decoder_layers,
            dim,
            heads,
            head_dim,
            encoder_glu,
            decoder_glu,
            text_vocab,
            text_length,
            decoder_vocab,
            image_length,
            grid,
            image_codes,
            start_token,
        })
    }
}
