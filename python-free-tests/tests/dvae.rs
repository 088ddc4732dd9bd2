use dalle::{Bundle, EpOptions};
use dalle_bundle::ModelFamily;
use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
use dalle_export::families::openai_dvae;
use ndarray::{Array3, Ix3, Ix4};
use python_free_tests::{assert_close, fixture, ort_env, read_npy};
use std::path::{Path, PathBuf};

/// Decoder pixels: max |error| against the reference (fp32 end to end).
const PIXEL_ATOL: f32 = 1e-4;
/// Encoder tokens must match wherever the reference's top-1/top-2 logit margin exceeds this.
const TOKEN_MARGIN: f32 = 1e-3;

fn small(file: &str) -> PathBuf {
    fixture("dvae_small").join(file)
}

/// The full-size configuration (n_hid 256, 8192 codes, 256 px, ~98M parameters) is too large
/// to commit; `tools/fixtures/dvae_fixtures.py --config full` writes it here.
fn full_size_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/dvae_full")
}

/// Exports the small fixture's encoder and decoder (from `ext`: "pkl" or "safetensors").
fn export(ext: &str, dir: &Path) -> PathBuf {
    export_from(&fixture("dvae_small"), ext, dir)
}

fn export_from(fixture_dir: &Path, ext: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("bundle-{ext}"));
    let mut w = python_free_tests::test_writer(&out, ModelFamily::OpenaiDvae);
    let (cfg, weights) =
        openai_dvae::load_encoder(&fixture_dir.join(format!("encoder.{ext}"))).unwrap();
    w.add_graph(openai_dvae::encoder_entry(&cfg, weights).unwrap())
        .unwrap();
    let (cfg, weights) =
        openai_dvae::load_decoder(&fixture_dir.join(format!("decoder.{ext}"))).unwrap();
    w.add_graph(openai_dvae::decoder_entry(&cfg, weights).unwrap())
        .unwrap();
    w.commit().unwrap()
}

fn check_parity(bundle_dir: &Path) {
    check_parity_with(bundle_dir, &fixture("dvae_small"));
}

fn check_parity_with(bundle_dir: &Path, fixture_dir: &Path) {
    let small = |f: &str| fixture_dir.join(f);
    ort_env();
    let mut bundle = Bundle::open(bundle_dir, EpOptions::default()).unwrap();

    let tokens = read_npy(&small("dec_tokens.npy"))
        .i64()
        .into_dimensionality::<Ix3>()
        .unwrap();
    let want = read_npy(&small("dec_pixels.npy")).f32();
    let got = dalle::dvae::decode_pixels(&mut bundle, &tokens)
        .unwrap()
        .into_dyn();
    let err = assert_close("decoder pixels", &got, &want, PIXEL_ATOL);
    eprintln!("decoder max |error| = {err:e}");

    let pixels = read_npy(&small("enc_pixels.npy"))
        .f32()
        .into_dimensionality::<Ix4>()
        .unwrap();
    let want = read_npy(&small("enc_tokens.npy")).i64();
    let margin = read_npy(&small("enc_margin.npy")).f32();
    let got = dalle::dvae::encode_pixels(&mut bundle, pixels)
        .unwrap()
        .into_dyn();
    assert_eq!(got.shape(), want.shape());
    let mut compared = 0;
    for ((g, w), m) in got.iter().zip(want.iter()).zip(margin.iter()) {
        if *m > TOKEN_MARGIN {
            assert_eq!(g, w, "token differs where the reference margin is {m}");
            compared += 1;
        }
    }
    assert!(
        compared >= got.len() * 9 / 10,
        "only {compared} of {} tokens had a clear margin",
        got.len()
    );
}

#[test]
fn released_pkl_format_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    check_parity(&export("pkl", dir.path()));
}

#[test]
fn small_config_hyperparameters_are_read() {
    let (enc, _) = openai_dvae::load_encoder(&small("encoder.pkl")).unwrap();
    assert_eq!(
        enc,
        openai_dvae::EncoderConfig {
            n_hid: 8,
            n_blk_per_group: 1,
            input_channels: 3,
            vocab_size: 64
        }
    );
    let (dec, _) = openai_dvae::load_decoder(&small("decoder.pkl")).unwrap();
    assert_eq!(
        dec,
        openai_dvae::DecoderConfig {
            n_init: 8,
            n_hid: 8,
            n_blk_per_group: 1,
            output_channels: 3,
            vocab_size: 64
        }
    );
    let (enc2, _) = openai_dvae::load_encoder(&small("encoder.safetensors")).unwrap();
    assert_eq!(enc, enc2);
}

#[test]
#[ignore = "needs the full-size fixture: tools/fixtures/dvae_fixtures.py --config full (~400 MB, not committed)"]
fn full_size_released_shape_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, _) = openai_dvae::load_encoder(&full_size_dir().join("encoder.pkl")).unwrap();
    assert_eq!(enc, openai_dvae::EncoderConfig::released());
    let (dec, _) = openai_dvae::load_decoder(&full_size_dir().join("decoder.pkl")).unwrap();
    assert_eq!(dec, openai_dvae::DecoderConfig::released());
    check_parity_with(
        &export_from(&full_size_dir(), "pkl", dir.path()),
        &full_size_dir(),
    );
}

