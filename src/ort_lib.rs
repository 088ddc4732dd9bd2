//! Finding and loading the ONNX Runtime shared library (once per process).
//!
//! The `ort` crate is built with `load-dynamic`: nothing is linked at build time, and the library
//! is chosen at run time, in this order:
//!
//! 1. `--ort-lib PATH` (the caller's explicit choice);
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. `.onnxruntime/gpu/libonnxruntime.so.1.31.1`, then `.onnxruntime/cpu/...`, under the current
//!    directory and then under each ancestor of the executable's directory (so
//!    `target/release/dalle-ort` finds `<repo>/.onnxruntime`), as laid out by
//!    `scripts/setup-ort.sh [--gpu]`.
//!
//! [`locate`] is pure (it only looks at the file system) and is unit-tested; [`init`] loads the
//! library and creates the process-wide `ort` environment. Until [`init`] succeeded no
//! `ort::Error` may be created (it panics inside `ort`), so everything here reports with the
//! crate's own [`Error`].

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The ONNX Runtime version the setup script installs and the default search looks for.
pub const ORT_VERSION: &str = "1.31.1";

/// File name of the library inside `.onnxruntime/{gpu,cpu}/`.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Folder (relative to a repository root) that `scripts/setup-ort.sh` fills.
pub const DEFAULT_DIR: &str = ".onnxruntime";

/// The environment variable that names the library explicitly.
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

/// Where a library path came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibOrigin {
    Flag,
    Env,
    DefaultDir,
}

impl LibOrigin {
    /// How the origin is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            LibOrigin::Flag => "--ort-lib",
            LibOrigin::Env => ENV_VAR,
            LibOrigin::DefaultDir => "the default .onnxruntime folder",
        }
    }
}

/// A library file that exists, and where its path came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrtLibrary {
    pub path: PathBuf,
    pub origin: LibOrigin,
}

impl OrtLibrary {
    /// True when the library sits in a `gpu` flavour folder or next to the CUDA provider
    /// library, i.e. it can run the CUDA/TensorRT execution providers.
    pub fn has_gpu_providers(&self) -> bool {
        self.path
            .parent()
            .is_some_and(|dir| dir.join("libonnxruntime_providers_cuda.so").is_file())
    }
}

/// The command that installs a library, for error messages.
pub fn setup_command(gpu: bool) -> String {
    if gpu {
        "scripts/setup-ort.sh --gpu".to_string()
    } else {
        "scripts/setup-ort.sh".to_string()
    }
}

/// The folders searched for `.onnxruntime/`: the current directory, then every ancestor of the
/// executable's directory (nearest first). Duplicates are dropped.
pub fn default_search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(dir) = exe.parent() {
            for ancestor in dir.ancestors() {
                roots.push(ancestor.to_path_buf());
            }
        }
    }
    let mut unique = Vec::with_capacity(roots.len());
    for root in roots {
        if !unique.contains(&root) {
            unique.push(root);
        }
    }
    unique
}

/// The default candidate files under the given roots, in search order (per root: gpu, cpu).
pub fn default_candidates(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .flat_map(|root| {
            ["gpu", "cpu"]
                .into_iter()
                .map(move |flavor| root.join(DEFAULT_DIR).join(flavor).join(LIBRARY_FILE))
        })
        .collect()
}

/// Picks the library file: `flag`, then `env` (the value of `ORT_DYLIB_PATH`), then the default
/// candidates under `roots`. `needs_gpu` only shapes the advice in the error (`--gpu`).
pub fn locate(
    flag: Option<&Path>,
    env: Option<OsString>,
    roots: &[PathBuf],
    needs_gpu: bool,
) -> Result<OrtLibrary> {
    let fix = setup_command(needs_gpu);
    if let Some(path) = flag {
        return existing(path.to_path_buf(), LibOrigin::Flag, fix);
    }
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        return existing(PathBuf::from(value), LibOrigin::Env, fix);
    }
    let searched = default_candidates(roots);
    match searched.iter().find(|p| is_nonempty_file(p)) {
        Some(path) => Ok(OrtLibrary {
            path: path.clone(),
            origin: LibOrigin::DefaultDir,
        }),
        None => Err(Error::OrtLibraryNotFound { searched, fix }),
    }
}

fn existing(path: PathBuf, origin: LibOrigin, fix: String) -> Result<OrtLibrary> {
    if path.is_file() {
        Ok(OrtLibrary { path, origin })
    } else {
        Err(Error::OrtLibraryMissing {
            path,
            origin: origin.describe(),
            fix,
        })
    }
}

fn is_nonempty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

