//! Are the CUDA / TensorRT shared libraries a GPU provider needs on the loader path?
//!
//! ONNX Runtime's GPU providers `dlopen` CUDA 13, cuBLAS, cuRAND, cuDNN 9 and (for TensorRT)
//! TensorRT 10's `libnvinfer`/`libnvonnxparser`; when one is missing its error is a bare
//! `dlopen` message, or the provider silently lacks a feature. This module looks for each library
//! by file name where the dynamic loader would for the provider libraries (`LD_LIBRARY_PATH`,
//! the folders of `/etc/ld.so.conf`, the default system folders — the providers carry no
//! `RUNPATH`, so the ONNX Runtime folder itself is not searched), or already mapped into the
//! process, and names what is missing (`--ep cuda|tensorrt` fails with it; `--ep auto` skips the
//! provider and says why).
//!
//! The names are those the `onnxruntime-gpu` 1.31.1 wheel's providers need (`readelf -d`:
//! `NEEDED` of `libonnxruntime_providers_{cuda,tensorrt}.so`; cuDNN is `dlopen`ed by the CUDA
//! provider; shared/reference/gpu-and-minidalle.md §3).

use super::ProviderKind;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// One shared library a provider needs, and what it is part of (for the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededLib {
    pub file: &'static str,
    pub part: &'static str,
}

const fn lib(file: &'static str, part: &'static str) -> NeededLib {
    NeededLib { file, part }
}

/// What the CUDA provider needs (`NEEDED` entries and the libraries it `dlopen`s).
const CUDA: &[NeededLib] = &[
    lib("libcuda.so.1", "the NVIDIA driver"),
    lib("libcudart.so.13", "the CUDA 13 runtime"),
    lib("libcublas.so.13", "cuBLAS (CUDA 13)"),
    lib("libcublasLt.so.13", "cuBLASLt (CUDA 13)"),
    lib("libcurand.so.10", "cuRAND (CUDA 13)"),
    lib("libcudnn.so.9", "cuDNN 9"),
];

/// What the TensorRT provider needs on top (TensorRT runs with CUDA behind it).
const TENSORRT: &[NeededLib] = &[
    lib("libnvinfer.so.10", "TensorRT 10.x"),
    lib("libnvonnxparser.so.10", "TensorRT 10.x's ONNX parser"),
];

/// The libraries `kind` needs, in the order they are reported.
pub fn needed(kind: ProviderKind) -> Vec<NeededLib> {
    match kind {
        ProviderKind::Cpu => Vec::new(),
        ProviderKind::Cuda => CUDA.to_vec(),
        ProviderKind::TensorRt => CUDA.iter().chain(TENSORRT).copied().collect(),
    }
}

