//! Hostile numbers, names and files (issue #13, checks side): each reproducer gets the clean
//! error that names the value and its limit, never a panic, a huge allocation or a silently
//! wrong bundle. Inputs are crafted here from the committed fixtures.

use dalle_export::checkpoint::PickleValue;
use dalle_export::families::dalle_pytorch as dp;
use python_free_tests::fixture;

/// The `dalle_cli` checkpoint's root with `hparams[key]` (or `vae_params[key]`) set to `value`.
fn with_param(section: &str, key: &str, value: PickleValue) -> (PickleValue, dp::Checkpoint) {
    let ckpt = dp::load(&fixture("dalle_cli").join("dalle.pt")).unwrap();
    let root = set_param(&ckpt.root, section, key, value);
    (root, ckpt)
}

/// `root` with `root[section][key] = value` (pickle containers are shared, so this rebuilds
/// the two dicts on the path).
fn set_param(root: &PickleValue, section: &str, key: &str, value: PickleValue) -> PickleValue {
    let PickleValue::Dict(items) = root else {
        panic!("root is not a dict")
    };
    assert!(
        items.iter().any(|(k, _)| k.as_str() == Some(section)),
        "no {section}"
    );
    let items: Vec<_> = items
        .iter()
        .map(|(k, v)| {
            if k.as_str() != Some(section) {
                return (k.clone(), v.clone());
            }
            let PickleValue::Dict(params) = v else {
                panic!("{section} is not a dict")
            };
            let mut params: Vec<_> = params
                .iter()
                .filter(|(k, _)| k.as_str() != Some(key))
                .cloned()
                .collect();
            params.push((PickleValue::Str(key.into()), value.clone()));
            (k.clone(), PickleValue::Dict(params.into()))
        })
        .collect();
    PickleValue::Dict(items.into())
}

