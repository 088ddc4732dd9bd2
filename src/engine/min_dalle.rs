//! [`ImageTokenModel`] for DALL·E mini/mega bundles (min-dalle): a text encoder and the
//! decoder's cross-attention keys/values run **once per prompt** at admission, kept per row as
//! the decoder's constant state, and a decoder step over image codes whose rows live in a
//! [`SlotBatch`] like DALLE-pytorch's.
//!
//! Text rows are built as min-dalle's `generate_raw_image_stream` builds them: the tokenizer's
//! ids (the runtime's tokenizer gives them without `<s>`/`</s>`, at most `text_length − 1`)
//! become `[<s>] + ids + [</s>]` cut to `text_length` (so a prompt of `text_length − 1` ids or
//! more loses its `</s>`, as in min-dalle), padded with the pad id; the unconditional row is
//! `[tokens[0], tokens[-1]]` then pads. Row 0 of a prompt is the conditional row, row 1 the
//! unconditional one (min-dalle orders them the other way; only the order differs).
//!
//! Every decoder row starts with the start token (manifest attribute `start_token`) at
//! position 0, whose logits give the first code.
//!
//! Both cache layouts run: an in-place decoder (per-row positions) keeps every slot in one row
//! group, a concatenated one groups the rows that started together ([`SlotBatch`] does either,
//! as for DALLE-pytorch). The decoder's sessions follow the bundle's execution-provider plan
//! (prefill and decode sessions on TensorRT, state in device memory on a GPU); `cross_kv`'s
//! outputs are bound to that memory and become the prompt state's constant inputs without a
//! copy, bound once per state.

use super::batch::{BatchPrompt, SlotBatch};
use super::dalle_pytorch::batch_max;
use super::model::{ImageGeometry, ImageTokenModel, Prefill, Slot, StepCost};
use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::generate::{OrtDecoder, OrtState};
use dalle_bundle::io::min_dalle as io;
use dalle_bundle::{GraphRole, MinDalleAttributes, TokenLayout};
use image::RgbImage;
use ndarray::{Array2, Array4};
use ort::value::{DynValue, Tensor};
use std::time::Instant;

/// A min-dalle model on ONNX Runtime: see the module docs.
pub struct OrtMinDalle {
    attrs: MinDalleAttributes,
    geometry: ImageGeometry,
    batch: SlotBatch<OrtDecoder>,
    /// Holds the `text_encoder` and `cross_kv` sessions (and the image decoder's, CLIP's).
    bundle: Bundle,
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::InvalidInput(format!("min-dalle: {what} {v} too large")))
}

/// The text rows min-dalle encodes for `text` (tokenizer ids without `<s>`/`</s>`, 0-padded):
/// `(conditional, unconditional)`, each `text_length` ids. See the module docs.
pub fn text_rows(a: &MinDalleAttributes, text: &[u32]) -> Result<(Vec<i64>, Vec<i64>)> {
    let len = to_usize(a.text_length, "text_length")?;
    let n = text.iter().position(|&t| t == 0).unwrap_or(text.len());
    let mut tokens = Vec::with_capacity(len + 1);
    tokens.push(a.bos_id as i64);
    tokens.extend(text[..n].iter().map(|&t| i64::from(t)));
    tokens.push(a.eos_id as i64);
    tokens.truncate(len);
    let pad = a.pad_id as i64;
    let mut uncond = vec![pad; len];
    uncond[0] = tokens[0];
    uncond[1] = tokens[tokens.len() - 1];
    tokens.resize(len, pad);
    Ok((tokens, uncond))
}

impl OrtMinDalle {
    /// Opens the `decoder` session of a min-dalle bundle (ONNX Runtime loaded) and keeps the
    /// bundle for the others. `max_rows` caps the rows of one decoder call.
    pub fn from_bundle(mut bundle: Bundle, max_rows: Option<usize>) -> Result<OrtMinDalle> {
        let layout: TokenLayout = bundle
            .manifest()
            .token_layout
            .clone()
            .ok_or(Error::NoTokenLayout)?;
        let spec = bundle.manifest().graph(GraphRole::Decoder)?.clone();
        let attrs = MinDalleAttributes::from_spec(&spec)
            .map_err(|e| Error::tensor(GraphRole::Decoder, "attributes", e.to_string()))?;
        let geometry = ImageGeometry {
            grid: to_usize(layout.image_grid, "image_grid")?,
            vocab: to_usize(attrs.image_codes, "image_codes")?,
            total_vocab: to_usize(attrs.image_codes, "image_codes")?,
        };
        if geometry.tokens() as u64 != attrs.image_length {
            return Err(Error::InvalidInput(format!(
                "min-dalle: a {0}×{0} grid but {1} decoder positions",
                geometry.grid, attrs.image_length
            )));
        }
        let range = batch_max(&bundle, GraphRole::Decoder)?;
        let decoder = bundle.take_decoder_sessions()?;
        bundle.session(GraphRole::TextEncoder)?;
        bundle.session(GraphRole::CrossKv)?;
        let decoder = OrtDecoder::from_sessions(decoder, &spec, &layout)?;
        let rows = match (range, max_rows) {
            (Some(r), Some(m)) => r.min(m),
            (Some(r), None) => r,
            (None, Some(m)) => m,
            (None, None) => usize::MAX,
        };
        let start = attrs.start_token as i64;
        Ok(OrtMinDalle {
            attrs,
            geometry,
            batch: SlotBatch::new(decoder, rows, start),
            bundle,
        })
    }

