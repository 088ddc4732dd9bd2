//! A min-dalle bundle end to end through the real `dalle-ort generate` binary against
//! min-dalle 0.4.11's own pipeline (`MinDalle.generate_image` / `generate_images`; fixture
//! `fixtures/min_dalle_pipeline`, made by `tools/fixtures/min_dalle_pipeline_fixtures.py`):
//! the prompt tokenized by the bundle, 256 decoder steps with super-conditioning 16 and top-k 1,
//! and the VQGAN, at grid 1, grid 2 and grid 2 seamless; and `--preview-every` on it.
//!
//! Tokens must be identical. Pixels may differ by 1 of 255: min-dalle makes u8 with
//! `.to(torch.uint8)` of its 0..255 floats (truncation), `dalle-ort` rounds, so the two differ by
//! exactly 1 wherever the fraction is at least one half (and float rounding at an integer can
//! make it 1 the other way); the float images themselves agree to ~1e-5 (`vqgan.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dalle_export::kv_cache::KvCacheLayout;
use ndarray::{Array3, Array4, ArrayD, Axis};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "export_bundle.rs"]
mod export_bundle;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python-free-tests/fixtures")
}

fn case() -> PathBuf {
    fixtures().join("min_dalle_pipeline")
}

/// Both decoder cache layouts (`--kv-cache`); the first is `dalle-export`'s default.
const LAYOUTS: [KvCacheLayout; 2] = [KvCacheLayout::Concat, KvCacheLayout::InPlace];

/// The bundle with decoder caches `kv`, exported once per test process.
fn bundle(kv: KvCacheLayout) -> &'static Path {
    static BUNDLES: OnceLock<Vec<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    let bundles = BUNDLES.get_or_init(|| {
        LAYOUTS
            .iter()
            .map(|&layout| {
                let dir = tempfile::tempdir().unwrap();
                let path = export_bundle::export_min_dalle(
                    &fixtures(),
                    &dir.path().join("min-dalle"),
                    layout,
                    true,
                );
                (dir, path)
            })
            .collect()
    });
    let i = LAYOUTS.iter().position(|&l| l == kv).unwrap();
    &bundles[i].1
}

fn config() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(case().join("config.json")).unwrap()).unwrap()
}

fn prompt() -> String {
    config()["prompt"].as_str().unwrap().to_string()
}

/// `dalle-ort --ep cpu generate --model BUNDLE PROMPT --top-k 1 --seed 1 EXTRA -o OUT` on the
/// default (concat) bundle.
fn generate(out: &Path, extra: &[&str]) -> Output {
    generate_on(LAYOUTS[0], out, extra)
}

/// [`generate`] on the bundle with decoder caches `kv`.
fn generate_on(kv: KvCacheLayout, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
        .args(["--ep", "cpu", "generate", "--model"])
        .arg(bundle(kv))
        .arg(prompt())
        .args(["--top-k", "1", "--seed", "1"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn png(path: &Path) -> Array3<u8> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    Array3::from_shape_vec((h, w, 3), img.into_raw()).unwrap()
}

fn sidecar_tokens(out: &Path) -> Vec<Vec<i64>> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("generation.json")).unwrap()).unwrap();
    json["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["image_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap())
                .collect()
        })
        .collect()
}

/// Every pixel within ±1 of min-dalle's (see the module docs); returns the share that differ.
fn assert_pixels(name: &str, got: &Array3<u8>, want: &ArrayD<u8>) -> f64 {
    assert_eq!(got.shape(), want.shape(), "{name}: image shape");
    let mut differ = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        let d = (i16::from(g) - i16::from(w)).abs();
        assert!(d <= 1, "{name}: pixel {i} is {g}, min-dalle's {w}");
        differ += usize::from(d != 0);
    }
    let share = differ as f64 / got.len() as f64;
    eprintln!("{name}: {:.1}% of pixels 1 apart, none more", 100.0 * share);
    share
}

fn want_tokens(file: &str) -> Vec<Vec<i64>> {
    let t: ndarray::Array2<i64> = ndarray_npy::read_npy(case().join(file)).unwrap();
    t.outer_iter().map(|r| r.to_vec()).collect()
}

