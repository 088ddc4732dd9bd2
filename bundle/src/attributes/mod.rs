//! Graph attributes (`GraphSpec::attributes` in `manifest.json`): the one place that spells
//! their names and their types.
//!
//! The exporter writes them through the `to_attributes` of a typed struct, the runtime reads
//! them through its `from_spec`, so both sides agree on every key and value. Each struct lists
//! what one graph carries: [`DvaeAttributes`] (both dVAE families, plus their own
//! [`openai_dvae`]/[`discrete_vae`] descriptive extras), [`DecoderAttributes`] and the CLIP
//! towers' [`ClipTextAttributes`]/[`ClipImageAttributes`]; VQGAN image graphs add
//! [`VqganAttributes`] to their [`DvaeAttributes`]. Each graph's names and struct share
//! one file; the readers' checks are here.

use serde_json::Value;
use std::collections::BTreeMap;

pub mod clip;
pub mod decoder;
pub mod dvae;
pub mod min_dalle;
pub mod precision;
pub mod vqgan;

pub use clip::{ClipImageAttributes, ClipTextAttributes, ClipTowerAttributes};
pub use decoder::{DecoderAttributes, KvCacheAttribute, LogitsKind};
pub use dvae::DvaeAttributes;
pub use min_dalle::MinDalleAttributes;
pub use precision::{Precision, PrecisionAttributes, Provider, QuantFormat};
pub use vqgan::{VqKindAttribute, VqganAttributes};

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

pub(crate) fn invalid(attribute: &'static str, what: &str, value: &Value) -> AttributeError {
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

pub(crate) fn required<T>(name: &'static str, v: Option<T>) -> Result<T> {
    v.ok_or(AttributeError::Missing { attribute: name })
}

pub(crate) fn required_u64(attrs: &Attributes, name: &'static str) -> Result<u64> {
    required(name, positive_u64(attrs, name)?)
}

pub(crate) fn required_bool(attrs: &Attributes, name: &'static str) -> Result<bool> {
    let v = required(name, attrs.get(name))?;
    v.as_bool().ok_or_else(|| invalid(name, "a boolean", v))
}

pub(crate) fn optional_str<'a>(
    attrs: &'a Attributes,
    name: &'static str,
) -> Result<Option<&'a str>> {
    attrs
        .get(name)
        .map(|v| v.as_str().ok_or_else(|| invalid(name, "a string", v)))
        .transpose()
}

pub(crate) fn required_str<'a>(attrs: &'a Attributes, name: &'static str) -> Result<&'a str> {
    required(name, optional_str(attrs, name)?)
}

/// A graph spec holding only `attributes` (for the readers' tests).
#[cfg(test)]
pub(crate) fn test_spec(attributes: Attributes) -> crate::GraphSpec {
    crate::GraphSpec {
        file: "g.onnx".into(),
        external_data: None,
        inputs: vec![],
        outputs: vec![],
        dim_ranges: BTreeMap::new(),
        attributes,
    }
}
