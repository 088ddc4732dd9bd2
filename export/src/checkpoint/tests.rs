//! Tests against the committed fixtures in `python-free-tests/fixtures/{pickle,dvae_small}`
//! (made by `tools/fixtures/*.py`; no Python runs here).

use super::*;
use crate::tensor::TensorData;
use dalle_bundle::DType;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../python-free-tests/fixtures")
        .join(rel)
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

/// Values widened to f64 exactly (f64 tensors read bit-exact).
fn values_f64(t: &TensorData) -> Vec<f64> {
    match t.dtype() {
        DType::F64 => t
            .bytes()
            .unwrap()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::F32 | DType::F16 | DType::BF16 => {
            t.to_f32_vec().unwrap().into_iter().map(f64::from).collect()
        }
        _ => t
            .to_i64_vec()
            .unwrap()
            .into_iter()
            .map(|v| v as f64)
            .collect(),
    }
}

/// Checks a tensor against a `{dtype, shape, values}` record from the fixture script.
fn check_record(name: &str, t: &TensorData, rec: &serde_json::Value) {
    assert_eq!(dtype_name(t.dtype()), rec["dtype"], "{name} dtype");
    let shape: Vec<usize> = serde_json::from_value(rec["shape"].clone()).unwrap();
    assert_eq!(t.shape(), shape, "{name} shape");
    if matches!(
        t.dtype(),
        DType::I64 | DType::I32 | DType::I8 | DType::U8 | DType::Bool
    ) {
        let want: Vec<i64> = serde_json::from_value(rec["values"].clone()).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), want, "{name} values");
    } else {
        let want: Vec<f64> = serde_json::from_value(rec["values"].clone()).unwrap();
        assert_eq!(values_f64(t), want, "{name} values");
    }
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

#[test]
fn state_dicts_protocols_2_and_5_every_dtype_and_view() {
    let expected = json("pickle/state_dict_expected.json");
    for file in ["pickle/state_dict_p2.pt", "pickle/state_dict_p5.pt"] {
        let value = read_pytorch(&fixture(file), &ClassAllowList::none()).unwrap();
        let sd = tensor_dict(&value).unwrap();
        let want = expected.as_object().unwrap();
        assert_eq!(sd.len(), want.len(), "{file}");
        for (name, rec) in want {
            check_record(&format!("{file}:{name}"), &sd[name], rec);
        }
        // Pickle order is kept in the value tree.
        let keys: Vec<&str> = value
            .as_dict()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        assert_eq!(keys.first(), Some(&"f32"));
        assert_eq!(keys.get(1), Some(&"f32_transposed"));
    }
}

#[test]
fn shared_storage_views() {
    let sd = tensor_dict(
        &read_pytorch(&fixture("pickle/state_dict_p2.pt"), &ClassAllowList::none()).unwrap(),
    )
    .unwrap();
    let base = sd["f32"].to_f32_vec().unwrap();
    let t = sd["f32_transposed"].to_f32_vec().unwrap();
    assert_eq!(sd["f32_transposed"].shape(), [6, 4]);
    for i in 0..4 {
        for j in 0..6 {
            assert_eq!(t[j * 4 + i], base[i * 6 + j]);
        }
    }
    assert_eq!(
        sd["f32_row_view"].to_f32_vec().unwrap(),
        vec![base[8], base[9], base[10], base[14], base[15], base[16]]
    );
}