/// The folders the loader searches, in order (duplicates removed): `LD_LIBRARY_PATH`, the
/// folders listed by `ld_so_conf` (with its `include` globs of the form `dir/*.conf`), then the
/// default system folders.
pub fn loader_dirs(ld_library_path: Option<&OsStr>, ld_so_conf: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = ld_library_path {
        dirs.extend(std::env::split_paths(p).filter(|d| !d.as_os_str().is_empty()));
    }
    conf_dirs(ld_so_conf, &mut dirs, 0);
    for d in [
        "/lib",
        "/usr/lib",
        "/lib64",
        "/usr/lib64",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Folders of an `ld.so.conf`-style file; `include` lines are followed up to a small depth.
fn conf_dirs(conf: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    const MAX_DEPTH: usize = 4;
    const MAX_BYTES: u64 = 1 << 20;
    let Ok(meta) = std::fs::metadata(conf) else {
        return;
    };
    if depth > MAX_DEPTH || !meta.is_file() || meta.len() > MAX_BYTES {
        return;
    }
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = Path::new(pattern.trim());
            let (dir, name) = (
                pattern.parent(),
                pattern.file_name().and_then(OsStr::to_str),
            );
            match (dir, name) {
                (Some(dir), Some(name)) if name.starts_with('*') => {
                    let suffix = name.trim_start_matches('*');
                    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(OsStr::to_str)
                                .is_some_and(|n| n.ends_with(suffix))
                        })
                        .collect();
                    files.sort();
                    for f in files {
                        conf_dirs(&f, out, depth + 1);
                    }
                }
                _ => conf_dirs(pattern, out, depth + 1),
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// File names of the shared objects mapped into this process (`/proc/self/maps`).
pub fn mapped_libraries() -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut names: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| Path::new(p).file_name().and_then(OsStr::to_str))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The libraries of `needed` found neither in `dirs` nor among `mapped`.
pub fn missing(needed: &[NeededLib], dirs: &[PathBuf], mapped: &[String]) -> Vec<NeededLib> {
    needed
        .iter()
        .filter(|l| {
            !mapped.iter().any(|m| m == l.file) && !dirs.iter().any(|d| d.join(l.file).exists())
        })
        .copied()
        .collect()
}

/// `Err` naming every library `kind` needs that the loader would not find, the folders
/// searched, and TensorRT 11 where that is what is installed instead of 10.
pub fn check(kind: ProviderKind) -> Result<(), String> {
    let needed = needed(kind);
    if needed.is_empty() {
        return Ok(());
    }
    let ld = std::env::var_os("LD_LIBRARY_PATH");
    let dirs = loader_dirs(ld.as_deref(), Path::new("/etc/ld.so.conf"));
    let absent = missing(&needed, &dirs, &mapped_libraries());
    if absent.is_empty() {
        return Ok(());
    }
    Err(describe(kind, &absent, &dirs))
}

/// The message for [`check`].
pub fn describe(kind: ProviderKind, absent: &[NeededLib], dirs: &[PathBuf]) -> String {
    let list: Vec<String> = absent
        .iter()
        .map(|l| format!("{} ({})", l.file, l.part))
        .collect();
    let mut msg = format!(
        "{} needs {} {}, not found on the loader path",
        kind.ort_name(),
        if absent.len() == 1 {
            "library"
        } else {
            "libraries"
        },
        list.join(", ")
    );
    if absent.iter().any(|l| l.file == "libnvinfer.so.10")
        && dirs.iter().any(|d| d.join("libnvinfer.so.11").exists())
    {
        msg.push_str(
            "; libnvinfer.so.11 is there, but onnxruntime-gpu 1.31.1's TensorRT provider links \
             TensorRT 10 (install a 10.x, e.g. tensorrt-cu13-libs==10.16.1.11)",
        );
    }
    let shown: Vec<String> = dirs
        .iter()
        .take(12)
        .map(|d| d.display().to_string())
        .collect();
    msg.push_str(&format!(
        " (searched LD_LIBRARY_PATH, /etc/ld.so.conf and the system folders: {}{}); add their \
         folder to LD_LIBRARY_PATH before starting (README \"Execution providers and GPU \
         nodes\")",
        shown.join(":"),
        if dirs.len() > shown.len() { ":…" } else { "" }
    ));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_library_and_finds_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for f in ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"] {
            std::fs::write(a.join(f), b"").unwrap();
        }
        std::fs::write(b.join("libcurand.so.10"), b"").unwrap();
        std::fs::write(b.join("libnvinfer.so.11"), b"").unwrap();
        let dirs = vec![a, b];
        let mapped = vec!["libcuda.so.1".to_string()];
        let absent = missing(&needed(ProviderKind::Cuda), &dirs, &mapped);
        assert_eq!(absent, vec![lib("libcudnn.so.9", "cuDNN 9")]);
        let absent = missing(&needed(ProviderKind::TensorRt), &dirs, &mapped);
        let files: Vec<_> = absent.iter().map(|l| l.file).collect();
        assert_eq!(
            files,
            ["libcudnn.so.9", "libnvinfer.so.10", "libnvonnxparser.so.10"]
        );
        let msg = describe(ProviderKind::TensorRt, &absent, &dirs);
        assert!(msg.contains("libcudnn.so.9 (cuDNN 9)"), "{msg}");
        assert!(msg.contains("libnvinfer.so.10 (TensorRT 10.x)"), "{msg}");
        assert!(msg.contains("libnvinfer.so.11 is there"), "{msg}");
        assert!(missing(&needed(ProviderKind::Cpu), &dirs, &mapped).is_empty());
    }

    #[test]
    fn loader_dirs_follow_ld_library_path_then_ld_so_conf() {
        let tmp = tempfile::tempdir().unwrap();
        let confd = tmp.path().join("ld.so.conf.d");
        std::fs::create_dir_all(&confd).unwrap();
        std::fs::write(confd.join("cuda.conf"), "/opt/cuda/lib64 # comment\n").unwrap();
        std::fs::write(confd.join("skip.txt"), "/not/read\n").unwrap();
        let conf = tmp.path().join("ld.so.conf");
        std::fs::write(
            &conf,
            format!("include {}/*.conf\n/opt/trt/lib\n", confd.display()),
        )
        .unwrap();
        let dirs = loader_dirs(Some(OsStr::new("/x/lib::/y/lib")), &conf);
        let shown: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(
            &shown[..4],
            ["/x/lib", "/y/lib", "/opt/cuda/lib64", "/opt/trt/lib"]
        );
        assert!(shown.contains(&"/usr/lib/x86_64-linux-gnu".to_string()));
        assert!(!shown.iter().any(|d| d == "/not/read"));
    }

    #[test]
    fn an_include_loop_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("loop.conf");
        std::fs::write(&conf, format!("include {}\n/opt/a\n", conf.display())).unwrap();
        let dirs = loader_dirs(None, &conf);
        assert_eq!(dirs[0], PathBuf::from("/opt/a"));
    }
}
