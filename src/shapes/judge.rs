//! Compares the objects detected in an image with the scene its prompt asks for.

use super::detect::DetectedObject;
use super::spec::{EvalPrompt, World};

/// The checks of one image against its prompt, in report order; `correct` is the category's
/// headline check (single: every attribute and exactly one object; binding: exactly the two
/// coloured shapes, of the sizes asked when the caption gives sizes; relation: those, placed as
/// asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub checks: Vec<(&'static str, bool)>,
    pub correct: bool,
}

/// Check names, per category.
pub const SINGLE_CHECKS: [&str; 6] = ["one object", "colour", "shape", "size", "position", "all"];
pub const PAIR_CHECKS: [&str; 3] = ["two objects", "colours and shapes", "bound"];
pub const RELATION_CHECK: &str = "relation";

/// Judges `objects` (largest first, as [`super::detect()`] returns them) against `prompt`.
pub fn judge(prompt: &EvalPrompt, objects: &[DetectedObject], world: &World) -> Verdict {
    if prompt.objects.len() == 1 {
        single(prompt, objects, world)
    } else {
        pair(prompt, objects, world)
    }
}

fn single(prompt: &EvalPrompt, objects: &[DetectedObject], world: &World) -> Verdict {
    let want = &prompt.objects[0];
    let one = objects.len() == 1;
    let (colour, shape, size, position) = match objects.first() {
        None => (false, false, false, false),
        Some(o) => (
            want.colour.as_deref().is_none_or(|c| o.colour == c),
            o.shape == want.shape,
            want.size
                .as_deref()
                .is_none_or(|s| o.size_name(&world.sizes) == s),
            want.position
                .as_deref()
                .is_none_or(|p| o.position_name(world) == p),
        ),
    };
    let all = one && colour && shape && size && position;
    Verdict {
        checks: vec![
            (SINGLE_CHECKS[0], one),
            (SINGLE_CHECKS[1], colour),
            (SINGLE_CHECKS[2], shape),
            (SINGLE_CHECKS[3], size),
            (SINGLE_CHECKS[4], position),
            (SINGLE_CHECKS[5], all),
        ],
        correct: all,
    }
}

fn sorted<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = items.collect();
    v.sort_unstable();
    v
}

/// Where `a` is relative to `b` along the dominant axis (image y grows downwards).
pub fn relation_of(a: &DetectedObject, b: &DetectedObject) -> &'static str {
    let (dx, dy) = (b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]);
    if dy.abs() >= dx.abs() {
        if dy > 0.0 { "above" } else { "below" }
    } else if dx > 0.0 {
        "left of"
    } else {
        "right of"
    }
}

fn pair(prompt: &EvalPrompt, objects: &[DetectedObject], world: &World) -> Verdict {
    let two = objects.len() == 2;
    let want = &prompt.objects;
    let present = two
        && sorted(objects.iter().map(|o| o.colour.as_str()))
            == sorted(want.iter().map(|o| o.colour.as_deref().unwrap_or("")))
        && sorted(objects.iter().map(|o| o.shape.as_str()))
            == sorted(want.iter().map(|o| o.shape.as_str()));
    // A sized two-object caption binds the sizes too (two-object scenes use `pair_sizes`).
    let matches = |o: &DetectedObject, i: usize| {
        want[i].colour.as_deref() == Some(o.colour.as_str())
            && o.shape == want[i].shape
            && want[i]
                .size
                .as_deref()
                .is_none_or(|s| o.size_name(&world.pair_sizes) == s)
    };
    // the detected object playing the prompt's first object, when the binding is right
    let first = if two && matches(&objects[0], 0) && matches(&objects[1], 1) {
        Some((&objects[0], &objects[1]))
    } else if two && matches(&objects[1], 0) && matches(&objects[0], 1) {
        Some((&objects[1], &objects[0]))
    } else {
        None
    };
    let bound = first.is_some();
    let mut checks = vec![
        (PAIR_CHECKS[0], two),
        (PAIR_CHECKS[1], present),
        (PAIR_CHECKS[2], bound),
    ];
    let mut correct = bound;
    if let Some(rel) = &prompt.relation {
        let ok = first.is_some_and(|(a, b)| relation_of(a, b) == rel);
        checks.push((RELATION_CHECK, ok));
        correct = ok;
    }
    Verdict { checks, correct }
}
