//! Bench: min-dalle's VQGAN detokenizer at mini's real shapes on ONNX Runtime's CPU provider,
//! through the `dalle` library (the same `dvae::decode_pixels` that `dalle-ort decode` and
//! generation use).
//!
//! Exports `detoker.pt` with `dalle_export::families::vqgan::add_min_dalle_detoker` (timed),
//! creates the session (timed), then times `decode_pixels` of one `[1, 16, 16]` code grid (one
//! 256×256 image) after a warm-up, and prints one JSON line. `benches/vqgan.sh` runs it beside
//! min-dalle's own PyTorch module (`benches/vqgan_torch.py`).
//!
//! Environment (cargo bench passes its own arguments): `VQGAN_FIXTURE` (default
//! `target/fixtures/vqgan_min_dalle_full`, from `tools/fixtures/vqgan_fixtures.py --config
//! full`), `VQGAN_RUNS` (default 10), `VQGAN_WARMUP` (default 2), `VQGAN_OUT_DIR` (writes
//! `ort_pixels.npy` for the peer's comparison).

use anyhow::{Context, Result};
use dalle::{Bundle, EpChoice, EpOptions};
use dalle_bundle::{GraphRole, ModelFamily, Provenance};
use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy, exporter_version};
use ndarray::{Array3, Axis};
use ndarray_npy::write_npy;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().with_context(|| format!("{name}={v:?}")),
        _ => Ok(default),
    }
}

fn stats(samples: &[Duration]) -> serde_json::Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    json!({
        "runs": n,
        "min_ms": ms[0],
        "median_ms": median,
        "mean_ms": ms.iter().sum::<f64>() / n as f64,
        "max_ms": ms[n - 1],
    })
}

fn main() -> Result<()> {
    let fixture = std::env::var_os("VQGAN_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fixtures/vqgan_min_dalle_full")
        });
    let runs = env_count("VQGAN_RUNS", 10)?.max(1);
    let warmup = env_count("VQGAN_WARMUP", 2)?;
    let codes: Array3<i64> = dalle::npy::read_tokens(&fixture.join("codes.npy"))?;
    let one = codes.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned();

    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("bundle");
    let start = Instant::now();
    let provenance = Provenance {
        exporter: exporter_version(),
        sources: vec![],
        notes: vec![],
    };
    let mut writer = BundleWriter::create(
        &out,
        ModelFamily::DallePytorch,
        provenance,
        false,
        ExternalDataPolicy::default(),
    )?;
    dalle_export::families::vqgan::add_min_dalle_detoker(&mut writer, &fixture.join("detoker.pt"))?;
    writer.commit()?;
    let export = start.elapsed();

    dalle::ort_lib::load(None, false)?;
    let options = EpOptions {
        ep: EpChoice::Cpu,
        ..EpOptions::default()
    };
    let mut bundle = Bundle::open(&out, options)?;
    let start = Instant::now();
    bundle.session(GraphRole::DvaeDecoder)?;
    let session = start.elapsed();
    for _ in 0..warmup {
        std::hint::black_box(dalle::dvae::decode_pixels(&mut bundle, &one)?);
    }
    let mut samples = Vec::with_capacity(runs);
    let mut pixels = None;
    for _ in 0..runs {
        let t = Instant::now();
        let p = dalle::dvae::decode_pixels(&mut bundle, &one)?;
        samples.push(t.elapsed());
        pixels = Some(p);
    }
    let pixels = pixels.context("no run")?;
    if let Some(dir) = std::env::var_os("VQGAN_OUT_DIR").map(PathBuf::from) {
        std::fs::create_dir_all(&dir)?;
        write_npy(
            dir.join("ort_pixels.npy"),
            &pixels.index_axis(Axis(0), 0).to_owned(),
        )?;
    }
    let onnx_bytes = std::fs::metadata(out.join("dvae_decoder.onnx"))?.len()
        + std::fs::metadata(out.join("dvae_decoder.onnx.data"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "{}",
        json!({
            "export_ms": export.as_secs_f64() * 1e3,
            "session_ms": session.as_secs_f64() * 1e3,
            "decode": stats(&samples),
            "bundle_bytes": onnx_bytes,
            "input": format!("{}[0], [1, 16, 16]", fixture.join("codes.npy").display()),
        })
    );
    Ok(())
}
