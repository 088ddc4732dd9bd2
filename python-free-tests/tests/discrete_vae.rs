//! DALLE-pytorch `DiscreteVAE` exported to the dVAE bundle contract, against reference outputs:
//! `train_vae.py` checkpoints (`fixtures/discrete_vae/`, `tools/fixtures/discrete_vae_fixtures.py`)
//! and the VAE inside `train_dalle.py` checkpoints (`fixtures/dalle_cli/`, fp32, and
//! `fixtures/dalle_variants/`, fp16).

use dalle::{Bundle, EpOptions};
use dalle_bundle::io::dvae;
use dalle_bundle::{Dim, GraphRole, ModelFamily};
use dalle_export::checkpoint::{ClassAllowList, RECORD_CLASSES, read_pytorch, tensor_dict};
use dalle_export::families::dalle_pytorch::discrete_vae::{self, DiscreteVaeConfig, Normalization};
use dalle_export::weights::Weights;
use ndarray::{ArrayD, Axis, Ix3, Ix4};
use python_free_tests::{assert_close, fixture, ort_env, read_npy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Decoder pixels: max |error| against the reference (fp32 end to end).
const PIXEL_ATOL: f32 = 1e-4;
/// Encoder tokens must match wherever the reference's top-1/top-2 logit margin exceeds this.
const TOKEN_MARGIN: f32 = 1e-3;

/// A `train_vae.py` checkpoint of `fixtures/discrete_vae/<case>/`.
fn train_vae(case: &str) -> (DiscreteVaeConfig, Weights, PathBuf) {
    let dir = fixture("discrete_vae").join(case);
    let (cfg, w) = discrete_vae::load_train_vae(&dir.join("vae.pt")).unwrap();
    (cfg, w, dir)
}

/// The VAE of a `train_dalle.py` checkpoint: `vae_params` and the `vae.*` tensors, unprefixed.
fn train_dalle(case: &str) -> (DiscreteVaeConfig, Weights, PathBuf) {
    let dir = fixture(case);
    let root = read_pytorch(
        &dir.join("dalle.pt"),
        &ClassAllowList::none().with(RECORD_CLASSES),
    )
    .unwrap();
    let cfg = DiscreteVaeConfig::from_vae_params(root.get("vae_params").unwrap()).unwrap();
    let tensors: BTreeMap<_, _> = tensor_dict(root.get("weights").unwrap())
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("vae.").map(|k| (k.to_string(), v)))
        .collect();
    (cfg, Weights::new(format!("{case}/dalle.pt"), tensors), dir)
}

fn export(cfg: &DiscreteVaeConfig, mut w: Weights, out: &Path) -> PathBuf {
    let mut writer = python_free_tests::test_writer(out, ModelFamily::DallePytorch);
    writer
        .add_graph(discrete_vae::encoder_entry(cfg, &mut w).unwrap())
        .unwrap();
    writer
        .add_graph(discrete_vae::decoder_entry(cfg, &mut w).unwrap())
        .unwrap();
    w.finish().unwrap();
    writer.commit().unwrap()
}

/// The reference `decode` output (normalized space) → [0, 1] pixels: `x·std + mean`, clamped.
fn denormalize(x: &ArrayD<f32>, mean: &[f32], std: &[f32]) -> ArrayD<f32> {
    let mut y = x.clone();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        plane.mapv_inplace(|v| (v * std[c] + mean[c]).clamp(0.0, 1.0));
    }
    y
}

/// Top-1 minus top-2 over axis 1 of logits `[B, V, h, w]`, flattened to `[B, h·w]`.
fn margins(logits: &ArrayD<f32>) -> Vec<f32> {
    let l = logits.view().into_dimensionality::<Ix4>().unwrap();
    let (b, v, h, w) = l.dim();
    let mut out = Vec::with_capacity(b * h * w);
    for i in 0..b {
        for y in 0..h {
            for x in 0..w {
                let mut vals: Vec<f32> = (0..v).map(|k| l[[i, k, y, x]]).collect();
                vals.sort_by(|a, c| c.total_cmp(a));
                out.push(vals[0] - vals[1]);
            }
        }
    }
    out
}

