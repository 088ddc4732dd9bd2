//! The generation engine on the shipped shape-world model (ONNX Runtime): a request gives
//! byte-identical PNGs alone and admitted mid-way into a batch of others, in both cache layouts;
//! cancelling a request leaves the others' images unchanged; `dalle-ort generate` still makes
//! the tokens it made before the engine (`fixtures/generate_golden/`); `shapes-eval eval` and
//! `generate` sample alike (the manifest's defaults).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dalle::engine::{
    self, Engine, OrtDallePytorch, PromptInput, Request, RequestRules, SamplingOverrides,
};
use dalle::ep::{EpChoice, EpOptions};
use dalle::generate::{self, PromptInfo};
use dalle_export::families::dalle_pytorch::decoder::{DecoderOptions, KvCacheLayout};
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "export_bundle.rs"]
mod export_bundle;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn export(dir: &Path, kv_cache: KvCacheLayout) -> PathBuf {
    let models = repo().join("models/shapes");
    export_bundle::export_with(
        &models.join("dalle.pt"),
        &models.join("tokenizer.json"),
        Some(&models.join("clip")),
        &dir.join(kv_cache.name()),
        DecoderOptions {
            kv_cache,
            ..Default::default()
        },
    )
}

fn engine(bundle: &Path) -> (Engine<OrtDallePytorch>, RequestRules) {
    dalle::ort_lib::load(None, false).unwrap();
    let options = EpOptions {
        ep: EpChoice::Cpu,
        ..EpOptions::default()
    };
    let b = dalle::Bundle::open(bundle, options).unwrap();
    let rules = RequestRules::from_bundle(&b).unwrap();
    let (model, _) = OrtDallePytorch::from_bundle(b, None).unwrap();
    (Engine::new(model, None), rules)
}

fn request(prompt: &str, n: usize, seed: u64, cond_scale: f64) -> Request {
    Request {
        prompt: PromptInput::Text(prompt.into()),
        candidates: n,
        sampling: SamplingOverrides {
            top_k: Some(16),
            cond_scale: Some(cond_scale),
            seed: Some(seed),
            ..SamplingOverrides::default()
        },
        init: None,
        rerank: None,
    }
}

/// The PNG bytes of each candidate of `g`, written as `generate` writes them.
fn pngs(g: &engine::Generation, dir: &Path) -> Vec<Vec<u8>> {
    let info = PromptInfo {
        prompt: g.request.text.prompt.clone(),
        text_token_ids: g.request.text.ids.clone(),
        token_count: g.request.text.token_count,
        truncated: false,
        init_image: None,
    };
    generate::write(dir, g, &info, &g.request.params, None).unwrap();
    (0..g.tokens.len())
        .map(|i| std::fs::read(dir.join(generate::candidate_file(i))).unwrap())
        .collect()
}

/// Steps until `id` finishes; returns its generation (pixels decoded).
fn finish(
    e: &mut Engine<OrtDallePytorch>,
    id: engine::RequestId,
    rules: &RequestRules,
    r: Request,
) -> engine::Generation {
    let f = e.run_until_finished(id, &mut |_| {}).unwrap();
    let pixels = {
        use dalle::engine::ImageTokenModel;
        e.model_mut().decode_images(&f.tokens).unwrap()
    };
    engine::Generation {
        request: rules.validate(r).unwrap(),
        tokens: f.tokens,
        pixels,
        batch: 0,
        primed: f.primed,
        timings: Default::default(),
    }
}

#[test]
fn a_request_alone_and_admitted_mid_way_gives_byte_identical_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let a = || request("a large red circle on the left", 2, 5, 3.0);
    let others = [
        request("a blue square above a yellow triangle", 3, 9, 3.0),
        request("a small green triangle at the top", 2, 1, 1.0),
    ];
    for kv_cache in [KvCacheLayout::InPlace, KvCacheLayout::Concat] {
        let bundle = export(dir.path(), kv_cache);
        let (mut e, rules) = engine(&bundle);
        let alone = engine::generate(&mut e, rules.validate(a()).unwrap(), &mut |_| {}).unwrap();
        let want = pngs(
            &alone,
            &dir.path().join(format!("{}-alone", kv_cache.name())),
        );

        let (mut e, rules) = engine(&bundle);
        let mut ids = vec![];
        for r in &others {
            ids.push(e.admit(rules.validate(r.clone()).unwrap()).unwrap());
            for _ in 0..7 {
                e.step().unwrap();
            }
        }
        let id = e.admit(rules.validate(a()).unwrap()).unwrap();
        assert!(e.running() == 3, "the others are still running");
        let busy = finish(&mut e, id, &rules, a());
        let got = pngs(&busy, &dir.path().join(format!("{}-busy", kv_cache.name())));
        assert_eq!(busy.tokens, alone.tokens, "{}", kv_cache.name());
        assert_eq!(got, want, "{}: PNG bytes", kv_cache.name());
        if kv_cache == KvCacheLayout::InPlace {
            assert!(
                e.stats.calls <= e.stats.steps,
                "per-row positions: one decoder call per step"
            );
        }
    }
}

