//! GPU check, one provider per process (driven by `scripts/gpu-check.sh`): every graph of a
//! bundle run on deterministic inputs, its outputs compared with the CPU provider's, and timed.
//!
//! For each graph of the bundle (pipeline order): session creation (`session_ms`: for TensorRT
//! the engine build when the cache is cold, the cache load when warm), the first run
//! (`first_run_ms`, lazy builds included) and `GPU_CHECK_RUNS` timed runs (median). The
//! decoder (`concat` layout) is run as generation runs it: a prefill of BOS + the text positions
//! with zero-length state, then `GPU_CHECK_STEPS` one-token steps, each fed the previous step's
//! `present_*` (`step_ms`: median over the steps; the past grows from text_length + 1).
//! In-place decoders get the prefill only (their GPU path is not float32).
//!
//! With `GPU_CHECK_PROVIDER=cpu` the outputs are written as the reference
//! (`<out>/reference/<graph>/<output>.npy`, decoder steps as `step_<i>.<output>.npy`); with
//! `cuda` or `tensorrt` they are compared with it: max |error| per output, within
//! `GPU_CHECK_ATOL` (default 1e-3: the CUDA provider and TensorRT use TF32 for float32 matmuls
//! and convolutions by default, ~1e-3 relative; the outputs here are O(1)). Peak resident memory
//! of the process (`VmHWM`) is reported; GPU memory is sampled by the script (`nvidia-smi`).
//!
//! Inputs (the same in every process): pixels and pixel values from a fixed LCG; dVAE codes
//! `31 i mod vocab_size`; CLIP ids BOS, six word ids below the end-of-text id, EOT, pads;
//! decoder text ids `1 + (97 i mod (text_vocab_size − 1))`, image codes
//! `31 i mod image_vocab_size`.
//!
//! Environment: `GPU_CHECK_BUNDLE` (required), `GPU_CHECK_OUT` (required), `GPU_CHECK_PROVIDER`
//! (`cpu`, `cuda`, `tensorrt`; default `cpu`), `GPU_CHECK_RUNS` (10), `GPU_CHECK_STEPS` (32),
//! `GPU_CHECK_ATOL`, `GPU_CHECK_TRT_CACHE` (TensorRT engine + timing cache folder),
//! `GPU_CHECK_DEVICE` (0). Prints one JSON object on stdout and writes it to
//! `<out>/<provider>[-<label>].json` (`GPU_CHECK_LABEL`, e.g. `cold`/`warm`); exits 1 when an
//! output is outside the tolerance.
//!
//! ```text
//! GPU_CHECK_BUNDLE=b GPU_CHECK_OUT=o GPU_CHECK_PROVIDER=cpu cargo bench --bench gpu_check
//! ```

