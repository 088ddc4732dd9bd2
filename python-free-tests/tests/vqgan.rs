//! VQGAN image codecs against their reference packages: min-dalle's detokenizer
//! (`fixtures/vqgan_min_dalle/`, and mini's real shapes in an ignored test) and
//! taming-transformers `VQModel`/`GumbelVQ` checkpoints (`fixtures/vqgan_taming/`), all made by
//! `tools/fixtures/vqgan_fixtures.py`. Pixels run through the runtime's own codec
//! (`dalle::dvae`), so the bundle contract is checked too.

use dalle::{Bundle, EpOptions};
use dalle_bundle::{DvaeAttributes, GraphRole, ModelFamily, VqKindAttribute, VqganAttributes};
use dalle_export::families::vqgan::{self, PixelMap, VqKind, VqganConfig};
use ndarray::Ix3;
use python_free_tests::{assert_close, fixture, ort_env, read_npy};
use std::path::{Path, PathBuf};

/// Decoder pixels: max |error| against the reference (fp32 end to end; the reference divides
/// its `· 255` output back, which costs ~1e-7).
const PIXEL_ATOL: f32 = 1e-4;

/// An error with its causes (`a: b: c`), as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

fn min_dalle_small() -> PathBuf {
    fixture("vqgan_min_dalle")
}

/// min-dalle's real detokenizer shapes (~170 MB, not committed):
/// `tools/fixtures/vqgan_fixtures.py --config full` writes it here.
fn min_dalle_full() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/vqgan_min_dalle_full")
}

/// A bundle holding only min-dalle's detokenizer (as `dvae_decoder`).
fn export_min_dalle(fixture_dir: &Path, out: &Path) -> PathBuf {
    // A test-only bundle: the family label is not read by the codec.
    let mut w = python_free_tests::test_writer(out, ModelFamily::DallePytorch);
    vqgan::add_min_dalle_detoker(&mut w, &fixture_dir.join("detoker.pt")).unwrap();
    w.commit().unwrap()
}

/// Decodes `codes_file` with the bundle and compares with `pixels_file`.
fn check_decode(bundle: &mut Bundle, dir: &Path, codes_file: &str, pixels_file: &str) -> f32 {
    let codes = read_npy(&dir.join(codes_file))
        .i64()
        .into_dimensionality::<Ix3>()
        .unwrap();
    let want = read_npy(&dir.join(pixels_file)).f32();
    let got = dalle::dvae::decode_pixels(bundle, &codes)
        .unwrap()
        .into_dyn();
    let err = assert_close(pixels_file, &got, &want, PIXEL_ATOL);
    eprintln!("{}/{pixels_file}: max |error| = {err:e}", dir.display());
    err
}

fn check_min_dalle(fixture_dir: &Path) {
    ort_env();
    let dir = tempfile::tempdir().unwrap();
    let path = export_min_dalle(fixture_dir, &dir.path().join("b"));
    let mut bundle = Bundle::open(&path, EpOptions::default()).unwrap();
    check_decode(&mut bundle, fixture_dir, "codes.npy", "pixels.npy");
    check_decode(
        &mut bundle,
        fixture_dir,
        "seamless_codes.npy",
        "seamless_pixels.npy",
    );
}

#[test]
fn min_dalle_detoker_matches_reference() {
    check_min_dalle(&min_dalle_small());
}

#[test]
fn min_dalle_geometry_is_read_from_shapes() {
    let (cfg, _) = vqgan::load_min_dalle_detoker(&min_dalle_small().join("detoker.pt")).unwrap();
    assert_eq!(
        cfg,
        VqganConfig {
            kind: VqKind::MinDalle,
            n_embed: 64,
            embed_dim: 32,
            z_channels: 32,
            ch: 32,
            ch_mult: vec![1; 5],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            resolution: 256,
            in_channels: 3,
            out_ch: 3,
            double_z: false,
            norm_eps: 1e-5,
            pixels: PixelMap::Clip01,
        }
    );
}

#[test]
fn min_dalle_manifest_carries_codec_and_geometry_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let path = export_min_dalle(&min_dalle_small(), &dir.path().join("b"));
    let m = dalle_bundle::Manifest::read_from_dir(&path).unwrap();
    let spec = m.graph(GraphRole::DvaeDecoder).unwrap();
    let a = DvaeAttributes::from_spec(spec).unwrap();
    assert_eq!(
        (a.vocab_size, a.downsample, a.image_size),
        (64, 16, Some(256))
    );
    let v = VqganAttributes::from_spec(spec).unwrap().unwrap();
    assert_eq!(v.vq_kind, VqKindAttribute::MinDalle);
    assert_eq!(v.ch_mult, vec![1; 5]);
    assert_eq!(m.provenance.sources[0].role, "detokenizer");
}

