//! The CLIP graphs' attributes (`clip_text`, `clip_image`): tower sizes, context, image size.

use super::{Attributes, Result, required_str, required_u64};
use crate::GraphSpec;
use serde_json::json;

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
            projection_dim: required_u64(a, PROJECTION_DIM)?,
            layers: required_u64(a, LAYERS)?,
            hidden: required_u64(a, HIDDEN)?,
            heads: required_u64(a, HEADS)?,
            activation: required_str(a, ACTIVATION)?.to_string(),
        })
    }

    fn write(&self, a: &mut Attributes) {
        a.insert(PROJECTION_DIM.into(), json!(self.projection_dim));
        a.insert(LAYERS.into(), json!(self.layers));
        a.insert(HIDDEN.into(), json!(self.hidden));
        a.insert(HEADS.into(), json!(self.heads));
        a.insert(ACTIVATION.into(), json!(self.activation));
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
            context_length: required_u64(a, CONTEXT_LENGTH)?,
            pooling: required_str(a, POOLING)?.to_string(),
        })
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        self.tower.write(&mut a);
        a.insert(CONTEXT_LENGTH.into(), json!(self.context_length));
        a.insert(POOLING.into(), json!(self.pooling));
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
            image_size: required_u64(a, IMAGE_SIZE)?,
            patch_size: required_u64(a, PATCH_SIZE)?,
        })
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        self.tower.write(&mut a);
        a.insert(IMAGE_SIZE.into(), json!(self.image_size));
        a.insert(PATCH_SIZE.into(), json!(self.patch_size));
        a
    }
}
