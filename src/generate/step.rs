//! The decoder seen by the engine's row batches: one call feeds new tokens with a state and
//! returns the image-vocabulary logits of each row's last position.
//!
//! Nothing above this trait looks inside a state: the ONNX Runtime implementation
//! ([`super::OrtDecoder`]) keeps `past_*` values owned by ONNX Runtime, the tests' fake decoder
//! keeps token histories. This is what lets the engine be tested without ONNX Runtime.
//!
//! Two kinds of decoder exist, told apart by [`DecoderStep::per_row_positions`]:
//!
//! - **per-row positions** (in-place caches with `cache_length` `[batch]`): every row of a
//!   state has its own length, so rows of different requests at different positions share one
//!   call, a row is moved into any free row of a running state ([`DecoderStep::copy_rows`],
//!   which copies only the valid prefix) and a row leaves by being marked empty
//!   ([`DecoderStep::clear_rows`], nothing copied);
//! - **one position per state** (concatenated caches, whose past length is a tensor dimension):
//!   only rows that started together can share a state; the engine groups them.

use crate::error::Result;
use ndarray::{Array2, ArrayView2};
use std::time::Duration;

/// Rows and lengths of a decoder state.
pub trait StateRows {
    /// Rows (batch entries) of the state.
    fn rows(&self) -> usize;
    /// Tokens seen by each row.
    fn lengths(&self) -> &[usize];
}

/// One decoder step graph (prefill and decode share it: the first call has a zero-length past).
pub trait DecoderStep {
    /// The tokens already seen by every row (KV caches, shift histories, ...).
    type State: StateRows;

    /// Whether the rows of one state may sit at different positions (see the module docs).
    fn per_row_positions(&self) -> bool;

    /// The most tokens one row can hold (`None`: no fixed limit).
    fn capacity(&self) -> Option<usize>;

    /// A state with `rows` rows and nothing seen yet (zero-length past).
    fn empty_state(&mut self, rows: usize) -> Result<Self::State>;

    /// A new state whose row `r` is row `rows[r]` of `state` (`state` is left as it is).
    fn select_rows(&mut self, state: &Self::State, rows: &[usize]) -> Result<Self::State>;

    /// Per-row decoders only: row `src_rows[i]` of `src` becomes row `dst_rows[i]` of `dst`
    /// (its length too); only the valid prefix of each cache row is copied.
    fn copy_rows(
        &mut self,
        src: &Self::State,
        src_rows: &[usize],
        dst: &mut Self::State,
        dst_rows: &[usize],
    ) -> Result<()>;

    /// Per-row decoders only: marks `rows` of `state` empty (length 0); nothing is copied.
    fn clear_rows(&mut self, state: &mut Self::State, rows: &[usize]) -> Result<()>;

    /// Feeds `input_ids` `[rows, sequence]` (unified vocabulary) after `state`, replaces `state`
    /// with the grown one, and writes the logits over the image vocabulary (code 0 first) of
    /// each row's **last** position into `logits` (reshaped to `[rows, image_vocab]` if needed).
    /// Returns the time spent inside the model run itself, so the caller can tell it from its
    /// own per-step overhead.
    fn step(
        &mut self,
        input_ids: ArrayView2<'_, i64>,
        state: &mut Self::State,
        logits: &mut Array2<f32>,
    ) -> Result<Duration>;
}