#[test]
#[ignore = "needs mini's real detokenizer shapes: tools/fixtures/vqgan_fixtures.py --config full (~170 MB, not committed)"]
fn min_dalle_full_size_matches_reference() {
    let (cfg, _) = vqgan::load_min_dalle_detoker(&min_dalle_full().join("detoker.pt")).unwrap();
    assert_eq!(cfg, VqganConfig::min_dalle());
    check_min_dalle(&min_dalle_full());
}

// ---------------------------------------------------------------------------------------------
// taming-transformers VQModel / GumbelVQ (`fixtures/vqgan_taming/{vq,gumbel}/`)

/// Encoder codes must match wherever the reference's margin (VQ: second-nearest minus nearest
/// squared distance; Gumbel: top-1 minus top-2 logit) exceeds this.
const CODE_MARGIN: f32 = 1e-3;

/// fp32 transformer logits: max |error| on unmasked entries.
const LOGITS_ATOL: f32 = 1e-4;

const TAMING_KINDS: [&str; 2] = ["vq", "gumbel"];

fn taming(kind: &str) -> PathBuf {
    fixture("vqgan_taming").join(kind)
}

/// A bundle with the VQGAN's encoder and decoder from `model.ckpt` + `model.yaml`.
fn export_taming(kind: &str, out: &Path) -> PathBuf {
    let dir = taming(kind);
    let m = vqgan::load_taming(&dir.join("model.ckpt"), &dir.join("model.yaml")).unwrap();
    let mut w = python_free_tests::test_writer(out, ModelFamily::DallePytorch);
    w.add_graph(vqgan::encoder_entry(&m.cfg, m.encoder).unwrap())
        .unwrap();
    w.add_graph(vqgan::decoder_entry(&m.cfg, m.decoder).unwrap())
        .unwrap();
    w.commit().unwrap()
}

/// Encodes `images.npy` and compares with `tokens.npy` where `margin.npy` is clear.
fn check_encode(bundle: &mut Bundle, dir: &Path) {
    let images = read_npy(&dir.join("images.npy"))
        .f32()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap();
    let want = read_npy(&dir.join("tokens.npy")).i64();
    let margin = read_npy(&dir.join("margin.npy")).f32();
    let got = dalle::dvae::encode_pixels(bundle, images)
        .unwrap()
        .into_dyn();
    assert_eq!(got.shape(), want.shape());
    let mut compared = 0;
    for (i, ((g, w), m)) in got.iter().zip(&want).zip(&margin).enumerate() {
        if *m > CODE_MARGIN {
            assert_eq!(g, w, "code {i} differs where the reference margin is {m}");
            compared += 1;
        }
    }
    assert!(compared >= got.len() * 9 / 10, "{compared}/{}", got.len());
    eprintln!(
        "{}: {compared}/{} codes compared, all equal",
        dir.display(),
        got.len()
    );
}

#[test]
fn taming_vq_and_gumbel_codecs_match_reference() {
    ort_env();
    for kind in TAMING_KINDS {
        let dir = tempfile::tempdir().unwrap();
        let path = export_taming(kind, &dir.path().join("b"));
        let mut bundle = Bundle::open(&path, EpOptions::default()).unwrap();
        check_decode(&mut bundle, &taming(kind), "codes.npy", "pixels.npy");
        check_encode(&mut bundle, &taming(kind));
        let m = bundle.manifest();
        for role in [GraphRole::DvaeEncoder, GraphRole::DvaeDecoder] {
            let v = VqganAttributes::from_spec(m.graph(role).unwrap())
                .unwrap()
                .unwrap();
            let want = if kind == "vq" {
                VqKindAttribute::VectorQuantizer
            } else {
                VqKindAttribute::Gumbel
            };
            assert_eq!(v.vq_kind, want);
        }
    }
}

#[test]
fn taming_geometry_comes_from_the_yaml() {
    let m = vqgan::load_taming(
        &taming("vq").join("model.ckpt"),
        &taming("vq").join("model.yaml"),
    )
    .unwrap();
    assert_eq!(m.cfg.kind, VqKind::VectorQuantizer);
    assert_eq!(m.cfg.ch_mult, vec![2, 1]);
    assert_eq!(m.cfg.attn_resolutions, vec![1, 32]);
    assert_eq!((m.cfg.n_embed, m.cfg.downsample()), (64, 2));
    assert_eq!(m.cfg.dalle_pytorch_num_layers().unwrap(), 6);
    assert_eq!(m.cfg.pixels, PixelMap::FromSigned);
    let g = vqgan::yaml::load(&taming("gumbel").join("model.yaml")).unwrap();
    assert_eq!(
        (g.kind, g.ch_mult.len(), g.n_embed),
        (VqKind::Gumbel, 3, 48)
    );
}