    pub fn attributes(&self) -> &MinDalleAttributes {
        &self.attrs
    }

    pub fn bundle_mut(&mut self) -> &mut Bundle {
        &mut self.bundle
    }

    pub fn batch(&self) -> &SlotBatch<OrtDecoder> {
        &self.batch
    }

    /// `text_encoder` then `cross_kv` on text rows `[rows, text_length]`: every constant-state
    /// input of the decoder by name, `rows` rows each, as `cross_kv` made them — in the graph's
    /// state dtype and bound to the decoder state's memory (the device's on a GPU), so they
    /// become the prompt state as they are.
    pub fn cross_state(&mut self, ids: &Array2<i64>) -> Result<Vec<(String, DynValue)>> {
        let ids_tensor = || {
            Tensor::from_array(ids.clone())
                .map_err(|e| Error::ort("min-dalle: cannot create `input_ids`", e))
        };
        let enc = self.bundle.session(GraphRole::TextEncoder)?.session_mut();
        let mut out = enc
            .run(ort::inputs![io::INPUT_IDS => ids_tensor()?])
            .map_err(|e| Error::ort("graph `text_encoder`: run failed", e))?;
        let states = out.remove(io::ENCODER_HIDDEN_STATES).ok_or_else(|| {
            Error::tensor(
                GraphRole::TextEncoder,
                io::ENCODER_HIDDEN_STATES,
                "missing from the outputs",
            )
        })?;
        drop(out);
        let wanted: Vec<String> = self
            .batch
            .decoder()
            .constant_inputs()
            .into_iter()
            .map(str::to_string)
            .collect();
        let memory = self.batch.decoder().state_memory().clone();
        let ids = ids_tensor()?;
        let ckv = self.bundle.session(GraphRole::CrossKv)?.session_mut();
        let err = |what: &str, e| Error::ort(format!("graph `cross_kv`: {what}"), e);
        let mut binding = ckv
            .create_binding()
            .map_err(|e| err("cannot create an IoBinding", e))?;
        binding
            .bind_input(io::ENCODER_HIDDEN_STATES, &states)
            .map_err(|e| err("cannot bind the encoder states", e))?;
        binding
            .bind_input(io::INPUT_IDS, &ids)
            .map_err(|e| err("cannot bind `input_ids`", e))?;
        for name in &wanted {
            binding
                .bind_output_to_device(name.as_str(), &memory)
                .map_err(|e| err(&format!("cannot bind `{name}`"), e))?;
        }
        let mut out = ckv
            .run_binding(&binding)
            .map_err(|e| err("run failed", e))?;
        wanted
            .into_iter()
            .map(|name| {
                let v = out.remove(name.as_str()).ok_or_else(|| {
                    Error::tensor(GraphRole::CrossKv, &name, "missing from the outputs")
                })?;
                Ok((name, v))
            })
            .collect()
    }
}

impl ImageTokenModel for OrtMinDalle {
    type Prompt = BatchPrompt<OrtState>;

    fn geometry(&self) -> ImageGeometry {
        self.geometry
    }

    fn max_rows(&self) -> usize {
        self.batch.max_rows()
    }

    fn guidance(&self) -> crate::sampling::Guidance {
        crate::sampling::Guidance::Supercondition
    }

    fn prefill(
        &mut self,
        text: &[u32],
        prime: &[u32],
        guided: bool,
    ) -> Result<Prefill<Self::Prompt>> {
        let started = Instant::now();
        let (cond, uncond) = text_rows(&self.attrs, text)?;
        let width = cond.len();
        let mut rows = cond;
        if guided {
            rows.extend(uncond);
        }
        let n = rows.len() / width;
        let text_ids = Array2::from_shape_vec((n, width), rows)
            .map_err(|e| Error::InvalidInput(format!("min-dalle text ids: {e}")))?;
        let cross = self.cross_state(&text_ids)?;
        let mut first = vec![self.attrs.start_token as i64];
        first.extend(prime.iter().map(|&c| i64::from(c)));
        let ids = Array2::from_shape_fn((n, first.len()), |(_, j)| first[j]);
        let prompt = self.batch.prefill_with(ids, |decoder, state| {
            for (name, value) in cross {
                decoder.set_constant(state, &name, value)?;
            }
            Ok(())
        })?;
        Ok(Prefill {
            prompt,
            rows: n,
            time: started.elapsed(),
        })
    }

