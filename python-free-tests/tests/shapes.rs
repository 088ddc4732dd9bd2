//! The shape-world evaluator (`dalle::shapes`) on the world's own ground-truth renders
//! (`fixtures/shapes_world/`, drawn by `models/train/world.py`): every scene is detected and
//! judged correct against its caption, wrong captions are judged wrong, and every caption (and
//! every prompt of the shipped evaluation set) parses back into the scene it describes.

use dalle::preprocess;
use dalle::shapes::{EvalSet, detect, judge};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn world_set() -> EvalSet {
    EvalSet::load(&repo().join("models/shapes/heldout.json")).unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scenes() -> Vec<Value> {
    let dir = python_free_tests::fixture("shapes_world");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("scenes.json")).unwrap()).unwrap();
    v["scenes"].as_array().unwrap().clone()
}

#[test]
fn ground_truth_renders_are_detected_and_judged_correct() {
    let set = world_set();
    let dir = python_free_tests::fixture("shapes_world");
    let scenes = scenes();
    assert_eq!(scenes.len(), 60);
    for s in &scenes {
        let file = s["file"].as_str().unwrap();
        let caption = s["caption"].as_str().unwrap();
        let image = preprocess::load_image(&dir.join(file)).unwrap();
        let objects = detect(&image, &set.world).unwrap();
        let want = s["objects"].as_array().unwrap();
        assert_eq!(objects.len(), want.len(), "{file}: {objects:?}");
        for (o, c) in want.iter().zip(s["centres"].as_array().unwrap()) {
            let found = objects
                .iter()
                .find(|d| d.colour == o["colour"] && d.shape == o["shape"])
                .unwrap_or_else(|| panic!("{file}: no {o} in {objects:?}"));
            let sizes = if want.len() == 1 {
                &set.world.sizes
            } else {
                &set.world.pair_sizes
            };
            assert_eq!(found.size_name(sizes), o["size"], "{file}: {found:?}");
            // centroids: exact for circles and squares; a triangle's sits a sixth of its
            // height below the box centre
            let dx = (found.centre[0] as f64 - c[0].as_f64().unwrap()).abs();
            assert!(dx < 0.6, "{file}: {found:?} vs {c}");
        }
        let prompt = set.world.parse_prompt(caption).unwrap();
        let verdict = judge(&prompt, &objects, &set.world);
        assert!(
            verdict.correct,
            "{file} {caption:?}: {verdict:?} {objects:?}"
        );
        assert!(verdict.checks.iter().all(|c| c.1), "{file}: {verdict:?}");
    }
}

/// Each scene judged against a caption with one thing changed is wrong, and the failed check
/// names the change.
#[test]
fn altered_captions_are_judged_wrong() {
    let set = world_set();
    let dir = python_free_tests::fixture("shapes_world");
    let swaps: [(&str, &str); 8] = [
        (" red ", " blue "),
        (" circle", " square"),
        (" square", " triangle"),
        (" triangle", " circle"),
        ("on the left", "on the right"),
        (" above ", " below "),
        ("to the left of", "to the right of"),
        ("a small ", "a large "),
    ];
    let mut tried = 0;
    for s in scenes() {
        let caption = s["caption"].as_str().unwrap();
        let image = preprocess::load_image(&dir.join(s["file"].as_str().unwrap())).unwrap();
        let objects = detect(&image, &set.world).unwrap();
        for (from, to) in swaps {
            if !caption.contains(from) {
                continue;
            }
            let altered = caption.replacen(from, to, 1);
            let Some(prompt) = set.world.parse_prompt(&altered) else {
                continue;
            };
            // swapping into a colour/shape the other object already has can stay correct
            // for binding only when both objects swap; a single replacement never does
            let verdict = judge(&prompt, &objects, &set.world);
            assert!(!verdict.correct, "{caption:?} → {altered:?}: {verdict:?}");
            tried += 1;
        }
    }
    assert!(tried >= 40, "only {tried} altered captions");
}

#[test]
fn evaluation_prompts_parse_back_to_their_scenes() {
    let set = world_set();
    assert_eq!(set.prompts.len(), 84);
    for p in &set.prompts {
        let parsed = set
            .world
            .parse_prompt(&p.prompt)
            .unwrap_or_else(|| panic!("{:?} does not parse", p.prompt));
        assert_eq!(parsed.category, p.category, "{}", p.prompt);
        assert_eq!(parsed.objects, p.objects, "{}", p.prompt);
        assert_eq!(parsed.relation, p.relation, "{}", p.prompt);
    }
    let w = &set.world;
    for ok in [
        "a red circle",
        "A Picture of a  large Blue square at the top",
        "there is a green triangle and a white circle",
        "an image of a yellow square to the right of a red triangle",
        // every phrasing the world renders: colour left out, sizes on both objects
        "a circle",
        "a small triangle on the left",
        "a large red circle above a large blue square",
        "there is a small green square and a small white circle",
    ] {
        assert!(w.parse_prompt(ok).is_some(), "{ok}");
    }
    let pair = w
        .parse_caption("a large red circle above a large blue square")
        .unwrap();
    assert_eq!(pair.objects[1].size.as_deref(), Some("large"));
    assert_eq!(w.parse_caption("a circle").unwrap().objects[0].colour, None);
    // errors name the word or the construction
    for (bad, says) in [
        (
            "a purple circle",
            "\"purple\" is not a word of the shape world",
        ),
        ("red circle", "starts with one of"),
        ("a red circle and", "needs a second object"),
        (
            "a red circle and a large blue square",
            "both objects or neither",
        ),
        ("a circle above a blue square", "both objects' colours"),
        ("a red circle on the top", "is neither a position"),
    ] {
        let e = w.parse_caption(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    for bad in [
        "",
        "a purple circle",
        "a red circle on the moon",
        "a red circle and",
        "a red circle and a large blue square",
        "a red circle near a blue square",
        "red circle",
    ] {
        assert!(w.parse_prompt(bad).is_none(), "{bad:?} parsed");
    }
}

#[test]
fn bad_evaluation_files_and_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("models/shapes/heldout.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["prompts"][0]["objects"][0]["colour"] = "purple".into();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    let e = EvalSet::load(&p).unwrap_err().to_string();
    assert!(e.contains("unknown colour \"purple\""), "{e}");
    std::fs::write(&p, "{").unwrap();
    assert!(EvalSet::load(&p).is_err());

    let set = world_set();
    let e = detect(&image::RgbImage::new(64, 64), &set.world)
        .unwrap_err()
        .to_string();
    assert!(e.contains("32x32"), "{e}");
    assert!(
        detect(&image::RgbImage::new(32, 32), &set.world)
            .unwrap()
            .is_empty()
    );
}