#[test]
fn nested_dalle_pytorch_dict() {
    let value = read_pytorch(
        &fixture("pickle/dalle_pytorch_like.pt"),
        &ClassAllowList::none(),
    )
    .unwrap();
    let expected = json("pickle/dalle_pytorch_like_expected.json");
    let hp = value.get("hparams").unwrap();
    assert_eq!(hp.get("dim").and_then(PickleValue::as_int), Some(512));
    assert_eq!(
        hp.get("reversible").and_then(PickleValue::as_bool),
        Some(false)
    );
    assert_eq!(
        hp.get("attn_dropout").and_then(PickleValue::as_float),
        Some(0.1)
    );
    assert!(hp.get("shared_attn_ids").unwrap().is_none());
    let attn: Vec<&str> = hp
        .get("attn_types")
        .and_then(PickleValue::as_list)
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(attn, ["full", "axial_row"]);
    assert!(value.get("vae_params").unwrap().is_none());
    assert_eq!(
        value.get("version").and_then(PickleValue::as_str),
        Some("1.6.6")
    );
    assert_eq!(
        value.get("vae_class_name").and_then(PickleValue::as_str),
        Some("OpenAIDiscreteVAE")
    );

    let weights = tensor_dict(value.get("weights").unwrap()).unwrap();
    for (name, rec) in expected["weights"].as_object().unwrap() {
        check_record(name, &weights[name], rec);
    }
    // Optimizer state: {'state': {0: {'step', 'exp_avg', 'exp_avg_sq'}}, 'param_groups': [...]}.
    let opt = value.get("opt_state").unwrap();
    let state = opt.get("state").and_then(PickleValue::as_dict).unwrap();
    for (pid, per_param) in state {
        let key = pid.as_int().unwrap().to_string();
        for (name, rec) in expected["opt_state"][&key].as_object().unwrap() {
            let t = per_param
                .get(name)
                .and_then(PickleValue::as_tensor)
                .unwrap();
            check_record(&format!("opt {key}.{name}"), t, rec);
        }
    }
    let groups = opt
        .get("param_groups")
        .and_then(PickleValue::as_list)
        .unwrap();
    assert_eq!(
        groups[0].get("lr").and_then(PickleValue::as_float),
        Some(1e-3)
    );
    assert!(value.get("scheduler_state").unwrap().get("gamma").is_some());
}

#[test]
fn small_dvae_modules() {
    let allow = ClassAllowList::dvae();
    let enc = read_pytorch(&fixture("dvae_small/encoder.pkl"), &allow).unwrap();
    assert_eq!(enc.class_name(), Some("dall_e.encoder.Encoder"));
    for (attr, want) in [
        ("n_hid", 8),
        ("n_blk_per_group", 1),
        ("input_channels", 3),
        ("vocab_size", 64),
    ] {
        assert_eq!(
            enc.get(attr).and_then(PickleValue::as_int),
            Some(want),
            "{attr}"
        );
    }
    let device = enc.get("device").unwrap();
    assert_eq!(device.class_name(), Some("torch.device"));
    let sd = module_state_dict(&enc).unwrap();
    assert_eq!(sd.len(), 42);
    assert_eq!(sd["blocks.input.w"].shape(), [8, 3, 7, 7]);
    assert_eq!(sd["blocks.input.b"].shape(), [8]);
    assert_eq!(
        sd["blocks.group_1.block_1.res_path.conv_1.w"].shape(),
        [2, 8, 3, 3]
    );
    assert_eq!(
        sd["blocks.group_2.block_1.id_path.w"].shape(),
        [16, 8, 1, 1]
    );
    assert!(!sd.contains_key("blocks.group_1.block_1.id_path.w"));
    assert_eq!(sd["blocks.output.conv.w"].shape(), [64, 64, 1, 1]);
    assert!(sd.values().all(|t| t.dtype() == DType::F32));

    let dec = read_pytorch(&fixture("dvae_small/decoder.pkl"), &allow).unwrap();
    assert_eq!(dec.class_name(), Some("dall_e.decoder.Decoder"));
    for (attr, want) in [
        ("n_init", 8),
        ("n_hid", 8),
        ("output_channels", 3),
        ("vocab_size", 64),
    ] {
        assert_eq!(
            dec.get(attr).and_then(PickleValue::as_int),
            Some(want),
            "{attr}"
        );
    }
    // Submodules live in `_modules`, as in nn.Module.__dict__.
    let upsample = dec
        .get("_modules")
        .and_then(|m| m.get("blocks"))
        .and_then(|b| b.get("_modules"))
        .and_then(|m| m.get("group_1"))
        .and_then(|g| g.get("_modules"))
        .and_then(|m| m.get("upsample"))
        .unwrap();
    assert_eq!(
        upsample.class_name(),
        Some("torch.nn.modules.upsampling.Upsample")
    );
    assert_eq!(
        upsample.get("scale_factor").and_then(PickleValue::as_float),
        Some(2.0)
    );
    assert_eq!(
        upsample.get("mode").and_then(PickleValue::as_str),
        Some("nearest")
    );
    let sd = module_state_dict(&dec).unwrap();
    assert_eq!(sd.len(), 44);
    assert_eq!(sd["blocks.input.w"].shape(), [8, 64, 1, 1]);
    assert_eq!(sd["blocks.output.conv.w"].shape(), [6, 8, 1, 1]);
}

