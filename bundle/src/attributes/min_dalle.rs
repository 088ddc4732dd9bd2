//! The min-dalle decoder graph's attributes: its shape, the text and image token conventions
//! the runtime needs (start token, BOS/EOS/pad ids, text length) and its cache layout.

use super::decoder::KvCacheAttribute;
use super::{AttributeError, Attributes, Result, invalid, required_u64};
use crate::GraphSpec;
use serde_json::json;

pub const LAYERS: &str = "layers";
pub const HEADS: &str = "heads";
pub const HEAD_DIM: &str = "head_dim";
pub const DIM: &str = "dim";
pub const GLU_DIM: &str = "glu_dim";
/// Text positions the encoder reads (min-dalle: 64).
pub const TEXT_LENGTH: &str = "text_length";
/// Image tokens per image (min-dalle: 256, a 16 × 16 grid).
pub const IMAGE_LENGTH: &str = "image_length";
/// Rows of the decoder's embedding and `lm_head` (`image_vocab_count + 1`).
pub const DECODER_VOCAB: &str = "decoder_vocab";
/// Codes sampled (`image_logits` width): min-dalle's `logits[:, :2**14]`.
pub const IMAGE_CODES: &str = "image_codes";
/// The id fed at position 0.
pub const START_TOKEN: &str = "start_token";
pub const BOS_ID: &str = "bos_id";
pub const EOS_ID: &str = "eos_id";
pub const PAD_ID: &str = "pad_id";

/// A required non-negative integer (token ids may be 0).
fn required_id(a: &Attributes, name: &'static str) -> Result<u64> {
    match a.get(name) {
        None => Err(AttributeError::Missing { attribute: name }),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid(name, "a non-negative integer", v)),
    }
}

/// What the runtime reads from a min-dalle decoder graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinDalleAttributes {
    pub layers: u64,
    pub heads: u64,
    pub head_dim: u64,
    pub dim: u64,
    pub glu_dim: u64,
    pub text_length: u64,
    pub image_length: u64,
    pub decoder_vocab: u64,
    pub image_codes: u64,
    pub start_token: u64,
    pub bos_id: u64,
    pub eos_id: u64,
    pub pad_id: u64,
    pub kv_cache: KvCacheAttribute,
}

impl MinDalleAttributes {
    /// Reads and checks the attributes of a min-dalle decoder graph.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        let a = &spec.attributes;
        let out = MinDalleAttributes {
            layers: required_u64(a, LAYERS)?,
            heads: required_u64(a, HEADS)?,
            head_dim: required_u64(a, HEAD_DIM)?,
            dim: required_u64(a, DIM)?,
            glu_dim: required_u64(a, GLU_DIM)?,
            text_length: required_u64(a, TEXT_LENGTH)?,
            image_length: required_u64(a, IMAGE_LENGTH)?,
            decoder_vocab: required_u64(a, DECODER_VOCAB)?,
            image_codes: required_u64(a, IMAGE_CODES)?,
            start_token: required_id(a, START_TOKEN)?,
            bos_id: required_id(a, BOS_ID)?,
            eos_id: required_id(a, EOS_ID)?,
            pad_id: required_id(a, PAD_ID)?,
            kv_cache: KvCacheAttribute::from_spec(spec)?,
        };
        if out.start_token >= out.decoder_vocab {
            return Err(invalid(
                START_TOKEN,
                &format!("below {DECODER_VOCAB} = {}", out.decoder_vocab),
                &json!(out.start_token),
            ));
        }
        if out.image_codes == 0 || out.image_codes > out.decoder_vocab {
            return Err(invalid(
                IMAGE_CODES,
                &format!("in [1, {DECODER_VOCAB} = {}]", out.decoder_vocab),
                &json!(out.image_codes),
            ));
        }
        if out.text_length < 2 {
            return Err(invalid(TEXT_LENGTH, "at least 2", &json!(out.text_length)));
        }
        Ok(out)
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        for (k, v) in [
            (LAYERS, self.layers),
            (HEADS, self.heads),
            (HEAD_DIM, self.head_dim),
            (DIM, self.dim),
            (GLU_DIM, self.glu_dim),
            (TEXT_LENGTH, self.text_length),
            (IMAGE_LENGTH, self.image_length),
            (DECODER_VOCAB, self.decoder_vocab),
            (IMAGE_CODES, self.image_codes),
            (START_TOKEN, self.start_token),
            (BOS_ID, self.bos_id),
            (EOS_ID, self.eos_id),
            (PAD_ID, self.pad_id),
        ] {
            a.insert(k.into(), json!(v));
        }
        self.kv_cache.write(&mut a);
        a
    }
}
