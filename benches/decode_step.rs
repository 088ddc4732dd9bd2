//! Bench: one decoder step (one new image token per row) against the past length, at several
//! batch sizes, on ONNX Runtime's CPU provider, driven through the generation engine
//! ([`dalle::engine::Engine`]) exactly as `dalle-ort generate` and the server run it.
//!
//! For each batch size `b` and each target past length `P`: one request of `b` candidates whose
//! prompt is BOS + 256 text positions and `P − 257` primed image codes is admitted (its prefill
//! of one row is untimed), its rows join the batch (the valid prefix of the prompt's caches is
//! copied into each row), then `STEP_WARMUP` untimed and `STEP_RUNS` timed `Engine::step`s run:
//! each samples one image token per row from the last logits (DALLE-pytorch top-k
//! `filter_thres` 0.9, temperature 1) and makes one decoder call. The whole sweep runs
//! `STEP_REPEATS` times with other seeds and the timed steps of each point are pooled. Wall time
//! per step and the time inside ORT's `run_binding` are recorded, so the time outside the run
//! (sampling, ids, state bookkeeping, logits copy) is their difference.
//!
//! Joining and leaving: with a batch of `b` rows running at the last point, one more request
//! (1 candidate) is admitted: its prefill, the copy of its prompt into a free row (`join_ms`)
//! and the step it joins are timed; then it is cancelled and the step where its row leaves is
//! timed with the leave itself (`leave_ms`: nothing is copied with per-row positions). The first
//! join may grow the state (no free row: the running rows' prefixes are copied into a larger
//! one); a third request then joins the freed row (`join_free_ms`: only its prompt's prefix is
//! copied). Session creation is timed on its own (`session_ms`).
//!
//! Prints one JSON line on stdout. Environment (`cargo bench` passes its own arguments):
//!
//! - `STEP_BUNDLE` (required): a bundle with a `decoder` graph and a token layout.
//! - `STEP_BATCHES` (default `1,8`), `STEP_PASTS` (default `257,512,768,1024,1268`; each is the
//!   past length before the warm-up steps, clamped so the last timed step and the join/leave
//!   steps after it fit the sequence).
//! - `STEP_RUNS` (default 10), `STEP_WARMUP` (default 2), `STEP_REPEATS` (default 3).
//!
//! ```text
//! STEP_BUNDLE=/tmp/bundle cargo bench --bench decode_step
//! ```

use anyhow::{Context, Result, bail};
use dalle::engine::{
    Engine, InitInput, OrtDallePytorch, PromptInput, Request, RequestRules, SamplingOverrides,
    ValidatedRequest,
};
use dalle::generate::{DecoderStep, token_layout};
use dalle::{Bundle, EpChoice, EpOptions};
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

/// Steps the join/leave measurement takes after the last point's timed steps (the running rows
/// must not finish during it).
const JOIN_STEPS: usize = 6;

/// Times one engine step: (wall, inside ORT) in ms.
fn timed_step(engine: &mut Engine<OrtDallePytorch>) -> Result<(f64, f64)> {
    Ok(timed_step_parts(engine)?.0)
}

/// [`timed_step`] and (sampling, model call around its run) in ms.
fn timed_step_parts(engine: &mut Engine<OrtDallePytorch>) -> Result<((f64, f64), (f64, f64))> {
    let before = engine.stats.clone();
    let t = Instant::now();
    engine.step().map_err(|e| anyhow::anyhow!("{e}"))?;
    let wall = t.elapsed();
    let s = &engine.stats;
    let model = s.step_model - before.step_model;
    Ok((
        (ms(wall), ms(model)),
        (
            ms(s.sampling - before.sampling),
            ms((s.model_call - before.model_call).saturating_sub(model)),
        ),
    ))
}

