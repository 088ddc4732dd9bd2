//! The decoder graph's attributes: its shape, attention types, logits output and cache layout.

use super::{
    AttributeError, Attributes, Result, invalid, optional_str, required, required_bool,
    required_str, required_u64,
};
use crate::GraphSpec;
use crate::io::decoder::{
    KV_CACHE_ATTRIBUTE, KV_CAPACITY_ATTRIBUTE, KV_CONCAT, KV_IN_PLACE, SHIFT_WINDOW_ATTRIBUTE,
};
use serde_json::json;

pub const LAYERS: &str = "layers";
pub const HEADS: &str = "heads";
pub const HEAD_DIM: &str = "head_dim";
pub const DIM: &str = "dim";
/// One of [`ATTN_FULL`], [`ATTN_AXIAL_ROW`], [`ATTN_AXIAL_COL`], [`ATTN_CONV_LIKE`] per layer.
pub const ATTN_TYPES: &str = "attn_types";
pub const MAX_SEQUENCE_LENGTH: &str = "max_sequence_length";
pub const ROTARY_EMB: &str = "rotary_emb";
pub const SHIFT_TOKENS: &str = "shift_tokens";
pub const REVERSIBLE: &str = "reversible";
/// [`LOGITS_FULL`] or [`LOGITS_LAST_IMAGE`].
pub const LOGITS: &str = "logits";
/// The cache layout (the same name as `io::KV_CACHE_ATTRIBUTE`).
pub const KV_CACHE: &str = KV_CACHE_ATTRIBUTE;
/// An in-place cache's capacity (the same name as `io::KV_CAPACITY_ATTRIBUTE`).
pub const KV_CAPACITY: &str = KV_CAPACITY_ATTRIBUTE;
pub const DALLE_PYTORCH_VERSION: &str = "dalle_pytorch_version";
/// Shift-token window of an in-place graph (the same name as `io::SHIFT_WINDOW_ATTRIBUTE`).
pub const SHIFT_WINDOW: &str = SHIFT_WINDOW_ATTRIBUTE;
/// Whether rows of one call may sit at different positions (`cache_length` `[batch]`): true
/// for in-place caches; with concatenated caches the past length is a tensor dimension, so a
/// runtime must group rows that started together.
pub const PER_ROW_POSITIONS: &str = "per_row_positions";

pub const ATTN_FULL: &str = "full";
pub const ATTN_AXIAL_ROW: &str = "axial_row";
pub const ATTN_AXIAL_COL: &str = "axial_col";
pub const ATTN_CONV_LIKE: &str = "conv_like";

pub const LOGITS_FULL: &str = "full";
pub const LOGITS_LAST_IMAGE: &str = "last-image";

/// Which logits the decoder returns (attribute [`LOGITS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsKind {
    /// `logits` over every position and the whole vocabulary.
    Full,
    /// `image_logits` at the last position only.
    LastImage,
}

impl LogitsKind {
    /// The attribute value.
    pub fn name(self) -> &'static str {
        match self {
            LogitsKind::Full => LOGITS_FULL,
            LogitsKind::LastImage => LOGITS_LAST_IMAGE,
        }
    }
}

/// The decoder's key/value cache layout (attributes [`KV_CACHE`] and
/// [`KV_CAPACITY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCacheAttribute {
    /// Growing caches ([`KV_CONCAT`]).
    Concat,
    /// Fixed-capacity caches written in place ([`KV_IN_PLACE`]) of `capacity` tokens, with
    /// shift-token windows of `shift_window` positions when the model shifts tokens.
    InPlace {
        capacity: u64,
        shift_window: Option<u64>,
    },
}

impl KvCacheAttribute {
    /// Reads the layout; a graph without [`KV_CACHE`] has growing caches.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        let a = &spec.attributes;
        match optional_str(a, KV_CACHE_ATTRIBUTE)? {
            None | Some(KV_CONCAT) => Ok(KvCacheAttribute::Concat),
            Some(KV_IN_PLACE) => Ok(KvCacheAttribute::InPlace {
                capacity: required_u64(a, KV_CAPACITY_ATTRIBUTE)?,
                shift_window: match a.get(SHIFT_WINDOW_ATTRIBUTE) {
                    None => None,
                    Some(_) => Some(required_u64(a, SHIFT_WINDOW_ATTRIBUTE)?),
                },
            }),
            Some(other) => Err(AttributeError::Invalid {
                attribute: KV_CACHE_ATTRIBUTE,
                message: format!("must be `{KV_CONCAT}` or `{KV_IN_PLACE}`, got `{other}`"),
            }),
        }
    }

    /// Whether the caches are written in place.
    pub fn in_place(self) -> bool {
        matches!(self, KvCacheAttribute::InPlace { .. })
    }

    pub(crate) fn write(self, a: &mut Attributes) {
        match self {
            KvCacheAttribute::Concat => {
                a.insert(KV_CACHE_ATTRIBUTE.into(), json!(KV_CONCAT));
            }
            KvCacheAttribute::InPlace {
                capacity,
                shift_window,
            } => {
                a.insert(KV_CACHE_ATTRIBUTE.into(), json!(KV_IN_PLACE));
                a.insert(KV_CAPACITY_ATTRIBUTE.into(), json!(capacity));
                if let Some(w) = shift_window {
                    a.insert(SHIFT_WINDOW_ATTRIBUTE.into(), json!(w));
                }
            }
        }
        a.insert(PER_ROW_POSITIONS.into(), json!(self.in_place()));
    }
}

