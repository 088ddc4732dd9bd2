//! Bench: one decoder step (one new image token per row) against the past length, at several
//! batch sizes, on ONNX Runtime's CPU provider through the same code the generation loop uses
//! ([`dalle::generate::OrtDecoder`]: IoBinding, state kept in ORT-owned values).
//!
//! For each batch size `b`: one prefill call of `b` text rows (BOS + 256 text positions), then
//! for each target past length `P`: feed the image tokens up to `P` in one call (untimed), run
//! `STEP_WARMUP` single-token steps (untimed), then `STEP_RUNS` timed single-token steps. Every
//! step does what `sample_images` does per step: sample one image token per row from the last
//! logits (DALLE-pytorch top-k `filter_thres` 0.9, temperature 1), write the ids, call
//! `DecoderStep::step`. The whole sweep (prefill, broadcast, every point) runs `STEP_REPEATS`
//! times with fresh states and the timed steps of each point are pooled, so a burst of other
//! load on the machine moves one repeat's samples, not a whole point. Wall time per step and the
//! time inside ORT's `run_binding` (returned
//! by `step`) are recorded, so the time outside the run (sampling, state handling, logits copy,
//! bookkeeping) is their difference. It also times `select_rows` (the broadcast of a prefilled
//! 1-row state to `b` rows, once per batch of candidates in `generate`).
//!
//! Prints one JSON line on stdout. Environment (`cargo bench` passes its own arguments):
//!
//! - `STEP_BUNDLE` (required): a bundle with a `decoder` graph and a token layout.
//! - `STEP_BATCHES` (default `1,8`), `STEP_PASTS` (default `257,512,768,1024,1268`; each is the
//!   past length before the warm-up steps, clamped so the last timed step fits the sequence).
//! - `STEP_RUNS` (default 10), `STEP_WARMUP` (default 2), `STEP_REPEATS` (default 3).
//!
//! ```text
//! STEP_BUNDLE=/tmp/bundle cargo bench --bench decode_step
//! ```

use anyhow::{Context, Result, bail};
use dalle::generate::{DecoderStep, OrtDecoder, image_id, text_row, token_layout};
use dalle::sampling::{CandidateRng, ImageTokenSampler, SamplingParams};
use dalle::{Bundle, EpChoice, EpOptions};
use dalle_bundle::GraphRole;
use ndarray::Array2;
use serde_json::json;
use std::time::{Duration, Instant};