#[test]
fn cancel_leaves_the_other_requests_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let b = || request("there is a small white square in the middle", 2, 3, 2.0);
    for kv_cache in [KvCacheLayout::InPlace, KvCacheLayout::Concat] {
        let bundle = export(dir.path(), kv_cache);
        let (mut e, rules) = engine(&bundle);
        let alone = engine::generate(&mut e, rules.validate(b()).unwrap(), &mut |_| {}).unwrap();

        let (mut e, rules) = engine(&bundle);
        let a = e
            .admit(rules.validate(request("a red circle", 3, 4, 3.0)).unwrap())
            .unwrap();
        let id = e.admit(rules.validate(b()).unwrap()).unwrap();
        for _ in 0..10 {
            e.step().unwrap();
        }
        let rows = e.active_rows();
        assert!(e.cancel(a));
        let events = e.step().unwrap();
        assert!(events.contains(&engine::Event::RequestFinished {
            request: a,
            cancelled: true
        }));
        assert_eq!(e.active_rows(), rows - 6, "a's 3 × 2 rows left at once");
        let busy = finish(&mut e, id, &rules, b());
        assert_eq!(busy.tokens, alone.tokens, "{}", kv_cache.name());
        assert!(e.take(a).is_none());
    }
}

fn run(exe: &str, args: &[&str]) -> String {
    let o = Command::new(exe).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{exe} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn candidate_tokens(sidecar: &Path) -> Vec<Vec<u32>> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(sidecar).unwrap()).unwrap();
    json["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::from_value(c["image_tokens"].clone()).unwrap())
        .collect()
}

/// The runs of `fixtures/generate_golden/GENERATED.md`, with today's `dalle-ort generate`.
#[test]
fn generate_makes_the_tokens_it_made_before_the_engine() {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("python-free-tests/fixtures/generate_golden/tokens.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for kv_cache in [KvCacheLayout::InPlace, KvCacheLayout::Concat] {
        let bundle = export(dir.path(), kv_cache);
        let bundle = bundle.to_str().unwrap().to_string();
        let out = |name: &str| dir.path().join(format!("{}-{name}", kv_cache.name()));
        let plain_image = out("plain").join("candidate_00.png");
        let plain_image = plain_image.to_str().unwrap().to_string();
        let runs: [(&str, Vec<&str>); 5] = [
            (
                "guided",
                vec![
                    "a large red circle on the left",
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
                ],
            ),
            (
                "plain",
                vec![
                    "a blue square above a yellow triangle",
                    "-n",
                    "3",
                    "--seed",
                    "11",
                ],
            ),
            (
                "topp",
                vec![
                    "a small green triangle at the top",
                    "-n",
                    "4",
                    "--top-p",
                    "0.9",
                    "--temperature",
                    "0.8",
                    "--seed",
                    "5",
                    "--batch",
                    "3",
                ],
            ),
            (
                "batch1",
                vec![
                    "there is a small white square in the middle",
                    "-n",
                    "3",
                    "--cond-scale",
                    "2",
                    "--top-k",
                    "8",
                    "--seed",
                    "3",
                    "--batch",
                    "1",
                ],
            ),
            (
                "prime",
                vec![
                    "a large red circle on the left",
                    "-n",
                    "2",
                    "--init-image",
                    &plain_image,
                    "--init-rows",
                    "3",
                    "--seed",
                    "9",
                    "--top-k",
                    "32",
                ],
            ),
        ];
        for (name, extra) in runs {
            let target = out(name);
            let target = target.to_str().unwrap();
            let mut args = vec!["--ep", "cpu", "generate", "--model", &bundle, "-o", target];
            args.extend(extra);
            run(env!("CARGO_BIN_EXE_dalle-ort"), &args);
            let want: Vec<Vec<u32>> =
                serde_json::from_value(golden[format!("{}-{name}", kv_cache.name())].clone())
                    .unwrap();
            let got = candidate_tokens(&Path::new(target).join("generation.json"));
            assert_eq!(got, want, "{} {name}", kv_cache.name());
        }
    }
}

