//! Where a generation came from, for its sidecar: the bundle (path and the SHA-256 of its
//! `manifest.json`, which names every graph file's hash and the sources'), the programs'
//! versions, the ONNX Runtime build and execution provider that ran it, threads, and when it
//! started. Enough to tell two runs' results apart and to run one again.

use crate::error::{Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// See the module docs.
#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    /// The bundle directory as given.
    pub bundle: PathBuf,
    /// SHA-256 of the bundle's `manifest.json` (hex).
    pub manifest_sha256: String,
    /// The exporter that wrote the bundle (`dalle-export 0.1.0`, from the manifest).
    pub exporter: String,
    /// The program that generated (`dalle-ort 0.1.0`).
    pub runtime: String,
    /// ONNX Runtime's version ([`onnxruntime_version`]), when it is loaded.
    pub onnxruntime: Option<String>,
    /// Its build string (git commit, build type).
    pub onnxruntime_build: Option<String>,
    /// The execution provider the sessions run on (`cpu`, `cuda`, `tensorrt`).
    pub execution_provider: String,
    pub threads: Threads,
    /// Start of the run, UTC, RFC 3339 (`2026-12-01T21:47:00Z`).
    pub started: String,
}

/// Threads the run could use.
#[derive(Clone, Debug, Serialize)]
pub struct Threads {
    /// ONNX Runtime intra-op threads; `None`: its default (one per physical core).
    pub intra_op: Option<usize>,
    /// Hardware threads available to the process.
    pub available: usize,
}

impl Provenance {
    /// Collects what the bundle and the process know; `runtime` names the calling program.
    pub fn collect(
        bundle: &Path,
        exporter: &str,
        runtime: &str,
        execution_provider: &str,
        started: SystemTime,
    ) -> Result<Provenance> {
        Ok(Provenance {
            bundle: bundle.to_path_buf(),
            manifest_sha256: manifest_sha256(bundle)?,
            exporter: exporter.to_string(),
            runtime: runtime.to_string(),
            onnxruntime: onnxruntime_version(),
            onnxruntime_build: onnxruntime_build(),
            execution_provider: execution_provider.to_string(),
            threads: Threads {
                intra_op: None,
                available: std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            started: rfc3339(started),
        })
    }

    /// The short model hash of PNG parameters: the manifest hash's first 10 hex digits.
    pub fn model_hash(&self) -> String {
        self.manifest_sha256.chars().take(10).collect()
    }

    /// The bundle directory's name.
    pub fn model_name(&self) -> Option<String> {
        self.bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    }
}

/// SHA-256 (hex) of `bundle/manifest.json`.
pub fn manifest_sha256(bundle: &Path) -> Result<String> {
    let path = bundle.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path, source })?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The loaded ONNX Runtime's version (`1.31.1`): from its build string when that names a release
/// branch (`git-branch=rel-1.31.1`), else from the library's file name
/// (`libonnxruntime.so.1.31.1`); `None` before it is loaded or when neither says.
pub fn onnxruntime_version() -> Option<String> {
    let library = crate::ort_lib::loaded_library()?;
    if let Some(v) = ort::info()
        .split([',', ' '])
        .find_map(|f| f.trim().strip_prefix("git-branch=rel-"))
    {
        return Some(v.to_string());
    }
    let name = library.path.file_name()?.to_string_lossy().into_owned();
    let (_, version) = name
        .split_once(".so.")
        .or_else(|| name.split_once(".dylib."))?;
    Some(version.to_string())
}

/// ONNX Runtime's build string (`ORT Build Info: git-branch=…, git-commit-id=…`), when loaded.
pub fn onnxruntime_build() -> Option<String> {
    crate::ort_lib::loaded_library()?;
    Some(ort::info().to_string())
}

/// `t` as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_rfc3339_utc() {
        let at = |s| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_161_559), "2026-12-01T21:45:59Z");
    }
}