struct Loaded {
    env: ort::environment::Environment,
    library: OrtLibrary,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// Loads `library` and creates the process-wide ONNX Runtime environment. Loading happens once
/// per process; later calls return the same environment (and log when they asked for another
/// file, which cannot be honoured).
pub fn init(library: &OrtLibrary) -> Result<ort::environment::Environment> {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(done) = loaded.as_ref() {
        if done.library.path != library.path {
            tracing::warn!(
                "ONNX Runtime is already loaded from {}; ignoring {}",
                done.library.path.display(),
                library.path.display()
            );
        }
        return Ok(done.env.clone());
    }
    let builder = ort::init_from(&library.path).map_err(|source| Error::OrtLoad {
        path: library.path.clone(),
        source,
    })?;
    // From here on the library is loaded, so `ort::Error`s are safe to create.
    let env = builder
        .with_name("dalle-ort")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::ort("cannot create the ONNX Runtime environment", e))?;
    tracing::info!(
        "loaded ONNX Runtime from {} (via {})",
        library.path.display(),
        library.origin.describe()
    );
    *loaded = Some(Loaded {
        env: env.clone(),
        library: library.clone(),
    });
    Ok(env)
}

/// [`locate`] with the process's `ORT_DYLIB_PATH` and [`default_search_roots`], then [`init`].
pub fn load(flag: Option<&Path>, needs_gpu: bool) -> Result<ort::environment::Environment> {
    let library = locate(
        flag,
        std::env::var_os(ENV_VAR),
        &default_search_roots(),
        needs_gpu,
    )?;
    init(&library)
}

/// The environment created by [`init`], if any.
pub fn environment() -> Result<ort::environment::Environment> {
    let loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loaded
        .as_ref()
        .map(|l| l.env.clone())
        .ok_or(Error::OrtNotLoaded)
}

/// The library [`init`] loaded, if any.
pub fn loaded_library() -> Option<OrtLibrary> {
    let loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loaded.as_ref().map(|l| l.library.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not really a library").unwrap();
    }

    #[test]
    fn flag_wins_over_env_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("custom.so");
        touch(&flag);
        touch(&dir.path().join(".onnxruntime/cpu").join(LIBRARY_FILE));
        let lib = locate(
            Some(&flag),
            Some("/nonexistent/env.so".into()),
            &[dir.path().to_path_buf()],
            false,
        )
        .unwrap();
        assert_eq!(lib.path, flag);
        assert_eq!(lib.origin, LibOrigin::Flag);
    }

    #[test]
    fn missing_flag_path_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join(".onnxruntime/cpu").join(LIBRARY_FILE));
        let err = locate(
            Some(Path::new("/nonexistent/lib.so")),
            None,
            &[dir.path().to_path_buf()],
            false,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/lib.so"), "{msg}");
        assert!(msg.contains("--ort-lib"), "{msg}");
    }

    #[test]
    fn env_var_is_used_when_no_flag() {
        let dir = tempfile::tempdir().unwrap();
        let env_lib = dir.path().join("env.so");
        touch(&env_lib);
        let lib = locate(None, Some(env_lib.clone().into()), &[], false).unwrap();
        assert_eq!(
            lib,
            OrtLibrary {
                path: env_lib,
                origin: LibOrigin::Env
            }
        );
        let err = locate(None, Some("/nope/x.so".into()), &[], true).unwrap_err();
        assert!(err.to_string().contains("ORT_DYLIB_PATH"), "{err}");
        assert!(err.to_string().contains("setup-ort.sh --gpu"), "{err}");
    }

    #[test]
    fn defaults_prefer_gpu_then_cpu_and_nearest_root() {
        let near = tempfile::tempdir().unwrap();
        let far = tempfile::tempdir().unwrap();
        let near_cpu = near.path().join(".onnxruntime/cpu").join(LIBRARY_FILE);
        let far_gpu = far.path().join(".onnxruntime/gpu").join(LIBRARY_FILE);
        touch(&near_cpu);
        touch(&far_gpu);
        let roots = [near.path().to_path_buf(), far.path().to_path_buf()];
        assert_eq!(locate(None, None, &roots, false).unwrap().path, near_cpu);
        let near_gpu = near.path().join(".onnxruntime/gpu").join(LIBRARY_FILE);
        touch(&near_gpu);
        assert_eq!(locate(None, None, &roots, false).unwrap().path, near_gpu);
    }

    #[test]
    fn empty_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join(".onnxruntime/cpu").join(LIBRARY_FILE);
        std::fs::create_dir_all(cpu.parent().unwrap()).unwrap();
        std::fs::write(&cpu, b"").unwrap();
        assert!(locate(None, None, &[dir.path().to_path_buf()], false).is_err());
    }

    #[test]
    fn not_found_lists_paths_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(None, None, &[dir.path().to_path_buf()], false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(".onnxruntime/gpu/libonnxruntime.so.1.31.1"),
            "{msg}"
        );
        assert!(
            msg.contains(".onnxruntime/cpu/libonnxruntime.so.1.31.1"),
            "{msg}"
        );
        assert!(msg.contains("run `scripts/setup-ort.sh`"), "{msg}");
        let gpu = locate(None, None, &[dir.path().to_path_buf()], true).unwrap_err();
        assert!(
            gpu.to_string().contains("run `scripts/setup-ort.sh --gpu`"),
            "{gpu}"
        );
    }

    #[test]
    fn search_roots_include_executable_ancestors() {
        let roots = default_search_roots();
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        let dir = exe.parent().unwrap();
        assert!(roots.iter().any(|r| r == dir), "{roots:?}");
        assert!(roots.iter().any(|r| r == Path::new("/")), "{roots:?}");
    }
}
