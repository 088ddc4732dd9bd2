//! The whole-request convenience on top of the engine: admit, step until the request is done,
//! decode every candidate. What `dalle-ort generate` and `shapes-eval` run.

use super::model::ImageTokenModel;
use super::request::ValidatedRequest;
use super::{Engine, EngineError, Event, RequestId};
use crate::generate::LoopTimings;
use ndarray::Array4;
use std::time::{Duration, Instant};

/// What [`generate_observed`] calls after every step: the engine, the request's id and the
/// step's events.
pub type RequestObserver<'a, M> =
    dyn FnMut(&mut Engine<M>, RequestId, &[Event]) -> Result<(), EngineError> + 'a;

/// The whole run's timings.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Image-encoder time of the init image.
    pub prime: Duration,
    pub sampling: LoopTimings,
    /// Image decoding of all candidates.
    pub decode: Duration,
    /// Admission to decoded pixels (sessions already created).
    pub total: Duration,
    /// Creating the sessions before that (set by the caller that created them).
    pub load: Duration,
}

/// Generated candidates, still in memory.
#[derive(Clone, Debug)]
pub struct Generation {
    pub request: ValidatedRequest,
    /// Image codes per candidate, row-major `grid²`.
    pub tokens: Vec<Vec<u32>>,
    /// Decoded pixels f32 `[candidates, 3, H, W]` in [0, 1].
    pub pixels: Array4<f32>,
    /// Candidates that ran at once.
    pub batch: usize,
    /// Number of primed tokens.
    pub primed: usize,
    pub timings: Timings,
}

/// Runs one request to the end on `engine` (which may be running others too); `progress` gets
/// sampled-token counts.
pub fn generate<M: ImageTokenModel>(
    engine: &mut Engine<M>,
    request: ValidatedRequest,
    progress: &mut dyn FnMut(usize),
) -> Result<Generation, EngineError> {
    generate_observed(engine, request, progress, &mut |_, _, _| Ok(()))
}

/// [`generate`], calling `observe` with the engine, the request's id and each step's events
/// (`dalle-ort generate --preview-every`).
pub fn generate_observed<M: ImageTokenModel>(
    engine: &mut Engine<M>,
    request: ValidatedRequest,
    progress: &mut dyn FnMut(usize),
    observe: &mut RequestObserver<'_, M>,
) -> Result<Generation, EngineError> {
    let started = Instant::now();
    let batch = engine.candidates_at_once(&request).min(request.candidates);
    let id = engine.admit(request)?;
    let finished = engine
        .run_until_finished_observed(id, progress, &mut |e, events| observe(e, id, events))?;
    let t = Instant::now();
    let pixels = engine.model_mut().decode_images(&finished.tokens)?;
    let decode = t.elapsed();
    Ok(Generation {
        request: finished.request,
        tokens: finished.tokens,
        pixels,
        batch,
        primed: finished.primed,
        timings: Timings {
            prime: finished.timings.prime,
            sampling: finished.timings.sampling,
            decode,
            total: started.elapsed(),
            load: Duration::ZERO,
        },
    })
}
