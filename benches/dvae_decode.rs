//! Bench: full-size dVAE on ONNX Runtime's CPU provider, through the `dalle` library.
//!
//! Times session creation, `dvae::decode_pixels` of one `[1, 32, 32]` token grid (one 256×256
//! image) and `dvae::encode_pixels` of one 256×256 image, after a warm-up, and prints one JSON
//! line on stdout. `benches/dvae.sh` runs it beside the PyTorch peer (`benches/dvae_torch.py`);
//! see `benches/README.md`.
//!
//! Inputs come from environment variables, because `cargo bench` passes its own arguments
//! (`--bench`, filters) to a `harness = false` binary:
//!
//! - `DVAE_BUNDLE` (required): a bundle exported by `dalle-export openai-dvae`.
//! - `DVAE_TOKENS`: `.npy` tokens `[1, 32, 32]` (default: `dec_tokens.npy` of the full fixture).
//! - `DVAE_PIXELS`: `.npy` f32 `[1, 3, 256, 256]` for the encoder (default: the fixture's
//!   `enc_pixels.npy` when it has that shape, else a seeded synthetic image).
//! - `DVAE_RUNS` (default 10), `DVAE_WARMUP` (default 2).
//! - `DVAE_OUT_DIR`: where to write `ort_dec_pixels.npy` and `ort_enc_tokens.npy` so the
//!   PyTorch peer can compare outputs.
//!
//! ```text
//! DVAE_BUNDLE=/tmp/bundle cargo bench --bench dvae_decode
//! ```

use anyhow::{Context, Result, bail};
use dalle::{Bundle, EpChoice, EpOptions};
use dalle_bundle::GraphRole;
use ndarray::{Array3, Array4, ArrayD, Ix4};
use ndarray_npy::{read_npy, write_npy};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fixture `tools/fixtures/dvae_fixtures.py --config full` writes.
fn default_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures/dvae_full")
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a count")),
        _ => Ok(default),
    }
}

/// min / median / mean / max in milliseconds, plus every sample.
fn stats(samples: &[Duration]) -> serde_json::Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let mean = ms.iter().sum::<f64>() / n.max(1) as f64;
    json!({
        "runs": n,
        "min_ms": ms.first().copied().unwrap_or(f64::NAN),
        "median_ms": median,
        "mean_ms": mean,
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
        "samples_ms": ms,
    })
}

/// Runs `f` `warmup` times untimed, then `runs` times timed; returns the timings and last output.
fn time_runs<T>(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<T>,
) -> Result<(Vec<Duration>, T)> {
    for _ in 0..warmup {
        std::hint::black_box(f()?);
    }
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = f()?;
        samples.push(start.elapsed());
        last = Some(std::hint::black_box(out));
    }
    let last = last.context("no timed run")?;
    Ok((samples, last))
}

/// A seeded synthetic 256×256 image in [0, 1] (xorshift noise in 4×4-pixel cells).
fn synthetic_pixels(size: usize) -> Array4<f32> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let cells = size / 4;
    let mut cell_values = vec![0f32; 3 * cells * cells];
    for v in &mut cell_values {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v = (state >> 40) as f32 / (1u64 << 24) as f32;
    }
    Array4::from_shape_fn((1, 3, size, size), |(_, c, y, x)| {
        cell_values[(c * cells + y / 4) * cells + x / 4]
    })
}

fn encoder_pixels(fixture: &Path) -> Result<(Array4<f32>, String)> {
    let path = env_path("DVAE_PIXELS").unwrap_or_else(|| fixture.join("enc_pixels.npy"));
    if path.is_file() {
        let any: ArrayD<f32> =
            read_npy(&path).with_context(|| format!("reading {}", path.display()))?;
        if any.shape() == [1, 3, 256, 256] {
            let pixels = any
                .into_dimensionality::<Ix4>()
                .context("pixels are not 4-D")?;
            return Ok((pixels, path.display().to_string()));
        }
        eprintln!(
            "{} has shape {:?}, not [1, 3, 256, 256]: using a synthetic image",
            path.display(),
            any.shape()
        );
    }
    Ok((
        synthetic_pixels(256),
        "synthetic (seeded xorshift)".to_string(),
    ))
}

fn main() -> Result<()> {
    let fixture = default_fixture_dir();
    let bundle_dir = env_path("DVAE_BUNDLE").context(
        "set DVAE_BUNDLE to a bundle exported by `dalle-export openai-dvae` (see benches/README.md)",
    )?;
    let tokens_path = env_path("DVAE_TOKENS").unwrap_or_else(|| fixture.join("dec_tokens.npy"));
    let runs = env_count("DVAE_RUNS", 10)?;
    let warmup = env_count("DVAE_WARMUP", 2)?;
    let out_dir = env_path("DVAE_OUT_DIR");

    let tokens: Array3<i64> = dalle::npy::read_tokens(&tokens_path)?;
    if tokens.shape() != [1, 32, 32] {
        bail!(
            "{} has shape {:?}; this bench decodes one [1, 32, 32] grid (one 256×256 image)",
            tokens_path.display(),
            tokens.shape()
        );
    }

    let start = Instant::now();
    dalle::ort_lib::load(None, false)?;
    let ort_load = start.elapsed();
    let library = dalle::ort_lib::loaded_library()
        .map(|l| l.path.display().to_string())
        .unwrap_or_default();

    let options = EpOptions {
        ep: EpChoice::Cpu,
        ..EpOptions::default()
    };
    let mut bundle = Bundle::open(&bundle_dir, options)?;

    let start = Instant::now();
    bundle.session(GraphRole::DvaeDecoder)?;
    let decoder_session = start.elapsed();
    let (decode_samples, pixels) = time_runs(warmup, runs, || {
        Ok(dalle::dvae::decode_pixels(&mut bundle, &tokens)?)
    })?;

    let mut encode = serde_json::Value::Null;
    let mut encoder_session = None;
    let mut enc_tokens = None;
    if bundle
        .manifest()
        .graphs
        .contains_key(&GraphRole::DvaeEncoder)
    {
        let (input, source) = encoder_pixels(&fixture)?;
        let start = Instant::now();
        bundle.session(GraphRole::DvaeEncoder)?;
        encoder_session = Some(start.elapsed().as_secs_f64() * 1e3);
        let (samples, out) = time_runs(warmup, runs, || {
            Ok(dalle::dvae::encode_pixels(&mut bundle, input.clone())?)
        })?;
        let mut s = stats(&samples);
        s["input"] = json!(source);
        encode = s;
        enc_tokens = Some(out);
    }

    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("ort_dec_pixels.npy");
        write_npy(&path, &pixels).with_context(|| format!("writing {}", path.display()))?;
        if let Some(t) = &enc_tokens {
            let path = dir.join("ort_enc_tokens.npy");
            write_npy(&path, t).with_context(|| format!("writing {}", path.display()))?;
        }
    }

    let report = json!({
        "bench": "dvae_decode",
        "runtime": "onnxruntime",
        "ep": "cpu",
        "ort_library": library,
        "bundle": bundle_dir.display().to_string(),
        "tokens": tokens_path.display().to_string(),
        "available_parallelism": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "intra_op_threads": "ORT default (physical cores)",
        "warmup": warmup,
        "ort_load_ms": ort_load.as_secs_f64() * 1e3,
        "decoder_session_ms": decoder_session.as_secs_f64() * 1e3,
        "decode": stats(&decode_samples),
        "encoder_session_ms": encoder_session,
        "encode": encode,
        "pixels_shape": pixels.shape(),
    });
    println!("{report}");
    Ok(())
}
