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
    for sub in ["openai-dvae", "dalle-pytorch", "clip", "demo", "inspect"] {
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
