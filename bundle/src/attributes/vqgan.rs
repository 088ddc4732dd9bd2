//! Extra attributes of VQGAN image graphs (taming-transformers `VQModel`/`GumbelVQ`, min-dalle's
//! detokenizer), written beside the [`DvaeAttributes`](super::DvaeAttributes) that the runtime's
//! codec reads (`vocab_size` = codebook size, `downsample` = 2^(levels−1), `image_size`), so
//! `dalle-ort encode`/`decode`/`generate` need nothing VQGAN-specific.

use super::{Attributes, Result, invalid, required, required_str, required_u64};
use crate::GraphSpec;
use serde_json::{Value, json};

/// Which quantizer the codes come from: [`VQ_VECTOR_QUANTIZER`], [`VQ_GUMBEL`] or
/// [`VQ_MIN_DALLE`]. Its presence marks a graph as a VQGAN.
pub const VQ_KIND: &str = "vq_kind";
/// taming `VectorQuantizer2` (`VQModel`): nearest codebook vector.
pub const VQ_VECTOR_QUANTIZER: &str = "vector_quantizer";
/// taming `GumbelQuantize` (`GumbelVQ`): code logits from a 1×1 projection.
pub const VQ_GUMBEL: &str = "gumbel";
/// min-dalle's `VQGanDetokenizer` (`detoker.pt`, decoder only).
pub const VQ_MIN_DALLE: &str = "min_dalle";
/// Codebook vector width.
pub const EMBED_DIM: &str = "embed_dim";
/// Channels between the quantizer convs and the nets.
pub const Z_CHANNELS: &str = "z_channels";
/// Base channel count.
pub const CH: &str = "ch";
/// Channel multiplier per level (list).
pub const CH_MULT: &str = "ch_mult";
pub const NUM_RES_BLOCKS: &str = "num_res_blocks";
/// Feature-map sides with attention (list).
pub const ATTN_RESOLUTIONS: &str = "attn_resolutions";

/// The quantizer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VqKindAttribute {
    VectorQuantizer,
    Gumbel,
    MinDalle,
}

impl VqKindAttribute {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VqKindAttribute::VectorQuantizer => VQ_VECTOR_QUANTIZER,
            VqKindAttribute::Gumbel => VQ_GUMBEL,
            VqKindAttribute::MinDalle => VQ_MIN_DALLE,
        }
    }
}

/// A VQGAN graph's geometry and quantizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VqganAttributes {
    pub vq_kind: VqKindAttribute,
    pub embed_dim: u64,
    pub z_channels: u64,
    pub ch: u64,
    pub ch_mult: Vec<u64>,
    pub num_res_blocks: u64,
    pub attn_resolutions: Vec<u64>,
}

impl VqganAttributes {
    /// Reads the attributes; `Ok(None)` for a graph that is not a VQGAN (no `vq_kind`).
    pub fn from_spec(spec: &GraphSpec) -> Result<Option<Self>> {
        Self::from_attributes(&spec.attributes)
    }

    /// [`VqganAttributes::from_spec`] on the attributes alone.
    pub fn from_attributes(a: &Attributes) -> Result<Option<Self>> {
        if !a.contains_key(VQ_KIND) {
            return Ok(None);
        }
        let kind = required_str(a, VQ_KIND)?;
        let vq_kind = match kind {
            VQ_VECTOR_QUANTIZER => VqKindAttribute::VectorQuantizer,
            VQ_GUMBEL => VqKindAttribute::Gumbel,
            VQ_MIN_DALLE => VqKindAttribute::MinDalle,
            _ => {
                return Err(invalid(
                    VQ_KIND,
                    &format!("`{VQ_VECTOR_QUANTIZER}`, `{VQ_GUMBEL}` or `{VQ_MIN_DALLE}`"),
                    &json!(kind),
                ));
            }
        };
        Ok(Some(VqganAttributes {
            vq_kind,
            embed_dim: required_u64(a, EMBED_DIM)?,
            z_channels: required_u64(a, Z_CHANNELS)?,
            ch: required_u64(a, CH)?,
            ch_mult: u64_list(a, CH_MULT, false)?,
            num_res_blocks: required_u64(a, NUM_RES_BLOCKS)?,
            attn_resolutions: u64_list(a, ATTN_RESOLUTIONS, true)?,
        }))
    }

    /// The attributes as written into the manifest.
    pub fn to_attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.insert(VQ_KIND.into(), json!(self.vq_kind.as_str()));
        a.insert(EMBED_DIM.into(), json!(self.embed_dim));
        a.insert(Z_CHANNELS.into(), json!(self.z_channels));
        a.insert(CH.into(), json!(self.ch));
        a.insert(CH_MULT.into(), json!(self.ch_mult));
        a.insert(NUM_RES_BLOCKS.into(), json!(self.num_res_blocks));
        a.insert(ATTN_RESOLUTIONS.into(), json!(self.attn_resolutions));
        a
    }
}

/// A list of positive integers (`may_be_empty`: whether `[]` is allowed).
fn u64_list(a: &Attributes, name: &'static str, may_be_empty: bool) -> Result<Vec<u64>> {
    let v = required(name, a.get(name))?;
    let what = "a list of positive integers";
    let items = v.as_array().ok_or_else(|| invalid(name, what, v))?;
    if items.is_empty() && !may_be_empty {
        return Err(invalid(name, "a non-empty list of positive integers", v));
    }
    items
        .iter()
        .map(|x: &Value| match x.as_u64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(invalid(name, what, v)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::test_spec as spec;

    fn sample() -> VqganAttributes {
        VqganAttributes {
            vq_kind: VqKindAttribute::Gumbel,
            embed_dim: 256,
            z_channels: 256,
            ch: 128,
            ch_mult: vec![1, 1, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![32],
        }
    }

    #[test]
    fn vqgan_round_trips_and_names_what_is_wrong() {
        let a = sample();
        assert_eq!(
            VqganAttributes::from_spec(&spec(a.to_attributes())),
            Ok(Some(a.clone()))
        );
        assert_eq!(
            VqganAttributes::from_spec(&spec(Attributes::new())),
            Ok(None)
        );
        let mut bad = a.to_attributes();
        bad.insert(VQ_KIND.into(), json!("kmeans"));
        let e = VqganAttributes::from_spec(&spec(bad)).unwrap_err();
        assert_eq!(e.attribute(), VQ_KIND);
        let mut bad = a.to_attributes();
        bad.insert(CH_MULT.into(), json!([1, 0]));
        let e = VqganAttributes::from_spec(&spec(bad)).unwrap_err();
        assert_eq!(e.attribute(), CH_MULT);
        let mut bad = a.to_attributes();
        bad.remove(NUM_RES_BLOCKS);
        let e = VqganAttributes::from_spec(&spec(bad)).unwrap_err();
        assert_eq!(e.attribute(), NUM_RES_BLOCKS);
    }
}
