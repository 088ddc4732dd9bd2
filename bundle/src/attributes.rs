//! Graph attributes (`GraphSpec::attributes` in `manifest.json`): the one place that spells
//! their names and their types.
//!
//! The exporter writes them through the `to_attributes` of a typed struct, the runtime reads
//! them through its `from_spec`, so both sides agree on every key and value. Each struct lists
//! what one graph carries: [`DvaeAttributes`] (both dVAE families, plus their own
//! [`openai_dvae`]/[`discrete_vae`] descriptive extras), [`DecoderAttributes`] and the CLIP
//! towers' [`ClipTextAttributes`]/[`ClipImageAttributes`].

use crate::GraphSpec;
use crate::io::decoder::{KV_CACHE_ATTRIBUTE, KV_CAPACITY_ATTRIBUTE, KV_CONCAT, KV_IN_PLACE};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A graph's attributes as stored in the manifest.
pub type Attributes = BTreeMap<String, Value>;

/// An attribute a reader needs is missing or has the wrong type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("manifest attribute `{}` {}", self.attribute(), self.message())]
pub enum AttributeError {
    Missing {
        attribute: &'static str,
    },
    Invalid {
        attribute: &'static str,
        message: String,
    },
}

impl AttributeError {
    /// The attribute's name.
    pub fn attribute(&self) -> &'static str {
        match self {
            AttributeError::Missing { attribute } | AttributeError::Invalid { attribute, .. } => {
                attribute
            }
        }
    }

    /// What is wrong, after the attribute's name (`is missing; …`, `must be …, got …`).
    pub fn message(&self) -> String {
        match self {
            AttributeError::Missing { .. } => "is missing; re-export the bundle".to_string(),
            AttributeError::Invalid { message, .. } => message.clone(),
        }
    }
}

/// `Result` with [`AttributeError`].
pub type Result<T, E = AttributeError> = std::result::Result<T, E>;

/// Names shared by the dVAE graphs of every family (`dvae_encoder`, `dvae_decoder`).
pub mod dvae {
    /// Codebook size.
    pub const VOCAB_SIZE: &str = "vocab_size";
    /// Pixels per token along each side.
    pub const DOWNSAMPLE: &str = "downsample";
    /// The side of the square image the model was trained on.
    pub const IMAGE_SIZE: &str = "image_size";
    /// The downsampling factor of a graph without the attribute.
    pub const DEFAULT_DOWNSAMPLE: u64 = 8;
}

/// Descriptive extras of OpenAI's dVAE graphs (hyperparameters of `dall_e`).
pub mod openai_dvae {
    pub const N_HID: &str = "n_hid";
    pub const N_BLK_PER_GROUP: &str = "n_blk_per_group";
    /// Decoder only.
    pub const N_INIT: &str = "n_init";
}

/// Descriptive extras of DALLE-pytorch's `DiscreteVAE` graphs (its `vae_params`).
pub mod discrete_vae {
    pub const NUM_LAYERS: &str = "num_layers";
    pub const NUM_RESNET_BLOCKS: &str = "num_resnet_blocks";
    pub const HIDDEN_DIM: &str = "hidden_dim";
    pub const CODEBOOK_DIM: &str = "codebook_dim";
    pub const CHANNELS: &str = "channels";
    /// `{ "mean": [..], "std": [..] }` or `null`.
    pub const NORMALIZATION: &str = "normalization";
}

/// Names of the decoder graph's attributes.
pub mod decoder {
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
    /// The cache layout (the same name as `io::decoder::KV_CACHE_ATTRIBUTE`).
    pub const KV_CACHE: &str = crate::io::decoder::KV_CACHE_ATTRIBUTE;
    /// An in-place cache's capacity (the same name as `io::decoder::KV_CAPACITY_ATTRIBUTE`).
    pub const KV_CAPACITY: &str = crate::io::decoder::KV_CAPACITY_ATTRIBUTE;
    pub const DALLE_PYTORCH_VERSION: &str = "dalle_pytorch_version";

    pub const ATTN_FULL: &str = "full";
    pub const ATTN_AXIAL_ROW: &str = "axial_row";
    pub const ATTN_AXIAL_COL: &str = "axial_col";
    pub const ATTN_CONV_LIKE: &str = "conv_like";

