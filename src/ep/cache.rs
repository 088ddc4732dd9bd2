//! Where TensorRT keeps its engines and timing cache by default: one folder per bundle, so a
//! restart reuses the engines it built instead of building them again (minutes for a large
//! decoder).
//!
//! The folder is `$XDG_CACHE_HOME/dalle/tensorrt/<bundle folder name>-<first 16 hex digits of the
//! manifest's SHA-256>/ort-<ONNX Runtime version>/` (`~/.cache` when `XDG_CACHE_HOME` is not set),
//! outside the bundle (bundles may be read-only and are written atomically by the exporter).
//! A re-exported model has another manifest hash and another ONNX Runtime another version, so
//! neither reuses engines it cannot use; ONNX Runtime names each engine after the graph's
//! session (prefix, [`super::DecoderPhase::cache_prefix`]), the subgraph, the GPU's compute
//! capability and the precision (`_fp16`). `--trt-engine-cache DIR` / `--trt-timing-cache DIR`
//! override the folder, `--no-trt-cache` turns the default off.

use super::EpOptions;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Hex digits of the manifest hash in the folder name.
const HASH_DIGITS: usize = 16;
/// Longest bundle-name part of the folder name.
const NAME_CHARS: usize = 64;

/// The folder that holds every bundle's cache: `$XDG_CACHE_HOME/dalle/tensorrt`, else
/// `$HOME/.cache/dalle/tensorrt` (only absolute paths count, as the XDG spec says).
pub fn cache_root(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute(xdg_cache_home).or_else(|| absolute(home).map(|h| h.join(".cache")))?;
    Some(base.join("dalle").join("tensorrt"))
}

/// [`cache_root`] from this process's environment.
pub fn cache_root_from_env() -> Option<PathBuf> {
    cache_root(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// The bundle's own folder under `root`. `manifest_sha256` is the hex SHA-256 of its
/// `manifest.json`.
pub fn bundle_cache_dir(
    root: &Path,
    bundle_dir: &Path,
    manifest_sha256: &str,
    ort_version: &str,
) -> PathBuf {
    let name: String = bundle_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(NAME_CHARS)
        .collect();
    let name = name.trim_start_matches('.');
    let hash: String = manifest_sha256.chars().take(HASH_DIGITS).collect();
    let folder = match name.is_empty() {
        true => hash,
        false => format!("{name}-{hash}"),
    };
    let version: String = ort_version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    root.join(folder).join(format!(
        "ort-{}",
        if version.is_empty() {
            "unknown"
        } else {
            &version
        }
    ))
}

/// `options` with the engine and timing caches set to `default` where the user gave none
/// (unless `--no-trt-cache`).
pub fn with_default_caches(options: &EpOptions, default: Option<&Path>) -> EpOptions {
    let mut out = options.clone();
    if options.no_trt_cache {
        return out;
    }
    if let Some(dir) = default {
        out.trt_engine_cache
            .get_or_insert_with(|| dir.to_path_buf());
        out.trt_timing_cache
            .get_or_insert_with(|| dir.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ep::EpChoice;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_root_is_xdg_cache_home_else_home_dot_cache() {
        assert_eq!(
            cache_root(Some("/xdg".into()), Some("/home/u".into())),
            Some(PathBuf::from("/xdg/dalle/tensorrt"))
        );
        assert_eq!(
            cache_root(None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.cache/dalle/tensorrt"))
        );
        // relative values are ignored, as the XDG base-directory spec says
        assert_eq!(
            cache_root(Some("rel".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.cache/dalle/tensorrt"))
        );
        assert_eq!(cache_root(Some("".into()), Some("".into())), None);
        assert_eq!(cache_root(None, None), None);
    }

    #[test]
    fn each_bundle_and_runtime_version_gets_its_own_folder() {
        let root = Path::new("/c");
        assert_eq!(
            bundle_cache_dir(root, Path::new("/models/shapes-bundle"), SHA, "1.31.1"),
            PathBuf::from("/c/shapes-bundle-0123456789abcdef/ort-1.31.1")
        );
        // other manifest, other folder
        let other = SHA.replace('0', "f");
        assert_ne!(
            bundle_cache_dir(root, Path::new("/m/b"), SHA, "1.31.1"),
            bundle_cache_dir(root, Path::new("/m/b"), &other, "1.31.1")
        );
        assert_ne!(
            bundle_cache_dir(root, Path::new("/m/b"), SHA, "1.31.1"),
            bundle_cache_dir(root, Path::new("/m/b"), SHA, "1.32.0")
        );
    }

    #[test]
    fn odd_bundle_names_cannot_leave_the_root() {
        let root = Path::new("/c");
        let dir = bundle_cache_dir(root, Path::new("/m/../a b/..weird\u{7}"), SHA, "1/../x");
        assert_eq!(dir, PathBuf::from("/c/weird_-0123456789abcdef/ort-1..x"));
        assert!(dir.starts_with(root));
        let nameless = bundle_cache_dir(root, Path::new("/"), SHA, "");
        assert_eq!(nameless, PathBuf::from("/c/0123456789abcdef/ort-unknown"));
        let long = "x".repeat(500);
        let dir = bundle_cache_dir(root, Path::new(&long), SHA, "1");
        let folder = dir.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert_eq!(folder.len(), NAME_CHARS + 1 + HASH_DIGITS);
    }

    #[test]
    fn defaults_fill_only_what_the_user_left_out() {
        let default = Path::new("/c/b-0123/ort-1");
        let plain = EpOptions {
            ep: EpChoice::Tensorrt,
            ..EpOptions::default()
        };
        let filled = with_default_caches(&plain, Some(default));
        assert_eq!(filled.trt_engine_cache.as_deref(), Some(default));
        assert_eq!(filled.trt_timing_cache.as_deref(), Some(default));

        let given = EpOptions {
            trt_engine_cache: Some("/mine".into()),
            ..plain.clone()
        };
        let filled = with_default_caches(&given, Some(default));
        assert_eq!(filled.trt_engine_cache.as_deref(), Some(Path::new("/mine")));
        assert_eq!(filled.trt_timing_cache.as_deref(), Some(default));

        let off = EpOptions {
            no_trt_cache: true,
            ..plain.clone()
        };
        assert_eq!(with_default_caches(&off, Some(default)), off);
        assert_eq!(with_default_caches(&plain, None), plain);
    }
}