#[test]
fn small_dvae_safetensors_match_pickles() {
    let allow = ClassAllowList::dvae();
    for half in ["encoder", "decoder"] {
        let pkl = read_pytorch(&fixture(&format!("dvae_small/{half}.pkl")), &allow).unwrap();
        let from_pkl = module_state_dict(&pkl).unwrap();
        let from_st =
            read_safetensors(&fixture(&format!("dvae_small/{half}.safetensors"))).unwrap();
        assert_eq!(from_pkl, from_st, "{half}");
    }
}

#[test]
fn dvae_pickle_needs_its_classes() {
    let err = read_pytorch(&fixture("dvae_small/encoder.pkl"), &ClassAllowList::none())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forbidden global `dall_e.encoder.Encoder`"),
        "{err}"
    );
}

#[test]
fn forbidden_globals_are_refused() {
    for (file, name) in [
        ("pickle/malicious_os_system.pt", "os.system"),
        ("pickle/malicious_posix_system.pt", "posix.system"),
    ] {
        let err = read_pytorch(&fixture(file), &ClassAllowList::torch_nn()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::ForbiddenGlobal { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pickle references forbidden global `{name}`")),
            "{msg}"
        );
        assert!(msg.contains("data.pkl"), "{msg}");
    }
}

#[test]
fn unsupported_containers_are_clear_errors() {
    let err = read_pytorch(&fixture("pickle/legacy.pt"), &ClassAllowList::none()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::LegacyFormat { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("legacy"), "{err}");

    let err = read_pytorch(&fixture("pickle/big_endian.pt"), &ClassAllowList::none()).unwrap_err();
    assert!(matches!(err, CheckpointError::BigEndian { .. }), "{err:?}");

    let err = read_pytorch(&fixture("pickle/compressed.pt"), &ClassAllowList::none()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::CompressedEntry { .. }),
        "{err:?}"
    );

    let err = read_pytorch(&fixture("pickle/plain_p2.pkl"), &ClassAllowList::none()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::LegacyFormat { .. }),
        "{err:?}"
    );

    let err = read_pytorch(
        &fixture("pickle/state_dict_expected.json"),
        &ClassAllowList::none(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnknownFormat { .. }),
        "{err:?}"
    );

    let err =
        read_pytorch(&fixture("pickle/no_such_file.pt"), &ClassAllowList::none()).unwrap_err();
    assert!(err.to_string().contains("no_such_file.pt"), "{err}");
}

#[test]
fn truncated_and_corrupted_archives_are_errors() {
    let bytes = std::fs::read(fixture("pickle/state_dict_p2.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pt");
    for cut in (0..bytes.len()).step_by(61) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(
            read_pytorch(&path, &ClassAllowList::none()).is_err(),
            "cut at {cut}"
        );
    }
    // Flipped bytes anywhere: an error or a value, never a panic.
    for at in (0..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        std::fs::write(&path, &bad).unwrap();
        let _ = read_pytorch(&path, &ClassAllowList::none());
    }
}

