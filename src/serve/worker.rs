//! The engine thread: the one owner of the ONNX Runtime sessions. It runs continuous batching
//! on the [`Engine`] and talks to the handlers only through the
//! [`BoundedQueue`](super::queue::BoundedQueue) and each job's event channel.
//!
//! ```text
//! loop:
//!   sweep   closed channels (client gone) → cancel; past --request-timeout → cancel + 504;
//!           shutdown timeout passed → cancel everything + 503
//!   admit   FIFO from the queue while the rows allow (the head may start partly when nothing
//!           else waits): prefill once, candidates join at the next step
//!   step    one engine step over every active row of every request (or wait for work)
//!   report  previews every K tokens (K = tokens / (partial_images + 1)), images when a
//!           request finishes (decoded, CLIP-reranked when asked), metrics
//! ```
//!
//! Cancelled rows leave at the next step, so a disconnect frees its rows within one step. An
//! engine failure (an ONNX Runtime error or a panic) fails the requests it was running with 500
//! and reloads the model; the server itself keeps running.

use super::error::ApiError;
use super::job::{Job, JobEvent, JobTimings, ms};
use super::metrics::Metrics;
use super::state::{ModelInfo, Phase, Shared};
use crate::engine::{Engine, EngineError, Event, ImageTokenModel, OrtModel, RequestId, ValidInit};
use image::RgbImage;
use ndarray::Axis;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A loaded model: the engine and what the handlers need to know about it.
pub struct Loaded {
    pub engine: Engine<OrtModel>,
    pub info: Arc<ModelInfo>,
}

/// Loads (or reloads) the model.
pub type Loader = Box<dyn FnMut() -> Result<Loaded, crate::Error> + Send>;

/// Starts the engine thread.
pub fn spawn(
    shared: Arc<Shared>,
    loader: Loader,
    dispatch: Option<tracing::Dispatch>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dalle-engine".into())
        .spawn(move || {
            let _log = dispatch.map(|d| tracing::dispatcher::set_default(&d));
            Worker {
                shared,
                loader,
                engine: None,
                running: BTreeMap::new(),
                last_load: None,
            }
            .run();
        })
}

/// The token count (sampled, primed excluded) at which partial image `k` (0-based) of `p` is
/// taken: evenly spaced over the `s` sampled tokens, never at the last one.
pub fn partial_at(k: usize, s: usize, p: usize) -> usize {
    ((k + 1) * s).div_ceil(p + 1).max(1)
}

/// A request admitted to the engine.
struct Running {
    job: Job,
    primed: usize,
    to_sample: usize,
    /// Per candidate: the next partial image's index.
    partial_next: Vec<usize>,
    started: bool,
    started_candidates: usize,
    rows_per: usize,
    first_partial: bool,
    admitted: Instant,
    steps_to_start: u64,
}

impl Running {
    fn send(&self, event: JobEvent) {
        // A closed channel is noticed (and the rows cancelled) by the next sweep.
        let _ = self.job.events.send(event);
    }

    fn pending_rows(&self) -> usize {
        (self.job.request.candidates - self.started_candidates.min(self.job.request.candidates))
            * self.rows_per
    }
}

fn rows_per(job: &Job) -> usize {
    if job.request.params.guided() { 2 } else { 1 }
}

struct Worker {
    shared: Arc<Shared>,
    loader: Loader,
    engine: Option<Engine<OrtModel>>,
    running: BTreeMap<RequestId, Running>,
    last_load: Option<Instant>,
}

/// How long to wait between attempts to load a model that failed to load.
const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// Longest idle wait before looking at the queue and the flags again.
const IDLE_WAIT: Duration = Duration::from_millis(50);

