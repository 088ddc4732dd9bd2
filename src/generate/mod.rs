//! Text-to-image generation: the image-token loop over a decoder step graph, its ONNX Runtime
//! implementation, and writing the results.
//!
//! ```text
//! text ids ─► ids::text_row (BOS, per-position pads) [+ primed image codes]
//!   └─► prefill ONCE: 1 row (2 with guidance: conditional, unconditional = all pads)
//!        └─► per batch of c candidates: select_rows → c rows (+ c unconditional twins)
//!             └─► loop: sample (crate::sampling) → feed only the new token → logits
//!   ─► dvae::decode_pixels (pixels stay in memory) ─► output::write (PNGs, grid, sidecar)
//! ```
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
//!   runtime only feeds `cache_length`. They stay bound while the same state steps. A graph may
//!   mix both kinds (shift-token histories keep growing).
//!
//! The only host copy of the state is the broadcast of the prefilled prompt to each batch of
//! candidates (once per batch, [`DecoderStep::select_rows`]). Per step, the host allocates the
//! `[rows, 1]` ids and copies the `[rows, image_vocab]` logits of the last position out of ORT's
//! output (the graph's `image_logits`, or the image range of the last position of its full
//! `logits`).
//!
//! Time inside ONNX Runtime's `run_binding` is reported separately from the loop's wall time
//! ([`LoopTimings`]), so the per-step overhead of sampling and state handling is visible
//! (`step_overhead_mean_ms` in the sidecar).
//!
//! On GPU providers the state would still round-trip through host memory (CPU memory info);
//! keeping it on the device is future work.

mod ids;
mod ort_step;
mod output;
mod pipeline;
mod sample_loop;
mod step;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use ids::{image_id, push_image_codes, text_row, unconditional_row};
pub use ort_step::{OrtDecoder, OrtState};
pub use output::{
    GRID_FILE, PromptInfo, Rerank, SIDECAR_FILE, candidate_file, grid, grid_shape, ranked_file,
    write, write_reranked,
};
pub use pipeline::{
    GenerateRequest, Generation, Timings, default_init_rows, generate, token_layout,
};
pub use sample_loop::{LoopConfig, LoopTimings, TokenRun, sample_images};
pub use step::DecoderStep;