    pub const LOGITS_FULL: &str = "full";
    pub const LOGITS_LAST_IMAGE: &str = "last-image";
}

/// Names of the CLIP graphs' attributes.
pub mod clip {
    pub const PROJECTION_DIM: &str = "projection_dim";
    /// Text tower only.
    pub const CONTEXT_LENGTH: &str = "context_length";
    /// Text tower only: `argmax_id` or `first_eos_<id>`.
    pub const POOLING: &str = "pooling";
    /// Vision tower only.
    pub const IMAGE_SIZE: &str = "image_size";
    /// Vision tower only.
    pub const PATCH_SIZE: &str = "patch_size";
    pub const LAYERS: &str = "layers";
    pub const HIDDEN: &str = "hidden";
    pub const HEADS: &str = "heads";
    /// The activation's name (`QuickGelu`, `Gelu`, `GeluTanh`).
    pub const ACTIVATION: &str = "activation";
}

fn invalid(attribute: &'static str, what: &str, value: &Value) -> AttributeError {
    AttributeError::Invalid {
        attribute,
        message: format!("must be {what}, got {value}"),
    }
}

/// A positive integer attribute, if present.
pub fn positive_u64(attrs: &Attributes, name: &'static str) -> Result<Option<u64>> {
    attrs
        .get(name)
        .map(|v| match v.as_u64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(invalid(name, "a positive integer", v)),
        })
        .transpose()
}

fn required<T>(name: &'static str, v: Option<T>) -> Result<T> {
    v.ok_or(AttributeError::Missing { attribute: name })
}

fn required_u64(attrs: &Attributes, name: &'static str) -> Result<u64> {
    required(name, positive_u64(attrs, name)?)
}

fn required_bool(attrs: &Attributes, name: &'static str) -> Result<bool> {
    let v = required(name, attrs.get(name))?;
    v.as_bool().ok_or_else(|| invalid(name, "a boolean", v))
}

fn optional_str<'a>(attrs: &'a Attributes, name: &'static str) -> Result<Option<&'a str>> {
    attrs
        .get(name)
        .map(|v| v.as_str().ok_or_else(|| invalid(name, "a string", v)))
        .transpose()
}

fn required_str<'a>(attrs: &'a Attributes, name: &'static str) -> Result<&'a str> {
    required(name, optional_str(attrs, name)?)
}

/// What the runtime reads from a dVAE graph (either family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DvaeAttributes {
    /// Codebook size (required: token ids are checked against it).
    pub vocab_size: u64,
    /// Pixels per token along each side ([`dvae::DEFAULT_DOWNSAMPLE`] when absent).
    pub downsample: u64,
    /// The training image size, if recorded.
    pub image_size: Option<u64>,
}

impl DvaeAttributes {
    /// Reads and checks the attributes of a dVAE graph.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        Self::from_attributes(&spec.attributes)
    }

    /// [`DvaeAttributes::from_spec`] on the attributes alone (e.g. of a graph being exported).
    pub fn from_attributes(a: &Attributes) -> Result<Self> {
        Ok(DvaeAttributes {
            vocab_size: required_u64(a, dvae::VOCAB_SIZE)?,
            downsample: positive_u64(a, dvae::DOWNSAMPLE)?.unwrap_or(dvae::DEFAULT_DOWNSAMPLE),
            image_size: positive_u64(a, dvae::IMAGE_SIZE)?,
        })
    }

    /// The attributes as written into the manifest (`downsample` always written).
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.insert(dvae::VOCAB_SIZE.into(), json!(self.vocab_size));
        a.insert(dvae::DOWNSAMPLE.into(), json!(self.downsample));
        if let Some(s) = self.image_size {
            a.insert(dvae::IMAGE_SIZE.into(), json!(s));
        }
        a
    }
}

/// Which logits the decoder returns (attribute [`decoder::LOGITS`]).
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
            LogitsKind::Full => decoder::LOGITS_FULL,
            LogitsKind::LastImage => decoder::LOGITS_LAST_IMAGE,
        }
    }
}

/// The decoder's key/value cache layout (attributes [`decoder::KV_CACHE`] and
/// [`decoder::KV_CAPACITY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCacheAttribute {
    /// Growing caches ([`KV_CONCAT`]).
    Concat,
    /// Fixed-capacity caches written in place ([`KV_IN_PLACE`]) of `capacity` tokens.
    InPlace { capacity: u64 },
}