impl Worker {
    fn run(mut self) {
        self.reload();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                self.fail_everything(&ApiError::unavailable(
                    "shutting_down",
                    "the server stopped before the request finished",
                ));
                break;
            }
            if self.engine.is_none() {
                self.fail_queued(
                    &ApiError::unavailable(
                        "model_unavailable",
                        "the model is not loaded; see the server log",
                    ),
                    "model_unavailable",
                );
                if self.last_load.is_none_or(|t| t.elapsed() >= RELOAD_EVERY) {
                    self.reload();
                } else {
                    self.shared.queue.wait(IDLE_WAIT);
                }
                continue;
            }
            self.sweep();
            self.admit();
            let idle = self.engine.as_ref().is_none_or(Engine::is_idle);
            self.gauges();
            if idle {
                self.shared.queue.wait(IDLE_WAIT);
                continue;
            }
            self.step();
            let delay = self.shared.settings.step_delay;
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
    }

    fn reload(&mut self) {
        self.last_load = Some(Instant::now());
        self.shared.set_phase(Phase::Loading);
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| (self.loader)())) {
            Ok(Ok(loaded)) => {
                tracing::info!(
                    "model loaded in {:.2} s: {} ({}x{}, up to {} rows per step)",
                    started.elapsed().as_secs_f64(),
                    self.shared.settings.model_name,
                    loaded.info.width,
                    loaded.info.height,
                    loaded.info.max_rows
                );
                self.shared
                    .metrics
                    .max_rows
                    .set(loaded.info.max_rows as i64);
                self.shared.set_model(loaded.info);
                self.engine = Some(loaded.engine);
                self.shared.set_phase(Phase::Ready);
            }
            Ok(Err(e)) => {
                tracing::error!("loading the model failed: {e}");
                self.shared.set_phase(Phase::Failed);
            }
            Err(_) => {
                tracing::error!("loading the model panicked");
                self.shared.set_phase(Phase::Failed);
            }
        }
    }

    fn gauges(&self) {
        let m = &self.shared.metrics;
        m.queue_size.set(self.shared.queue.len() as i64);
        if let Some(e) = &self.engine {
            m.running_requests.set(e.running() as i64);
            m.active_rows.set(e.active_rows() as i64);
        }
    }

    fn fail_queued(&self, error: &ApiError, reason: &str) {
        for job in self.shared.queue.drain() {
            let _ = job.events.send(JobEvent::Failed(error.clone()));
            Metrics::inc(&self.shared.metrics.cancelled, reason);
        }
    }

    fn fail_everything(&mut self, error: &ApiError) {
        self.fail_queued(error, "shutdown");
        for (id, r) in std::mem::take(&mut self.running) {
            if let Some(e) = &mut self.engine {
                e.cancel(id);
            }
            r.send(JobEvent::Failed(error.clone()));
        }
    }

    /// Cancels requests whose client left, that ran out of time, or that the shutdown timeout
    /// cut off. Their rows leave at the next step.
    fn sweep(&mut self) {
        let abort = self.shared.abort.load(Ordering::SeqCst);
        if abort {
            self.fail_queued(
                &ApiError::unavailable(
                    "shutting_down",
                    "the server's shutdown timeout passed before the request started",
                ),
                "shutdown",
            );
        }
        let now = Instant::now();
        let cancel: Vec<(RequestId, &'static str)> = self
            .running
            .iter()
            .filter_map(|(&id, r)| {
                let reason = if abort {
                    "shutdown"
                } else if r.job.events.is_closed() {
                    "disconnect"
                } else if now >= r.job.deadline {
                    "timeout"
                } else {
                    return None;
                };
                Some((id, reason))
            })
            .collect();
        for (id, reason) in cancel {
            if let Some(e) = &mut self.engine {
                e.cancel(id);
            }
            Metrics::inc(&self.shared.metrics.cancelled, reason);
            let Some(r) = self.running.remove(&id) else {
                continue;
            };
            tracing::info!(request = %r.job.id, "cancelled ({reason})");
            match reason {
                "timeout" => r.send(JobEvent::Failed(ApiError::timeout(
                    self.shared.settings.request_timeout,
                ))),
                "shutdown" => r.send(JobEvent::Failed(ApiError::unavailable(
                    "shutting_down",
                    "the server's shutdown timeout passed before the request finished",
                ))),
                _ => {}
            }
        }
    }

    /// Admits queued requests in arrival order while rows allow.
    fn admit(&mut self) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let max_rows = engine.max_rows();
        loop {
            let pending: usize = self.running.values().map(Running::pending_rows).sum();
            let free = max_rows.saturating_sub(engine.active_rows() + pending);
            if free == 0 {
                break;
            }
            let head_alone = pending == 0;
            let Some(job) = self
                .shared
                .queue
                .pop_if(|job| head_alone || job.request.candidates * rows_per(job) <= free)
            else {
                break;
            };
            let now = Instant::now();
            if job.events.is_closed() {
                Metrics::inc(&self.shared.metrics.cancelled, "disconnect");
                continue;
            }
            if now >= job.deadline {
                Metrics::inc(&self.shared.metrics.cancelled, "timeout");
                let _ = job.events.send(JobEvent::Failed(ApiError::timeout(
                    self.shared.settings.request_timeout,
                )));
                continue;
            }
            let grid = engine.model().geometry();
            let primed = match &job.request.init {
                Some(ValidInit::Image { rows, .. }) => rows * grid.grid,
                Some(ValidInit::Codes(c)) => c.len(),
                None => 0,
            };
            let t = Instant::now();
            match engine.admit(job.request.clone()) {
                Ok(id) => {
                    self.shared
                        .metrics
                        .prefill_duration
                        .observe(t.elapsed().as_secs_f64());
                    let n = job.request.candidates;
                    let rows_per = rows_per(&job);
                    self.running.insert(
                        id,
                        Running {
                            primed,
                            to_sample: grid.tokens().saturating_sub(primed),
                            partial_next: vec![0; n],
                            started: false,
                            started_candidates: 0,
                            rows_per,
                            first_partial: false,
                            admitted: now,
                            steps_to_start: 0,
                            job,
                        },
                    );
                }
                Err(EngineError::Request(e)) => {
                    Metrics::inc(&self.shared.metrics.failed, "validation");
                    let _ = job
                        .events
                        .send(JobEvent::Failed(ApiError::from_request(&e, |f| {
                            f.to_owned()
                        })));
                }
                Err(EngineError::Internal(e)) => {
                    Metrics::inc(&self.shared.metrics.failed, "internal");
                    tracing::error!(request = %job.id, "admission failed: {e}");
                    let _ = job.events.send(JobEvent::Failed(ApiError::internal(format!(
                        "the engine could not start the request: {e}"
                    ))));
                }
            }
        }
    }

    fn step(&mut self) {
        let step = self.shared.steps.load(Ordering::SeqCst) + 1;
        if self.shared.settings.fail_step == Some(step) {
            self.shared.steps.fetch_add(1, Ordering::SeqCst);
            return self.engine_failed("injected failure (--fail-step)");
        }
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let rows_before = engine.stats.rows;
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| engine.step()));
        let rows = engine.stats.rows.saturating_sub(rows_before);
        let events = match result {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => return self.engine_failed(&e.to_string()),
            Err(_) => return self.engine_failed("the engine panicked"),
        };
        if rows > 0 {
            let m = &self.shared.metrics;
            m.step_duration.observe(started.elapsed().as_secs_f64());
            m.batch_rows.observe(rows as f64);
        }
        if rows > 0 || !events.is_empty() {
            self.shared.steps.fetch_add(1, Ordering::SeqCst);
        }
        self.report(events);
    }

    fn engine_failed(&mut self, message: &str) {
        tracing::error!("engine step failed: {message}; reloading the model");
        let error = ApiError::internal(format!("the engine failed: {message}"));
        for (_, r) in std::mem::take(&mut self.running) {
            Metrics::inc(&self.shared.metrics.failed, "internal");
            r.send(JobEvent::Failed(error.clone()));
        }
        self.engine = None;
        self.reload();
    }

    fn report(&mut self, events: Vec<Event>) {
        let steps = self.shared.steps.load(Ordering::SeqCst);
        let mut previews = vec![];
        let mut finished = vec![];
        for e in events {
            match e {
                Event::Started { request, .. } => {
                    if let Some(r) = self.running.get_mut(&request) {
                        r.started_candidates += 1;
                        if !r.started {
                            r.started = true;
                            r.steps_to_start = steps.saturating_sub(r.job.accepted_step);
                            let m = &self.shared.metrics;
                            m.steps_to_start.observe(r.steps_to_start as f64);
                            m.queue_duration
                                .observe(r.job.accepted.elapsed().as_secs_f64());
                            r.send(JobEvent::Started {
                                steps_waited: r.steps_to_start,
                            });
                        }
                    }
                }
                Event::Token {
                    request,
                    candidate,
                    index,
                    ..
                } => {
                    self.shared.metrics.image_tokens.inc();
                    let Some(r) = self.running.get_mut(&request) else {
                        continue;
                    };
                    let p = r.job.partial_images;
                    let Some(next) = r.partial_next.get_mut(candidate) else {
                        continue;
                    };
                    let sampled = (index + 1).saturating_sub(r.primed);
                    if *next < p
                        && sampled < r.to_sample
                        && sampled >= partial_at(*next, r.to_sample, p)
                    {
                        previews.push((request, candidate, *next));
                        *next += 1;
                    }
                }
                Event::CandidateFinished { .. } => {}
                Event::RequestFinished { request, cancelled } => {
                    if cancelled {
                        self.running.remove(&request);
                    } else {
                        finished.push(request);
                    }
                }
            }
        }
        for (id, candidate, index) in previews {
            self.preview(id, candidate, index);
        }
        for id in finished {
            self.finish(id);
        }
    }

    fn preview(&mut self, id: RequestId, candidate: usize, index: usize) {
        let (Some(engine), Some(r)) = (self.engine.as_mut(), self.running.get_mut(&id)) else {
            return;
        };
        // Unsampled cells take the codebook's last code, as min-dalle's previews do.
        let pixels = match engine.preview(id, candidate, u32::MAX) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(request = %r.job.id, "preview failed: {e}");
                return;
            }
        };
        let image = match crate::preprocess::from_chw_tensor(pixels.index_axis(Axis(0), 0)) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(request = %r.job.id, "preview failed: {e}");
                return;
            }
        };
        self.shared.metrics.partial_images.inc();
        if !r.first_partial {
            r.first_partial = true;
            self.shared
                .metrics
                .time_to_first_partial
                .observe(r.job.accepted.elapsed().as_secs_f64());
        }
        r.send(JobEvent::Partial {
            candidate,
            index,
            image,
        });
    }

    fn finish(&mut self, id: RequestId) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let finished = engine.take(id);
        let Some(r) = self.running.remove(&id) else {
            return;
        };
        let Some(f) = finished else {
            r.send(JobEvent::Failed(ApiError::internal(
                "the engine lost a finished request",
            )));
            return;
        };
        match images(engine, &f, &r.job) {
            Ok(list) => {
                let m = &self.shared.metrics;
                m.images.inc_by(list.len() as u64);
                for (index, candidate, image, clip_score) in list {
                    r.send(JobEvent::Image {
                        index,
                        candidate,
                        image,
                        clip_score,
                    });
                }
                let total = r.job.accepted.elapsed();
                m.generation_duration.observe(total.as_secs_f64());
                self.shared.record_service(r.admitted.elapsed());
                r.send(JobEvent::Done {
                    timings: JobTimings {
                        queue_ms: ms(r.admitted.duration_since(r.job.accepted)),
                        steps_to_start: r.steps_to_start,
                        steps: f.timings.sampling.steps,
                        total_ms: ms(total),
                    },
                });
            }
            Err(e) => {
                Metrics::inc(&self.shared.metrics.failed, "internal");
                tracing::error!(request = %r.job.id, "decoding the images failed: {e}");
                r.send(JobEvent::Failed(ApiError::internal(format!(
                    "decoding the images failed: {e}"
                ))));
            }
        }
    }
}