fn env_list(name: &str, default: &str) -> Result<Vec<usize>> {
    let v = std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    v.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("{name}={v:?}: {s:?} is not a count"))
        })
        .collect()
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    Ok(env_list(name, &default.to_string())?
        .first()
        .copied()
        .unwrap_or(default))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() -> Result<()> {
    let bundle_dir = std::env::var_os("STEP_BUNDLE").context("STEP_BUNDLE is required")?;
    let batches = env_list("STEP_BATCHES", "1,8")?;
    let pasts = env_list("STEP_PASTS", "257,512,768,1024,1268")?;
    let runs = env_count("STEP_RUNS", 10)?.max(1);
    let warmup = env_count("STEP_WARMUP", 2)?;
    let repeats = env_count("STEP_REPEATS", 3)?.max(1);

    dalle::ort_lib::load(None, false)?;
    let options = EpOptions {
        ep: EpChoice::Cpu,
        ..EpOptions::default()
    };
    let mut bundle = Bundle::open(&bundle_dir, options)?;
    let layout = token_layout(&bundle)?;
    let spec = bundle.manifest().graph(GraphRole::Decoder)?.clone();
    let t = Instant::now();
    let session = bundle.session(GraphRole::Decoder)?.session_mut();
    let session_ms = ms(t.elapsed());
    let mut decoder = OrtDecoder::new(session, &spec, &layout)?;

    let params = SamplingParams {
        filter_thres: Some(0.9),
        ..SamplingParams::default()
    };
    let sampler = ImageTokenSampler::new(&params, &layout)?;
    let text_len = usize::try_from(layout.text_length)?;
    let image_len = usize::try_from(layout.image_length())?;
    let max_total = text_len + image_len; // BOS + text + image - 1 fed tokens at most
    // A short prompt's worth of ids (speed does not depend on them).
    let text: Vec<u32> = (1..=12).map(|i| i * 97).collect();
    let row = text_row(&layout, &text)?;
    let prompt_len = row.len();

    let mut results = vec![];
    for &batch in &batches {
        let mut prefill = vec![];
        let mut broadcast = vec![];
        // Per point, in order: (first past, wall times, model times) pooled over the repeats.
        let mut pooled: Vec<(usize, Vec<f64>, Vec<f64>)> = vec![];
        let mut code = 0u32;
        for repeat in 0..repeats {
            // Prefill one row, broadcast it (as `generate` does), then step.
            let mut one = decoder.empty_state(1)?;
            let mut logits = Array2::<f32>::zeros((0, 0));
            let ids = Array2::from_shape_vec((1, prompt_len), row.clone())?;
            let t = Instant::now();
            decoder.step(ids.view(), &mut one, &mut logits)?;
            prefill.push(ms(t.elapsed()));
            let t = Instant::now();
            let mut state = decoder.select_rows(&one, &vec![0; batch])?;
            broadcast.push(ms(t.elapsed()));
            drop(one);
            logits = logits.select(ndarray::Axis(0), &vec![0; batch]);

            let mut rngs: Vec<CandidateRng> = (0..batch)
                .map(|i| CandidateRng::new(7 + repeat as u64, i as u64))
                .collect();
            let mut scratch = dalle::sampling::SampleScratch::default();
            let mut step_ids = Array2::<i64>::zeros((batch, 1));
            let mut point = 0;
            for &want in &pasts {
                let want = want.min(max_total - warmup - runs);
                let past = state.past_length();
                if want < past {
                    continue;
                }
                if want > past {
                    let n = want - past;
                    let chunk: Vec<i64> = (0..batch * n)
                        .map(|i| image_id(&layout, (i as u32 * 31) % 8192))
                        .collect();
                    let ids = Array2::from_shape_vec((batch, n), chunk)?;
                    decoder.step(ids.view(), &mut state, &mut logits)?;
                }
                let first_past = state.past_length() + warmup;
                if pooled.len() == point {
                    pooled.push((first_past, vec![], vec![]));
                }
                let (_, wall, model) = &mut pooled[point];
                for i in 0..warmup + runs {
                    let t = Instant::now();
                    for (j, rng) in rngs.iter_mut().enumerate() {
                        let row = logits.row(j);
                        let slice = row.as_slice().context("logits row not contiguous")?;
                        code = sampler.sample(slice, None, rng, &mut scratch)?;
                        step_ids[[j, 0]] = image_id(&layout, code);
                    }
                    let inside = decoder.step(step_ids.view(), &mut state, &mut logits)?;
                    let total = t.elapsed();
                    if i >= warmup {
                        wall.push(ms(total));
                        model.push(ms(inside));
                    }
                }
                point += 1;
            }
            if state.past_length() > max_total {
                bail!("past {} beyond the sequence", state.past_length());
            }
        }
        let points: Vec<_> = pooled
            .into_iter()
            .map(|(first_past, wall, model)| {
                let outside: Vec<f64> = wall.iter().zip(&model).map(|(w, m)| w - m).collect();
                let step_med = median(wall.clone());
                json!({
                    "past_first": first_past,
                    "past_mean": first_past as f64 + (runs as f64 - 1.0) / 2.0,
                    "step_median_ms": step_med,
                    "step_mean_ms": mean(&wall),
                    "step_min_ms": wall.iter().copied().fold(f64::INFINITY, f64::min),
                    "run_median_ms": median(model.clone()),
                    "outside_median_ms": median(outside.clone()),
                    "outside_mean_ms": mean(&outside),
                    "outside_share": mean(&outside) / mean(&wall),
                    "tokens_per_s": batch as f64 / (step_med / 1e3),
                    "steps_ms": wall,
                })
            })
            .collect();
        results.push(json!({
            "batch": batch,
            "prefill_ms": median(prefill),
            "prefill_tokens": prompt_len,
            "broadcast_ms": median(broadcast),
            "last_code": code,
            "points": points,
        }));
    }
    println!(
        "{}",
        json!({
            "session_ms": session_ms,
            "runs": runs,
            "warmup": warmup,
            "repeats": repeats,
            "sampling": "filter_thres 0.9 (k = 5785), temperature 1",
            "batches": results,
        })
    );
    Ok(())
}
