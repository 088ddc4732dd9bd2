//! Hostile numbers, names and files (issue #13, checks side): each reproducer gets the clean
//! error that names the value and its limit, never a panic, a huge allocation or a silently
//! wrong bundle. Inputs are crafted here from the committed fixtures.

use dalle_export::checkpoint::PickleValue;
use dalle_export::families::dalle_pytorch as dp;
use python_free_tests::fixture;

/// The `dalle_cli` checkpoint's root with `hparams[key]` (or `vae_params[key]`) set to `value`.
fn with_param(section: &str, key: &str, value: PickleValue) -> (PickleValue, dp::Checkpoint) {
    let ckpt = dp::load(&fixture("dalle_cli").join("dalle.pt")).unwrap();
    let mut root = ckpt.root.clone();
    let PickleValue::Dict(items) = &mut root else {
        panic!("root is not a dict")
    };
    let (_, params) = items
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(section))
        .unwrap_or_else(|| panic!("no {section}"));
    let PickleValue::Dict(params) = params else {
        panic!("{section} is not a dict")
    };
    params.retain(|(k, _)| k.as_str() != Some(key));
    params.push((PickleValue::Str(key.into()), value));
    (root, ckpt)
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
    let PickleValue::Dict(mut items) = root else {
        unreachable!()
    };
    for (k, v) in &mut items {
        if k.as_str() == Some("hparams")
            && let PickleValue::Dict(p) = v
        {
            p.retain(|(k, _)| k.as_str() != Some("dim_head"));
            p.push((PickleValue::Str("dim_head".into()), PickleValue::Int(4096)));
        }
    }
    let err = dp::DalleConfig::from_checkpoint(&PickleValue::Dict(items), &ckpt.transformer, "x")
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
