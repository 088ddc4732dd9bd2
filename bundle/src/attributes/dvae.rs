//! The dVAE graphs' attributes (both families): codebook size, downsampling, image size.

use super::{Attributes, Result, positive_u64, required_u64};
use crate::GraphSpec;
use serde_json::json;

/// Codebook size.
pub const VOCAB_SIZE: &str = "vocab_size";
/// Pixels per token along each side.
pub const DOWNSAMPLE: &str = "downsample";
/// The side of the square image the model was trained on.
pub const IMAGE_SIZE: &str = "image_size";
/// The downsampling factor of a graph without the attribute.
pub const DEFAULT_DOWNSAMPLE: u64 = 8;

/// What the runtime reads from a dVAE graph (either family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DvaeAttributes {
    /// Codebook size (required: token ids are checked against it).
    pub vocab_size: u64,
    /// Pixels per token along each side ([`DEFAULT_DOWNSAMPLE`] when absent).
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
            vocab_size: required_u64(a, VOCAB_SIZE)?,
            downsample: positive_u64(a, DOWNSAMPLE)?.unwrap_or(DEFAULT_DOWNSAMPLE),
            image_size: positive_u64(a, IMAGE_SIZE)?,
        })
    }

    /// The attributes as written into the manifest (`downsample` always written).
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.insert(VOCAB_SIZE.into(), json!(self.vocab_size));
        a.insert(DOWNSAMPLE.into(), json!(self.downsample));
        if let Some(s) = self.image_size {
            a.insert(IMAGE_SIZE.into(), json!(s));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::test_spec as spec;

    #[test]
    fn dvae_round_trips_and_names_what_is_wrong() {
        let a = DvaeAttributes {
            vocab_size: 512,
            downsample: 8,
            image_size: Some(256),
        };
        assert_eq!(DvaeAttributes::from_spec(&spec(a.to_attributes())), Ok(a));
        let e = DvaeAttributes::from_spec(&spec(Attributes::new())).unwrap_err();
        assert_eq!(e.attribute(), VOCAB_SIZE);
        let mut bad = Attributes::new();
        bad.insert(VOCAB_SIZE.into(), json!(4));
        bad.insert(DOWNSAMPLE.into(), json!("eight"));
        let e = DvaeAttributes::from_spec(&spec(bad)).unwrap_err();
        assert_eq!(e.attribute(), DOWNSAMPLE);
    }
}
