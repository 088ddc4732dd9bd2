//! The image-token loop: prefill the prompt once, broadcast its state to each batch of
//! candidates, then sample one image token per candidate per step, feeding only the new token.
//!
//! Row layout of a batch of `c` candidates: rows `0..c` are conditional; with guidance, rows
//! `c..2c` are their unconditional twins (candidate `j` ↔ rows `j` and `c + j`), each with its
//! own state, fed the same sampled token.

use super::ids;
use super::step::DecoderStep;
use crate::error::{Error, Result};
use crate::sampling::{CandidateRng, ImageTokenSampler, SamplingParams};
use dalle_bundle::TokenLayout;
use ndarray::{Array2, Axis};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to sample.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Number of candidates (images) to sample, ≥ 1.
    pub candidates: usize,
    /// Most candidates run at once (≥ 1); results do not depend on it.
    pub batch: usize,
    pub params: SamplingParams,
    /// Image codes fixed at the start of every candidate (priming: the first `R` rows).
    pub prime: Vec<u32>,
}

/// Where the time went (whole-run totals).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoopTimings {
    /// The prefill call (prompt + primed tokens), wall time.
    pub prefill: Duration,
    /// Copying the prefilled state into each batch's rows.
    pub broadcast: Duration,
    /// Decoder calls after the prefill (one per sampled token per batch, except the last).
    pub steps: usize,
    /// Wall time of the sampling loop after the prefill: sampling, state handling, model runs.
    pub loop_total: Duration,
    /// Time inside the model runs of those steps (ONNX Runtime's `run_binding`).
    pub loop_model: Duration,
}

impl LoopTimings {
    /// Mean wall time per decoder step.
    pub fn step_mean(&self) -> Duration {
        self.loop_total / u32::try_from(self.steps.max(1)).unwrap_or(u32::MAX)
    }

    /// Mean time per step spent outside the model run (sampling, bookkeeping, state handling).
    pub fn overhead_mean(&self) -> Duration {
        self.loop_total.saturating_sub(self.loop_model)
            / u32::try_from(self.steps.max(1)).unwrap_or(u32::MAX)
    }

    /// Share of the loop's wall time spent inside the model run (0..1).
    pub fn model_share(&self) -> f64 {
        let total = self.loop_total.as_secs_f64();
        if total > 0.0 {
            self.loop_model.as_secs_f64() / total
        } else {
            0.0
        }
    }
}

/// Sampled image codes, one `Vec` of `image_grid²` codes per candidate (primed codes included).
#[derive(Clone, Debug)]
pub struct TokenRun {
    pub candidates: Vec<Vec<u32>>,
    pub timings: LoopTimings,
}

/// Samples `cfg.candidates` images' worth of codes after `text` (tokenizer ids, 0 = padding).
/// `progress` is called with the number of tokens sampled since its last call.
pub fn sample_images<D: DecoderStep>(
    decoder: &mut D,
    layout: &TokenLayout,
    text: &[u32],
    cfg: &LoopConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<TokenRun> {
    let sampler = ImageTokenSampler::new(&cfg.params, layout)?;
    if cfg.candidates == 0 {
        return Err(Error::InvalidSetting {
            setting: "candidates",
            message: "must be at least 1".to_string(),
        });
    }
    if cfg.batch == 0 {
        return Err(Error::InvalidSetting {
            setting: "batch",
            message: "must be at least 1".to_string(),
        });
    }
    let image_len = usize::try_from(layout.image_length())
        .map_err(|_| Error::InvalidInput("token layout: image grid too large".to_string()))?;
    if cfg.prime.len() >= image_len {
        return Err(Error::InvalidSetting {
            setting: "init_rows",
            message: format!(
                "{} primed tokens leave nothing to sample in a {image_len}-token image",
                cfg.prime.len()
            ),
        });
    }
    let guided = sampler.guided();

    // Prefill: one conditional row (plus one unconditional row), never one per candidate.
    let mut cond = ids::text_row(layout, text)?;
    ids::push_image_codes(layout, &mut cond, &cfg.prime)?;
    let mut rows = vec![cond];
    if guided {
        let mut uncond = ids::unconditional_row(layout)?;
        ids::push_image_codes(layout, &mut uncond, &cfg.prime)?;
        rows.push(uncond);
    }
    let width = rows[0].len();
    let prefill_ids = Array2::from_shape_vec((rows.len(), width), rows.concat())
        .map_err(|e| Error::InvalidInput(format!("prefill ids: {e}")))?;
    let started = Instant::now();
    let mut prompt_state = decoder.empty_state(prefill_ids.nrows())?;
    let mut prompt_logits = Array2::<f32>::zeros((0, 0));
    decoder.step(prefill_ids.view(), &mut prompt_state, &mut prompt_logits)?;
    let mut timings = LoopTimings {
        prefill: started.elapsed(),
        ..LoopTimings::default()
    };

    let mut candidates = Vec::with_capacity(cfg.candidates);
    let mut scratch = crate::sampling::SampleScratch::default();
    let mut logits = Array2::<f32>::zeros((0, 0));
    for start in (0..cfg.candidates).step_by(cfg.batch) {
        let count = cfg.batch.min(cfg.candidates - start);
        // Row r of this batch comes from prefill row 0 (conditional) or 1 (unconditional).
        let sources: Vec<usize> = (0..count)
            .map(|_| 0)
            .chain((0..if guided { count } else { 0 }).map(|_| 1))
            .collect();
        let t = Instant::now();
        let mut state = decoder.select_rows(&prompt_state, &sources)?;
        logits.clone_from(&prompt_logits.select(Axis(0), &sources));
        timings.broadcast += t.elapsed();

        let loop_start = Instant::now();
        let mut tokens: Vec<Vec<u32>> = (0..count).map(|_| cfg.prime.clone()).collect();
        let mut rngs: Vec<CandidateRng> = (start..start + count)
            .map(|i| CandidateRng::new(cfg.params.seed, i as u64))
            .collect();
        let mut step_ids = Array2::<i64>::zeros((sources.len(), 1));
        loop {
            for (j, (seq, rng)) in tokens.iter_mut().zip(&mut rngs).enumerate() {
                let cond = logits.row(j);
                let uncond = guided.then(|| logits.row(count + j));
                let code = sampler.sample(
                    slice(&cond)?,
                    uncond.as_ref().map(slice).transpose()?,
                    rng,
                    &mut scratch,
                )?;
                seq.push(code);
                step_ids[[j, 0]] = ids::image_id(layout, code);
                if guided {
                    step_ids[[count + j, 0]] = ids::image_id(layout, code);
                }
            }
            progress(count);
            if tokens.first().map_or(0, Vec::len) >= image_len {
                break;
            }
            timings.loop_model += decoder.step(step_ids.view(), &mut state, &mut logits)?;
            timings.steps += 1;
        }
        timings.loop_total += loop_start.elapsed();
        candidates.extend(tokens);
    }
    Ok(TokenRun {
        candidates,
        timings,
    })
}

fn slice<'a>(row: &'a ndarray::ArrayView1<'a, f32>) -> Result<&'a [f32]> {
    row.as_slice()
        .ok_or_else(|| Error::InvalidInput("logits row is not contiguous".to_string()))
}
