//! Text ids → image tokens → pixels on a bundle: checks the bundle, primes from an image, runs the
//! loop on the `decoder` session in batches, and decodes every candidate with `dvae_decoder`.

use super::ort_step::OrtDecoder;
use super::sample_loop::{LoopConfig, LoopTimings, sample_images};
use crate::bundle::Bundle;
use crate::dvae;
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use dalle_bundle::io::dims::BATCH;
use dalle_bundle::{GraphRole, TokenLayout};
use image::RgbImage;
use ndarray::{Array3, Array4, Axis, concatenate};
use std::time::{Duration, Instant};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// Tokenizer ids of the prompt (0 = padding), at most `text_length` of them.
    pub text_ids: Vec<u32>,
    /// Candidates (images) to sample.
    pub candidates: usize,
    /// Most candidates run at once (`None`: as many as the decoder's batch range allows).
    pub batch: Option<usize>,
    pub params: SamplingParams,
    /// Priming: an image whose first `init_rows` token rows are kept.
    pub init_image: Option<RgbImage>,
    pub init_rows: Option<u64>,
}

/// The whole run's timings.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// dVAE encoding of the init image.
    pub prime: Duration,
    pub sampling: LoopTimings,
    /// dVAE decoding of all candidates.
    pub decode: Duration,
    pub total: Duration,
}

/// Generated candidates, still in memory.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Image codes per candidate, row-major `image_grid²`.
    pub tokens: Vec<Vec<u32>>,
    /// Decoded pixels f32 `[candidates, 3, H, W]` in [0, 1].
    pub pixels: Array4<f32>,
    /// Candidates per batch actually used.
    pub batch: usize,
    /// Number of primed tokens.
    pub primed: usize,
    pub timings: Timings,
}

/// The paper's priming depth: 0.4375 of the rows (14 of 32).
pub fn default_init_rows(grid: u64) -> u64 {
    grid * 7 / 16
}

/// The token layout, or [`Error::NoTokenLayout`].
pub fn token_layout(bundle: &Bundle) -> Result<TokenLayout> {
    bundle
        .manifest()
        .token_layout
        .clone()
        .ok_or(Error::NoTokenLayout)
}

fn batch_max(bundle: &Bundle, role: GraphRole) -> Result<Option<usize>> {
    Ok(bundle
        .manifest()
        .graph(role)?
        .dim_ranges
        .get(BATCH)
        .map(|r| usize::try_from(r.max).unwrap_or(usize::MAX).max(1)))
}

/// Runs a generation on `bundle` (ONNX Runtime loaded); `progress` gets sampled-token counts.
pub fn generate(
    bundle: &mut Bundle,
    request: &GenerateRequest,
    progress: &mut dyn FnMut(usize),
) -> Result<Generation> {
    let started = Instant::now();
    let layout = token_layout(bundle)?;
    let spec = bundle.manifest().graph(GraphRole::Decoder)?.clone();
    bundle.manifest().graph(GraphRole::DvaeDecoder)?;
    request.params.validate()?;

    let guided = request.params.guided();
    let rows_per_candidate = if guided { 2 } else { 1 };
    let cap = batch_max(bundle, GraphRole::Decoder)?.map(|m| (m / rows_per_candidate).max(1));
    let wanted = request.batch.unwrap_or(request.candidates);
    if wanted == 0 {
        return Err(Error::InvalidSetting {
            setting: "batch",
            message: "must be at least 1".into(),
        });
    }
    let batch = match cap {
        Some(cap) if wanted > cap => {
            tracing::warn!(
                "batch {wanted} exceeds the decoder's batch range ({cap} candidates{}); using {cap}",
                if guided { " with guidance" } else { "" }
            );
            cap
        }
        _ => wanted,
    };

    let mut timings = Timings::default();
    let prime = match &request.init_image {
        None => vec![],
        Some(image) => {
            let t = Instant::now();
            let rows = request
                .init_rows
                .unwrap_or_else(|| default_init_rows(layout.image_grid));
            let codes = prime_codes(bundle, &layout, image, rows)?;
            timings.prime = t.elapsed();
            codes
        }
    };

    let config = LoopConfig {
        candidates: request.candidates,
        batch,
        params: request.params.clone(),
        prime,
    };
    let session = bundle.session(GraphRole::Decoder)?.session_mut();
    let mut decoder = OrtDecoder::new(session, &spec, &layout)?;
    let run = sample_images(&mut decoder, &layout, &request.text_ids, &config, progress)?;
    drop(decoder);
    timings.sampling = run.timings;

    let t = Instant::now();
    let pixels = decode_all(bundle, &layout, &run.candidates)?;
    timings.decode = t.elapsed();
    timings.total = started.elapsed();
    Ok(Generation {
        tokens: run.candidates,
        pixels,
        batch,
        primed: config.prime.len(),
        timings,
    })
}

/// dVAE-encodes `image` and keeps its first `rows` token rows.
fn prime_codes(
    bundle: &mut Bundle,
    layout: &TokenLayout,
    image: &RgbImage,
    rows: u64,
) -> Result<Vec<u32>> {
    if rows == 0 || rows >= layout.image_grid {
        return Err(Error::InvalidSetting {
            setting: "init_rows",
            message: format!(
                "must be in 1..{} (the image has {} token rows), got {rows}",
                layout.image_grid, layout.image_grid
            ),
        });
    }
    bundle.manifest().graph(GraphRole::DvaeEncoder)?;
    let tokens = dvae::encode(bundle, image)?;
    let grid = layout.image_grid as usize;
    if tokens.shape() != [1, grid, grid] {
        return Err(Error::InvalidInput(format!(
            "the dVAE encoder made a {:?} token grid; the decoder expects [1, {grid}, {grid}]",
            tokens.shape()
        )));
    }
    tokens
        .iter()
        .take(rows as usize * grid)
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|&c| u64::from(c) < layout.image_vocab_size)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the dVAE encoder returned code {t}, outside the decoder's codebook 0..{}",
                        layout.image_vocab_size
                    ))
                })
        })
        .collect()
}

/// Decodes every candidate, in chunks the `dvae_decoder` batch range allows.
fn decode_all(
    bundle: &mut Bundle,
    layout: &TokenLayout,
    tokens: &[Vec<u32>],
) -> Result<Array4<f32>> {
    let grid = layout.image_grid as usize;
    let flat: Vec<i64> = tokens.iter().flatten().map(|&c| i64::from(c)).collect();
    let all = Array3::from_shape_vec((tokens.len(), grid, grid), flat)
        .map_err(|e| Error::InvalidInput(format!("image tokens: {e}")))?;
    let chunk = batch_max(bundle, GraphRole::DvaeDecoder)?.unwrap_or(tokens.len().max(1));
    let mut parts = vec![];
    for part in all.axis_chunks_iter(Axis(0), chunk) {
        parts.push(dvae::decode_pixels(bundle, &part.to_owned())?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| Error::InvalidInput(format!("decoded pixels: {e}")))
}