use anyhow::{Context, Result, bail};
use dalle::{Bundle, EpChoice, EpOptions};
use dalle_bundle::attributes::DvaeAttributes;
use dalle_bundle::io::decoder::{CACHE_LENGTH, INPUT_IDS, present_for};
use dalle_bundle::{DType, Dim, GraphRole, GraphSpec, Manifest};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use ort::value::{DynValue, Tensor};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A host tensor of one of the types the bundles' graphs take.
#[derive(Clone)]
enum Host {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Host {
    fn value(&self) -> Result<DynValue> {
        Ok(match self {
            Host::F32(a) => Tensor::from_array(a.clone())?.into_dyn(),
            Host::I64(a) => Tensor::from_array(a.clone())?.into_dyn(),
        })
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_num<T: std::str::FromStr>(name: &str, default: &str) -> Result<T> {
    let v = env_or(name, default);
    v.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number"))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Uniform [0, 1) from a fixed LCG, `n` values starting at `seed`.
fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / ((1u64 << 24) as f32)
        })
        .collect()
}

/// A dim's size: fixed, or the `opt` of its range.
fn size(spec: &GraphSpec, d: &Dim) -> Result<usize> {
    match d {
        Dim::Fixed(n) => Ok(usize::try_from(*n)?),
        Dim::Symbolic(s) => {
            let r = spec
                .dim_ranges
                .get(s)
                .with_context(|| format!("dim `{s}` has no range in the manifest"))?;
            Ok(usize::try_from(r.opt)?)
        }
    }
}

fn shape(spec: &GraphSpec, dims: &[Dim], overrides: &BTreeMap<&str, usize>) -> Result<Vec<usize>> {
    dims.iter()
        .map(|d| match d {
            Dim::Symbolic(s) if overrides.contains_key(s.as_str()) => Ok(overrides[s.as_str()]),
            _ => size(spec, d),
        })
        .collect()
}

/// The inputs of a non-decoder graph.
fn graph_inputs(
    manifest: &Manifest,
    role: GraphRole,
    spec: &GraphSpec,
) -> Result<Vec<(String, Host)>> {
    let one = BTreeMap::from([(dalle_bundle::io::dims::BATCH, 1usize)]);
    let mut out = vec![];
    for (k, t) in spec.inputs.iter().enumerate() {
        let sh = shape(spec, &t.dims, &one)?;
        let n: usize = sh.iter().product();
        let host = match (t.dtype, role) {
            (DType::F32, GraphRole::ClipImage) => Host::F32(ArrayD::from_shape_vec(
                IxDyn(&sh),
                lcg(k as u64 + 11, n)
                    .into_iter()
                    .map(|v| 4.0 * v - 2.0)
                    .collect(),
            )?),
            (DType::F32, _) => Host::F32(ArrayD::from_shape_vec(IxDyn(&sh), lcg(k as u64 + 7, n))?),
            (DType::I64, GraphRole::DvaeDecoder) => {
                let vocab = DvaeAttributes::from_spec(spec)?.vocab_size as i64;
                Host::I64(ArrayD::from_shape_vec(
                    IxDyn(&sh),
                    (0..n as i64).map(|i| (i * 31) % vocab).collect(),
                )?)
            }
            (DType::I64, GraphRole::ClipText) => {
                let c = manifest
                    .clip
                    .as_ref()
                    .context("clip_text without manifest.clip")?;
                let ctx = *sh.last().context("clip input_ids rank")?;
                let row: Vec<i64> = (0..ctx)
                    .map(|i| match i {
                        0 => c.bos_id as i64,
                        // Word ids below the end-of-text id (CLIP's largest special id).
                        1..=6 => 1 + (17 * i as i64) % (c.eos_id as i64 - 1).max(1),
                        7 => c.eos_id as i64,
                        _ => c.pad_id as i64,
                    })
                    .collect();
                Host::I64(ArrayD::from_shape_vec(IxDyn(&sh), row.repeat(n / ctx))?)
            }
            (d, r) => bail!("graph {r}: no synthetic input for `{}` ({d:?})", t.name),
        };
        out.push((t.name.clone(), host));
    }
    Ok(out)
}

/// Runs `session` on `inputs`: outputs by name, in graph order.
fn run(s: &mut ort::session::Session, inputs: &[(String, Host)]) -> Result<Vec<(String, Host)>> {
    let names: Vec<String> = s.outputs().iter().map(|o| o.name().to_string()).collect();
    let values: Vec<(String, DynValue)> = inputs
        .iter()
        .map(|(n, h)| Ok((n.clone(), h.value()?)))
        .collect::<Result<_>>()?;
    let outputs = s.run(values)?;
    names
        .into_iter()
        .map(|n| {
            let v = &outputs[n.as_str()];
            let h = if let Ok(a) = v.try_extract_array::<f32>() {
                Host::F32(a.to_owned())
            } else {
                Host::I64(v.try_extract_array::<i64>()?.to_owned())
            };
            Ok((n, h))
        })
        .collect()
}

/// The decoder's prefill inputs: BOS + text ids, every state input with a zero-length past (or
/// the fixed capacity and `cache_length` 0 for an in-place cache).
fn decoder_prefill(manifest: &Manifest, spec: &GraphSpec) -> Result<Vec<(String, Host)>> {
    let layout = manifest
        .token_layout
        .as_ref()
        .context("decoder without token_layout")?;
    let text = usize::try_from(layout.text_length)?;
    let mut ids = vec![layout.bos_id as i64];
    let tv = layout.text_vocab_size.max(2) as i64;
    ids.extend((0..text as i64).map(|i| 1 + (97 * i) % (tv - 1)));
    let mut out = vec![(
        INPUT_IDS.to_string(),
        Host::I64(ArrayD::from_shape_vec(IxDyn(&[1, text + 1]), ids)?),
    )];
    let zero = BTreeMap::from([
        (dalle_bundle::io::dims::BATCH, 1usize),
        (dalle_bundle::io::dims::PAST_SEQUENCE, 0usize),
    ]);
    for t in spec.inputs.iter().filter(|t| t.name != INPUT_IDS) {
        let host = if t.name == CACHE_LENGTH {
            Host::I64(ArrayD::zeros(IxDyn(&[1])))
        } else {
            Host::F32(ArrayD::zeros(IxDyn(&shape(spec, &t.dims, &zero)?)))
        };
        out.push((t.name.clone(), host));
    }
    Ok(out)
}

fn save(dir: &Path, name: &str, h: &Host) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let f = std::fs::File::create(dir.join(format!("{name}.npy")))?;
    match h {
        Host::F32(a) => a.write_npy(f)?,
        Host::I64(a) => a.write_npy(f)?,
    }
    Ok(())
}