impl KvCacheAttribute {
    /// Reads the layout; a graph without [`decoder::KV_CACHE`] has growing caches.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        let a = &spec.attributes;
        match optional_str(a, KV_CACHE_ATTRIBUTE)? {
            None | Some(KV_CONCAT) => Ok(KvCacheAttribute::Concat),
            Some(KV_IN_PLACE) => Ok(KvCacheAttribute::InPlace {
                capacity: required_u64(a, KV_CAPACITY_ATTRIBUTE)?,
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

    fn write(self, a: &mut Attributes) {
        match self {
            KvCacheAttribute::Concat => {
                a.insert(KV_CACHE_ATTRIBUTE.into(), json!(KV_CONCAT));
            }
            KvCacheAttribute::InPlace { capacity } => {
                a.insert(KV_CACHE_ATTRIBUTE.into(), json!(KV_IN_PLACE));
                a.insert(KV_CAPACITY_ATTRIBUTE.into(), json!(capacity));
            }
        }
    }
}

/// The decoder graph's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderAttributes {
    pub layers: u64,
    pub heads: u64,
    pub head_dim: u64,
    pub dim: u64,
    /// Per layer, one of the `decoder::ATTN_*` names.
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
        let attn = required(decoder::ATTN_TYPES, a.get(decoder::ATTN_TYPES))?;
        let attn_types = attn
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| invalid(decoder::ATTN_TYPES, "a list of strings", attn))?;
        let logits = match required_str(a, decoder::LOGITS)? {
            decoder::LOGITS_FULL => LogitsKind::Full,
            decoder::LOGITS_LAST_IMAGE => LogitsKind::LastImage,
            other => {
                return Err(AttributeError::Invalid {
                    attribute: decoder::LOGITS,
                    message: format!(
                        "must be `{}` or `{}`, got `{other}`",
                        decoder::LOGITS_FULL,
                        decoder::LOGITS_LAST_IMAGE
                    ),
                });
            }
        };
        Ok(DecoderAttributes {
            layers: required_u64(a, decoder::LAYERS)?,
            heads: required_u64(a, decoder::HEADS)?,
            head_dim: required_u64(a, decoder::HEAD_DIM)?,
            dim: required_u64(a, decoder::DIM)?,
            attn_types,
            max_sequence_length: required_u64(a, decoder::MAX_SEQUENCE_LENGTH)?,
            rotary_emb: required_bool(a, decoder::ROTARY_EMB)?,
            shift_tokens: required_bool(a, decoder::SHIFT_TOKENS)?,
            reversible: required_bool(a, decoder::REVERSIBLE)?,
            logits,
            kv_cache: KvCacheAttribute::from_spec(spec)?,
            dalle_pytorch_version: optional_str(a, decoder::DALLE_PYTORCH_VERSION)?
                .map(str::to_string),
        })
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.insert(decoder::LAYERS.into(), json!(self.layers));
        a.insert(decoder::HEADS.into(), json!(self.heads));
        a.insert(decoder::HEAD_DIM.into(), json!(self.head_dim));
        a.insert(decoder::DIM.into(), json!(self.dim));
        a.insert(decoder::ATTN_TYPES.into(), json!(self.attn_types));
        a.insert(
            decoder::MAX_SEQUENCE_LENGTH.into(),
            json!(self.max_sequence_length),
        );
        a.insert(decoder::ROTARY_EMB.into(), json!(self.rotary_emb));
        a.insert(decoder::SHIFT_TOKENS.into(), json!(self.shift_tokens));
        a.insert(decoder::REVERSIBLE.into(), json!(self.reversible));
        a.insert(decoder::LOGITS.into(), json!(self.logits.name()));
        self.kv_cache.write(&mut a);
        if let Some(v) = &self.dalle_pytorch_version {
            a.insert(decoder::DALLE_PYTORCH_VERSION.into(), json!(v));
        }
        a
    }
}

/// What both CLIP towers record about their transformer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipTowerAttributes {
    pub projection_dim: u64,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    /// The activation's name.
    pub activation: String,
}