/// Runs both graphs on the fixture's inputs; returns (decoder max |error|, tokens compared,
/// tokens in all).
fn check_parity(
    bundle_dir: &Path,
    fixture_dir: &Path,
    mean: &[f32],
    std: &[f32],
    margin: &[f32],
) -> (f32, usize, usize) {
    ort_env();
    let mut bundle = Bundle::open(bundle_dir, EpOptions::default()).unwrap();
    let f = |name: &str| fixture_dir.join(name);

    let codes = read_npy(&f("vae_codes.npy"))
        .i64()
        .into_dimensionality::<Ix3>()
        .unwrap();
    let want = denormalize(&read_npy(&f("vae_decoded.npy")).f32(), mean, std);
    let got = dalle::dvae::decode_pixels(&mut bundle, &codes)
        .unwrap()
        .into_dyn();
    let err = assert_close("decoder pixels", &got, &want, PIXEL_ATOL);

    let images = read_npy(&f("vae_images.npy"))
        .f32()
        .into_dimensionality::<Ix4>()
        .unwrap();
    let want = read_npy(&f("vae_encoded.npy")).i64();
    let got = dalle::dvae::encode_pixels(&mut bundle, images).unwrap();
    let (b, h, w) = got.dim();
    assert_eq!(
        want.shape(),
        &[b, h * w],
        "reference tokens are [batch, fmap²]"
    );
    assert_eq!(margin.len(), b * h * w);
    let mut compared = 0;
    for (i, ((g, w), m)) in got.iter().zip(want.iter()).zip(margin).enumerate() {
        if *m > TOKEN_MARGIN {
            assert_eq!(g, w, "token {i} differs where the reference margin is {m}");
            compared += 1;
        }
    }
    assert!(
        compared >= got.len() * 9 / 10,
        "only {compared} of {} tokens had a clear margin",
        got.len()
    );
    eprintln!(
        "{}: decoder max |error| = {err:e}; {compared}/{} tokens compared, all equal",
        fixture_dir.display(),
        got.len()
    );
    (err, compared, got.len())
}

#[test]
fn train_vae_with_resnet_blocks_matches_reference() {
    let (cfg, w, dir) = train_vae("resnet");
    let out = tempfile::tempdir().unwrap();
    let bundle = export(&cfg, w, &out.path().join("b"));
    let margin = read_npy(&dir.join("vae_margin.npy")).f32();
    let margin: Vec<f32> = margin.iter().copied().collect();
    check_parity(&bundle, &dir, &[0.5; 3], &[0.5; 3], &margin);
}

#[test]
fn train_vae_plain_with_custom_normalization_matches_reference() {
    let (cfg, w, dir) = train_vae("plain");
    let out = tempfile::tempdir().unwrap();
    let bundle = export(&cfg, w, &out.path().join("b"));
    let margin = read_npy(&dir.join("vae_margin.npy")).f32();
    let margin: Vec<f32> = margin.iter().copied().collect();
    check_parity(&bundle, &dir, &[0.4, 0.5, 0.6], &[0.2, 0.3, 0.25], &margin);
}

#[test]
fn vae_inside_train_dalle_checkpoints_matches_reference() {
    // dalle_cli: fp32 weights; dalle_variants: every tensor fp16 (`--fp16`).
    for case in ["dalle_cli", "dalle_variants"] {
        let (cfg, w, dir) = train_dalle(case);
        let out = tempfile::tempdir().unwrap();
        let bundle = export(&cfg, w, &out.path().join("b"));
        let margin = margins(&read_npy(&dir.join("vae_enc_logits.npy")).f32());
        check_parity(&bundle, &dir, &[0.5; 3], &[0.5; 3], &margin);
    }
}