/// The decoder graph's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderAttributes {
    pub layers: u64,
    pub heads: u64,
    pub head_dim: u64,
    pub dim: u64,
    /// Per layer, one of the `ATTN_*` names.
    pub attn_types: Vec<String>,
    pub max_sequence_length: u64,
    pub rotary_emb: bool,
    pub shift_tokens: bool,
    pub reversible: bool,
    pub logits: LogitsKind,
    pub kv_cache: KvCacheAttribute,
    pub dalle_pytorch_version: Option<String>,
}

impl DecoderAttributes {
    /// Reads and checks the attributes of a decoder graph.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        let a = &spec.attributes;
        let attn = required(ATTN_TYPES, a.get(ATTN_TYPES))?;
        let attn_types = attn
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| invalid(ATTN_TYPES, "a list of strings", attn))?;
        let logits = match required_str(a, LOGITS)? {
            LOGITS_FULL => LogitsKind::Full,
            LOGITS_LAST_IMAGE => LogitsKind::LastImage,
            other => {
                return Err(AttributeError::Invalid {
                    attribute: LOGITS,
                    message: format!(
                        "must be `{}` or `{}`, got `{other}`",
                        LOGITS_FULL, LOGITS_LAST_IMAGE
                    ),
                });
            }
        };
        Ok(DecoderAttributes {
            layers: required_u64(a, LAYERS)?,
            heads: required_u64(a, HEADS)?,
            head_dim: required_u64(a, HEAD_DIM)?,
            dim: required_u64(a, DIM)?,
            attn_types,
            max_sequence_length: required_u64(a, MAX_SEQUENCE_LENGTH)?,
            rotary_emb: required_bool(a, ROTARY_EMB)?,
            shift_tokens: required_bool(a, SHIFT_TOKENS)?,
            reversible: required_bool(a, REVERSIBLE)?,
            logits,
            kv_cache: KvCacheAttribute::from_spec(spec)?,
            dalle_pytorch_version: optional_str(a, DALLE_PYTORCH_VERSION)?.map(str::to_string),
        })
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.insert(LAYERS.into(), json!(self.layers));
        a.insert(HEADS.into(), json!(self.heads));
        a.insert(HEAD_DIM.into(), json!(self.head_dim));
        a.insert(DIM.into(), json!(self.dim));
        a.insert(ATTN_TYPES.into(), json!(self.attn_types));
        a.insert(MAX_SEQUENCE_LENGTH.into(), json!(self.max_sequence_length));
        a.insert(ROTARY_EMB.into(), json!(self.rotary_emb));
        a.insert(SHIFT_TOKENS.into(), json!(self.shift_tokens));
        a.insert(REVERSIBLE.into(), json!(self.reversible));
        a.insert(LOGITS.into(), json!(self.logits.name()));
        self.kv_cache.write(&mut a);
        if let Some(v) = &self.dalle_pytorch_version {
            a.insert(DALLE_PYTORCH_VERSION.into(), json!(v));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::test_spec as spec;

    #[test]
    fn decoder_round_trips_with_either_cache() {
        for kv_cache in [
            KvCacheAttribute::Concat,
            KvCacheAttribute::InPlace {
                capacity: 80,
                shift_window: Some(8),
            },
        ] {
            let a = DecoderAttributes {
                layers: 2,
                heads: 4,
                head_dim: 16,
                dim: 64,
                attn_types: vec![ATTN_FULL.into()],
                max_sequence_length: 80,
                rotary_emb: true,
                shift_tokens: false,
                reversible: false,
                logits: LogitsKind::LastImage,
                kv_cache,
                dalle_pytorch_version: Some("1.6.6".into()),
            };
            assert_eq!(
                DecoderAttributes::from_spec(&spec(a.to_attributes())),
                Ok(a)
            );
        }
    }

    #[test]
    fn an_unknown_cache_layout_is_an_error() {
        let mut a = Attributes::new();
        a.insert(KV_CACHE.into(), json!("sideways"));
        let e = KvCacheAttribute::from_spec(&spec(a)).unwrap_err();
        assert_eq!(e.attribute(), KV_CACHE);
        assert_eq!(
            KvCacheAttribute::from_spec(&spec(Attributes::new())),
            Ok(KvCacheAttribute::Concat)
        );
    }
}
