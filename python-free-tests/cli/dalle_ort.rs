//! The `dalle-ort` binary: subcommands, encode/decode end to end, and error exits (a test
//! target of the `dalle` package, kept with the other integration tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "export_bundle.rs"]
mod export_bundle;

fn dalle_ort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A small random dVAE bundle, exported through `openai_dvae::add_to_bundle` (as `demo` does).
fn bundle(dir: &Path) -> PathBuf {
    use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
    use dalle_export::families::openai_dvae::{self, DecoderConfig, EncoderConfig};
    let enc = EncoderConfig {
        n_hid: 8,
        n_blk_per_group: 1,
        input_channels: 3,
        vocab_size: 32,
    };
    let dec = DecoderConfig {
        n_init: 8,
        n_hid: 8,
        n_blk_per_group: 1,
        output_channels: 3,
        vocab_size: 32,
    };
    let prov = dalle_bundle::Provenance {
        exporter: "test".into(),
        sources: vec![],
        notes: vec![],
    };
    let mut w = BundleWriter::create(
        &dir.join("b"),
        dalle_bundle::ModelFamily::RandomDemo,
        prov,
        false,
        ExternalDataPolicy::default(),
    )
    .unwrap();
    let halves = openai_dvae::BundleOptions {
        encoder: Some(openai_dvae::Half::Random {
            config: enc,
            seed: 1,
        }),
        decoder: Some(openai_dvae::Half::Random {
            config: dec,
            seed: 2,
        }),
        progress: dalle_export::families::quiet,
    };
    openai_dvae::add_to_bundle(&mut w, halves).unwrap();
    w.commit().unwrap()
}