fn request(
    rules: &RequestRules,
    text: &[u32],
    candidates: usize,
    seed: u64,
    prime: Vec<u32>,
) -> Result<ValidatedRequest> {
    let r = Request {
        prompt: PromptInput::Ids(text.to_vec()),
        candidates,
        sampling: SamplingOverrides {
            filter_thres: Some(0.9),
            temperature: Some(1.0),
            cond_scale: Some(1.0),
            seed: Some(seed),
            ..SamplingOverrides::default()
        },
        init: (!prime.is_empty()).then_some(InitInput::Codes(prime)),
        rerank: None,
    };
    Ok(rules.validate(r)?)
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
    let bundle = Bundle::open(&bundle_dir, options)?;
    let layout = token_layout(&bundle)?;
    let rules = RequestRules::from_bundle(&bundle)?;
    let (model, load) = OrtDallePytorch::from_bundle(bundle, None)?;
    let session_ms = ms(load.sessions);
    let per_row = model.batch().decoder().per_row_positions();
    let mut engine = Engine::new(model, None);
    if let Ok(t) = std::env::var("STEP_SAMPLING_THREADS") {
        engine.set_sampling_threads(t.parse().context("STEP_SAMPLING_THREADS")?);
    }

    let text_len = usize::try_from(layout.text_length)?;
    let image_len = usize::try_from(layout.image_length())?;
    let vocab = u32::try_from(layout.image_vocab_size)?;
    let max_total = text_len + image_len; // BOS + text + image - 1 fed tokens at most
    // A short prompt's worth of ids (speed does not depend on them).
    let text: Vec<u32> = (1..=12).map(|i| i * 97).collect();
    let prompt_len = text_len + 1;

    let mut results = vec![];
    for &batch in &batches {
        let mut prefill = vec![];
        let mut broadcast = vec![];
        let mut joins: Vec<serde_json::Value> = vec![];
        // Per point, in order: (first past, wall times, model times) pooled over the repeats.
        let mut pooled: Vec<(usize, Vec<f64>, Vec<f64>)> = vec![];
        // Per point: the sampling and model-call (outside its run) parts of each timed step.
        let mut parts: Vec<(Vec<f64>, Vec<f64>)> = vec![];
        for repeat in 0..repeats {
            for (point, &want) in pasts.iter().enumerate() {
                // Room for the timed steps and the join/leave steps after them.
                let want = want.clamp(prompt_len, max_total - warmup - runs - JOIN_STEPS);
                let prime: Vec<u32> = (0..want - prompt_len)
                    .map(|i| (i as u32 * 31) % vocab)
                    .collect();
                let seed = 7 + repeat as u64;
                let r = request(&rules, &text, batch, seed, prime)?;
                let before = engine.stats.clone();
                let id = engine.admit(r).map_err(|e| anyhow::anyhow!("{e}"))?;
                for _ in 0..warmup {
                    engine.step().map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                if point == 0 {
                    // The prompt alone (no primed codes at the first point): what admitting a
                    // request costs before its rows step.
                    prefill.push(ms(engine.stats.prefill - before.prefill));
                    broadcast.push(ms(engine.stats.join - before.join));
                }
                if pooled.len() == point {
                    pooled.push((want + warmup, vec![], vec![]));
                    parts.push((vec![], vec![]));
                }
                for _ in 0..runs {
                    let ((wall, model), (sampling, call)) = timed_step_parts(&mut engine)?;
                    pooled[point].1.push(wall);
                    pooled[point].2.push(model);
                    parts[point].0.push(sampling);
                    parts[point].1.push(call);
                }
                if repeat + 1 == repeats && point + 1 == pasts.len() {
                    // One more request joins the running batch, then leaves (last of all: the
                    // row it adds stays in the state, idle, and would ride along in later
                    // points).
                    let step_alone = median(pooled[point].1.clone());
                    let one = request(&rules, &text, 1, seed + 100, vec![])?;
                    let s0 = engine.stats.clone();
                    let t = Instant::now();
                    let other = engine.admit(one).map_err(|e| anyhow::anyhow!("{e}"))?;
                    let admit_ms = ms(t.elapsed());
                    let (join_step, _) = timed_step(&mut engine)?;
                    let join_ms = ms(engine.stats.join - s0.join);
                    let (with_it, _) = timed_step(&mut engine)?;
                    engine.cancel(other);
                    let s1 = engine.stats.clone();
                    let (leave_step, _) = timed_step(&mut engine)?;
                    // A third request joins the row the second one left: no growth, only the
                    // copy of its prompt prefix.
                    let again = request(&rules, &text, 1, seed + 200, vec![])?;
                    let s2 = engine.stats.clone();
                    let third = engine.admit(again).map_err(|e| anyhow::anyhow!("{e}"))?;
                    let (free_step, _) = timed_step(&mut engine)?;
                    let join_free_ms = ms(engine.stats.join - s2.join);
                    engine.cancel(third);
                    timed_step(&mut engine)?;
                    joins.push(json!({
                        "join_free_ms": join_free_ms,
                        "join_free_step_ms": free_step,
                        "running_rows": batch,
                        "step_ms": step_alone,
                        "admit_ms": admit_ms,
                        "prefill_ms": ms(engine.stats.prefill - s0.prefill),
                        "join_ms": join_ms,
                        "join_step_ms": join_step,
                        "step_with_it_ms": with_it,
                        "leave_ms": ms(engine.stats.leave - s1.leave),
                        "leave_step_ms": leave_step,
                    }));
                }
                engine.cancel(id);
                engine.step().map_err(|e| anyhow::anyhow!("{e}"))?;
                if !engine.is_idle() {
                    bail!("the engine still runs a request after cancelling");
                }
            }
        }
        let points: Vec<_> = pooled
            .into_iter()
            .zip(parts)
            .map(|((first_past, wall, model), (sampling, call))| {
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
                    "sampling_median_ms": median(sampling),
                    "model_call_outside_run_median_ms": median(call),
                    "tokens_per_s": batch as f64 / (step_med / 1e3),
                    "steps_ms": wall,
                })
            })
            .collect();
        let first_join = |key: &str| {
            median(
                joins
                    .iter()
                    .filter_map(|j| j[key].as_f64())
                    .collect::<Vec<f64>>(),
            )
        };
        results.push(json!({
            "batch": batch,
            "prefill_ms": median(prefill),
            "prefill_tokens": prompt_len,
            "broadcast_ms": median(broadcast),
            "join": {
                "running_rows": batch,
                "step_ms": first_join("step_ms"),
                "admit_ms": first_join("admit_ms"),
                "prefill_ms": first_join("prefill_ms"),
                "join_ms": first_join("join_ms"),
                "join_step_ms": first_join("join_step_ms"),
                "step_with_it_ms": first_join("step_with_it_ms"),
                "leave_ms": first_join("leave_ms"),
                "leave_step_ms": first_join("leave_step_ms"),
                "join_free_ms": first_join("join_free_ms"),
                "join_free_step_ms": first_join("join_free_step_ms"),
            },
            "points": points,
        }));
    }
    println!(
        "{}",
        json!({
            "session_ms": session_ms,
            "per_row_positions": per_row,
            "runs": runs,
            "warmup": warmup,
            "repeats": repeats,
            "sampling": "filter_thres 0.9 (k = 5785), temperature 1",
            "batches": results,
        })
    );
    Ok(())
}