#[test]
fn plain_pickles_protocols_2_and_5() {
    for file in ["pickle/plain_p2.pkl", "pickle/plain_p5.pkl"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let v = unpickle(&bytes, &ClassAllowList::none()).unwrap();
        let ints: Vec<i64> = v
            .get("ints")
            .and_then(PickleValue::as_list)
            .unwrap()
            .iter()
            .map(|x| x.as_int().unwrap())
            .collect();
        assert_eq!(
            ints,
            [
                0,
                1,
                -1,
                255,
                256,
                65535,
                65536,
                -65536,
                (1 << 31) - 1,
                -(1 << 31),
                1 << 62,
                i64::MIN
            ]
        );
        // 2**80 + 1 as little-endian two's complement.
        let mut big = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(v.get("big"), Some(&PickleValue::BigInt(big.clone())));
        big.clear();
        assert!(matches!(v.get("neg_big"), Some(PickleValue::BigInt(_))));
        assert_eq!(v.get("none"), Some(&PickleValue::None));
        assert_eq!(v.get("true").and_then(PickleValue::as_bool), Some(true));
        assert_eq!(v.get("false").and_then(PickleValue::as_bool), Some(false));
        let floats: Vec<f64> = v
            .get("floats")
            .and_then(PickleValue::as_list)
            .unwrap()
            .iter()
            .map(|x| x.as_float().unwrap())
            .collect();
        assert_eq!(floats, [0.0, -1.5, std::f64::consts::PI, 1e-310]);
        assert_eq!(
            v.get("unicode").and_then(PickleValue::as_str),
            Some("héllo ✓ 🦀")
        );
        assert_eq!(
            v.get("long_str")
                .and_then(PickleValue::as_str)
                .map(str::len),
            Some(300)
        );
        assert_eq!(
            v.get("bytes").and_then(PickleValue::as_bytes),
            Some(&[0u8, 1, 255][..])
        );
        let long: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        assert_eq!(
            v.get("long_bytes").and_then(PickleValue::as_bytes),
            Some(&long[..])
        );
        let tuples = v.get("tuples").and_then(PickleValue::as_list).unwrap();
        for (n, t) in tuples.iter().enumerate() {
            assert!(
                matches!(t, PickleValue::Tuple(items) if items.len() == n),
                "{file} {t:?}"
            );
        }
        let c = v
            .get("nested")
            .and_then(|n| n.get("a"))
            .and_then(|a| a.get("b"))
            .and_then(PickleValue::as_list)
            .and_then(|l| l.first())
            .and_then(|d| d.get("c"))
            .unwrap();
        assert_eq!(c, &PickleValue::Tuple(vec![PickleValue::None].into()));
        assert_eq!(v.get("shared_a"), v.get("shared_b"));
        assert_eq!(
            v.get("set"),
            Some(&PickleValue::Set(vec![PickleValue::Int(7)].into()))
        );
        assert_eq!(
            v.get("frozenset"),
            Some(&PickleValue::Set(vec![PickleValue::Int(8)].into()))
        );
        let int_keys = v.get("int_keys").and_then(PickleValue::as_dict).unwrap();
        assert_eq!(int_keys[1].0, PickleValue::Int(-2));
    }
}

#[test]
fn truncated_pickles_never_panic() {
    for file in ["pickle/plain_p2.pkl", "pickle/plain_p5.pkl"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                unpickle(&bytes[..cut], &ClassAllowList::none()).is_err(),
                "{file} cut {cut}"
            );
        }
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = unpickle(&bad, &ClassAllowList::none());
            }
        }
    }
}

#[test]
fn corrupt_safetensors_file_is_an_error() {
    let bytes = std::fs::read(fixture("dvae_small/encoder.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = read_safetensors(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.safetensors") && err.contains("header length"),
        "{err}"
    );
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = read_safetensors(&path).unwrap_err().to_string();
    assert!(err.contains("not fully covered"), "{err}");
    let round: BTreeMap<_, _> =
        read_safetensors(&fixture("dvae_small/encoder.safetensors")).unwrap();
    let encoded = super::safetensors::encode_safetensors(&round);
    std::fs::write(&path, &encoded).unwrap();
    assert_eq!(read_safetensors(&path).unwrap(), round);
}

/// Reads the full-size dVAE made by `tools/fixtures/dvae_fixtures.py --config full` when it
/// exists (not committed; ~400 MB). Run with `--ignored --nocapture` to see timings.
#[test]
#[ignore = "needs target/fixtures/dvae_full (generated by hand)"]
fn full_dvae_timing() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/dvae_full");
    for (half, count) in [("encoder", 74), ("decoder", 76)] {
        let start = std::time::Instant::now();
        let root = read_pytorch(&dir.join(format!("{half}.pkl")), &ClassAllowList::dvae()).unwrap();
        let sd = module_state_dict(&root).unwrap();
        let pkl_time = start.elapsed();
        let start = std::time::Instant::now();
        let st = read_safetensors(&dir.join(format!("{half}.safetensors"))).unwrap();
        let st_time = start.elapsed();
        assert_eq!(sd.len(), count);
        assert_eq!(sd, st);
        eprintln!("{half}: pkl {pkl_time:?} (incl. state dict), safetensors {st_time:?}");
    }
}