#[test]
fn hyperparameters_are_read() {
    let (resnet, _, _) = train_vae("resnet");
    assert_eq!(
        resnet,
        DiscreteVaeConfig {
            image_size: 32,
            num_tokens: 64,
            codebook_dim: 16,
            num_layers: 3,
            num_resnet_blocks: 1,
            hidden_dim: 16,
            channels: 3,
            normalization: Some(Normalization {
                mean: vec![0.5; 3],
                std: vec![0.5; 3]
            }),
        }
    );
    assert_eq!(resnet.fmap(), 4);
    let (plain, _, _) = train_vae("plain");
    assert_eq!(plain.num_resnet_blocks, 0);
    assert_eq!(plain.fmap(), 4);
    assert_eq!(
        plain.normalization,
        Some(Normalization {
            mean: vec![0.4, 0.5, 0.6],
            std: vec![0.2, 0.3, 0.25]
        })
    );
    let (dalle, _, _) = train_dalle("dalle_cli");
    assert_eq!((dalle.num_layers, dalle.fmap()), (2, 8));
}

#[test]
fn each_half_takes_only_its_own_tensors() {
    let (cfg, mut w, _) = train_vae("resnet");
    discrete_vae::encoder_entry(&cfg, &mut w).unwrap();
    let left: Vec<String> = w.names().map(str::to_string).collect();
    assert!(
        left.iter()
            .all(|n| n == "codebook.weight" || n.starts_with("decoder.")),
        "{left:?}"
    );
    assert!(left.iter().any(|n| n == "codebook.weight"));
    discrete_vae::decoder_entry(&cfg, &mut w).unwrap();
    w.finish().unwrap();
}

#[test]
fn manifest_describes_the_grid() {
    let (cfg, w, _) = train_vae("resnet");
    let out = tempfile::tempdir().unwrap();
    let dir = export(&cfg, w, &out.path().join("b"));
    let bundle = Bundle::open(&dir, EpOptions::default()).unwrap();
    let enc = bundle.manifest().graph(GraphRole::DvaeEncoder).unwrap();
    let attrs = dalle_bundle::DvaeAttributes::from_spec(enc).unwrap();
    assert_eq!(
        attrs,
        dalle_bundle::DvaeAttributes {
            vocab_size: 64,
            downsample: 8,
            image_size: Some(32),
        }
    );
    let tokens = enc
        .outputs
        .iter()
        .find(|t| t.name == dvae::IMAGE_TOKENS)
        .unwrap();
    assert_eq!(tokens.dims[1], Dim::Symbolic("height/8".into()));
    let dec = bundle.manifest().graph(GraphRole::DvaeDecoder).unwrap();
    let pixels = dec.outputs.iter().find(|t| t.name == dvae::PIXELS).unwrap();
    assert_eq!(
        pixels.dims,
        vec![
            Dim::Symbolic("batch".into()),
            Dim::Fixed(3),
            Dim::Symbolic("grid_height*8".into()),
            Dim::Symbolic("grid_width*8".into())
        ]
    );
}

#[test]
fn wrong_shapes_name_the_tensor() {
    let (cfg, mut w, _) = train_vae("resnet");
    // Claim one more layer than the weights have: the first transposed conv no longer matches.
    let mut deeper = cfg.clone();
    deeper.num_layers = 4;
    deeper.image_size = 64;
    let err = discrete_vae::decoder_entry(&deeper, &mut w)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`decoder.5.0.weight`"), "{err}");
    // A codebook narrower than the config says.
    let (cfg, mut w, _) = train_vae("plain");
    let mut wider = cfg.clone();
    wider.codebook_dim = 9;
    let err = discrete_vae::decoder_entry(&wider, &mut w)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`codebook.weight` has shape [32, 8], expected [32, 9]"),
        "{err}"
    );
}

#[test]
fn missing_hparams_is_a_clear_error() {
    let err = discrete_vae::load_train_vae(&fixture("pickle").join("state_dict_p2.pt"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no `hparams`"), "{err}");
}
