//! The decoder side of generation: the [`DecoderStep`] trait the engine's row batches drive,
//! its ONNX Runtime implementation ([`OrtDecoder`]), DALLE-pytorch's unified input ids
//! ([`ids`]), and writing the results ([`write_run`]: PNGs with their [`ImageParameters`], grid,
//! sidecar with [`Provenance`]; progressive [`Previews`]). The loop itself is the engine's
//! ([`crate::engine`]).
//!
//! # State handling (why IoBinding, and what it costs)
//!
//! A decoder comes with one of two cache layouts (manifest attribute `kv_cache`):
//!
//! - `concat`: the graph concatenates `past_*` with the new positions and returns `present_*`
//!   with `total_sequence_length`, so a grown buffer must exist every step. What the runtime
//!   avoids is copying on the host: [`OrtDecoder`] binds each `present_*` output with
//!   `bind_output_to_device` (CPU memory info), so ONNX Runtime allocates it inside the run, and
//!   binds the returned value as the next step's `past_*` input. The value is an ONNX
//!   Runtime-owned tensor, so `ort` binds it without a clone; the previous past is freed when it
//!   is re-bound. Outputs are re-bound every step because a bound output keeps its last value,
//!   which would otherwise be re-used with the old (shorter) shape.
//! - `in-place` (onnxruntime-genai's share-buffer mode): `past_key_values.*` are fixed-capacity
//!   buffers, allocated once per state with ONNX Runtime's allocator and bound as both the past
//!   input and the present output, so the graph writes the new keys/values into them; the
//!   runtime only feeds `cache_length`, one length per row, so rows at different positions
//!   share a call. They stay bound while the same state steps. The shift-token windows of such a
//!   graph are fixed-size states replaced by a new present each call.
//!
//! The only host copies of the state are rows moving in: a prefilled prompt's rows copied into
//! the running batch (only the valid prefix of each in-place cache,
//! [`DecoderStep::copy_rows`]), and a concatenated layout's regrouping
//! ([`DecoderStep::select_rows`]). Per step, the host allocates the `[rows, 1]` ids and copies
//! the `[rows, image_vocab]` logits of the last position out of ORT's output (the graph's
//! `image_logits`, or the image range of the last position of its full `logits`).
//!
//! Time inside ONNX Runtime's `run_binding` is reported separately from the loop's wall time
//! ([`LoopTimings`]), so the per-step overhead of sampling and state handling is visible
//! (`step_overhead_mean_ms` in the sidecar).
//!
//! On CUDA and TensorRT the state stays on the device ([`crate::ep::residency`] plans it,
//! `state_memory` executes the plan): in-place buffers come from a CUDA allocator created on
//! the session and every `present_*` is bound to CUDA memory, so between steps nothing crosses
//! to the host but the ids going in and the logits coming back (bound to host memory: with an
//! `image_logits` output, `[rows, image_vocab]`). Row moves (`copy_rows`, `select_rows`) copy
//! the states involved through the host. On TensorRT the decoder has two sessions, prefill and
//! decode, each with its own optimization profile ([`crate::ep::phases`]); a call runs on the
//! one [`crate::ep::route`] picks. The CPU path is unchanged: host memory, no extra copy.

mod compact_json;
pub mod ids;
mod ort_step;
mod output;
mod parameters;
mod preview;
mod provenance;
mod state_memory;
mod step;
mod timings;

#[cfg(test)]
pub(crate) mod fake;

pub use ids::{image_id, push_image_codes, text_row, unconditional_row};
pub use ort_step::{OrtDecoder, OrtState};
pub use output::{
    Destination, GRID_FILE, GUTTER_COLOUR, PromptInfo, Rerank, RunRecord, SIDECAR_FILE,
    candidate_file, candidate_name, grid, grid_shape, gutter, index_width, numbered_files,
    ranked_file, write, write_reranked, write_run,
};
pub use parameters::ImageParameters;
pub use preview::{FILL as PREVIEW_FILL, PreviewPlan, Previews};
pub use provenance::{
    Provenance, Threads, manifest_sha256, onnxruntime_build, onnxruntime_version, rfc3339,
};
pub use step::{DecoderStep, StateRows};
pub use timings::LoopTimings;

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use dalle_bundle::TokenLayout;

/// The token layout, or [`Error::NoTokenLayout`].
pub fn token_layout(bundle: &Bundle) -> Result<TokenLayout> {
    bundle
        .manifest()
        .token_layout
        .clone()
        .ok_or(Error::NoTokenLayout)
}