impl ClipTowerAttributes {
    fn from_attributes(a: &Attributes) -> Result<Self> {
        Ok(ClipTowerAttributes {
            projection_dim: required_u64(a, clip::PROJECTION_DIM)?,
            layers: required_u64(a, clip::LAYERS)?,
            hidden: required_u64(a, clip::HIDDEN)?,
            heads: required_u64(a, clip::HEADS)?,
            activation: required_str(a, clip::ACTIVATION)?.to_string(),
        })
    }

    fn write(&self, a: &mut Attributes) {
        a.insert(clip::PROJECTION_DIM.into(), json!(self.projection_dim));
        a.insert(clip::LAYERS.into(), json!(self.layers));
        a.insert(clip::HIDDEN.into(), json!(self.hidden));
        a.insert(clip::HEADS.into(), json!(self.heads));
        a.insert(clip::ACTIVATION.into(), json!(self.activation));
    }
}

/// The `clip_text` graph's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipTextAttributes {
    pub tower: ClipTowerAttributes,
    pub context_length: u64,
    /// `argmax_id` or `first_eos_<id>`.
    pub pooling: String,
}

impl ClipTextAttributes {
    /// Reads and checks the attributes of a `clip_text` graph.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        let a = &spec.attributes;
        Ok(ClipTextAttributes {
            tower: ClipTowerAttributes::from_attributes(a)?,
            context_length: required_u64(a, clip::CONTEXT_LENGTH)?,
            pooling: required_str(a, clip::POOLING)?.to_string(),
        })
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        self.tower.write(&mut a);
        a.insert(clip::CONTEXT_LENGTH.into(), json!(self.context_length));
        a.insert(clip::POOLING.into(), json!(self.pooling));
        a
    }
}

/// The `clip_image` graph's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipImageAttributes {
    pub tower: ClipTowerAttributes,
    pub image_size: u64,
    pub patch_size: u64,
}

impl ClipImageAttributes {
    /// Reads and checks the attributes of a `clip_image` graph.
    pub fn from_spec(spec: &GraphSpec) -> Result<Self> {
        let a = &spec.attributes;
        Ok(ClipImageAttributes {
            tower: ClipTowerAttributes::from_attributes(a)?,
            image_size: required_u64(a, clip::IMAGE_SIZE)?,
            patch_size: required_u64(a, clip::PATCH_SIZE)?,
        })
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        self.tower.write(&mut a);
        a.insert(clip::IMAGE_SIZE.into(), json!(self.image_size));
        a.insert(clip::PATCH_SIZE.into(), json!(self.patch_size));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GraphSpec;

    fn spec(attributes: Attributes) -> GraphSpec {
        GraphSpec {
            file: "g.onnx".into(),
            external_data: None,
            inputs: vec![],
            outputs: vec![],
            dim_ranges: BTreeMap::new(),
            attributes,
        }
    }

    #[test]
    fn dvae_round_trips_and_names_what_is_wrong() {
        let a = DvaeAttributes {
            vocab_size: 512,
            downsample: 8,
            image_size: Some(256),
        };
        assert_eq!(DvaeAttributes::from_spec(&spec(a.to_attributes())), Ok(a));
        let e = DvaeAttributes::from_spec(&spec(Attributes::new())).unwrap_err();
        assert_eq!(e.attribute(), dvae::VOCAB_SIZE);
        let mut bad = Attributes::new();
        bad.insert(dvae::VOCAB_SIZE.into(), json!(4));
        bad.insert(dvae::DOWNSAMPLE.into(), json!("eight"));
        let e = DvaeAttributes::from_spec(&spec(bad)).unwrap_err();
        assert_eq!(e.attribute(), dvae::DOWNSAMPLE);
    }

    #[test]
    fn decoder_round_trips_with_either_cache() {
        for kv_cache in [
            KvCacheAttribute::Concat,
            KvCacheAttribute::InPlace { capacity: 80 },
        ] {
            let a = DecoderAttributes {
                layers: 2,
                heads: 4,
                head_dim: 16,
                dim: 64,
                attn_types: vec![decoder::ATTN_FULL.into()],
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
        a.insert(decoder::KV_CACHE.into(), json!("sideways"));
        let e = KvCacheAttribute::from_spec(&spec(a)).unwrap_err();
        assert_eq!(e.attribute(), decoder::KV_CACHE);
        assert_eq!(
            KvCacheAttribute::from_spec(&spec(Attributes::new())),
            Ok(KvCacheAttribute::Concat)
        );
    }
}
