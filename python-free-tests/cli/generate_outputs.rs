//! What `dalle-ort generate` leaves behind, through the binary: the sidecar's provenance and
//! effective settings, the `parameters` chunk of every PNG (read back by `dalle-ort info
//! IMAGE.png`, reproduced by `generate --from`), no silent overwrite, one-file output, unknown
//! words, `--seed -1`, distinct reranked images, and the flag spellings shared with the other
//! programs (a test target of the `dalle` package).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python-free-tests/fixtures")
}

/// The DALLE-pytorch fixture with the tiny word-level tokenizer (and CLIP when asked).
fn bundle(dir: &Path, clip: bool) -> PathBuf {
    let f = fixtures();
    let clip_dir = f.join("clip_small");
    export_bundle::export(
        &f.join("dalle_ctor/dalle.pt"),
        &f.join("tokenizer/tiny_wordlevel.json"),
        clip.then_some(clip_dir.as_path()),
        &dir.join(if clip { "dalle-clip" } else { "dalle" }),
    )
}

const PROMPT: &str = "a small red circle above a blue square";

/// `dalle-ort --ep cpu generate --model B PROMPT ARGS...`, which must succeed.
fn generate(b: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--ep", "cpu", "generate", "--model", b.to_str().unwrap()];
    args.extend(extra);
    let o = dalle_ort(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sidecar_and_pngs_record_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), false);
    let out = dir.path().join("a");
    generate(
        &b,
        &[
            PROMPT,
            "-n",
            "3",
            "--top-k",
            "16",
            "--seed",
            "7",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(out.join("generation.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = &v["provenance"];
    let manifest = std::fs::read(b.join("manifest.json")).unwrap();
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&manifest)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    assert_eq!(p["manifest_sha256"], sha.as_str());
    assert_eq!(p["bundle"], b.to_str().unwrap());
    assert_eq!(p["exporter"], "test", "from the manifest");
    assert!(
        p["runtime"].as_str().unwrap().starts_with("dalle-ort 0."),
        "{p}"
    );
    assert!(p["onnxruntime"].as_str().unwrap().starts_with("1."), "{p}");
    assert_eq!(p["execution_provider"], "cpu");
    assert!(p["threads"]["available"].as_u64().unwrap() >= 1);
    assert!(p["started"].as_str().unwrap().ends_with('Z'), "{p}");
    assert_eq!(v["settings"]["top_k"], 16);
    assert_eq!(v["settings"]["top_k_used"], 16);
    assert_eq!(v["unknown_words"], serde_json::json!([]));
    for (i, c) in v["candidates"].as_array().unwrap().iter().enumerate() {
        assert_eq!(c["seed"], 7);
        assert_eq!(c["stream"], i);
    }
    // compact: each candidate's tokens on one line
    let token_lines = text
        .lines()
        .filter(|l| l.contains("\"image_tokens\": ["))
        .count();
    assert_eq!(token_lines, 3, "{text}");
    assert!(text.lines().count() < 100, "{text}");

    // Every PNG carries its parameters; `info IMAGE.png` prints them.
    let png = out.join("candidate_01.png");
    let o = dalle_ort(&["info", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let params = stdout(&o);
    assert!(
        params.starts_with(&format!("{PROMPT}\nSeed: 7, Candidate: 1, Candidates: 3, ")),
        "{params}"
    );
    assert!(
        params.contains(&format!("Model hash: {}", &sha[..10])),
        "{params}"
    );
    assert!(
        params.contains("Top-k: 16") && params.contains("Size: 32x32"),
        "{params}"
    );
    let grid = dalle::pngtext::read_parameters(&out.join("grid.png"))
        .unwrap()
        .unwrap();
    assert!(
        grid.contains("Candidates: 3") && !grid.contains("Candidate: "),
        "{grid}"
    );

    // `--from` makes the same picture again, here as one file with its sidecar beside it.
    let again = dir.path().join("again/one.png");
    generate(
        &b,
        &[
            "--from",
            png.to_str().unwrap(),
            "-o",
            again.to_str().unwrap(),
        ],
    );
    assert_eq!(
        dalle::preprocess::load_image(&again).unwrap(),
        dalle::preprocess::load_image(&png).unwrap()
    );
    let side = json(&dir.path().join("again/one.json"));
    assert_eq!(side["candidates"][1]["file"], "one.png");
    assert_eq!(side["candidates"][0]["file"], serde_json::Value::Null);
    assert!(!dir.path().join("again/grid.png").exists());

    // --filter-thres: the sidecar says which top-k it meant.
    let ft = dir.path().join("ft");
    generate(
        &b,
        &[
            PROMPT,
            "--filter-thres",
            "0.9",
            "--seed",
            "1",
            "-o",
            ft.to_str().unwrap(),
        ],
    );
    let m = json(&b.join("manifest.json"));
    let total = m["token_layout"]["total_vocab_size"].as_u64().unwrap();
    let image = m["token_layout"]["image_vocab_size"].as_u64().unwrap();
    let k = ((0.1 * total as f64) as u64).max(1);
    let v = json(&ft.join("generation.json"));
    assert_eq!(v["settings"]["filter_thres"], 0.9);
    if k < image {
        assert_eq!(v["settings"]["top_k_used"], k);
    } else {
        assert_eq!(v["settings"]["top_k_used"], serde_json::Value::Null);
    }
    assert!(!ft.join("grid.png").exists(), "one image: no grid");
}

#[test]
fn outputs_are_never_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), false);
    let out = dir.path().join("a");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--ep",
            "cpu",
            "generate",
            "--model",
            b.to_str().unwrap(),
            PROMPT,
            "--seed",
            "3",
        ];
        args.extend(extra);
        dalle_ort(&args)
    };
    let o = run(&["-n", "2", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read(out.join("candidate_00.png")).unwrap();
    let o = run(&["-n", "2", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not empty") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(out.join("candidate_00.png")).unwrap(), first);
    // --output is the old spelling of --out
    let o = run(&["-n", "2", "--output", out.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let one = dir.path().join("one.png");
    let o = run(&["-n", "2", "-o", one.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("names one PNG"), "{}", stderr(&o));
    assert!(!one.exists());
    let o = run(&["-o", one.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(one.is_file() && dir.path().join("one.json").is_file());
    let o = run(&["-o", one.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    // No file is written through a symlink.
    #[cfg(unix)]
    {
        let target = dir.path().join("target.png");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let o = run(&["-o", link.to_str().unwrap(), "--force"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }
}

#[test]
fn unknown_words_are_named_and_strict_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), false);
    let out = dir.path().join("u");
    let o = generate(
        &b,
        &[
            "a purple circle",
            "--seed",
            "1",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l == "warning: not in the model's vocabulary, read as [UNK]: \"purple\""),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "no ANSI escapes into a pipe: {err}");
    assert_eq!(
        json(&out.join("generation.json"))["unknown_words"],
        serde_json::json!(["purple"])
    );
    let o = dalle_ort(&[
        "generate",
        "--model",
        b.to_str().unwrap(),
        "a purple circle",
        "--strict",
        "-o",
        dir.path().join("strict").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: invalid prompt: not in the model's vocabulary: \"purple\""),
        "{}",
        stderr(&o)
    );
    // -v switches to the full log format (level and module path)
    let o = generate(
        &b,
        &[
            "a purple circle",
            "-v",
            "-o",
            dir.path().join("v").to_str().unwrap(),
        ],
    );
    assert!(stderr(&o).contains("WARN"), "{}", stderr(&o));
}

#[test]
fn seeds_take_minus_one_for_random() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), false);
    for (name, seed_args) in [
        ("a", vec!["--seed", "-1"]),
        ("b", vec!["--seed=-1"]),
        ("c", vec![]),
    ] {
        let out = dir.path().join(name);
        let mut args = vec![PROMPT, "-o", out.to_str().unwrap()];
        args.extend(seed_args);
        let o = generate(&b, &args);
        let seed = json(&out.join("generation.json"))["seed"].as_u64().unwrap();
        assert!(
            stdout(&o).contains(&format!("seed {seed}:")),
            "{}",
            stdout(&o)
        );
    }
    let o = dalle_ort(&[
        "generate",
        "--model",
        b.to_str().unwrap(),
        PROMPT,
        "--seed",
        "-2",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("-1 for random"), "{}", stderr(&o));
    // negative numbers parse where they mean something
    let o = dalle_ort(&[
        "--ep",
        "cpu",
        "generate",
        "--model",
        b.to_str().unwrap(),
        PROMPT,
        "--cond-scale",
        "-1",
        "-o",
        dir.path().join("neg").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn rerank_keeps_distinct_images() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), true);
    let out = dir.path().join("r");
    // top-k 1 is greedy: every candidate draws the same tokens
    generate(
        &b,
        &[
            PROMPT,
            "-n",
            "3",
            "--top-k",
            "1",
            "--rerank",
            "2",
            "--seed",
            "5",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let v = json(&out.join("generation.json"));
    assert_eq!(v["rerank"]["kept"], 1, "{}", v["rerank"]);
    assert_eq!(v["rerank"]["duplicates_skipped"], 2, "{}", v["rerank"]);
    let kept: Vec<_> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["file"].is_null())
        .collect();
    assert_eq!(kept.len(), 1);
    let dups = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["duplicate_of"].is_null())
        .count();
    assert_eq!(dups, 2);
}

#[test]
fn help_and_info_say_what_a_bundle_takes() {
    let o = dalle_ort(&["generate", "--help"]);
    let help = stdout(&o);
    for heading in [
        "Prompt:",
        "Sampling:",
        "Output:",
        "Execution provider:",
        "Logging:",
    ] {
        assert!(help.contains(heading), "{heading} missing:\n{help}");
    }
    for flag in [
        "-o, --out",
        "--model",
        "--seed",
        "--force",
        "--strict",
        "--from",
        "--ep",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(
        !help.contains("--output"),
        "old spellings are hidden:\n{help}"
    );
    assert!(
        help.contains("P in (0, 1]") && help.contains("N in [1, 1024]"),
        "{help}"
    );

    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), false);
    let o = dalle_ort(&["--ep", "cpu", "info", "--model", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = stdout(&o);
    assert!(info.contains("image size: 32x32 px"), "{info}");
    assert!(info.contains("sampling defaults:"), "{info}");
    assert!(
        info.contains("vocabulary: 23 words (others are read as [UNK]): a an the red"),
        "{info}"
    );
    // `info DIR` is `info --model DIR`
    let o = dalle_ort(&["--ep", "cpu", "info", b.to_str().unwrap()]);
    assert!(
        o.status.success() && stdout(&o).contains("image size:"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn decode_batches_pads_names_and_creates_folders() {
    use ndarray_npy::WriteNpyExt;
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), false);
    let tokens = dir.path().join("t.npy");
    let ids =
        ndarray::Array3::<i64>::from_shape_fn((3, 8, 8), |(i, y, x)| ((i + y + x) % 7) as i64);
    ids.write_npy(std::fs::File::create(&tokens).unwrap())
        .unwrap();
    let out = dir.path().join("nested/deeper/img.png");
    let decode = |extra: &[&str]| {
        let mut args = vec![
            "--ep",
            "cpu",
            "decode",
            "--model",
            b.to_str().unwrap(),
            tokens.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--batch",
            "2",
        ];
        args.extend(extra);
        dalle_ort(&args)
    };
    let o = decode(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 0..3 {
        let p = dir.path().join(format!("nested/deeper/img_{i:02}.png"));
        assert!(p.is_file(), "{}", p.display());
        let text = dalle::pngtext::read_parameters(&p).unwrap().unwrap();
        assert!(
            text.starts_with(&format!("decoded from {} [{i}]", tokens.display())),
            "{text}"
        );
    }
    let o = decode(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = decode(&["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
