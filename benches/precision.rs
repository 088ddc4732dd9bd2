//! Bench: the decoder of one checkpoint exported at several `--precision`s, side by side on
//! ONNX Runtime's CPU provider: logits error against the float32 bundle, and decode-step time.
//!
//! Every bundle gets the same token sequence: a prefill of BOS + the text positions (a few
//! text ids, then pads) + `PREC_PRIME` image codes, then `PREC_STEPS` decode steps, each
//! feeding one more fixed image code (teacher forcing, so every bundle sees the same inputs
//! whatever its logits). Each call goes through [`dalle::generate::OrtDecoder`], the runtime's
//! decoder step (state in the bundle's dtype, bound with IoBinding), at batch 1. Per bundle:
//! max and mean |logit − float32 logit| over every step (and relative to the float32 logits'
//! standard deviation), top-1 agreement, top-16 overlap, and the median time of one decode
//! step (`DecoderStep::step`, the call inside ONNX Runtime plus its bindings), after
//! `PREC_WARMUP` untimed steps. Bundles run one after another in one process, the float32
//! one first; the whole sweep is repeated `PREC_REPEATS` times and the step times pooled, in
//! rotating order, so load changes hit every bundle alike.
//!
//! Prints one JSON line on stdout. Environment (`cargo bench` passes its own arguments):
//! `PREC_BUNDLES` (required: `label=dir,label=dir,…`, the first is the float32 reference),
//! `PREC_PRIME` (default 256), `PREC_STEPS` (default 24), `PREC_WARMUP` (default 2),
//! `PREC_REPEATS` (default 3).
//!
//! ```text
//! PREC_BUNDLES=fp32=/tmp/b32,fp16=/tmp/b16,int8=/tmp/b8 cargo bench --bench precision
//! ```

use anyhow::{Context, Result, bail};
use dalle::generate::{DecoderStep, OrtDecoder};
use dalle::{Bundle, EpChoice, EpOptions};
use dalle_bundle::GraphRole;
use ndarray::Array2;
use serde_json::json;
use std::time::Instant;

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a count")),
        _ => Ok(default),
    }
}

struct Run {
    logits: Vec<Vec<f32>>,
    step_ms: Vec<f64>,
}

fn run(dir: &str, prime: usize, steps: usize, warmup: usize) -> Result<Run> {
    let options = EpOptions {
        ep: EpChoice::Cpu,
        ..EpOptions::default()
    };
    let mut bundle = Bundle::open(dir, options)?;
    let layout = bundle
        .manifest()
        .token_layout
        .clone()
        .context("the bundle has no token layout")?;
    let spec = bundle.manifest().graph(GraphRole::Decoder)?.clone();
    let session = bundle.take_session(GraphRole::Decoder)?;
    let mut decoder = OrtDecoder::new(session.into_session(), &spec, &layout)?;
    let image = |i: usize| {
        (layout.image_token_offset + (i as u64 * 2654435761) % layout.image_vocab_size) as i64
    };
    let mut ids = vec![layout.bos_id as i64];
    ids.extend((0..layout.text_length).map(|i| {
        if i < 6 {
            (1 + i * 11) as i64 % layout.text_vocab_size as i64
        } else {
            (layout.pad_id_base + i) as i64
        }
    }));
    ids.extend((0..prime).map(image));
    let mut state = decoder.empty_state(1)?;
    let vocab = layout.image_vocab_size as usize;
    let mut logits = Array2::<f32>::zeros((1, vocab));
    let prefill = Array2::from_shape_vec((1, ids.len()), ids)?;
    decoder.step(prefill.view(), &mut state, &mut logits)?;
    let mut out = Run {
        logits: vec![logits.iter().copied().collect()],
        step_ms: Vec::new(),
    };
    for s in 0..warmup + steps {
        let next = Array2::from_shape_vec((1, 1), vec![image(prime + s)])?;
        let started = Instant::now();
        decoder.step(next.view(), &mut state, &mut logits)?;
        let took = started.elapsed().as_secs_f64() * 1e3;
        if s >= warmup {
            out.step_ms.push(took);
            out.logits.push(logits.iter().copied().collect());
        }
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn top(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

fn main() -> Result<()> {
    let spec = std::env::var("PREC_BUNDLES").context("set PREC_BUNDLES=label=dir,...")?;
    let bundles: Vec<(String, String)> = spec
        .split(',')
        .map(|p| match p.split_once('=') {
            Some((l, d)) => Ok((l.to_string(), d.to_string())),
            None => bail!("PREC_BUNDLES entry {p:?} is not label=dir"),
        })
        .collect::<Result<_>>()?;
    if bundles.len() < 2 {
        bail!("PREC_BUNDLES needs the float32 reference and at least one other bundle");
    }
    let prime = env_count("PREC_PRIME", 256)?;
    let steps = env_count("PREC_STEPS", 24)?;
    let warmup = env_count("PREC_WARMUP", 2)?;
    let repeats = env_count("PREC_REPEATS", 3)?.max(1);
    dalle::ort_lib::load(None, false)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); bundles.len()];
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); bundles.len()];
    for r in 0..repeats {
        for k in 0..bundles.len() {
            let i = (k + r) % bundles.len();
            let out = run(&bundles[i].1, prime, steps, warmup)
                .with_context(|| format!("bundle {}", bundles[i].0))?;
            times[i].extend(out.step_ms);
            logits[i] = out.logits;
        }
    }
    let reference = &logits[0];
    let n: usize = reference.iter().map(Vec::len).sum();
    let mean_ref = reference
        .iter()
        .flatten()
        .map(|&x| f64::from(x))
        .sum::<f64>()
        / n as f64;
    let std_ref = (reference
        .iter()
        .flatten()
        .map(|&x| (f64::from(x) - mean_ref).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    let mut rows = Vec::new();
    for (i, (label, dir)) in bundles.iter().enumerate() {
        let (mut max, mut sum, mut top1, mut overlap) = (0.0f64, 0.0f64, 0usize, 0usize);
        for (got, want) in logits[i].iter().zip(reference) {
            for (g, w) in got.iter().zip(want) {
                let d = f64::from((g - w).abs());
                max = max.max(d);
                sum += d;
            }
            top1 += usize::from(top(got, 1) == top(want, 1));
            let (a, b) = (top(got, 16), top(want, 16));
            overlap += a.iter().filter(|x| b.contains(x)).count();
        }
        let calls = logits[i].len();
        rows.push(json!({
            "label": label,
            "bundle": dir,
            "logits_max_abs_error": max,
            "logits_mean_abs_error": sum / n as f64,
            "max_error_over_std": max / std_ref,
            "mean_error_over_std": sum / n as f64 / std_ref,
            "top1_agreement": top1 as f64 / calls as f64,
            "top16_overlap": overlap as f64 / (16 * calls) as f64,
            "step_ms_median": median(times[i].clone()),
            "steps_timed": times[i].len(),
        }));
    }
    println!(
        "{}",
        json!({
            "prime": prime, "steps": steps, "warmup": warmup, "repeats": repeats,
            "reference_logits_std": std_ref, "calls_compared": reference.len(),
            "bundles": rows,
        })
    );
    Ok(())
}