/// Max |error| against the reference file (for i64: the number of differing entries).
fn compare(dir: &Path, name: &str, h: &Host) -> Result<f64> {
    let path = dir.join(format!("{name}.npy"));
    let f = std::fs::File::open(&path)
        .with_context(|| format!("{}: run the cpu reference first", path.display()))?;
    Ok(match h {
        Host::F32(a) => {
            let r = ArrayD::<f32>::read_npy(f)?;
            if r.shape() != a.shape() {
                bail!("{name}: shape {:?}, reference {:?}", a.shape(), r.shape());
            }
            a.iter()
                .zip(r.iter())
                .map(|(x, y)| f64::from((x - y).abs()))
                .fold(0.0, f64::max)
        }
        Host::I64(a) => {
            let r = ArrayD::<i64>::read_npy(f)?;
            a.iter().zip(r.iter()).filter(|(x, y)| x != y).count() as f64
        }
    })
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<()> {
    let bundle_dir = PathBuf::from(
        std::env::var_os("GPU_CHECK_BUNDLE").context("GPU_CHECK_BUNDLE is required")?,
    );
    let out =
        PathBuf::from(std::env::var_os("GPU_CHECK_OUT").context("GPU_CHECK_OUT is required")?);
    let provider = env_or("GPU_CHECK_PROVIDER", "cpu");
    let ep = match provider.as_str() {
        "cpu" => EpChoice::Cpu,
        "cuda" => EpChoice::Cuda,
        "tensorrt" => EpChoice::Tensorrt,
        p => bail!("GPU_CHECK_PROVIDER={p:?}: give cpu, cuda or tensorrt"),
    };
    let runs: usize = env_num("GPU_CHECK_RUNS", "10")?;
    let steps: usize = env_num("GPU_CHECK_STEPS", "32")?;
    let atol: f64 = env_num("GPU_CHECK_ATOL", "1e-3")?;
    let device: u32 = env_num("GPU_CHECK_DEVICE", "0")?;
    let label = std::env::var("GPU_CHECK_LABEL")
        .ok()
        .filter(|l| !l.is_empty());
    let cache = std::env::var_os("GPU_CHECK_TRT_CACHE").map(PathBuf::from);
    let reference = out.join("reference");

    dalle::ort_lib::load(None, ep != EpChoice::Cpu)?;
    let manifest = Manifest::read_from_dir(&bundle_dir)?;
    let options = EpOptions {
        ep,
        device_id: device,
        trt_engine_cache: cache.clone(),
        trt_timing_cache: cache,
        ..EpOptions::default()
    };
    let mut bundle = Bundle::open(&bundle_dir, options)?;
    let mut graphs = vec![];
    let mut failures = vec![];
    for role in GraphRole::ALL
        .into_iter()
        .filter(|r| manifest.graphs.contains_key(r))
    {
        let spec = manifest.graph(role)?.clone();
        let t = Instant::now();
        let session = bundle.session(role)?;
        let session_ms = ms(t);
        let placed = format!("{:?}", session.provider());
        let s = session.session_mut();
        let is_decoder = role == GraphRole::Decoder;
        let inputs = if is_decoder {
            decoder_prefill(&manifest, &spec)?
        } else {
            graph_inputs(&manifest, role, &spec)?
        };
        let t = Instant::now();
        let first = run(s, &inputs)?;
        let first_run_ms = ms(t);
        let mut times = vec![];
        for _ in 0..runs {
            let t = Instant::now();
            run(s, &inputs)?;
            times.push(ms(t));
        }
        // Outputs to compare: the first run's, then each decoder step's.
        let mut checked: Vec<(String, Host)> = first.clone();
        let mut step_times = vec![];
        let concat = spec.inputs.iter().all(|t| t.name != CACHE_LENGTH);
        if is_decoder && concat {
            let layout = manifest.token_layout.as_ref().context("token_layout")?;
            let mut state = first;
            for i in 0..steps {
                let code = (31 * i as i64) % layout.image_vocab_size as i64;
                let mut feed = vec![(
                    INPUT_IDS.to_string(),
                    Host::I64(ArrayD::from_shape_vec(
                        IxDyn(&[1, 1]),
                        vec![layout.image_token_offset as i64 + code],
                    )?),
                )];
                for t in spec.inputs.iter().filter(|t| t.name != INPUT_IDS) {
                    let present = present_for(&t.name).context("state input without present")?;
                    let (_, h) = state
                        .iter()
                        .find(|(n, _)| *n == present)
                        .with_context(|| format!("no output {present}"))?;
                    feed.push((t.name.clone(), h.clone()));
                }
                let t = Instant::now();
                state = run(s, &feed)?;
                step_times.push(ms(t));
                for (n, h) in &state {
                    if !n.starts_with("present") {
                        checked.push((format!("step_{i}.{n}"), h.clone()));
                    }
                }
            }
        }
        let dir = reference.join(role.name());
        let mut errors = serde_json::Map::new();
        for (name, h) in &checked {
            if ep == EpChoice::Cpu {
                save(&dir, name, h)?;
            } else {
                let e = compare(&dir, name, h)?;
                let ok = match h {
                    Host::F32(_) => e <= atol,
                    Host::I64(_) => e == 0.0,
                };
                if !ok {
                    failures.push(format!("{role}/{name}: {e:e}"));
                }
                errors.insert(name.clone(), json!(e));
            }
        }
        let worst = errors.values().filter_map(Json::as_f64).fold(0.0, f64::max);
        eprintln!(
            "{provider}: {role}: session {session_ms:.1} ms, first run {first_run_ms:.1} ms, \
             run {:.3} ms{}{}",
            median(times.clone()),
            if step_times.is_empty() {
                String::new()
            } else {
                format!(", step {:.3} ms", median(step_times.clone()))
            },
            if ep == EpChoice::Cpu {
                String::new()
            } else {
                format!(", max |error| {worst:.2e}")
            }
        );
        graphs.push(json!({
            "graph": role.name(),
            "placed_on": placed,
            "session_ms": session_ms,
            "first_run_ms": first_run_ms,
            "run_ms_median": median(times),
            "runs": runs,
            "decode_steps": step_times.len(),
            "step_ms_median": (!step_times.is_empty()).then(|| median(step_times.clone())),
            "step_ms_first": step_times.first(),
            "step_ms_last": step_times.last(),
            "max_abs_error_vs_cpu": (ep != EpChoice::Cpu).then_some(Json::Object(errors)),
        }));
    }
    let result = json!({
        "provider": provider,
        "label": label,
        "bundle": bundle_dir.display().to_string(),
        "atol": atol,
        "peak_rss_mib": peak_rss_mib(),
        "graphs": graphs,
        "failures": failures,
    });
    std::fs::create_dir_all(&out)?;
    let file = match &label {
        Some(l) => format!("{provider}-{l}.json"),
        None => format!("{provider}.json"),
    };
    std::fs::write(out.join(file), serde_json::to_string_pretty(&result)?)?;
    println!("{result}");
    if !failures.is_empty() {
        bail!(
            "outputs outside |error| <= {atol:e} vs the CPU: {}",
            failures.join("; ")
        );
    }
    Ok(())
}