#[test]
fn taming_mismatched_files_are_clear_errors() {
    // A VQModel checkpoint with a GumbelVQ config (and the reverse).
    let err = vqgan::load_taming(
        &taming("vq").join("model.ckpt"),
        &taming("gumbel").join("model.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("different models"), "{err}");
    let err = vqgan::load_taming(
        &taming("gumbel").join("model.ckpt"),
        &taming("vq").join("model.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("different models"), "{err}");
    // A min-dalle detokenizer is not a Lightning checkpoint, and the reverse.
    let err = vqgan::load_taming(
        &min_dalle_small().join("detoker.pt"),
        &taming("vq").join("model.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("state_dict"), "{err}");
    let err = vqgan::load_min_dalle_detoker(&taming("vq").join("model.ckpt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a tensor"), "{err}");
    // Not a YAML config.
    let err = vqgan::load_taming(
        &taming("vq").join("model.ckpt"),
        &taming("vq").join("GENERATED.md"),
    )
    .unwrap_err();
    let err = chain(&err);
    assert!(
        err.contains("not a taming-transformers VQGAN config"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// DALLE-pytorch checkpoints trained with VQGanVAE

use dalle_export::families::dalle_pytorch as dp;
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout, LogitsOutput};
use python_free_tests::{f32_input, i64_input, session_from_file};

fn export_dalle(kind: &str, out: &Path, with_ckpt: bool) -> Result<PathBuf, String> {
    let dir = taming(kind);
    let ckpt = dir.join("model.ckpt");
    let yaml = dir.join("model.yaml");
    let tokenizer = fixture("tokenizer").join("tiny_wordlevel.json");
    let mut w = python_free_tests::test_writer(out, ModelFamily::DallePytorch);
    let options = dp::BundleOptions {
        checkpoint: &dir.join("dalle.pt"),
        tokenizer: Some(&tokenizer),
        vae_files: dp::OpenAiVaeFiles::default(),
        vqgan: dp::VqganFiles {
            model: with_ckpt.then_some(ckpt.as_path()),
            config: Some(&yaml),
        },
        clip: None,
        decoder: DecoderOptions {
            logits: LogitsOutput::Full,
            kv_cache: KvCacheLayout::Concat,
        },
        progress: dalle_export::families::quiet,
    };
    dp::add_to_bundle(&mut w, options).map_err(|e| chain(&e))?;
    Ok(w.commit().unwrap())
}

/// Teacher-forced logits of `decoder.onnx` (empty cache) against the reference's.
fn check_logits(bundle: &Path, dir: &Path) -> f32 {
    let manifest = dalle_bundle::Manifest::read_from_dir(bundle).unwrap();
    let spec = manifest.graph(GraphRole::Decoder).unwrap();
    let ids = read_npy(&dir.join("dalle_input_ids.npy")).i64();
    let batch = ids.shape()[0];
    let past: Vec<(String, Vec<usize>)> = spec
        .inputs
        .iter()
        .filter(|t| t.name.starts_with("past_"))
        .map(|t| {
            let shape = t
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    dalle_bundle::Dim::Fixed(n) => *n as usize,
                    _ if i == 0 => batch,
                    _ => 0,
                })
                .collect();
            (t.name.clone(), shape)
        })
        .collect();
    let mut inputs = vec![("input_ids", i64_input(ids))];
    for (name, shape) in &past {
        inputs.push((
            name.as_str(),
            f32_input(ndarray::ArrayD::zeros(ndarray::IxDyn(shape))),
        ));
    }
    let mut s = session_from_file(&bundle.join("decoder.onnx"));
    let got = python_free_tests::run(&mut s, inputs).remove(0).f32();
    let want = read_npy(&dir.join("dalle_logits.npy")).f32();
    assert_eq!(got.shape(), want.shape());
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if *w == -f32::MAX {
            assert_eq!(*g, -f32::MAX, "entry {i} should be masked");
        } else {
            let d = (g - w).abs();
            assert!(d <= LOGITS_ATOL, "logits: |{g} - {w}| = {d} at {i}");
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
fn dalle_pytorch_vqgan_vae_logits_and_pixels_match_reference() {
    ort_env();
    for kind in TAMING_KINDS {
        for with_ckpt in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = export_dalle(kind, &dir.path().join("b"), with_ckpt).unwrap();
            let err = check_logits(&path, &taming(kind));
            let mut bundle = Bundle::open(&path, EpOptions::default()).unwrap();
            let px = check_decode(
                &mut bundle,
                &taming(kind),
                "dalle_codes.npy",
                "dalle_pixels.npy",
            );
            eprintln!(
                "{kind} (--vqgan-model {with_ckpt}): logits max |error| {err:e}, pixels {px:e}"
            );
            let m = bundle.manifest();
            let layout = m.token_layout.as_ref().unwrap();
            assert_eq!(layout.image_grid, 4);
            let sources: Vec<&str> = m
                .provenance
                .sources
                .iter()
                .map(|s| s.role.as_str())
                .collect();
            assert_eq!(sources.contains(&"vqgan_model"), with_ckpt, "{sources:?}");
            assert!(sources.contains(&"vqgan_config"), "{sources:?}");
        }
    }
}

#[test]
fn dalle_pytorch_vqgan_vae_needs_its_config_and_its_own_weights() {
    let dir = tempfile::tempdir().unwrap();
    let err = dp::load(&taming("vq").join("dalle.pt"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("trained with VQGanVAE") && err.contains("--vqgan-config"),
        "{err}"
    );
    // The Gumbel VQGAN's files for the VQModel-trained checkpoint: codebook sizes differ.
    let mut w = python_free_tests::test_writer(&dir.path().join("x"), ModelFamily::DallePytorch);
    let tokenizer = fixture("tokenizer").join("tiny_wordlevel.json");
    let options = dp::BundleOptions {
        checkpoint: &taming("vq").join("dalle.pt"),
        tokenizer: Some(&tokenizer),
        vae_files: dp::OpenAiVaeFiles::default(),
        vqgan: dp::VqganFiles {
            model: Some(&taming("gumbel").join("model.ckpt")),
            config: Some(&taming("vq").join("model.yaml")),
        },
        clip: None,
        decoder: DecoderOptions {
            logits: LogitsOutput::LastImage,
            kv_cache: KvCacheLayout::Concat,
        },
        progress: dalle_export::families::quiet,
    };
    let err = chain(&dp::add_to_bundle(&mut w, options).unwrap_err());
    assert!(
        err.contains("differs from the checkpoint's own copy"),
        "{err}"
    );
}

#[test]
fn generation_runs_unchanged_on_a_vqgan_vae_bundle() {
    use dalle::engine::{self, Engine, OrtDallePytorch, PromptInput, Request, RequestRules};
    ort_env();
    for kind in TAMING_KINDS {
        let dir = tempfile::tempdir().unwrap();
        let path = export_dalle(kind, &dir.path().join("b"), false).unwrap();
        let b = Bundle::open(&path, EpOptions::default()).unwrap();
        let rules = RequestRules::from_bundle(&b).unwrap();
        let (model, _) = OrtDallePytorch::from_bundle(b, None).unwrap();
        let mut e = Engine::new(model, None);
        let request = Request {
            prompt: PromptInput::Ids(vec![3, 4]),
            candidates: 2,
            sampling: engine::SamplingOverrides {
                top_k: Some(8),
                seed: Some(7),
                ..Default::default()
            },
            init: None,
            rerank: None,
        };
        let out = engine::generate(&mut e, rules.validate(request).unwrap(), &mut |_| {}).unwrap();
        let vocab = if kind == "vq" { 64 } else { 48 };
        assert!(
            out.tokens
                .iter()
                .all(|t| t.len() == 16 && t.iter().all(|&c| c < vocab))
        );
        // 4×4 codes, VQGAN downsampling 2 (vq) or 4 (gumbel).
        let side = if kind == "vq" { 8 } else { 16 };
        assert_eq!(out.pixels.shape(), &[2, 3, side, side]);
        assert!(out.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    }
}

#[test]
fn detoker_with_missing_or_extra_tensors_names_them() {
    let (cfg, w) = vqgan::load_min_dalle_detoker(&min_dalle_small().join("detoker.pt")).unwrap();
    let mut map = w.into_map();
    let bias = map.remove("decoder.conv_out.bias").unwrap();
    let err = vqgan::decoder_entry(
        &cfg,
        dalle_export::weights::Weights::new("detoker.pt", map.clone()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("missing tensor `decoder.conv_out.bias`"),
        "{err}"
    );
    map.insert("decoder.conv_out.bias".into(), bias.clone());
    map.insert("decoder.up.0.block.0.conv_shortcut.bias".into(), bias);
    let err = vqgan::decoder_entry(&cfg, dalle_export::weights::Weights::new("detoker.pt", map))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unused tensor") && err.contains("conv_shortcut"),
        "{err}"
    );
    // A state dict that is no VQGAN at all.
    let err = vqgan::load_min_dalle_detoker(&fixture("dalle_cli").join("dalle.pt"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("expected a dict of tensors") || err.contains("expected a tensor"),
        "{err}"
    );
}
