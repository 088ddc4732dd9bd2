//! [`ImageTokenModel`] for DALLE-pytorch bundles: one decoder over the unified vocabulary
//! (`generate::ids`: BOS, text with per-position pads, image codes shifted by
//! `image_token_offset`), whose rows live in a [`SlotBatch`]; images through the bundle's
//! dVAE ([`BundleCodec`]).

use super::batch::{BatchPrompt, SlotBatch};
use super::model::{ImageGeometry, ImageTokenModel, Prefill, Slot, StepCost};
use crate::bundle::Bundle;
use crate::dvae;
use crate::error::{Error, Result};
use crate::generate::{DecoderStep, OrtDecoder, ids};
use dalle_bundle::io::dims::BATCH;
use dalle_bundle::{GraphRole, TokenLayout};
use image::RgbImage;
use ndarray::{Array2, Array3, Array4, Axis, concatenate};
use std::time::{Duration, Instant};

/// Turns token grids into pixels and pictures into priming codes.
pub trait ImageCodec {
    /// Codes of the first `rows` token rows of `image` (`grid` tokens per row).
    fn encode_prime(&mut self, image: &RgbImage, rows: usize, grid: usize) -> Result<Vec<u32>>;
    /// Pixels `[n, 3, H, W]` of complete `grid × grid` token grids.
    fn decode(&mut self, grids: &[Vec<u32>], grid: usize) -> Result<Array4<f32>>;
}

/// The dVAE graphs of a bundle (`dvae_encoder` for priming, `dvae_decoder` for pixels).
pub struct BundleCodec {
    bundle: Bundle,
    vocab: u64,
}

impl BundleCodec {
    /// Checks that the bundle has a `dvae_decoder` (the encoder is needed only for priming).
    pub fn new(bundle: Bundle, vocab: u64) -> Result<BundleCodec> {
        bundle.manifest().graph(GraphRole::DvaeDecoder)?;
        Ok(BundleCodec { bundle, vocab })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn bundle_mut(&mut self) -> &mut Bundle {
        &mut self.bundle
    }
}

/// The largest batch a graph's manifest range allows (`None`: no limit).
pub fn batch_max(bundle: &Bundle, role: GraphRole) -> Result<Option<usize>> {
    Ok(bundle
        .manifest()
        .graph(role)?
        .dim_ranges
        .get(BATCH)
        .map(|r| usize::try_from(r.max).unwrap_or(usize::MAX).max(1)))
}

impl ImageCodec for BundleCodec {
    fn encode_prime(&mut self, image: &RgbImage, rows: usize, grid: usize) -> Result<Vec<u32>> {
        self.bundle.manifest().graph(GraphRole::DvaeEncoder)?;
        let tokens = dvae::encode(&mut self.bundle, image)?;
        if tokens.shape() != [1, grid, grid] {
            return Err(Error::InvalidInput(format!(
                "the dVAE encoder made a {:?} token grid; the decoder expects [1, {grid}, {grid}]",
                tokens.shape()
            )));
        }
        tokens
            .iter()
            .take(rows * grid)
            .map(|&t| {
                u32::try_from(t)
                    .ok()
                    .filter(|&c| u64::from(c) < self.vocab)
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "the dVAE encoder returned code {t}, outside the decoder's codebook 0..{}",
                            self.vocab
                        ))
                    })
            })
            .collect()
    }

    fn decode(&mut self, grids: &[Vec<u32>], grid: usize) -> Result<Array4<f32>> {
        decode_grids(&mut self.bundle, grids, grid)
    }
}

/// Pixels `[n, 3, H, W]` of complete `grid × grid` token grids through the bundle's
/// `dvae_decoder` graph, in batches its manifest range allows.
pub(crate) fn decode_grids(
    bundle: &mut Bundle,
    grids: &[Vec<u32>],
    grid: usize,
) -> Result<Array4<f32>> {
    let flat: Vec<i64> = grids.iter().flatten().map(|&c| i64::from(c)).collect();
    let all = Array3::from_shape_vec((grids.len(), grid, grid), flat)
        .map_err(|e| Error::InvalidInput(format!("image tokens: {e}")))?;
    let chunk = batch_max(bundle, GraphRole::DvaeDecoder)?.unwrap_or(grids.len().max(1));
    let mut parts = vec![];
    for part in all.axis_chunks_iter(Axis(0), chunk) {
        parts.push(dvae::decode_pixels(bundle, &part.to_owned())?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| Error::InvalidInput(format!("decoded pixels: {e}")))
}

/// A DALLE-pytorch model: see the module docs.
pub struct DallePytorch<D: DecoderStep, C> {
    layout: TokenLayout,
    geometry: ImageGeometry,
    batch: SlotBatch<D>,
    codec: C,
}

/// The ONNX Runtime DALLE-pytorch model.
pub type OrtDallePytorch = DallePytorch<OrtDecoder, BundleCodec>;

/// How long opening a bundle's model took (ONNX Runtime session creation), kept apart from
/// generation timings.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadTimings {
    /// Creating the `decoder` and `dvae_decoder` sessions.
    pub sessions: Duration,
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| Error::InvalidInput(format!("token layout: {what} {v} too large")))
}

