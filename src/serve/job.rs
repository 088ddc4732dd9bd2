//! What a handler hands the engine thread ([`Job`]) and what comes back ([`JobEvent`]).
//!
//! Each job carries its own unbounded event channel; the engine thread never blocks on a client.
//! The channel is bounded in practice: at most `partial_images` previews per candidate, one image
//! per returned image, and one final event. When the handler goes away (the client disconnected,
//! or dropped the SSE stream) the receiver is dropped; the engine thread sees the sender closed
//! before its next step and cancels the request's rows.

use super::error::ApiError;
use crate::engine::ValidatedRequest;
use image::RgbImage;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// OpenAI's `usage`, filled for DALL·E‑1: text tokens and primed image tokens in, sampled image
/// tokens out (every candidate, reranked-away ones included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: usize,
    pub input_tokens_details: InputDetails,
    pub output_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InputDetails {
    pub text_tokens: usize,
    pub image_tokens: usize,
}

impl Usage {
    pub fn new(text_tokens: usize, primed: usize, output_tokens: usize) -> Usage {
        let input = text_tokens + primed;
        Usage {
            input_tokens: input,
            input_tokens_details: InputDetails {
                text_tokens,
                image_tokens: primed,
            },
            output_tokens,
            total_tokens: input + output_tokens,
        }
    }
}

/// Where a request's time went (an extension field of the response, `timings`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct JobTimings {
    /// Acceptance to admission (prefill start).
    pub queue_ms: f64,
    /// Engine steps that ran between acceptance and the request's first token.
    pub steps_to_start: u64,
    /// Engine steps that ran this request's rows.
    pub steps: usize,
    /// Acceptance to the last image ready.
    pub total_ms: f64,
}

/// Counts accepted requests not yet finished; the shutdown drain waits for zero. Dropping the
/// token (with its job) gives the count back, whatever path the job took.
#[derive(Debug)]
pub struct InflightToken(Arc<AtomicUsize>);

impl InflightToken {
    pub fn new(counter: &Arc<AtomicUsize>) -> InflightToken {
        counter.fetch_add(1, Ordering::SeqCst);
        InflightToken(counter.clone())
    }
}

impl Drop for InflightToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A validated request on its way to the engine thread.
#[derive(Debug)]
pub struct Job {
    /// The HTTP request id (`x-request-id`), for logs.
    pub id: String,
    pub request: ValidatedRequest,
    /// Images returned (the CLIP-best `keep` when `rerank`).
    pub keep: usize,
    pub rerank: bool,
    /// Partial images per candidate (0: none).
    pub partial_images: usize,
    pub accepted: Instant,
    pub deadline: Instant,
    /// The engine's step count at acceptance.
    pub accepted_step: u64,
    pub events: UnboundedSender<JobEvent>,
    pub inflight: InflightToken,
}

/// What the engine thread reports about a job, in order.
#[derive(Debug)]
pub enum JobEvent {
    /// The first candidate joined the batch.
    Started { steps_waited: u64 },
    /// A preview of candidate `candidate`: its partial grid decoded, unsampled cells filled.
    Partial {
        candidate: usize,
        index: usize,
        image: RgbImage,
    },
    /// Returned image number `index` (rank order when reranked), from candidate `candidate`.
    Image {
        index: usize,
        candidate: usize,
        image: RgbImage,
        clip_score: Option<f32>,
    },
    /// Every image was sent.
    Done { timings: JobTimings },
    /// The request failed; nothing more follows.
    Failed(ApiError),
}

/// Milliseconds of a duration, for [`JobTimings`].
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up() {
        let u = Usage::new(5, 24, 80);
        assert_eq!(u.input_tokens, 29);
        assert_eq!(u.total_tokens, 109);
        assert_eq!(u.input_tokens_details.image_tokens, 24);
    }

    #[test]
    fn inflight_tokens_count_down_on_drop() {
        let c = Arc::new(AtomicUsize::new(0));
        let a = InflightToken::new(&c);
        let b = InflightToken::new(&c);
        assert_eq!(c.load(Ordering::SeqCst), 2);
        drop(a);
        drop(b);
        assert_eq!(c.load(Ordering::SeqCst), 0);
    }
}
