//! The decoder seen by the generation loop: one call feeds new tokens with a state and returns
//! the image-vocabulary logits of each row's last position.
//!
//! The loop never looks inside the state: the ONNX Runtime implementation
//! ([`super::OrtDecoder`]) keeps `past_*` values owned by ONNX Runtime, the tests' fake decoder
//! keeps token histories. This is what lets the loop be tested without ONNX Runtime.

use crate::error::Result;
use ndarray::{Array2, ArrayView2};
use std::time::Duration;

/// One decoder step graph (prefill and decode share it: the first call has a zero-length past).
pub trait DecoderStep {
    /// The tokens already seen by every row (KV caches, shift histories, ...).
    type State;

    /// A state with `rows` rows and nothing seen yet (zero-length past).
    fn empty_state(&mut self, rows: usize) -> Result<Self::State>;

    /// A new state whose row `r` is row `rows[r]` of `state` (used once per batch of
    /// candidates to broadcast the prefilled prompt; `state` is left as it is).
    fn select_rows(&mut self, state: &Self::State, rows: &[usize]) -> Result<Self::State>;

    /// Feeds `input_ids` `[rows, sequence]` (unified vocabulary) after `state`, replaces `state`
    /// with the grown one, and writes the logits over the image vocabulary (code 0 first) of
    /// each row's **last** position into `logits` (reshaped to `[rows, image_vocab]` if needed). Returns the time spent inside the model run
    /// itself, so the caller can tell it from its own per-step overhead.
    fn step(
        &mut self,
        input_ids: ArrayView2<'_, i64>,
        state: &mut Self::State,
        logits: &mut Array2<f32>,
    ) -> Result<Duration>;
}
