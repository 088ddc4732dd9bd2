//! The shape-world evaluator: did a generated image render its prompt?
//!
//! The shipped demo model (`models/shapes/`) is trained on a procedural world of one or two
//! flat-coloured shapes on a dark canvas (`models/train/world.py`). Because the world is known
//! exactly, generated images can be checked without a learned judge:
//!
//! ```text
//! heldout.json ─► spec::EvalSet (world: palette, sizes, anchors; prompts with expected scenes)
//! image ─► detect::detect ─► objects (colour, shape, size, centre) ─► judge::judge ─► Verdict
//! verdicts of N candidates (+ CLIP scores) ─► report::Report ─► markdown table
//! ```
//!
//! Detection explains every pixel as a blend of the background and one palette colour
//! (anti-aliased and blurry edges included), labels it with that colour when the colour covers
//! at least half of it, and measures each 4-connected component: its extent gives the size, the
//! share of its area in the top half and in the bounding box's corners gives the shape.

pub mod detect;
pub mod judge;
pub mod report;
pub mod spec;

pub use detect::{DetectedObject, detect};
pub use judge::{Verdict, judge};
pub use report::Report;
pub use spec::{EvalPrompt, EvalSet, ExpectedObject, World};
