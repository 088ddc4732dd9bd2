//! CLIP scoring for reranking: prompt → ids (`clip_tokenizer.json` + the manifest's `clip`
//! entry), pixels → `pixel_values` ([`resize`]), both graphs → L2-normalized embeddings, and
//! scores `exp(logit_scale) · cos` (Hugging Face `CLIPModel.logits_per_text`, transformers
//! 5.24.0 `models/clip/modeling_clip.py`).
//!
//! ```text
//! prompt ─► tokenizer (no specials) ─► [bos] + ids[..context-2] + [eos] + pad ─► clip_text ─┐
//! pixels [n,3,h,w] in [0,1] ─► resize::preprocess ─► clip_image (in batch-range chunks) ──┴─► exp(s)·t·iᵀ
//! ```

pub mod resize;

use crate::bundle::Bundle;
use crate::dvae::{check_input, usize_dims};
use crate::error::{Error, Result};
use dalle_bundle::io::clip::{IMAGE_EMBEDS, INPUT_IDS, PIXEL_VALUES, TEXT_EMBEDS};
use dalle_bundle::io::dims::BATCH;
use dalle_bundle::{ClipInfo, GraphRole};
use ndarray::{Array2, Array4, ArrayView4, Axis};
use ort::value::{DynValue, Tensor};
use std::path::{Path, PathBuf};

/// The bundle's CLIP entry, or an error saying the bundle has no CLIP graphs.
pub fn info(bundle: &Bundle) -> Result<ClipInfo> {
    let m = bundle.manifest();
    match (
        &m.clip,
        m.graph(GraphRole::ClipText),
        m.graph(GraphRole::ClipImage),
    ) {
        (Some(info), Ok(_), Ok(_)) => Ok(info.clone()),
        _ => Err(Error::InvalidInput(format!(
            "the bundle {} has no CLIP model (graphs `clip_text` and `clip_image` and the \
             manifest's `clip` entry); export one with `dalle-export clip --model DIR` or add it \
             with `dalle-export dalle-pytorch ... --clip DIR`",
            bundle.dir().display()
        ))),
    }
}

/// CLIP's text tokenizer: the file's normalizer, pre-tokenizer and BPE, then start/end,
/// truncation (keeping the end token) and padding from [`ClipInfo`].
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    info: ClipInfo,
    path: PathBuf,
}

impl ClipTokenizer {
    /// Loads `clip_tokenizer.json` of a bundle.
    pub fn open(bundle_dir: &Path, info: &ClipInfo) -> Result<ClipTokenizer> {
        let path = bundle_dir.join(&info.tokenizer);
        let err = |message: String| Error::Tokenizer {
            path: path.clone(),
            message,
        };
        if !path.is_file() {
            return Err(err("file does not exist".into()));
        }
        let mut inner = crate::tokenizer::load_hf_tokenizer(&path).map_err(err)?;
        inner
            .with_truncation(None)
            .map_err(|e| err(format!("cannot disable truncation: {e}")))?
            .with_padding(None);
        Ok(ClipTokenizer {
            inner,
            info: info.clone(),
            path,
        })
    }

    /// `[bos] + tokens + [eos]`, cut to the context (the last kept token is `eos`) and padded.
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode {prompt:?}: {e}"),
            })?;
        let ctx = usize::try_from(self.info.context_length).unwrap_or(usize::MAX);
        if ctx < 2 {
            return Err(Error::InvalidInput(format!(
                "CLIP context_length {ctx} leaves no room for the start and end tokens"
            )));
        }
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut ids = Vec::with_capacity(ctx);
        ids.push(as_i64(self.info.bos_id));
        ids.extend(enc.get_ids().iter().take(ctx - 2).map(|&t| i64::from(t)));
        ids.push(as_i64(self.info.eos_id));
        ids.resize(ctx, as_i64(self.info.pad_id));
        Ok(ids)
    }
}

fn batch_max(bundle: &Bundle, role: GraphRole) -> Result<usize> {
    Ok(bundle
        .manifest()
        .graph(role)?
        .dim_ranges
        .get(BATCH)
        .map_or(usize::MAX, |r| {
            usize::try_from(r.max).unwrap_or(usize::MAX).max(1)
        }))
}

fn tensor_error(role: GraphRole, name: &str, e: ort::Error) -> Error {
    Error::ort(
        format!("graph `{role}`: cannot create the `{name}` tensor"),
        e,
    )
}

