use dalle::{Bundle, EpOptions};
use dalle_bundle::{GraphRole, Manifest, ModelFamily};
use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
use dalle_export::families::openai_dvae::{self, DecoderConfig, EncoderConfig};
use python_free_tests::ort_env;
use std::path::{Path, PathBuf};

const ENC: EncoderConfig = EncoderConfig {
    n_hid: 8,
    n_blk_per_group: 1,
    input_channels: 3,
    vocab_size: 32,
};
const DEC: DecoderConfig = DecoderConfig {
    n_init: 8,
    n_hid: 8,
    n_blk_per_group: 1,
    output_channels: 3,
    vocab_size: 32,
};

fn random_bundle(out: &Path, policy: ExternalDataPolicy) -> PathBuf {
    let mut w = BundleWriter::create(
        out,
        ModelFamily::RandomDemo,
        python_free_tests::test_provenance(),
        true,
        policy,
    )
    .unwrap();
    w.add_graph(
        openai_dvae::encoder_entry(&ENC, openai_dvae::random_encoder(&ENC, 1).unwrap()).unwrap(),
    )
    .unwrap();
    w.add_graph(
        openai_dvae::decoder_entry(&DEC, openai_dvae::random_decoder(&DEC, 2).unwrap()).unwrap(),
    )
    .unwrap();
    w.commit().unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn re_export_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let a = random_bundle(&dir.path().join("a"), ExternalDataPolicy::default());
    let b = random_bundle(&dir.path().join("b"), ExternalDataPolicy::default());
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(
        fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
        ["dvae_decoder.onnx", "dvae_encoder.onnx", "manifest.json"]
    );
    assert_eq!(fa, fb);
}

#[test]
fn bundles_with_external_data_run() {
    ort_env();
    let dir = tempfile::tempdir().unwrap();
    let out = random_bundle(
        &dir.path().join("ext"),
        ExternalDataPolicy::Always { tensor_bytes: 256 },
    );
    let manifest = Manifest::read_from_dir(&out).unwrap();
    assert_eq!(
        manifest
            .graph(GraphRole::DvaeDecoder)
            .unwrap()
            .external_data
            .as_deref(),
        Some("dvae_decoder.onnx.data")
    );
    let mut bundle = Bundle::open(&out, EpOptions::default()).unwrap();
    let tokens = ndarray::Array3::<i64>::from_shape_fn((2, 3, 4), |(b, y, x)| {
        ((b * 12 + y * 4 + x) % 32) as i64
    });
    let pixels = dalle::dvae::decode_pixels(&mut bundle, &tokens).unwrap();
    assert_eq!(pixels.shape(), &[2, 3, 24, 32]);
    assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    let back = dalle::dvae::encode_pixels(&mut bundle, pixels).unwrap();
    assert_eq!(back.shape(), &[2, 3, 4]);
}

#[test]
fn manifest_session_mismatch_lists_every_difference() {
    ort_env();
    let dir = tempfile::tempdir().unwrap();
    let out = random_bundle(&dir.path().join("m"), ExternalDataPolicy::default());
    let path = out.join("manifest.json");
    let mut m = Manifest::read_from_dir(&out).unwrap();
    {
        let g = m.graphs.get_mut(&GraphRole::DvaeDecoder).unwrap();
        g.inputs[0].name = "tokens".into(); // the graph calls it image_tokens
        g.outputs[0].dtype = dalle_bundle::DType::F16; // the graph says float
        g.outputs[0].dims[1] = dalle_bundle::Dim::Fixed(4); // the graph says 3
        g.dim_ranges.clear();
        g.inputs[0].dims = vec![2u64.into(), 2u64.into(), 2u64.into()];
    }
    std::fs::write(&path, m.to_json()).unwrap();
    let mut bundle = Bundle::open(&out, EpOptions::default()).unwrap();
    let err = bundle
        .session(GraphRole::DvaeDecoder)
        .err()
        .expect("mismatch must fail");
    let text = format!("{err}");
    for needle in ["tokens", "image_tokens", "float16", "pixels"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    assert!(
        text.lines().count() >= 3,
        "expected one line per difference:\n{text}"
    );
    eprintln!("{text}");
}

#[test]
fn an_existing_bundle_is_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = random_bundle(&dir.path().join("keep"), ExternalDataPolicy::default());
    let before = files(&out);
    let err = BundleWriter::create(
        &out,
        ModelFamily::RandomDemo,
        python_free_tests::test_provenance(),
        false,
        ExternalDataPolicy::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--force"), "{err}");
    // An overwrite that fails before commit leaves the old bundle untouched.
    {
        let mut w = BundleWriter::create(
            &out,
            ModelFamily::RandomDemo,
            python_free_tests::test_provenance(),
            true,
            ExternalDataPolicy::default(),
        )
        .unwrap();
        w.add_graph(
            openai_dvae::encoder_entry(&ENC, openai_dvae::random_encoder(&ENC, 9).unwrap())
                .unwrap(),
        )
        .unwrap();
        // dropped without commit
    }
    assert_eq!(files(&out), before);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep"]);
}