fn config_error(section: &str, key: &str, value: i64) -> String {
    let (root, ckpt) = with_param(section, key, PickleValue::Int(value));
    match dp::DalleConfig::from_checkpoint(&root, &ckpt.transformer, "dalle.pt") {
        Ok(cfg) => panic!("{section}.{key} = {value} was accepted: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hyperparameters_are_checked_before_they_size_anything() {
    for (section, key, value, needle) in [
        // Was a 34 GB allocation (per-layer lists of 2^31 entries).
        (
            "hparams",
            "depth",
            1 << 31,
            "`hparams.depth` = 2147483648 is outside the supported range 1..=1024",
        ),
        // Was a capacity-overflow panic.
        (
            "hparams",
            "depth",
            1 << 62,
            "`hparams.depth` = 4611686018427387904 is outside the supported range 1..=1024",
        ),
        // Was a wrapped number in the error.
        (
            "hparams",
            "heads",
            1 << 62,
            "`hparams.heads` = 4611686018427387904 is outside the supported range 1..=1024",
        ),
        ("hparams", "dim", -4, "`hparams.dim` = -4 is outside"),
        (
            "hparams",
            "text_seq_len",
            1 << 40,
            "`hparams.text_seq_len` = 1099511627776 is outside the supported range 1..=65536",
        ),
        // Was a `clamp` panic (min > max) in the sampling defaults.
        (
            "vae_params",
            "num_tokens",
            0,
            "`vae_params.num_tokens` = 0 is outside the supported range 1..=16777216",
        ),
        // Was exit 0 with `image_grid: 4294967296` in the manifest.
        (
            "vae_params",
            "image_size",
            1 << 34,
            "`vae_params.image_size` = 17179869184 is outside the supported range 1..=16384",
        ),
        (
            "vae_params",
            "num_layers",
            1 << 40,
            "`vae_params.num_layers` = 1099511627776 is outside the supported range 1..=16",
        ),
    ] {
        let err = config_error(section, key, value);
        assert!(err.contains(needle), "{section}.{key} = {value}: {err}");
    }
    // Within each limit but too large together: 4096 × 4096 heads × dim_head.
    let (root, ckpt) = with_param("hparams", "heads", PickleValue::Int(1024));
    let root = set_param(&root, "hparams", "dim_head", PickleValue::Int(4096));
    let err = dp::DalleConfig::from_checkpoint(&root, &ckpt.transformer, "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`heads × dim_head` = 4194304 is outside the supported range 1..=131072"),
        "{err}"
    );
}

/// A corrupted wrapper segment in a layer's weight name used to match by prefix and suffix; now
/// the export fails naming the expected tensor and the near miss.
#[test]
fn corrupted_tensor_names_are_reported_not_matched() {
    let ckpt = dp::load(&fixture("dalle_cli").join("dalle.pt")).unwrap();
    let mut tensors = ckpt.transformer.into_map();
    let good = "transformer.layers.layers.1.1.fn.fn.net.0.weight";
    let bad = "transformer.layers.layers.1.1.fn.fnn.net.0.weight";
    let t = tensors.remove(good).unwrap();
    tensors.insert(bad.into(), t);
    let err = dp::decoder_entry(
        &ckpt.cfg,
        dalle_export::weights::Weights::new("edited", tensors),
        Default::default(),
    )
    .err()
    .expect("a corrupted name must not be accepted")
    .to_string();
    assert!(
        err.contains(&format!("missing tensor `{good}`"))
            && err.contains(&format!("near misses: `{bad}`")),
        "{err}"
    );
}

mod files {
    use dalle_bundle::{Manifest, ModelFamily};
    use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
    use std::path::Path;

    /// Exports an empty bundle (a manifest and one marker file) to `out`.
    fn export(out: &Path, force: bool, marker: &str) -> dalle_export::Result<()> {
        let mut w = BundleWriter::create(
            out,
            ModelFamily::Clip,
            python_free_tests::test_provenance(),
            force,
            ExternalDataPolicy::default(),
        )?;
        w.add_file(marker, b"x")?;
        w.commit().map(|_| ())
    }

    /// A process id that ran and has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        pid
    }

    fn hidden(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn staging_folders_of_killed_exports_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b");
        let stale = dir.path().join(format!(".b.partial-{}", dead_pid()));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("decoder.onnx"), b"half").unwrap();
        // A live process's staging folder (another export running now) stays.
        let live = dir.path().join(".b.partial-1");
        std::fs::create_dir(&live).unwrap();
        export(&out, false, "one").unwrap();
        assert_eq!(hidden(dir.path()), vec![".b.partial-1".to_string()]);
        Manifest::read_from_dir(&out).unwrap();
    }

    #[test]
    fn a_crash_between_the_force_renames_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b");
        export(&out, false, "one").unwrap();
        // What a crash between `--force`'s two renames left: the old bundle aside, the new one
        // in a dead process's staging folder, no destination.
        std::fs::rename(&out, dir.path().join(".b.old")).unwrap();
        let stale = dir.path().join(format!(".b.partial-{}", dead_pid()));
        std::fs::create_dir(&stale).unwrap();
        // Without --force the old bundle is put back and kept.
        let err = export(&out, false, "two").unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert!(out.join("one").is_file());
        // Was "Directory not empty" on every later --force.
        std::fs::create_dir(dir.path().join(".b.old")).unwrap();
        std::fs::write(dir.path().join(".b.old/one"), b"x").unwrap();
        export(&out, true, "two").unwrap();
        assert!(out.join("two").is_file() && !out.join("one").exists());
        assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
        // And again (the atomic exchange leaves nothing behind either).
        export(&out, true, "three").unwrap();
        assert!(out.join("three").is_file() && !out.join("two").exists());
        assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
    }

    #[test]
    fn force_refuses_what_is_not_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        // A plain file: was replaced by the bundle, then exit 1.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"precious").unwrap();
        let err = export(&file, true, "m").unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        // A directory of other things.
        let other = dir.path().join("home");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"keep").unwrap();
        let err = export(&other, true, "m").unwrap_err().to_string();
        assert!(err.contains("without manifest.json, not a bundle"), "{err}");
        assert!(other.join("notes.txt").is_file());
        // A symbolic link to a bundle.
        let real = dir.path().join("real");
        export(&real, false, "m").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = export(&link, true, "n").unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(real.join("m").is_file());
        // An empty directory is fine.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        export(&empty, true, "m").unwrap();
        assert!(empty.join("m").is_file());
        assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
    }
}
