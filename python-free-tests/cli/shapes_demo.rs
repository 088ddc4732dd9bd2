//! The shipped demo model end to end, as README command (1) runs it: the trained DALLE-pytorch
//! checkpoint and CLIP in `models/shapes/` are exported into a bundle, `dalle-ort generate` draws
//! the default prompt with the default seed and reranks with CLIP, and `shapes-eval judge` checks
//! that the best picture shows what the prompt asks (colour, shape, size, position). Also runs
//! `shapes-eval eval` on a few held-out prompts (a test target of the `dalle` package).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "export_bundle.rs"]
mod export_bundle;

/// Keep in sync with `scripts/demo.sh`.
const PROMPT: &str = "a large red circle on the left";
const DEMO_ARGS: [&str; 10] = [
    "-n",
    "8",
    "--top-k",
    "16",
    "--cond-scale",
    "3",
    "--seed",
    "7",
    "--rerank",
    "4",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn run(exe: &str, args: &[&str]) -> Output {
    let o = Command::new(exe).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{exe} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `models/shapes/` exported like `dalle-export dalle-pytorch --tokenizer … --clip …
/// --kv-cache in-place` does (keep in sync with `scripts/demo.sh`).
fn export(dir: &Path) -> PathBuf {
    use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
    let models = repo().join("models/shapes");
    export_bundle::export_with(
        &models.join("dalle.pt"),
        &models.join("tokenizer.json"),
        Some(&models.join("clip")),
        &dir.join("shapes"),
        DecoderOptions {
            kv_cache: KvCacheLayout::InPlace,
            ..Default::default()
        },
    )
}

#[test]
fn default_prompt_with_the_default_seed_is_rendered_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = export(dir.path());
    let out = dir.path().join("out");
    let mut args = vec![
        "--ep",
        "cpu",
        "generate",
        "--model",
        bundle.to_str().unwrap(),
        PROMPT,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(DEMO_ARGS);
    run(env!("CARGO_BIN_EXE_dalle-ort"), &args);
    let mut best: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("rank_00_")
        })
        .collect();
    assert_eq!(best.len(), 1, "{best:?}");
    let best = best.remove(0);
    let prompts = repo().join("models/shapes/heldout.json");
    let o = run(
        env!("CARGO_BIN_EXE_shapes-eval"),
        &[
            "--prompts",
            prompts.to_str().unwrap(),
            "judge",
            PROMPT,
            best.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(": correct"));
    // the old spelling still works
    let o = run(
        env!("CARGO_BIN_EXE_shapes-eval"),
        &[
            "--prompts",
            prompts.to_str().unwrap(),
            "judge",
            "--prompt",
            PROMPT,
            best.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(": correct"));
}

#[test]
fn eval_prints_the_score_table() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = export(dir.path());
    let prompts = repo().join("models/shapes/heldout.json");
    let report = dir.path().join("table.md");
    let grids = dir.path().join("grids");
    let o = run(
        env!("CARGO_BIN_EXE_shapes-eval"),
        &[
            "--prompts",
            prompts.to_str().unwrap(),
            "--ep",
            "cpu",
            "eval",
            "--model",
            bundle.to_str().unwrap(),
            "-n",
            "2",
            "--limit",
            "3",
            "--seed",
            "-1",
            "-o",
            grids.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let table = std::fs::read_to_string(&report).unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&table));
    assert!(grids.join("prompt_002.png").is_file());
    let params = dalle::pngtext::read_parameters(&grids.join("prompt_000.png"))
        .unwrap()
        .unwrap();
    assert!(params.contains("\nSeed: "), "{params}");
    // a second run refuses the non-empty image folder
    let again = Command::new(env!("CARGO_BIN_EXE_shapes-eval"))
        .args([
            "--prompts",
            prompts.to_str().unwrap(),
            "eval",
            "--model",
            bundle.to_str().unwrap(),
            "-o",
            grids.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(table.contains("| prompts | check | one sample | CLIP best of 2 | any of 2 |"));
    for check in ["one object", "colour", "shape", "size", "position", "all"] {
        assert!(
            table.contains(&format!("| single (3) | {check} |")),
            "{table}"
        );
    }
    // a prompt outside the world's caption language is a clear error naming what is not
    let judge_err = |prompt: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_shapes-eval"))
            .args([
                "--prompts",
                prompts.to_str().unwrap(),
                "judge",
                prompt,
                "x.png",
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = judge_err("a cat");
    assert!(
        e.contains("not a caption of the shape world") && e.contains("\"cat\" is not a word"),
        "{e}"
    );
    let e = judge_err("a red circle on the top");
    assert!(e.contains("\"on the top\" is neither a position"), "{e}");
}

/// `shapes-eval` takes the runtime flags of `dalle-ort` (`--ep`, `--ort-lib`, `-v`) and the same
/// spellings for output and seeds.
#[test]
fn flags_are_spelled_as_in_dalle_ort() {
    let help = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_shapes-eval"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = help(&["eval", "--help"]);
    for flag in [
        "--ep <EP>",
        "--ort-lib",
        "-v, --verbose",
        "-o, --out <DIR>",
        "--seed <N>",
        "--top-p",
        "--filter-thres",
        "Execution provider:",
        "Sampling:",
    ] {
        assert!(text.contains(flag), "{flag} missing:\n{text}");
    }
    assert!(
        !text.contains("--images"),
        "old spellings are hidden:\n{text}"
    );
    let text = help(&["judge", "--help"]);
    assert!(text.contains("<PROMPT IMAGES>"), "{text}");
}