#[test]
fn help_lists_every_subcommand() {
    let o = dalle_ort(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for sub in [
        "info",
        "encode",
        "decode",
        "generate",
        "clip-score",
        "serve",
    ] {
        assert!(text.contains(sub), "`{sub}` missing from --help:\n{text}");
    }
    for flag in [
        "--ep",
        "--device-id",
        "--trt-fp16",
        "--trt-engine-cache",
        "--trt-timing-cache",
        "--ort-lib",
    ] {
        assert!(text.contains(flag), "`{flag}` missing from --help:\n{text}");
    }
}

#[test]
fn encodes_and_decodes_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path());
    let b = b.to_str().unwrap();
    let tokens = dir.path().join("t.npy");
    let png = dir.path().join("d.png");
    let sample = repo().join("models/demo/sample.png");
    let o = dalle_ort(&[
        "--ep",
        "cpu",
        "encode",
        "--model",
        b,
        sample.to_str().unwrap(),
        "-o",
        tokens.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = dalle_ort(&[
        "--ep",
        "cpu",
        "decode",
        "--model",
        b,
        tokens.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // IHDR width and height: 32x32 tokens → 256x256 pixels.
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 256);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 256);

    let o = dalle_ort(&["info", "--model", b]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("dvae_decoder"));
}

#[test]
fn errors_exit_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path());
    let b = b.to_str().unwrap();

    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"nope").unwrap();
    let o = dalle_ort(&[
        "decode",
        "--model",
        b,
        junk.to_str().unwrap(),
        "-o",
        "/tmp/x.png",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));

    // PNG bytes are never written under another format's name.
    let tokens = dir.path().join("t.npy");
    std::fs::write(&tokens, b"unused").unwrap();
    let jpg = dir.path().join("out.jpg");
    let o = dalle_ort(&[
        "decode",
        "--model",
        b,
        tokens.to_str().unwrap(),
        "-o",
        jpg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("decode writes PNG images; name the output FILE.png"),
        "{}",
        stderr(&o)
    );
    assert!(!jpg.exists());
    let sample = repo().join("models/demo/sample.png");
    let o = dalle_ort(&[
        "encode",
        "--model",
        b,
        sample.to_str().unwrap(),
        "-o",
        jpg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("encode writes image tokens as .npy; name the output FILE.npy"),
        "{}",
        stderr(&o)
    );
    let o = dalle_ort(&[
        "generate",
        "--model",
        b,
        "a red circle",
        "-o",
        jpg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("generate writes PNG images; name the output FILE.png or a folder"),
        "{}",
        stderr(&o)
    );
    assert!(!jpg.exists());

    let o = dalle_ort(&[
        "info",
        "--model",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let o = dalle_ort(&["--ep", "cuda", "info", "--model", b]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("setup-ort.sh --gpu"), "{}", stderr(&o));

    let o = dalle_ort(&["--ep", "gpu", "info", "--model", b]);
    assert_eq!(o.status.code(), Some(2), "clap rejects unknown providers");

    let o = dalle_ort(&["generate", "--model", b, "a red circle"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

/// A DALLE-pytorch bundle (rotary, shift tokens, sandwich norm, all four attention types,
/// DiscreteVAE) from the committed fixture, with the tiny word-level tokenizer.
fn dalle_bundle(dir: &Path) -> PathBuf {
    dalle_bundle_with(dir, None)
}

/// [`dalle_bundle`], plus the CLIP of a Hugging Face directory when given.
fn dalle_bundle_with(dir: &Path, clip: Option<&Path>) -> PathBuf {
    let fixtures = repo().join("python-free-tests/fixtures");
    export_bundle::export(
        &fixtures.join("dalle_ctor/dalle.pt"),
        &fixtures.join("tokenizer/tiny_wordlevel.json"),
        clip,
        &dir.join("dalle"),
    )
}

fn sidecar_tokens(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation.json")).unwrap())
            .unwrap();
    v["candidates"].clone()
}

#[test]
fn generates_from_an_exported_dalle_pytorch_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let b = dalle_bundle(dir.path());
    let b = b.to_str().unwrap();
    let run = |model: &str, out: &Path, batch: &str| {
        dalle_ort(&[
            "--ep",
            "cpu",
            "generate",
            "--model",
            model,
            "a small red circle above a blue square",
            "-n",
            "3",
            "--top-k",
            "16",
            "--temperature",
            "0.9",
            "--cond-scale",
            "2",
            "--seed",
            "7",
            "--batch",
            batch,
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let a = dir.path().join("a");
    let o = run(b, &a, "3");
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "candidate_00.png",
        "candidate_01.png",
        "candidate_02.png",
        "grid.png",
        "generation.json",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let png = std::fs::read(a.join("candidate_00.png")).unwrap();
    assert_eq!(
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        32,
        "32×32 px from an 8×8 grid"
    );
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("generation.json")).unwrap()).unwrap();
    assert_eq!(sidecar["prompt"], "a small red circle above a blue square");
    let text = serde_json::to_string(&sidecar).unwrap();
    assert!(text.contains("\"seed\":7"), "{text}");

    // Same seed, other batch cap: identical tokens.
    let c = dir.path().join("c");
    let o = run(b, &c, "1");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sidecar_tokens(&a), sidecar_tokens(&c));

    // The same checkpoint with an in-place KV cache (fixed-capacity buffers bound as past and
    // present, shift-token histories still growing): the same tokens, batched or not.
    let fixtures = repo().join("python-free-tests/fixtures");
    let in_place = export_bundle::export_with(
        &fixtures.join("dalle_ctor/dalle.pt"),
        &fixtures.join("tokenizer/tiny_wordlevel.json"),
        None,
        &dir.path().join("dalle-in-place"),
        DecoderOptions {
            kv_cache: KvCacheLayout::InPlace,
            ..Default::default()
        },
    );
    let in_place = in_place.to_str().unwrap();
    for (out, batch) in [("d", "3"), ("e", "1")] {
        let d = dir.path().join(out);
        let o = run(in_place, &d, batch);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            sidecar_tokens(&a),
            sidecar_tokens(&d),
            "in-place, batch {batch}"
        );
    }

    // Invalid settings are clear errors.
    for (flag, value) in [("--top-k", "0"), ("--temperature", "0"), ("-n", "0")] {
        let o = dalle_ort(&[
            "generate",
            "--model",
            b,
            "a red circle",
            flag,
            value,
            "-o",
            dir.path().join("x").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{flag} {value}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    }
    // Finite as f64, not as the sampler's float32 (were all-zero images); a negative guidance
    // scale parses (was clap's "unexpected argument"), so the error is top-k's.
    for (args, needle) in [
        (&["--temperature", "1e-38"][..], "temperature"),
        (&["--cond-scale", "1e39"][..], "cond_scale"),
        (&["--cond-scale", "-1", "--top-k", "0"][..], "top_k"),
    ] {
        let out = dir.path().join("x");
        let mut a = vec![
            "generate",
            "--model",
            b,
            "a red circle",
            "-o",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        let o = dalle_ort(&a);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

fn clip_fixture() -> PathBuf {
    repo().join("python-free-tests/fixtures/clip_small")
}

/// Parses `score<TAB>path` lines.
fn printed_scores(o: &Output) -> Vec<f32> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect()
}

/// `clip-score` prints Hugging Face's `logits_per_text` for the fixture's PNGs (up to the
/// 8-bit rounding of PIL's resampling, see tests/clip.rs).
#[test]
fn clip_score_matches_the_reference_logits() {
    use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
    use dalle_export::families::clip;
    let dir = tempfile::tempdir().unwrap();
    let fx = clip_fixture();
    let prov = dalle_bundle::Provenance {
        exporter: "test".into(),
        sources: vec![],
        notes: vec![],
    };
    let out = dir.path().join("clip");
    let mut w = BundleWriter::create(
        &out,
        dalle_bundle::ModelFamily::Clip,
        prov,
        false,
        ExternalDataPolicy::default(),
    )
    .unwrap();
    clip::add_to_bundle(&mut w, &fx, clip::load(&fx).unwrap()).unwrap();
    w.commit().unwrap();
    let mut images: Vec<String> = std::fs::read_dir(&fx)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    images.sort();
    let mut args = vec![
        "--ep",
        "cpu",
        "clip-score",
        "--model",
        out.to_str().unwrap(),
    ];
    args.push("a photo of a cat");
    args.extend(images.iter().map(String::as_str));
    let o = dalle_ort(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = printed_scores(&o);
    // logits_per_text.npy: f32 [5 prompts, 4 images]; row 0 is the last 80 bytes' first 16.
    let npy = std::fs::read(fx.join("logits_per_text.npy")).unwrap();
    let data = &npy[npy.len() - 80..];
    let want: Vec<f32> = data[..16]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        // exp(2.3) ≈ 10 × a cosine that moves ~2e-4 with the 8-bit rounding of the pixels.
        assert!(
            (g - w).abs() < 5e-3,
            "score {g} vs reference {w} ({got:?} vs {want:?})"
        );
    }

    // Errors: no images; a bundle without CLIP.
    let o = dalle_ort(&["clip-score", "--model", out.to_str().unwrap(), "a cat"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let plain = dalle_bundle(dir.path());
    let o = dalle_ort(&[
        "--ep",
        "cpu",
        "clip-score",
        "--model",
        plain.to_str().unwrap(),
        "a cat",
        &images[0],
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no CLIP model"), "{}", stderr(&o));
}

/// `generate --rerank`: the candidate CLIP scores highest (known from `clip-score` on the
/// un-reranked run's PNGs, same seed) comes out first, all scores are in the sidecar, and
/// `--rerank` on a bundle without CLIP is a clear error.
#[test]
fn generate_reranks_candidates_with_clip() {
    let dir = tempfile::tempdir().unwrap();
    let b = dalle_bundle_with(&dir.path().join("with_clip"), Some(&clip_fixture()));
    let b = b.to_str().unwrap();
    let gen_args = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "--ep",
            "cpu",
            "generate",
            "--model",
            b,
            "a small red circle above a blue square",
            "-n",
            "6",
            "--seed",
            "11",
            "-o",
        ];
        let out = out.to_str().unwrap().to_string();
        let mut v: Vec<String> = a.drain(..).map(String::from).collect();
        v.push(out);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let plain = dir.path().join("plain");
    let args = gen_args(&plain, &[]);
    let o = dalle_ort(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let pngs: Vec<String> = (0..6)
        .map(|i| {
            plain
                .join(format!("candidate_{i:02}.png"))
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut args = vec!["--ep", "cpu", "clip-score", "--model", b];
    args.push("a small red circle above a blue square");
    args.extend(pngs.iter().map(String::as_str));
    let o = dalle_ort(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let scores = printed_scores(&o);
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let best = order[0];
    assert!(
        scores[best] - scores[order[1]] > 1e-3,
        "the fixture must prefer one candidate clearly: {scores:?}"
    );

    let ranked = dir.path().join("ranked");
    let args = gen_args(&ranked, &["--rerank", "3"]);
    let o = dalle_ort(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let first = ranked.join(format!("rank_00_candidate_{best:02}.png"));
    assert!(
        first.is_file(),
        "best candidate {best} not first: {:?}",
        std::fs::read_dir(&ranked)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&pngs[best]).unwrap(),
        "same seed, same pixels"
    );
    let written = std::fs::read_dir(&ranked)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("rank_")
        })
        .count();
    assert_eq!(written, 3);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ranked.join("generation.json")).unwrap())
            .unwrap();
    let cands = sidecar["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 6);
    for (i, c) in cands.iter().enumerate() {
        let s = c["clip_score"].as_f64().unwrap() as f32;
        assert!(
            (s - scores[i]).abs() < 2e-3,
            "candidate {i}: {s} vs {}",
            scores[i]
        );
    }
    assert_eq!(sidecar["rerank"]["order"][0].as_u64(), Some(best as u64));

    // --rerank needs CLIP.
    let no_clip = dalle_bundle(dir.path());
    let o = dalle_ort(&[
        "generate",
        "--model",
        no_clip.to_str().unwrap(),
        "a red circle",
        "-n",
        "2",
        "--rerank",
        "1",
        "-o",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--rerank"), "{}", stderr(&o));
}

/// `dalle-ort info --ep tensorrt` prints the plan — a prefill and a decode session with their
/// own profiles and cache prefixes, the per-bundle cache folder, the decoder state on the
/// device — before it finds (on this CPU build) that TensorRT is not there, and creates no
/// folder; `--no-trt-cache` and `--trt-engine-cache` change the folders. A float32 in-place
/// decoder is refused on the GPU providers and planned on the CPU under `auto`.
#[test]
fn info_prints_the_tensorrt_plan() {
    let dir = tempfile::tempdir().unwrap();
    let b = dalle_bundle(dir.path());
    let b = b.to_str().unwrap();
    let cache_home = dir.path().join("xdg");
    let info = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
            .args(args)
            .env("XDG_CACHE_HOME", &cache_home)
            .output()
            .unwrap()
    };
    let o = info(&["--ep", "tensorrt", "info", "--model", b]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "the CPU build has no TensorRT");
    assert!(stderr(&o).contains("setup-ort.sh --gpu"), "{}", stderr(&o));
    assert!(
        out.contains("graph decoder on tensorrt: 2 session(s): prefill, decode"),
        "{out}"
    );
    for prefix in ["decoder_prefill", "decoder_decode", "dvae_decoder"] {
        assert!(
            out.contains(&format!("trt_engine_cache_prefix={prefix} ")),
            "{out}"
        );
    }
    let sha = dalle::generate::manifest_sha256(Path::new(b)).unwrap();
    // <root>/<bundle name>-<manifest hash>/ort-<ONNX Runtime version>
    let folder = cache_home
        .join("dalle/tensorrt")
        .join(format!("dalle-{}", &sha[..16]))
        .join("ort-");
    assert!(
        out.contains(&format!("trt_engine_cache_path={}1.", folder.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("trt_timing_cache_path={}1.", folder.display())),
        "{out}"
    );
    // (ONNX Runtime itself keeps a device id under XDG_CACHE_HOME/Microsoft)
    assert!(
        !cache_home.join("dalle").exists(),
        "planning creates no folder"
    );
    assert!(
        out.contains("memory: state (past_*/present_*): cuda:0"),
        "{out}"
    );
    assert!(
        out.contains("`image_logits` bound to host (the last position's image logits only)"),
        "{out}"
    );
    // the decode profile feeds one token after a past of at least one
    let decode = out.split("session decode:").nth(1).unwrap();
    assert!(
        decode.contains("trt_profile_max_shapes=input_ids:"),
        "{out}"
    );
    assert!(
        decode
            .split("trt_profile_min_shapes=")
            .nth(1)
            .unwrap()
            .starts_with("input_ids:1x1,"),
        "{out}"
    );

    let o = info(&["--ep", "tensorrt", "--no-trt-cache", "info", "--model", b]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!out.contains("trt_engine_cache"), "{out}");
    let mine = dir.path().join("mine");
    let o = info(&[
        "--ep",
        "tensorrt",
        "--trt-engine-cache",
        mine.to_str().unwrap(),
        "info",
        "--model",
        b,
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains(&format!("trt_engine_cache_path={} ", mine.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("trt_timing_cache_path={}1.", folder.display())),
        "{out}"
    );

    // float32 in place: refused on CUDA, the CPU plan (and sessions) otherwise
    let fixtures = repo().join("python-free-tests/fixtures");
    let in_place = export_bundle::export_with(
        &fixtures.join("dalle_ctor/dalle.pt"),
        &fixtures.join("tokenizer/tiny_wordlevel.json"),
        None,
        &dir.path().join("dalle-in-place"),
        DecoderOptions {
            kv_cache: KvCacheLayout::InPlace,
            ..Default::default()
        },
    );
    let in_place = in_place.to_str().unwrap();
    let o = info(&["--ep", "cuda", "info", "--model", in_place]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--kv-cache in-place in float32") && stderr(&o).contains("--ep cpu"),
        "{}",
        stderr(&o)
    );
    let o = info(&["--ep", "auto", "info", "--model", in_place]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("graph decoder on cpu: 1 session(s): all"),
        "{out}"
    );
    assert!(
        out.contains("memory: state (past_*/present_*): host"),
        "{out}"
    );
}

/// min-dalle's small fixture exported with `kv_cache` (`dalle-export min-dalle --heads 4
/// --kv-cache …`), without a detokenizer.
fn min_dalle_bundle(dir: &Path, kv_cache: KvCacheLayout) -> PathBuf {
    let out = dir.join(format!("min-dalle-{}", kv_cache.name()));
    export_bundle::export_min_dalle(
        &repo().join("python-free-tests/fixtures"),
        &out,
        kv_cache,
        false,
    )
}

/// `dalle-ort info --ep tensorrt` on min-dalle bundles: the concat layout is planned on TensorRT
/// — the text encoder and `cross_kv` with their own profiles, the decoder as prefill (the start
/// token alone) and decode sessions whose profiles include the constant cross-attention state,
/// which lives on the device with the caches, bound once per prompt state — before the CPU
/// build says TensorRT is not there; the float32 in-place layout is refused on TensorRT, naming
/// `--kv-cache concat`, and planned on the CPU under `auto`.
#[test]
fn info_prints_the_tensorrt_plan_of_min_dalle_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let cache_home = dir.path().join("xdg");
    let info = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dalle-ort"))
            .args(args)
            .env("XDG_CACHE_HOME", &cache_home)
            .output()
            .unwrap()
    };
    let concat = min_dalle_bundle(dir.path(), KvCacheLayout::Concat);
    let o = info(&[
        "--ep",
        "tensorrt",
        "info",
        "--model",
        concat.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "the CPU build has no TensorRT");
    assert!(stderr(&o).contains("setup-ort.sh --gpu"), "{}", stderr(&o));
    for line in [
        "graph text_encoder on tensorrt: 1 session(s): all",
        "graph cross_kv on tensorrt: 1 session(s): all",
        "graph decoder on tensorrt: 2 session(s): prefill, decode",
        "attr kv_cache = \"concat\"",
        "attr per_row_positions = false",
        "memory: state (past_*/present_*): cuda:0",
        "memory: constant state (cross_*): cuda:0, the cross_kv graph's outputs bound there",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    for prefix in [
        "text_encoder",
        "cross_kv",
        "decoder_prefill",
        "decoder_decode",
    ] {
        assert!(
            out.contains(&format!("trt_engine_cache_prefix={prefix} ")),
            "{out}"
        );
    }
    let prefill = out.split("session prefill:").nth(1).unwrap();
    let opt = prefill.split("trt_profile_opt_shapes=").nth(1).unwrap();
    assert!(opt.starts_with("input_ids:2x1,"), "{out}");
    assert!(
        opt.split_whitespace()
            .next()
            .unwrap()
            .contains("cross_attention_bias:2x1x1x64"),
        "{out}"
    );

    let in_place = min_dalle_bundle(dir.path(), KvCacheLayout::InPlace);
    let in_place = in_place.to_str().unwrap();
    let o = info(&["--ep", "tensorrt", "info", "--model", in_place]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--kv-cache in-place in float32")
            && stderr(&o).contains("--kv-cache concat"),
        "{}",
        stderr(&o)
    );
    let o = info(&["--ep", "auto", "info", "--model", in_place]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("graph decoder on cpu: 1 session(s): all")
            && out.contains("memory: constant state (cross_*): host"),
        "{out}"
    );
}