fn run_embeds(
    bundle: &mut Bundle,
    role: GraphRole,
    (input_name, output_name): (&str, &str),
    shape: &[usize],
    tensor: DynValue,
) -> Result<Array2<f32>> {
    let spec = bundle.manifest().graph(role)?.clone();
    check_input(role, &spec, input_name, shape)?;
    let batch = shape.first().copied().unwrap_or(0);
    let session = bundle.session(role)?.session_mut();
    let outputs = session
        .run(ort::inputs![input_name => tensor])
        .map_err(|e| Error::ort(format!("graph `{role}`: run failed"), e))?;
    let value = outputs
        .get(output_name)
        .ok_or_else(|| Error::tensor(role, output_name, "missing from the graph's outputs"))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| Error::tensor(role, output_name, format!("cannot read it as float: {e}")))?;
    let dims = usize_dims(role, output_name, shape)?;
    match dims[..] {
        [b, d] if b == batch => Array2::from_shape_vec((b, d), data.to_vec())
            .map_err(|e| Error::tensor(role, output_name, e.to_string())),
        _ => Err(Error::tensor(
            role,
            output_name,
            format!("has shape {dims:?}; expected [{batch}, projection_dim]"),
        )),
    }
}

/// Text embeddings `[n, projection_dim]` of token id rows `[n, context_length]`.
pub fn text_embeds(bundle: &mut Bundle, ids: &Array2<i64>) -> Result<Array2<f32>> {
    let role = GraphRole::ClipText;
    let tensor = Tensor::from_array(ids.clone())
        .map_err(|e| tensor_error(role, INPUT_IDS, e))?
        .into_dyn();
    run_embeds(bundle, role, (INPUT_IDS, TEXT_EMBEDS), ids.shape(), tensor)
}

/// Image embeddings `[n, projection_dim]` of preprocessed `pixel_values` `[n, 3, s, s]`, run in
/// chunks the graph's batch range allows.
pub fn image_embeds(bundle: &mut Bundle, pixel_values: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
    let chunk = batch_max(bundle, GraphRole::ClipImage)?;
    let mut parts = vec![];
    for part in pixel_values.axis_chunks_iter(Axis(0), chunk) {
        let role = GraphRole::ClipImage;
        let shape = part.shape().to_vec();
        let tensor = Tensor::from_array(part.to_owned())
            .map_err(|e| tensor_error(role, PIXEL_VALUES, e))?
            .into_dyn();
        parts.push(run_embeds(
            bundle,
            role,
            (PIXEL_VALUES, IMAGE_EMBEDS),
            &shape,
            tensor,
        )?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::InvalidInput(format!("image embeddings: {e}")))
}

/// `pixel_values` `[n, 3, s, s]` from pixels `[n, 3, h, w]` in [0, 1].
pub fn pixel_values(pixels: ArrayView4<'_, f32>, info: &ClipInfo) -> Result<Array4<f32>> {
    let size = usize::try_from(info.image_size)
        .map_err(|_| Error::InvalidInput("CLIP image_size does not fit in memory".into()))?;
    let n = pixels.shape().first().copied().unwrap_or(0);
    let mut out = Array4::<f32>::zeros((n, 3, size, size));
    for (i, img) in pixels.axis_iter(Axis(0)).enumerate() {
        let pv = resize::preprocess(img, size, info.image_mean, info.image_std)?;
        out.index_axis_mut(Axis(0), i).assign(&pv);
    }
    Ok(out)
}

/// `exp(logit_scale) · cos(prompt, image)` for every image (pixels `[n, 3, h, w]` in [0, 1]),
/// Hugging Face's `logits_per_text` row for the prompt.
pub fn score(bundle: &mut Bundle, prompt: &str, pixels: ArrayView4<'_, f32>) -> Result<Vec<f32>> {
    let info = info(bundle)?;
    let tokenizer = ClipTokenizer::open(bundle.dir(), &info)?;
    let ids = tokenizer.encode(prompt)?;
    let ids = Array2::from_shape_vec((1, ids.len()), ids)
        .map_err(|e| Error::InvalidInput(format!("CLIP input ids: {e}")))?;
    let text = text_embeds(bundle, &ids)?;
    let pv = pixel_values(pixels, &info)?;
    let images = image_embeds(bundle, pv.view())?;
    let scale = info.logit_scale.exp() as f32;
    let t = text.row(0);
    Ok(images
        .rows()
        .into_iter()
        .map(|r| scale * r.dot(&t))
        .collect())
}

/// Indices of `scores` from best to worst (ties keep the lower index first).
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranking_is_descending_and_stable() {
        assert_eq!(super::ranking(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
    }
}