    fn release(&mut self, prompt: Self::Prompt) {
        self.batch.release(prompt);
    }

    fn join(&mut self, prompt: &Self::Prompt, sources: &[usize]) -> Result<Vec<Slot>> {
        self.batch.join(prompt, sources)
    }

    fn rows_after_join(&self, n: usize) -> usize {
        self.batch.rows_after_join(n)
    }

    fn leave(&mut self, slots: &[Slot]) -> Result<()> {
        self.batch.leave(slots)
    }

    fn step(&mut self, feeds: &[(Slot, u32)]) -> Result<StepCost> {
        self.batch
            .step(feeds.iter().map(|&(s, code)| (s, i64::from(code))))
    }

    fn logits(&self, slot: Slot) -> Result<&[f32]> {
        self.batch.logits(slot)
    }

    fn encode_prime(&mut self, _image: &RgbImage, _rows: usize) -> Result<Vec<u32>> {
        Err(Error::InvalidInput(
            "min-dalle bundles have no image encoder: priming from a picture is not possible \
             (pass codes instead)"
                .into(),
        ))
    }

    fn decode_images(&mut self, grids: &[Vec<u32>]) -> Result<Array4<f32>> {
        super::dalle_pytorch::decode_grids(&mut self.bundle, grids, self.geometry.grid)
    }
}

/// min-dalle's seamless mode (`VQGanDetokenizer.forward(is_seamless=True)`): the token grids of
/// `g²` candidates (`grid × grid` each, row-major) tiled into one `[1, g·grid, g·grid]` grid for
/// one decode, candidate `k` at row block `k mod g`, column block `k div g` (min-dalle's order).
pub fn seamless_tokens(tokens: &[Vec<u32>], grid: usize) -> Result<ndarray::Array3<i64>> {
    let g = tokens.len().isqrt();
    if g == 0 || g * g != tokens.len() {
        return Err(Error::InvalidInput(format!(
            "seamless tiling needs a square number of candidates, got {}",
            tokens.len()
        )));
    }
    if let Some(t) = tokens.iter().find(|t| t.len() != grid * grid) {
        return Err(Error::InvalidInput(format!(
            "seamless tiling: a candidate has {} tokens, not {grid}×{grid}",
            t.len()
        )));
    }
    let side = g * grid;
    Ok(ndarray::Array3::from_shape_fn(
        (1, side, side),
        |(_, r, c)| {
            let k = (c / grid) * g + r / grid;
            i64::from(tokens[k][(r % grid) * grid + c % grid])
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seamless_tiles_as_min_dalle() {
        // min-dalle: z.view([g, g, 16, 16]).flatten(1, 2).transpose(1, 0).flatten(1, 2), here
        // with 2×2 grids of g = 2: candidate k holds 10k + cell.
        let tokens: Vec<Vec<u32>> = (0..4)
            .map(|k| (0..4).map(|c| 10 * k + c).collect())
            .collect();
        let t = seamless_tokens(&tokens, 2).unwrap();
        let rows: Vec<Vec<i64>> = t
            .outer_iter()
            .next()
            .unwrap()
            .outer_iter()
            .map(|r| r.to_vec())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![0, 1, 20, 21],
                vec![2, 3, 22, 23],
                vec![10, 11, 30, 31],
                vec![12, 13, 32, 33],
            ]
        );
        assert!(seamless_tokens(&tokens[..3], 2).is_err());
    }

    #[test]
    fn text_rows_follow_min_dalle() {
        let a = MinDalleAttributes {
            layers: 1,
            heads: 1,
            head_dim: 8,
            dim: 8,
            glu_dim: 8,
            text_length: 5,
            image_length: 4,
            decoder_vocab: 5,
            image_codes: 4,
            start_token: 3,
            bos_id: 0,
            eos_id: 2,
            pad_id: 1,
            kv_cache: dalle_bundle::KvCacheAttribute::Concat,
        };
        let rows = |t: &[u32]| text_rows(&a, t).unwrap();
        assert_eq!(
            rows(&[7, 8, 0, 0]),
            (vec![0, 7, 8, 2, 1], vec![0, 2, 1, 1, 1])
        );
        // text_length − 2 ids: </s> still fits.
        assert_eq!(
            rows(&[7, 8, 9, 0]),
            (vec![0, 7, 8, 9, 2], vec![0, 2, 1, 1, 1])
        );
        // text_length − 1 ids: min-dalle's [:64] drops </s>, and the unconditional row takes
        // the last kept id.
        assert_eq!(
            rows(&[7, 8, 9, 6]),
            (vec![0, 7, 8, 9, 6], vec![0, 6, 1, 1, 1])
        );
        assert_eq!(
            rows(&[0, 0, 0, 0]),
            (vec![0, 2, 1, 1, 1], vec![0, 2, 1, 1, 1])
        );
    }
}