#[test]
fn grid_1_matches_min_dalle_generate_image() {
    for kv in LAYOUTS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        ok(&generate_on(kv, &out, &[]));
        assert_eq!(
            sidecar_tokens(&out),
            want_tokens("tokens_grid1.npy"),
            "{}",
            kv.name()
        );
        let want: Array4<u8> = ndarray_npy::read_npy(case().join("pixels_grid1.npy")).unwrap();
        assert_pixels(
            &format!("grid 1 {}", kv.name()),
            &png(&out.join("candidate_00.png")),
            &want.index_axis(Axis(0), 0).to_owned().into_dyn(),
        );
    }
}

#[test]
fn grid_2_and_seamless_match_min_dalle() {
    for kv in LAYOUTS {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        ok(&generate_on(kv, &out, &["--grid-size", "2", "--seamless"]));
        assert_eq!(
            sidecar_tokens(&out),
            want_tokens("tokens_grid2.npy"),
            "{}",
            kv.name()
        );
        let want: Array4<u8> = ndarray_npy::read_npy(case().join("pixels_grid2.npy")).unwrap();
        for (i, w) in want.outer_iter().enumerate() {
            assert_pixels(
                &format!("grid 2 {} candidate {i}", kv.name()),
                &png(&out.join(format!("candidate_{i:02}.png"))),
                &w.to_owned().into_dyn(),
            );
        }
        let seamless: Array3<u8> =
            ndarray_npy::read_npy(case().join("seamless_grid2.npy")).unwrap();
        assert_pixels(
            &format!("seamless grid 2 {}", kv.name()),
            &png(&out.join("seamless.png")),
            &seamless.into_dyn(),
        );
    }
}

/// `--preview-every 64` with `--grid-size 2 --seamless`: four previews per candidate and four of
/// the tiled image, named by candidate and tokens, the size of the final images; the last ones
/// (all 256 tokens sampled) are the final images, the earlier ones are not.
#[test]
fn previews_every_k_tokens_of_each_candidate_and_the_seamless_tiling() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = generate(
        &out,
        &["--grid-size", "2", "--seamless", "--preview-every", "64"],
    );
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("wrote 20 previews (preview_*.png)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let mut previews: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("preview_"))
        .collect();
    previews.sort();
    let mut want: Vec<String> = (0..4)
        .flat_map(|c| (1..=4).map(move |k| format!("preview_{c:02}_{:03}.png", 64 * k)))
        .chain((1..=4).map(|k| format!("preview_seamless_{:03}.png", 64 * k)))
        .collect();
    want.sort();
    assert_eq!(previews, want);
    let side = config()["side"].as_u64().unwrap() as usize;
    for c in 0..4 {
        let last = png(&out.join(format!("preview_{c:02}_256.png")));
        let final_image = png(&out.join(format!("candidate_{c:02}.png")));
        assert_eq!(last.shape(), [side, side, 3]);
        assert_eq!(
            last, final_image,
            "candidate {c}: the last preview is the image"
        );
        for k in 1..=3 {
            let p = png(&out.join(format!("preview_{c:02}_{:03}.png", 64 * k)));
            assert_eq!(p.shape(), [side, side, 3]);
            assert_ne!(
                p,
                final_image,
                "candidate {c}: preview at {} tokens",
                64 * k
            );
        }
    }
    let seamless = png(&out.join("seamless.png"));
    assert_eq!(seamless.shape(), [2 * side, 2 * side, 3]);
    assert_eq!(png(&out.join("preview_seamless_256.png")), seamless);
    let early = png(&out.join("preview_seamless_064.png"));
    assert_eq!(early.shape(), seamless.shape());
    assert_ne!(early, seamless);
}

#[test]
fn preview_bounds_are_clear_errors() {
    let help = Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
        .args(["generate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for name in [
        "--preview-every <K>",
        "preview_NN_TTT.png",
        "preview_seamless_TTT.png",
    ] {
        assert!(help.contains(name), "generate --help names {name}:\n{help}");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (args, msg) in [
        (
            &["--preview-every", "257"][..],
            "each image samples only 256 tokens",
        ),
        (&["--preview-every", "0"], "K must be at least 1"),
    ] {
        let out = tmp.path().join("never");
        let o = generate(&out, args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing written");
    }
    let o = generate(&tmp.path().join("one.png"), &["--preview-every", "64"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("previews into an output folder"));
    let o = generate(&tmp.path().join("x"), &["-n", "2", "--seamless"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tiles the candidates as a square"));
}