/// `shapes-eval eval` builds the same request as `generate` (the manifest's sampling defaults,
/// seed + prompt index): the same pictures for the same prompt and seed.
#[test]
fn shapes_eval_and_generate_sample_alike() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = export(dir.path(), KvCacheLayout::InPlace);
    let bundle = bundle.to_str().unwrap();
    let prompts = repo().join("models/shapes/heldout.json");
    let set = dalle::shapes::EvalSet::load(&prompts).unwrap();
    let first = set.prompts[0].prompt.clone();
    let images = dir.path().join("eval");
    run(
        env!("CARGO_BIN_EXE_shapes-eval"),
        &[
            "--prompts",
            prompts.to_str().unwrap(),
            "eval",
            "--model",
            bundle,
            "-n",
            "3",
            "--seed",
            "4",
            "--limit",
            "1",
            "--no-rerank",
            "-o",
            images.to_str().unwrap(),
        ],
    );
    let out = dir.path().join("generate");
    run(
        env!("CARGO_BIN_EXE_dalle-ort"),
        &[
            "--ep",
            "cpu",
            "generate",
            "--model",
            bundle,
            &first,
            "-n",
            "3",
            "--seed",
            "4",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    // The pixels (each program writes its own `parameters` text chunk).
    let eval_grid = dalle::preprocess::load_image(&images.join("prompt_000.png")).unwrap();
    let generate_grid = dalle::preprocess::load_image(&out.join("grid.png")).unwrap();
    assert!(
        eval_grid == generate_grid,
        "the two programs sampled differently"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("generation.json")).unwrap()).unwrap();
    assert_eq!(
        json["settings"]["top_k"], 17,
        "the manifest's default top-k"
    );
}

/// The file names in `dir` starting with `prefix`, sorted.
fn names(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// `generate --preview-every K` on the shipped model (8×8 tokens, 32×32 px): per candidate a
/// preview every K sampled tokens, also for a candidate that runs after the others finished
/// (`--batch 2` of 3); the last previews are the final images; with an init image the names
/// count the primed tokens too; K that does not divide the count stops before the end; the
/// previews do not change the images.
#[test]
fn generate_writes_previews_every_k_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = export(dir.path(), KvCacheLayout::InPlace);
    let bundle = bundle.to_str().unwrap().to_string();
    let exe = env!("CARGO_BIN_EXE_dalle-ort");
    let out = |name: &str| dir.path().join(name);
    let base = [
        "--ep",
        "cpu",
        "generate",
        "--model",
        &bundle,
        "a large red circle on the left",
        "--top-k",
        "16",
        "--seed",
        "4",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let run_with = |extra: &[&str]| {
        let args = with(extra);
        run(exe, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let plain = out("plain");
    run_with(&["-n", "3", "--batch", "2", "-o", plain.to_str().unwrap()]);
    let prev = out("previews");
    let stdout = run_with(&[
        "-n",
        "3",
        "--batch",
        "2",
        "--preview-every",
        "16",
        "-o",
        prev.to_str().unwrap(),
    ]);
    assert!(stdout.contains("wrote 12 previews"), "{stdout}");
    let want: Vec<String> = (0..3)
        .flat_map(|c| (1..=4).map(move |k| format!("preview_{c:02}_{}.png", 16 * k)))
        .collect();
    assert_eq!(names(&prev, "preview_"), want);
    assert_eq!(
        candidate_tokens(&prev.join("generation.json")),
        candidate_tokens(&plain.join("generation.json")),
        "previews do not change the run"
    );
    for c in 0..3 {
        let final_image = rgb(&prev.join(format!("candidate_{c:02}.png")));
        assert_eq!(
            final_image,
            rgb(&plain.join(format!("candidate_{c:02}.png")))
        );
        let last = rgb(&prev.join(format!("preview_{c:02}_64.png")));
        assert_eq!(last.dimensions(), (32, 32));
        assert_eq!(
            last, final_image,
            "candidate {c}: the last preview is the image"
        );
        for k in 1..=3 {
            let p = rgb(&prev.join(format!("preview_{c:02}_{}.png", 16 * k)));
            assert_eq!(p.dimensions(), (32, 32));
        }
    }

    // Primed with 3 token rows (24 tokens): 40 sampled, previews at 20 and 40 sampled.
    let init = plain.join("candidate_00.png");
    let primed = out("primed");
    run_with(&[
        "--init-image",
        init.to_str().unwrap(),
        "--init-rows",
        "3",
        "--preview-every",
        "20",
        "-o",
        primed.to_str().unwrap(),
    ]);
    assert_eq!(
        names(&primed, "preview_"),
        ["preview_00_44.png", "preview_00_64.png"]
    );
    assert_eq!(
        rgb(&primed.join("preview_00_64.png")),
        rgb(&primed.join("candidate_00.png"))
    );
    let args = with(&[
        "--init-image",
        init.to_str().unwrap(),
        "--init-rows",
        "3",
        "--preview-every",
        "41",
        "-o",
        out("never").to_str().unwrap(),
    ]);
    let o = Command::new(exe).args(&args).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("each image samples only 40 tokens (64 in its grid, 24 primed)"),
        "{err}"
    );

    // K = 24 does not divide 64: previews at 24 and 48, none at the end.
    let uneven = out("uneven");
    run_with(&["--preview-every", "24", "-o", uneven.to_str().unwrap()]);
    assert_eq!(
        names(&uneven, "preview_"),
        ["preview_00_24.png", "preview_00_48.png"]
    );
}
