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