impl<D: DecoderStep, C: ImageCodec> DallePytorch<D, C> {
    /// A model over `decoder` whose calls hold at most `max_rows` rows.
    pub fn new(layout: TokenLayout, decoder: D, codec: C, max_rows: usize) -> Result<Self> {
        let geometry = ImageGeometry {
            grid: to_usize(layout.image_grid, "image_grid")?,
            vocab: to_usize(layout.image_vocab_size, "image_vocab_size")?,
            total_vocab: to_usize(layout.total_vocab_size, "total_vocab_size")?,
        };
        if geometry.grid == 0 || geometry.vocab == 0 {
            return Err(Error::InvalidInput(
                "token layout: the image grid and codebook must not be empty".into(),
            ));
        }
        let idle = ids::image_id(&layout, 0);
        Ok(DallePytorch {
            layout,
            geometry,
            batch: SlotBatch::new(decoder, max_rows, idle),
            codec,
        })
    }

    pub fn layout(&self) -> &TokenLayout {
        &self.layout
    }

    pub fn batch(&self) -> &SlotBatch<D> {
        &self.batch
    }

    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }
}

impl OrtDallePytorch {
    /// Opens the decoder session of `bundle` (ONNX Runtime loaded) and keeps the bundle for the
    /// dVAE (and CLIP) sessions. `max_rows` caps the rows of one decoder call further than the
    /// graph's batch range.
    pub fn from_bundle(
        mut bundle: Bundle,
        max_rows: Option<usize>,
    ) -> Result<(OrtDallePytorch, LoadTimings)> {
        let layout = bundle
            .manifest()
            .token_layout
            .clone()
            .ok_or(Error::NoTokenLayout)?;
        let spec = bundle.manifest().graph(GraphRole::Decoder)?.clone();
        let range = batch_max(&bundle, GraphRole::Decoder)?;
        let started = Instant::now();
        let decoder = bundle.take_decoder_sessions()?;
        bundle.session(GraphRole::DvaeDecoder)?;
        let timings = LoadTimings {
            sessions: started.elapsed(),
        };
        let decoder = OrtDecoder::from_sessions(decoder, &spec, &layout)?;
        let rows = match (range, max_rows) {
            (Some(r), Some(m)) => r.min(m),
            (Some(r), None) => r,
            (None, Some(m)) => m,
            (None, None) => usize::MAX,
        };
        let codec = BundleCodec::new(bundle, layout.image_vocab_size)?;
        Ok((DallePytorch::new(layout, decoder, codec, rows)?, timings))
    }
}

impl<D: DecoderStep, C: ImageCodec> ImageTokenModel for DallePytorch<D, C> {
    type Prompt = BatchPrompt<D::State>;

    fn geometry(&self) -> ImageGeometry {
        self.geometry
    }

    fn max_rows(&self) -> usize {
        self.batch.max_rows()
    }

    fn prefill(
        &mut self,
        text: &[u32],
        prime: &[u32],
        guided: bool,
    ) -> Result<Prefill<Self::Prompt>> {
        let mut cond = ids::text_row(&self.layout, text)?;
        ids::push_image_codes(&self.layout, &mut cond, prime)?;
        let mut rows = vec![cond];
        if guided {
            let mut uncond = ids::unconditional_row(&self.layout)?;
            ids::push_image_codes(&self.layout, &mut uncond, prime)?;
            rows.push(uncond);
        }
        let width = rows[0].len();
        let n = rows.len();
        let ids = Array2::from_shape_vec((n, width), rows.concat())
            .map_err(|e| Error::InvalidInput(format!("prefill ids: {e}")))?;
        let started = Instant::now();
        let prompt = self.batch.prefill(ids)?;
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
        let offset = self.layout.image_token_offset as i64;
        self.batch
            .step(feeds.iter().map(|&(s, code)| (s, offset + i64::from(code))))
    }

    fn logits(&self, slot: Slot) -> Result<&[f32]> {
        self.batch.logits(slot)
    }

    fn encode_prime(&mut self, image: &RgbImage, rows: usize) -> Result<Vec<u32>> {
        self.codec.encode_prime(image, rows, self.geometry.grid)
    }

    fn decode_images(&mut self, grids: &[Vec<u32>]) -> Result<Array4<f32>> {
        self.codec.decode(grids, self.geometry.grid)
    }
}
