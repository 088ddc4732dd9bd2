//! The dVAE steps: image → tokens (`dvae_encoder`) and tokens → images (`dvae_decoder`).
//!
//! Contract (names in [`dalle_bundle::io::dvae`]): the encoder takes `pixels` f32
//! `[batch, 3, height, width]` in [0, 1] and returns `image_tokens` i64
//! `[batch, height/8, width/8]`; the decoder maps `image_tokens` back to `pixels`
//! `[batch, 3, 8h, 8w]`. Graph attributes `vocab_size` (codebook size) and `downsample` (8) come
//! from the manifest ([`DvaeAttributes`]). Inputs are checked against the manifest (shape ranges, token range) before
//! a run, and outputs are checked for shape instead of being indexed blindly.

use crate::bundle::Bundle;
use crate::contract::check_input_shape;
use crate::error::{Error, Result};
use crate::preprocess;
use dalle_bundle::attributes::dvae as dvae_attr;
use dalle_bundle::io::dvae::{IMAGE_TOKENS, PIXELS};
use dalle_bundle::{Dim, DvaeAttributes, GraphRole, GraphSpec};
use image::RgbImage;
use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};
use ort::value::Tensor;
use std::path::{Path, PathBuf};

/// Encoder input size used when the manifest does not pin one.
pub const DEFAULT_IMAGE_SIZE: u64 = 256;

/// The downsampling factor when the manifest has no `downsample` attribute.
pub const DEFAULT_DOWNSAMPLE: u64 = dvae_attr::DEFAULT_DOWNSAMPLE;

/// The graph's typed attributes ([`DvaeAttributes`]), errors naming `role` and the attribute.
pub fn attributes(role: GraphRole, spec: &GraphSpec) -> Result<DvaeAttributes> {
    DvaeAttributes::from_spec(spec).map_err(|e| Error::Attribute {
        role,
        attribute: e.attribute(),
        message: e.message(),
    })
}

/// The codebook size (`vocab_size` attribute, required).
pub fn vocab_size(role: GraphRole, spec: &GraphSpec) -> Result<u64> {
    Ok(attributes(role, spec)?.vocab_size)
}

/// The side of the square image the encoder is fed: attribute `image_size`, else the fixed height
/// of `pixels`, else its `height` range's `opt`, else [`DEFAULT_IMAGE_SIZE`]. Must be a multiple
/// of `downsample`.
pub fn encoder_image_size(spec: &GraphSpec) -> Result<u32> {
    let role = GraphRole::DvaeEncoder;
    let attrs = attributes(role, spec)?;
    let downsample = attrs.downsample;
    let from_input = spec
        .input(PIXELS)
        .and_then(|t| t.dims.get(2))
        .and_then(|d| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(s) => spec.dim_ranges.get(s).map(|r| r.opt),
        });
    let size = match attrs.image_size {
        Some(n) => n,
        None => from_input.unwrap_or(DEFAULT_IMAGE_SIZE),
    };
    if size % downsample != 0 {
        return Err(Error::Attribute {
            role,
            attribute: dvae_attr::DOWNSAMPLE,
            message: format!("({downsample}) does not divide the encoder's image size {size}"),
        });
    }
    u32::try_from(size).map_err(|_| Error::Attribute {
        role,
        attribute: dvae_attr::IMAGE_SIZE,
        message: format!("{size} is too large"),
    })
}

/// Checks every token is a codebook index `0..vocab`, naming the first bad one.
pub fn validate_tokens(tokens: ArrayView3<'_, i64>, vocab: u64) -> Result<()> {
    let limit = i64::try_from(vocab).unwrap_or(i64::MAX);
    let bad = |t: i64| t < 0 || t >= limit;
    let count = tokens.iter().filter(|&&t| bad(t)).count();
    if let Some(((b, y, x), &t)) = tokens.indexed_iter().find(|(_, t)| bad(**t)) {
        return Err(Error::InvalidInput(format!(
            "token {t} at [{b}, {y}, {x}] is outside the codebook 0..{vocab} \
             ({count} of {} tokens out of range)",
            tokens.len()
        )));
    }
    Ok(())
}

/// Where each decoded image goes: `out` for one image; `stem_0.ext`, `stem_1.ext`, ... for more.
pub fn output_paths(out: &Path, count: usize) -> Vec<PathBuf> {
    if count == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_string());
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".to_string());
    (0..count)
        .map(|i| out.with_file_name(format!("{stem}_{i}.{ext}")))
        .collect()
}