#[test]
fn safetensors_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    check_parity(&export("safetensors", dir.path()));
}

#[test]
fn reference_logits_argmax_is_the_fixture_tokens() {
    // Guards the fixture itself: its tokens are the argmax of its logits.
    let logits = read_npy(&small("enc_logits.npy")).f32();
    let tokens = read_npy(&small("enc_tokens.npy")).i64();
    let (b, v, h, w) = (
        logits.shape()[0],
        logits.shape()[1],
        logits.shape()[2],
        logits.shape()[3],
    );
    let arg = Array3::from_shape_fn((b, h, w), |(i, y, x)| {
        (0..v)
            .max_by(|&a, &c| logits[[i, a, y, x]].total_cmp(&logits[[i, c, y, x]]))
            .unwrap() as i64
    });
    assert_eq!(arg.into_dyn(), tokens);
}

fn export_error(
    encoder: Option<&Path>,
    decoder: Option<&Path>,
) -> (String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let result = (|| -> dalle_export::Result<()> {
        let mut w = BundleWriter::create(
            &out,
            ModelFamily::OpenaiDvae,
            python_free_tests::test_provenance(),
            false,
            ExternalDataPolicy::default(),
        )?;
        if let Some(p) = encoder {
            let (cfg, weights) = openai_dvae::load_encoder(p)?;
            w.add_graph(openai_dvae::encoder_entry(&cfg, weights)?)?;
        }
        if let Some(p) = decoder {
            let (cfg, weights) = openai_dvae::load_decoder(p)?;
            w.add_graph(openai_dvae::decoder_entry(&cfg, weights)?)?;
        }
        w.commit()?;
        Ok(())
    })();
    let err = result.expect_err("export should fail").to_string();
    (err, out, dir)
}

fn assert_no_bundle_left(out: &Path) {
    assert!(
        !out.exists(),
        "a partial bundle was left at {}",
        out.display()
    );
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
}

#[test]
fn decoder_given_as_encoder_is_a_clear_error() {
    let (err, out, _d) = export_error(Some(&small("decoder.pkl")), None);
    assert!(
        err.contains("holds the dVAE decoder") && err.contains("given as the encoder"),
        "{err}"
    );
    assert_no_bundle_left(&out);
    let (err, out, _d) = export_error(None, Some(&small("encoder.safetensors")));
    assert!(
        err.contains("holds the dVAE encoder") && err.contains("given as the decoder"),
        "{err}"
    );
    assert_no_bundle_left(&out);
}

#[test]
fn a_failure_after_the_first_graph_leaves_no_partial_bundle() {
    // The encoder exports fine; the "decoder" is a malicious pickle: nothing may remain.
    let evil = fixture("pickle").join("malicious_os_system.pt");
    let (err, out, _d) = export_error(Some(&small("encoder.pkl")), Some(&evil));
    assert!(err.contains("forbidden global `os.system`"), "{err}");
    assert_no_bundle_left(&out);
}

#[test]
fn truncated_and_corrupt_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(small("encoder.pkl")).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 30] {
        let p = dir.path().join(format!("cut{cut}.pkl"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = openai_dvae::load_encoder(&p).unwrap_err().to_string();
        assert!(
            err.contains(&p.display().to_string()),
            "error should name the file: {err}"
        );
    }
    let p = dir.path().join("garbage.pkl");
    std::fs::write(&p, b"definitely not a checkpoint").unwrap();
    assert!(openai_dvae::load_encoder(&p).is_err());
}

#[test]
fn wrong_shapes_name_the_tensor() {
    // A decoder whose attributes disagree with its tensors: rebuild a state dict with one tensor
    // of the wrong shape and export from it.
    use dalle_export::weights::Weights;
    let (cfg, weights) = openai_dvae::load_decoder(&small("decoder.safetensors")).unwrap();
    let mut tensors = std::collections::BTreeMap::new();
    let names: Vec<String> = weights.names().map(str::to_string).collect();
    let mut weights = weights;
    for n in names {
        let shape = weights.shape_of(&n).unwrap().to_vec();
        let t = weights.take(&n, &shape).unwrap();
        let t = if n == "blocks.group_2.block_1.res_path.conv_2.w" {
            let v = t.to_f32_vec().unwrap();
            dalle_export::TensorData::from_f32(vec![shape[0], shape[1], 1, 9], &v).unwrap()
        } else {
            t
        };
        tensors.insert(n, t);
    }
    let err = openai_dvae::decoder_entry(&cfg, Weights::new("edited", tensors))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`blocks.group_2.block_1.res_path.conv_2.w` has shape [8, 8, 1, 9], expected [8, 8, 3, 3]"),
        "{err}"
    );
}

#[test]
fn runtime_rejects_out_of_range_tokens() {
    ort_env();
    let dir = tempfile::tempdir().unwrap();
    let mut bundle = Bundle::open(export("pkl", dir.path()), EpOptions::default()).unwrap();
    let tokens = Array3::<i64>::from_elem((1, 2, 2), 64);
    let err = dalle::dvae::decode_pixels(&mut bundle, &tokens)
        .unwrap_err()
        .to_string();
    assert!(err.contains("64"), "{err}");
}