type Returned = (usize, usize, RgbImage, Option<f32>);

/// The images of a finished request, in the order returned: every candidate, or the CLIP-best
/// `keep` in score order.
fn images(
    engine: &mut Engine<OrtModel>,
    f: &crate::engine::Finished,
    job: &Job,
) -> Result<Vec<Returned>, crate::Error> {
    let pixels = engine.model_mut().decode_images(&f.tokens)?;
    let (order, scores) = if job.rerank {
        let bundle = engine.model_mut().bundle_mut();
        let scores = crate::clip::score(bundle, &f.request.text.prompt, pixels.view())?;
        let mut order = crate::clip::ranking(&scores);
        order.truncate(job.keep);
        (order, Some(scores))
    } else {
        ((0..f.tokens.len()).collect(), None)
    };
    order
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let image = crate::preprocess::from_chw_tensor(pixels.index_axis(Axis(0), c))?;
            let score = scores.as_ref().and_then(|s| s.get(c).copied());
            Ok((index, c, image, score))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::partial_at;

    #[test]
    fn partials_are_evenly_spaced_and_never_the_last_token() {
        assert_eq!(
            (0..3).map(|k| partial_at(k, 64, 3)).collect::<Vec<_>>(),
            [16, 32, 48]
        );
        assert_eq!(partial_at(0, 64, 1), 32);
        assert_eq!(
            (0..3).map(|k| partial_at(k, 2, 3)).collect::<Vec<_>>(),
            [1, 1, 2]
        );
        for s in 1..50 {
            for p in 1..=3 {
                for k in 0..p {
                    assert!(partial_at(k, s, p) >= 1);
                }
            }
        }
    }
}
