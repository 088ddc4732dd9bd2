//! The `dalle-export` binary: subcommands, exit codes and messages (a test target of the
//! `dalle-export` package, kept with the other integration tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dalle_export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dalle-export"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../python-free-tests/fixtures")
        .join(p)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let o = dalle_export(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for sub in [
        "openai-dvae",
        "dalle-pytorch",
        "clip",
        "demo",
        "inspect",
        "check",
    ] {
        assert!(text.contains(sub), "`{sub}` missing from --help:\n{text}");
    }
}

#[test]
fn exports_the_dvae_and_inspects_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let enc = fixture("dvae_small/encoder.pkl");
    let dec = fixture("dvae_small/decoder.pkl");
    let o = dalle_export(&[
        "openai-dvae",
        "--vae-encoder",
        enc.to_str().unwrap(),
        "--vae-decoder",
        dec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"family\": \"openai-dvae\"") && manifest.contains("\"sha256\""),
        "{manifest}"
    );

    let o = dalle_export(&["inspect", out.join("dvae_decoder.onnx").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("= Gather(blocks.input.w, image_tokens)") && text.ends_with("check: ok\n"),
        "{text}"
    );

    // An existing bundle is not replaced without --force.
    let o = dalle_export(&[
        "openai-dvae",
        "--decoder", // the old spelling, a hidden alias
        dec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
}

#[test]
fn malicious_checkpoint_fails_cleanly_without_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let evil = fixture("pickle/malicious_os_system.pt");
    let o = dalle_export(&[
        "openai-dvae",
        "--encoder",
        evil.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.contains("forbidden global `os.system`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "staging left behind"
    );
}

#[test]
fn bad_invocations_are_clear_errors() {
    let o = dalle_export(&["openai-dvae", "--out", "/tmp/never-written"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("give --vae-encoder, --vae-decoder, or both"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xff\xff not protobuf").unwrap();
    let o = dalle_export(&["inspect", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not an ONNX model"), "{}", stderr(&o));

    let o = dalle_export(&["dalle-pytorch", "--checkpoint", "missing.pt", "--out", "y"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("missing.pt: No such file or directory"),
        "{err}"
    );
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "the cause is printed once: {err}"
    );

    // `--model` is the old spelling of `clip --checkpoint` (a hidden alias)
    let o = dalle_export(&["clip", "--model", "x", "--out", "y"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("x: not a directory"), "{}", stderr(&o));
}

#[test]
fn exports_a_hugging_face_clip_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip");
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../python-free-tests/fixtures/clip_small_gelu");
    let o = dalle_export(&[
        "clip",
        "--checkpoint",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Gelu"), "{}", stderr(&o));
    let m = dalle_bundle::Manifest::read_from_dir(&out).unwrap();
    let clip = m.clip.unwrap();
    assert_eq!(
        (clip.pad_id, clip.eos_id, clip.projection_dim),
        (0, 49407, 20)
    );
    for f in ["clip_text.onnx", "clip_image.onnx", "clip_tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

#[test]
fn demo_says_it_is_random() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = dalle_export(&["demo", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("RANDOM dVAE"), "{err}");
    assert!(err.contains("models/shapes/"), "{err}");
    assert!(!err.contains("until a trained demo"), "stale banner: {err}");
    assert!(!err.contains('\x1b'), "no ANSI escapes into a pipe: {err}");
    let random = dir.path().join("random");
    let o = dalle_export(&["demo", "--seed", "-1", "-o", random.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = dalle_export(&["--help"]);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("until a trained demo"));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("not a trained model"), "{manifest}");
}

#[test]
fn exports_a_complete_dalle_pytorch_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let ckpt = fixture("dalle_ctor/dalle.pt");
    let tok = fixture("tokenizer/tiny_wordlevel.json");

    // The default CLIP BPE tokenizer does not fit this checkpoint's 100-id text vocabulary.
    let o = dalle_export(&[
        "dalle-pytorch",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--tokenizer"), "{}", stderr(&o));
    assert!(!out.exists());

    let o = dalle_export(&[
        "dalle-pytorch",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "decoder.onnx",
            "dvae_decoder.onnx",
            "dvae_encoder.onnx",
            "manifest.json",
            "tokenizer.json"
        ]
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["family"], "dalle-pytorch");
    assert_eq!(m["token_layout"]["image_token_offset"], 108);
    assert_eq!(m["token_layout"]["total_vocab_size"], 172);
    let decoder_attrs = &m["graphs"]["decoder"]["attributes"];
    use dalle_bundle::attributes::decoder as attr;
    assert_eq!(decoder_attrs[attr::LAYERS], 4);
    assert_eq!(decoder_attrs[attr::HEAD_DIM], 16);
    assert_eq!(m["tokenizer"], "tokenizer.json");
    assert!(m["sampling"]["top_k"].as_u64().unwrap() >= 1);
    let inputs = m["graphs"]["decoder"]["inputs"].as_array().unwrap();
    assert_eq!(
        inputs.len(),
        1 + 4 * 2 + 4 * 2,
        "ids, 4 layers × (key, value), 4 × (attn, ff) shift history"
    );
    let sources = m["provenance"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
}

#[test]
fn clip_flag_adds_clip_to_a_dalle_pytorch_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let o = dalle_export(&[
        "dalle-pytorch",
        "--checkpoint",
        fixture("dalle_cli/dalle.pt").to_str().unwrap(),
        "--tokenizer",
        fixture("tokenizer/tiny_wordlevel.json").to_str().unwrap(),
        "--clip",
        fixture("clip_small").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    for role in [
        "decoder",
        "dvae_encoder",
        "dvae_decoder",
        "clip_text",
        "clip_image",
    ] {
        assert!(m["graphs"][role].is_object(), "{role} missing from {m}");
    }
    assert!(m["clip"].is_object(), "{m}");
    assert!(out.join("clip_tokenizer.json").is_file() && out.join("tokenizer.json").is_file());
}

/// Flags spelled as in `dalle-ort`: `-o/--out`, `--checkpoint`, `--vae-encoder`/`--vae-decoder`;
/// the old spellings are hidden aliases.
#[test]
fn flags_are_spelled_as_in_dalle_ort() {
    let help =
        |sub: &str| String::from_utf8_lossy(&dalle_export(&[sub, "--help"]).stdout).into_owned();
    let text = help("openai-dvae");
    assert!(
        text.contains("--vae-encoder <FILE>")
            && text.contains("--vae-decoder <FILE>")
            && text.contains("-o, --out <DIR>"),
        "{text}"
    );
    assert!(!text.contains("--encoder "), "{text}");
    let text = help("clip");
    assert!(
        text.contains("--checkpoint <DIR>") && !text.contains("--model"),
        "{text}"
    );
    let text = help("dalle-pytorch");
    assert!(
        text.contains("--vae-encoder <FILE>") && text.contains("-o, --out"),
        "{text}"
    );
}

/// Flags that would be recorded as sources yet ignored are refused; `--force` refuses a
/// destination that is not a bundle (it was replaced, then exit 1).
#[test]
fn ignored_flags_and_non_bundle_destinations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let ckpt = fixture("dalle_cli/dalle.pt");
    let enc = fixture("dvae_small/encoder.pkl");
    let o = dalle_export(&[
        "dalle-pytorch",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--vae-encoder",
        enc.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("trained with DiscreteVAE")
            && stderr(&o).contains("--vae-encoder is only for OpenAIDiscreteVAE checkpoints"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    let file = dir.path().join("file");
    std::fs::write(&file, b"keep").unwrap();
    let o = dalle_export(&[
        "dalle-pytorch",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--force",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no staging folder left behind");
}

/// A manifest whose token layout disagrees with its decoder graph (a `text_length` of 8 for a
/// 16-token graph ran with exit 0) is refused when read.
#[test]
fn a_token_layout_that_disagrees_with_the_graphs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let ckpt = fixture("dalle_cli/dalle.pt");
    let tok = fixture("tokenizer/tiny_wordlevel.json");
    let o = dalle_export(&[
        "dalle-pytorch",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    dalle_bundle::Manifest::read_from_dir(&out).unwrap();
    let path = out.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"text_length\": 8,"), "{text}");
    for (from, to, needle) in [
        (
            "\"text_length\": 8,",
            "\"text_length\": 4,",
            "text_length 4 + image_grid 8² = 68 positions, but the graph declares max_sequence_length 72",
        ),
        (
            "\"image_grid\": 8,",
            "\"image_grid\": 4294967296,",
            "`token_layout.image_grid` = 4294967296 is outside the supported range 1..=256",
        ),
    ] {
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let err = dalle_bundle::Manifest::read_from_dir(&out)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{to}: {err}");
    }
}

#[test]
fn exports_a_dalle_pytorch_checkpoint_trained_with_vqgan_vae() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let vq = fixture("vqgan_taming/vq");
    let tok = fixture("tokenizer/tiny_wordlevel.json");
    let base = |extra: &[&str]| {
        let mut args = vec![
            "dalle-pytorch".to_string(),
            "--checkpoint".into(),
            vq.join("dalle.pt").display().to_string(),
            "--tokenizer".into(),
            tok.display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dalle_export(&refs)
    };
    // Without the YAML the geometry is unknown.
    let o = run(base(&[]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--vqgan-config"), "{}", stderr(&o));
    assert!(!out.exists());
    let ckpt = vq.join("model.ckpt").display().to_string();
    let yaml = vq.join("model.yaml").display().to_string();
    let o = run(base(&["--vqgan-model", &ckpt, "--vqgan-config", &yaml]));
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let dec = &m["graphs"]["dvae_decoder"]["attributes"];
    assert_eq!(dec["vq_kind"], "vector_quantizer");
    assert_eq!(dec["vocab_size"], 64);
    assert_eq!(dec["downsample"], 2);
    assert_eq!(m["token_layout"]["image_grid"], 4);
    assert_eq!(
        m["graphs"]["dvae_encoder"]["attributes"]["vq_kind"],
        "vector_quantizer"
    );
}

#[test]
fn check_reports_per_target_and_exits_1_when_a_node_would_not_run() {
    use dalle_bundle::DType;
    use dalle_export::graph::GraphBuilder;
    use dalle_export::graph::ops::Equal;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let enc = fixture("dvae_small/encoder.pkl");
    let o = dalle_export(&[
        "openai-dvae",
        "--vae-encoder",
        enc.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for target in ["tensorrt", "cuda", "cpu"] {
        let o = dalle_export(&["check", "--target", target, out.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{target}: {text}{}", stderr(&o));
        assert!(
            text.contains("dvae_encoder.onnx (dvae_encoder):")
                && text.contains(&format!(
                    "result: every node of 1 graph(s) runs on {target}"
                )),
            "{text}"
        );
    }

    // Equal over bools: TensorRT's parser takes no BOOL for Equal.
    let mut g = GraphBuilder::new("bad");
    let a = g.input("a", DType::Bool, vec![4u64.into()]).unwrap();
    let y = g.scoped("mask", |g| g.node1(Equal, &[a, a])).unwrap();
    g.output("y", y).unwrap();
    let file = dir.path().join("bad.onnx");
    std::fs::write(&file, prost::Message::encode_to_vec(&g.finish().unwrap())).unwrap();
    let o = dalle_export(&["check", "--target", "tensorrt", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("error   /mask/Equal (Equal): `a` is bool; TensorRT's Equal takes"),
        "{text}"
    );
    assert!(
        stderr(&o).contains("1 node problem(s) on tensorrt"),
        "{}",
        stderr(&o)
    );

    let o = dalle_export(&["check", "--target", "gpu", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("tensorrt, cuda, cpu"), "{}", stderr(&o));
    let o = dalle_export(&["check", "--target", "cpu", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a bundle directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn precision_flags_reach_every_graph_and_bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-int8");
    let o = dalle_export(&["demo", "--precision", "fp16", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    for (role, g) in manifest["graphs"].as_object().unwrap() {
        let p = &g["attributes"]["precision"];
        assert_eq!(p["precision"], "fp16", "{role}: {p}");
        assert_eq!(p["compute"], "float16", "{role}: {p}");
    }
    let o = dalle_export(&["demo", "--precision", "fp64", "-o", "x"]);
    assert!(
        stderr(&o).contains("unknown precision `fp64` (fp32, fp16, bf16, int8)"),
        "{}",
        stderr(&o)
    );
    let bad = dir.path().join("bad");
    let o = dalle_export(&[
        "demo",
        "--precision",
        "int8",
        "--int8-block-size",
        "24",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("int8 block size 24"),
        "{}",
        stderr(&o)
    );
    assert!(!bad.exists());
    let o = dalle_export(&["demo", "--int8-format", "gguf", "-o", "x"]);
    assert!(
        stderr(&o).contains("unknown int8 format `gguf`"),
        "{}",
        stderr(&o)
    );
}

/// `dalle-export min-dalle --kv-cache`: the default is `concat` (as `dalle-pytorch`'s), the
/// manifest says the layout as DALLE-pytorch's does; an unknown layout is a usage error.
#[test]
fn min_dalle_kv_cache_flag_defaults_to_concat_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("min_dalle_small");
    let model = model.to_str().unwrap();
    let decoder = |out: &Path| {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        m["graphs"]["decoder"]["attributes"].clone()
    };
    for (flag, layout, per_row) in [
        (None, "concat", false),
        (Some("in-place"), "in-place", true),
    ] {
        let out = tmp.path().join(layout);
        let mut args = vec!["min-dalle", "--model", model, "--heads", "4"];
        if let Some(f) = flag {
            args.extend(["--kv-cache", f]);
        }
        args.extend(["-o", out.to_str().unwrap()]);
        let o = dalle_export(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let a = decoder(&out);
        assert_eq!(a["kv_cache"], layout, "{a}");
        assert_eq!(a["per_row_positions"], per_row, "{a}");
        assert_eq!(a.get("kv_capacity").is_some(), per_row, "{a}");
    }
    let o = dalle_export(&[
        "min-dalle",
        "--model",
        model,
        "--kv-cache",
        "sideways",
        "-o",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("sideways"), "{}", stderr(&o));
}
