//! Helpers shared by the integration tests: fixture paths, ONNX Runtime setup, running a model
//! from memory, reading `.npy` fixtures, and tolerance checks that report where they failed.
//!
//! Nothing here runs Python: fixtures were generated once by the scripts in `tools/fixtures/`
//! and committed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fuzz_targets;

use ndarray::{ArrayD, IxDyn};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::DynValue;
use std::path::{Path, PathBuf};

/// `python-free-tests/fixtures/<case>`.
pub fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(case)
}

/// The provenance the tests' bundles record.
pub fn test_provenance() -> dalle_bundle::Provenance {
    dalle_bundle::Provenance {
        exporter: "test".into(),
        sources: vec![],
        notes: vec![],
    }
}

/// A writer for a new bundle at `out` (no `--force`, default external-data policy).
pub fn test_writer(
    out: &Path,
    family: dalle_bundle::ModelFamily,
) -> dalle_export::bundle_writer::BundleWriter {
    dalle_export::bundle_writer::BundleWriter::create(
        out,
        family,
        test_provenance(),
        false,
        dalle_export::bundle_writer::ExternalDataPolicy::default(),
    )
    .unwrap_or_else(|e| panic!("cannot start a bundle at {}: {e}", out.display()))
}

/// Adds the small min-dalle fixture (`fixtures/min_dalle_small`: text encoder, `cross_kv`,
/// decoder with caches `kv_cache`; 4 heads, the default start token, no detokenizer) to `w`, as
/// `dalle-export min-dalle --model DIR --heads 4 --kv-cache …` does.
pub fn add_min_dalle_small(
    w: &mut dalle_export::bundle_writer::BundleWriter,
    kv_cache: dalle_export::kv_cache::KvCacheLayout,
) {
    use dalle_export::families::{min_dalle, quiet};
    min_dalle::add_to_bundle(
        w,
        min_dalle::BundleOptions {
            files: min_dalle::ModelFiles::from_dir(&fixture("min_dalle_small"))
                .unwrap_or_else(|e| panic!("min_dalle_small: {e}")),
            heads: Some(4),
            start_token: None,
            kv_cache,
            progress: quiet,
        },
    )
    .unwrap_or_else(|e| panic!("min_dalle_small: {e}"));
}

/// The process-wide ONNX Runtime environment. ORT-backed tests are never skipped: a missing
/// library fails with the command that installs it.
pub fn ort_env() -> Environment {
    dalle::ort_lib::load(None, false)
        .unwrap_or_else(|e| panic!("ONNX Runtime is required for these tests: {e}"))
}

/// A CPU session for a serialized model.
pub fn session_from_bytes(model: &[u8]) -> Session {
    let env = ort_env();
    Session::builder(&env)
        .and_then(|mut b| b.commit_from_memory(model))
        .unwrap_or_else(|e| panic!("ORT rejected the model: {e}"))
}

/// A CPU session for a model file (external data is resolved next to it).
pub fn session_from_file(path: &Path) -> Session {
    let env = ort_env();
    Session::builder(&env)
        .and_then(|mut b| b.commit_from_file(path))
        .unwrap_or_else(|e| panic!("ORT rejected {}: {e}", path.display()))
}

/// An output read back from ORT.
#[derive(Debug, Clone)]
pub enum Out {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Out {
    pub fn f32(self) -> ArrayD<f32> {
        match self {
            Out::F32(a) => a,
            Out::I64(_) => panic!("expected a float output, got int64"),
        }
    }
    pub fn i64(self) -> ArrayD<i64> {
        match self {
            Out::I64(a) => a,
            Out::F32(_) => panic!("expected an int64 output, got float"),
        }
    }
}

/// An f32 input value.
pub fn f32_input(a: ArrayD<f32>) -> DynValue {
    ort::value::Tensor::from_array(a).unwrap().into_dyn()
}

/// An i64 input value.
pub fn i64_input(a: ArrayD<i64>) -> DynValue {
    ort::value::Tensor::from_array(a).unwrap().into_dyn()
}

/// Runs `session` and returns every output in graph order.
pub fn run(session: &mut Session, inputs: Vec<(&str, DynValue)>) -> Vec<Out> {
    let names: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let outputs = session
        .run(inputs)
        .unwrap_or_else(|e| panic!("ORT run failed: {e}"));
    names
        .iter()
        .map(|n| {
            let v = &outputs[n.as_str()];
            if let Ok(a) = v.try_extract_array::<f32>() {
                Out::F32(a.to_owned())
            } else {
                Out::I64(v.try_extract_array::<i64>().unwrap().to_owned())
            }
        })
        .collect()
}

/// Reads a little-endian, C-order `.npy` file of `<f4` or `<i8` (as written by numpy).
pub fn read_npy(path: &Path) -> Out {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not an npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = &bytes[start + header_len..];
    if header.contains("'<f4'") {
        let v: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Out::F32(ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap())
    } else if header.contains("'<i8'") {
        let v: Vec<i64> = data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Out::I64(ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap())
    } else {
        panic!("{}: unsupported dtype in header {header}", path.display())
    }
}

/// Largest absolute difference; panics with the position and both values when above `atol`.
pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, atol: f32) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let d = (g - w).abs();
        assert!(
            !d.is_nan(),
            "{what}: NaN at flat index {i} (got {g}, want {w})"
        );
        if d > worst.0 {
            worst = (d, i);
        }
    }
    let (d, i) = worst;
    assert!(
        d <= atol,
        "{what}: max |error| {d:e} > {atol:e} at flat index {i} (got {}, want {})",
        got.iter().nth(i).unwrap(),
        want.iter().nth(i).unwrap()
    );
    d
}