/// Image → tokens `[1, size/8, size/8]` (resize, centre crop, encode).
pub fn encode(bundle: &mut Bundle, image: &RgbImage) -> Result<Array3<i64>> {
    let role = GraphRole::DvaeEncoder;
    let spec = bundle.manifest().graph(role)?.clone();
    let size = encoder_image_size(&spec)?;
    let pixels = preprocess::to_chw_tensor(&preprocess::resize_and_center_crop(image, size)?);
    encode_pixels(bundle, pixels)
}

/// Pixels f32 `[batch, 3, h, w]` → tokens i64 `[batch, h/8, w/8]`.
pub fn encode_pixels(bundle: &mut Bundle, pixels: Array4<f32>) -> Result<Array3<i64>> {
    let role = GraphRole::DvaeEncoder;
    let spec = bundle.manifest().graph(role)?.clone();
    check_input(role, &spec, PIXELS, pixels.shape())?;
    let batch = pixels.shape()[0];
    let input = Tensor::from_array(pixels).map_err(|e| {
        Error::ort(
            format!("graph `{role}`: cannot create the `{PIXELS}` tensor"),
            e,
        )
    })?;
    let session = bundle.session(role)?.session_mut();
    let outputs = session
        .run(ort::inputs![PIXELS => input])
        .map_err(|e| Error::ort(format!("graph `{role}`: run failed"), e))?;
    let value = outputs
        .get(IMAGE_TOKENS)
        .ok_or_else(|| Error::tensor(role, IMAGE_TOKENS, "missing from the graph's outputs"))?;
    let (shape, data) = value
        .try_extract_tensor::<i64>()
        .map_err(|e| Error::tensor(role, IMAGE_TOKENS, format!("cannot read it as int64: {e}")))?;
    let dims = usize_dims(role, IMAGE_TOKENS, shape)?;
    match dims[..] {
        [b, h, w] if b == batch => Array3::from_shape_vec((b, h, w), data.to_vec())
            .map_err(|e| Error::tensor(role, IMAGE_TOKENS, e.to_string())),
        _ => Err(Error::tensor(
            role,
            IMAGE_TOKENS,
            format!("has shape {dims:?}; expected [{batch}, grid_height, grid_width]"),
        )),
    }
}

/// Tokens `[batch, h, w]` → one RGB image per batch entry.
pub fn decode(bundle: &mut Bundle, tokens: &Array3<i64>) -> Result<Vec<RgbImage>> {
    let pixels = decode_pixels(bundle, tokens)?;
    pixels
        .axis_iter(Axis(0))
        .map(preprocess::from_chw_tensor)
        .collect()
}

/// Tokens `[batch, h, w]` → pixels f32 `[batch, 3, 8h, 8w]`.
pub fn decode_pixels(bundle: &mut Bundle, tokens: &Array3<i64>) -> Result<Array4<f32>> {
    let role = GraphRole::DvaeDecoder;
    let spec = bundle.manifest().graph(role)?.clone();
    validate_tokens(tokens.view(), vocab_size(role, &spec)?)?;
    check_input(role, &spec, IMAGE_TOKENS, tokens.shape())?;
    let batch = tokens.shape()[0];
    let input = Tensor::from_array(tokens.clone()).map_err(|e| {
        Error::ort(
            format!("graph `{role}`: cannot create the `{IMAGE_TOKENS}` tensor"),
            e,
        )
    })?;
    let session = bundle.session(role)?.session_mut();
    let outputs = session
        .run(ort::inputs![IMAGE_TOKENS => input])
        .map_err(|e| Error::ort(format!("graph `{role}`: run failed"), e))?;
    let value = outputs
        .get(PIXELS)
        .ok_or_else(|| Error::tensor(role, PIXELS, "missing from the graph's outputs"))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| Error::tensor(role, PIXELS, format!("cannot read it as float: {e}")))?;
    let dims = usize_dims(role, PIXELS, shape)?;
    let array = match dims[..] {
        [b, 3, h, w] if b == batch => ArrayView4::from_shape((b, 3, h, w), data)
            .map_err(|e| Error::tensor(role, PIXELS, e.to_string()))?
            .to_owned(),
        _ => {
            return Err(Error::tensor(
                role,
                PIXELS,
                format!("has shape {dims:?}; expected [{batch}, 3, height, width]"),
            ));
        }
    };
    Ok(array)
}

pub(crate) fn check_input(
    role: GraphRole,
    spec: &GraphSpec,
    name: &str,
    shape: &[usize],
) -> Result<()> {
    let input = spec.input(name).ok_or_else(|| {
        Error::tensor(role, name, "is not an input of this graph in the manifest")
    })?;
    check_input_shape(input, &spec.dim_ranges, shape).map_err(|m| Error::tensor(role, name, m))
}

pub(crate) fn usize_dims(role: GraphRole, name: &str, shape: &[i64]) -> Result<Vec<usize>> {
    shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::tensor(role, name, format!("has an invalid shape {shape:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dalle_bundle::{DType, DimRange, TensorSpec};
    use std::collections::BTreeMap;

    fn encoder(attrs: &[(&str, serde_json::Value)], height: Dim) -> GraphSpec {
        let mut dim_ranges = BTreeMap::new();
        dim_ranges.insert("batch".into(), DimRange::new(1, 1, 4));
        dim_ranges.insert("height".into(), DimRange::new(64, 128, 256));
        GraphSpec {
            file: "dvae_encoder.onnx".into(),
            external_data: None,
            inputs: vec![TensorSpec::new(
                PIXELS,
                DType::F32,
                vec![Dim::sym("batch"), 3.into(), height.clone(), height],
            )],
            outputs: vec![],
            dim_ranges,
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// [`encoder`] with the required `vocab_size`.
    fn encoder_with_vocab(attrs: &[(&str, serde_json::Value)], height: Dim) -> GraphSpec {
        let mut spec = encoder(attrs, height);
        spec.attributes
            .insert(dvae_attr::VOCAB_SIZE.into(), 512.into());
        spec
    }

    #[test]
    fn image_size_comes_from_attribute_fixed_dim_range_or_default() {
        let attr = encoder_with_vocab(&[(dvae_attr::IMAGE_SIZE, 192.into())], Dim::sym("height"));
        assert_eq!(encoder_image_size(&attr).unwrap(), 192);
        assert_eq!(
            encoder_image_size(&encoder_with_vocab(&[], 64.into())).unwrap(),
            64
        );
        assert_eq!(
            encoder_image_size(&encoder_with_vocab(&[], Dim::sym("height"))).unwrap(),
            128
        );
        assert_eq!(
            encoder_image_size(&encoder_with_vocab(&[], Dim::sym("unranged"))).unwrap(),
            256
        );
        let bad = encoder_with_vocab(&[(dvae_attr::DOWNSAMPLE, 7.into())], 64.into());
        assert!(
            encoder_image_size(&bad)
                .unwrap_err()
                .to_string()
                .contains("downsample")
        );
    }

    #[test]
    fn vocab_size_must_be_present_and_positive() {
        let role = GraphRole::DvaeDecoder;
        let ok = encoder(&[(dvae_attr::VOCAB_SIZE, 8192.into())], 64.into());
        assert_eq!(vocab_size(role, &ok).unwrap(), 8192);
        let missing = vocab_size(role, &encoder(&[], 64.into())).unwrap_err();
        assert!(
            missing.to_string().contains("`vocab_size` is missing"),
            "{missing}"
        );
        let text = encoder(&[(dvae_attr::VOCAB_SIZE, "lots".into())], 64.into());
        assert!(
            vocab_size(role, &text)
                .unwrap_err()
                .to_string()
                .contains("\"lots\"")
        );
    }

    #[test]
    fn tokens_outside_the_codebook_are_reported() {
        let mut t = Array3::<i64>::zeros((1, 2, 2));
        assert!(validate_tokens(t.view(), 4).is_ok());
        t[[0, 1, 0]] = 4;
        t[[0, 1, 1]] = -1;
        let msg = validate_tokens(t.view(), 4).unwrap_err().to_string();
        assert!(msg.contains("token 4 at [0, 1, 0]"), "{msg}");
        assert!(msg.contains("2 of 4 tokens"), "{msg}");
    }

    #[test]
    fn batch_outputs_get_numbered_names() {
        assert_eq!(
            output_paths(Path::new("out/img.png"), 1),
            vec![PathBuf::from("out/img.png")]
        );
        assert_eq!(
            output_paths(Path::new("out/img.png"), 2),
            vec![
                PathBuf::from("out/img_0.png"),
                PathBuf::from("out/img_1.png")
            ]
        );
        assert_eq!(
            output_paths(Path::new("img"), 2)[1],
            PathBuf::from("img_1.png")
        );
    }
}
