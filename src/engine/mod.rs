//! The generation engine: one request-level, step-driven API that every caller uses (`dalle-ort
//! generate`, `shapes-eval`, the benches, the server).
//!
//! ```text
//! Request ──RequestRules::validate──► ValidatedRequest ──Engine::admit──► prefill once (model)
//!                                                                        │
//!   Engine::step ─► (1) cancelled requests' rows leave                  ▼
//!                   (2) waiting candidates join free rows (FIFO, within the row limit)
//!                   (3) every active candidate samples one code from its rows' logits
//!                       (its own sampler settings and ChaCha20 stream: seed, candidate index)
//!                   (4) finished candidates' rows leave; one decoder step feeds the rest
//!                   ─► events: started, token, candidate finished, request finished
//! ```
//!
//! Each candidate runs as one row (two with classifier-free guidance: a conditional and an
//! unconditional row fed the same codes). Rows of different requests share each decoder call;
//! with a decoder that has per-row positions (the in-place layout) a request admitted while
//! others are mid-way joins the running batch at the next step, and rows leave without any
//! copy ([`SlotBatch`] says what each layout costs). Because every candidate's draws depend only on
//! its logits and its own stream, a request gives the same images whatever shares its batch.
//!
//! The engine is family-neutral: it deals in text ids and image codes through
//! [`ImageTokenModel`]; [`DallePytorch`] is the unified-vocabulary implementation,
//! [`OrtMinDalle`] the encoder-decoder one (DALL·E mini/mega: text encoder and cross-attention
//! keys/values once at admission, kept per row as decoder state); [`OrtModel`] opens whichever
//! a bundle holds.
//! [`generate`] is the whole-request convenience ("admit, step until done, decode").

mod batch;
mod dalle_pytorch;
mod min_dalle;
mod model;
mod ort_model;
mod request;
mod run;

#[cfg(test)]
mod tests;

pub use batch::{BatchPrompt, SlotBatch};
pub use dalle_pytorch::{
    BundleCodec, DallePytorch, ImageCodec, LoadTimings, OrtDallePytorch, batch_max,
};
pub use min_dalle::{OrtMinDalle, seamless_tokens, text_rows};
pub use model::{ImageGeometry, ImageTokenModel, Prefill, Slot, StepCost};
pub use ort_model::OrtModel;
pub use request::{
    InitInput, MAX_CANDIDATES, PromptInput, Request, RequestError, RequestRules, SamplingOverrides,
    TextTokens, ValidInit, ValidatedRequest, default_init_rows, random_seed,
};
pub use run::{Generation, RequestObserver, Timings, generate, generate_observed};

use crate::error::Error;
use crate::generate::LoopTimings;
use crate::sampling::{CandidateRng, ImageTokenSampler, SampleScratch};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The engine's name for an admitted request.
pub type RequestId = u64;

/// A failed engine operation: the client's fault (HTTP 4xx) or the engine's (5xx: ONNX Runtime,
/// a corrupt bundle, a bug).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Internal(#[from] Error),
}

impl EngineError {
    /// Whether the request itself was bad.
    pub fn is_client(&self) -> bool {
        matches!(self, EngineError::Request(_))
    }
}

/// What a step did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A candidate's rows joined the batch.
    Started {
        request: RequestId,
        candidate: usize,
    },
    /// A candidate sampled its image token number `index` (primed tokens included).
    Token {
        request: RequestId,
        candidate: usize,
        index: usize,
        code: u32,
    },
    /// A candidate has all its tokens; its rows have left.
    CandidateFinished {
        request: RequestId,
        candidate: usize,
    },
    /// Every candidate finished ([`Engine::take`] has the tokens), or the request was
    /// cancelled (its rows have left).
    RequestFinished { request: RequestId, cancelled: bool },
}

/// What [`Engine::run_until_finished_observed`] calls after every step: the engine and the
/// step's events.
pub type StepObserver<'a, M> = dyn FnMut(&mut Engine<M>, &[Event]) -> Result<(), EngineError> + 'a;

/// Engine-wide counters, for metrics and benches.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Steps that ran at least one decoder call.
    pub steps: usize,
    /// Decoder calls (one per row group per step).
    pub calls: usize,
    /// Rows computed, summed over steps (idle rows included).
    pub rows: usize,
    /// Wall time of those steps (sampling, bookkeeping, model runs).
    pub step_wall: Duration,
    /// Time inside the model runs.
    pub step_model: Duration,
    /// Of the wall time: sampling every running candidate's token.
    pub sampling: Duration,
    /// Of the wall time: the model's step around its runs (ids, binding, logits copies).
    pub model_call: Duration,
    /// Prefill calls and their time.
    pub prefills: usize,
    pub prefill: Duration,
    /// Rows joining and leaving (state copies), wall time.
    pub join: Duration,
    pub leave: Duration,
}

/// A candidate running in the batch.
struct Active {
    request: RequestId,
    candidate: usize,
    cond: Slot,
    uncond: Option<Slot>,
    rng: CandidateRng,
}

/// One candidate's sampling inputs for a step.
struct SampleJob<'a> {
    sampler: &'a ImageTokenSampler,
    cond: &'a [f32],
    uncond: Option<&'a [f32]>,
    rng: &'a mut CandidateRng,
}

impl SampleJob<'_> {
    fn run(&mut self, scratch: &mut SampleScratch) -> Result<u32, Error> {
        self.sampler
            .sample(self.cond, self.uncond, self.rng, scratch)
    }
}

/// Candidates per sampling thread below which one thread does them all (a thread costs tens of
/// microseconds; one candidate's sampling about as much).
const MIN_ROWS_PER_THREAD: usize = 3;

/// An admitted request until it is taken.
struct Live<P> {
    request: ValidatedRequest,
    sampler: ImageTokenSampler,
    prompt: Option<P>,
    guided: bool,
    prime: Vec<u32>,
    /// Next candidate to start.
    next: usize,
    done: usize,
    tokens: Vec<Vec<u32>>,
    cancelled: bool,
    timings: RequestTimings,
}

/// Where one request's time went. Step times are those of the engine steps that ran its rows
/// (shared with whatever else was in the batch).
#[derive(Clone, Debug, Default)]
pub struct RequestTimings {
    /// Image-encoder time for priming.
    pub prime: Duration,
    pub sampling: LoopTimings,
    /// From admission to the last token.
    pub total: Duration,
}

/// A finished request's tokens.
#[derive(Clone, Debug)]
pub struct Finished {
    pub request: ValidatedRequest,
    /// Image codes per candidate, row-major `grid²` (primed codes included).
    pub tokens: Vec<Vec<u32>>,
    /// Primed tokens per candidate.
    pub primed: usize,
    pub timings: RequestTimings,
}

/// See the module docs.
pub struct Engine<M: ImageTokenModel> {
    model: M,
    max_rows: usize,
    next_id: RequestId,
    /// Requests with candidates not started yet, in arrival order.
    waiting: VecDeque<RequestId>,
    live: BTreeMap<RequestId, (Live<M::Prompt>, Instant)>,
    active: Vec<Active>,
    finished: BTreeMap<RequestId, Finished>,
    /// One per sampling thread.
    scratch: Vec<SampleScratch>,
    /// Threads sampling may use (the machine's cores).
    sampling_threads: usize,
    pub stats: EngineStats,
}

impl<M: ImageTokenModel> Engine<M> {
    /// An engine whose decoder calls hold at most `max_rows` rows (capped by the model's own
    /// limit; `None`: the model's).
    pub fn new(model: M, max_rows: Option<usize>) -> Engine<M> {
        let limit = model.max_rows().max(1);
        let max_rows = max_rows.map_or(limit, |m| m.clamp(1, limit));
        Engine {
            model,
            max_rows,
            next_id: 0,
            waiting: VecDeque::new(),
            live: BTreeMap::new(),
            active: vec![],
            finished: BTreeMap::new(),
            scratch: vec![SampleScratch::default()],
            sampling_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stats: EngineStats::default(),
        }
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Caps the threads sampling uses (default: the machine's cores; 1 = the engine's thread).
    pub fn set_sampling_threads(&mut self, threads: usize) {
        self.sampling_threads = threads.max(1);
    }

    /// Most rows per decoder call.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Rows per candidate for these settings.
    fn rows_per(guided: bool) -> usize {
        if guided { 2 } else { 1 }
    }

    /// Most candidates of one request that can run at once.
    pub fn candidates_at_once(&self, request: &ValidatedRequest) -> usize {
        (self.max_rows / Self::rows_per(request.params.guided())).max(1)
    }

    /// Admits a validated request: primes (image encoder) and prefills its prompt once; its
    /// candidates join the batch at the next steps, as rows allow.
    pub fn admit(&mut self, request: ValidatedRequest) -> Result<RequestId, EngineError> {
        let started = Instant::now();
        let g = self.model.geometry();
        let guided = request.params.guided();
        if Self::rows_per(guided) > self.max_rows {
            return Err(RequestError {
                field: "cond_scale",
                message: format!(
                    "guidance runs 2 rows per candidate; this engine's decoder calls hold {} row",
                    self.max_rows
                ),
            }
            .into());
        }
        let sampler = ImageTokenSampler::for_vocab(&request.params, g.vocab, g.total_vocab)?
            .with_guidance(self.model.guidance());
        let t = Instant::now();
        let prime = match &request.init {
            None => vec![],
            Some(ValidInit::Codes(c)) => c.clone(),
            Some(ValidInit::Image { image, rows }) => self.model.encode_prime(image, *rows)?,
        };
        let prime_time = if matches!(request.init, Some(ValidInit::Image { .. })) {
            t.elapsed()
        } else {
            Duration::ZERO
        };
        if prime.len() >= g.tokens() {
            return Err(Error::InvalidInput(format!(
                "{} primed tokens leave nothing to sample in a {}-token image",
                prime.len(),
                g.tokens()
            ))
            .into());
        }
        let prefill = self.model.prefill(&request.text.ids, &prime, guided)?;
        self.stats.prefills += 1;
        self.stats.prefill += prefill.time;
        let id = self.next_id;
        self.next_id += 1;
        let tokens = vec![vec![]; request.candidates];
        let live = Live {
            sampler,
            prompt: Some(prefill.prompt),
            guided,
            prime,
            next: 0,
            done: 0,
            tokens,
            cancelled: false,
            timings: RequestTimings {
                prime: prime_time,
                sampling: LoopTimings {
                    prefill: prefill.time,
                    ..LoopTimings::default()
                },
                total: Duration::ZERO,
            },
            request,
        };
        self.live.insert(id, (live, started));
        self.waiting.push_back(id);
        Ok(id)
    }

    /// Cancels a request: its rows leave at the next step (the others' are untouched). Returns
    /// whether it was still running.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match self.live.get_mut(&id) {
            Some((live, _)) if !live.cancelled => {
                live.cancelled = true;
                true
            }
            _ => false,
        }
    }

    /// Whether nothing is admitted and unfinished.
    pub fn is_idle(&self) -> bool {
        self.live.is_empty()
    }

    /// Requests admitted and not finished.
    pub fn running(&self) -> usize {
        self.live.len()
    }

    /// Rows of the running candidates.
    pub fn active_rows(&self) -> usize {
        self.active
            .iter()
            .map(|a| 1 + usize::from(a.uncond.is_some()))
            .sum()
    }

    /// Candidates waiting for rows.
    pub fn waiting_candidates(&self) -> usize {
        self.live
            .values()
            .map(|(l, _)| l.request.candidates - l.next)
            .sum()
    }

    /// The tokens of a finished request (once).
    pub fn take(&mut self, id: RequestId) -> Option<Finished> {
        self.finished.remove(&id)
    }

    /// Tokens sampled so far for candidate `candidate` of a running request (primed included).
    pub fn partial_tokens(&self, id: RequestId, candidate: usize) -> Option<&[u32]> {
        let (live, _) = self.live.get(&id)?;
        live.tokens.get(candidate).map(Vec::as_slice)
    }

    /// Preview of a running candidate: its partial grid with unsampled cells set to `fill`,
    /// decoded by the model's image decoder (`[1, 3, H, W]`). `None` if not running.
    pub fn preview(
        &mut self,
        id: RequestId,
        candidate: usize,
        fill: u32,
    ) -> Result<Option<ndarray::Array4<f32>>, EngineError> {
        let Some(grid) = self.preview_tokens(id, candidate, fill) else {
            return Ok(None);
        };
        Ok(Some(self.model.decode_images(&[grid])?))
    }

    /// The grid [`Engine::preview`] decodes: the candidate's tokens so far, the rest `fill`
    /// (clamped to the codebook's last code). `None` if not running.
    pub fn preview_tokens(&self, id: RequestId, candidate: usize, fill: u32) -> Option<Vec<u32>> {
        let g = self.model.geometry();
        let mut grid = self.partial_tokens(id, candidate)?.to_vec();
        grid.resize(g.tokens(), fill.min(g.vocab.saturating_sub(1) as u32));
        Some(grid)
    }

    /// Starts waiting candidates in arrival order while rows allow (a request at the head that
    /// does not fit holds the others back: FIFO).
    fn admit_waiting(&mut self, events: &mut Vec<Event>) -> Result<(), Error> {
        while let Some(&id) = self.waiting.front() {
            let Some((live, _)) = self.live.get_mut(&id) else {
                self.waiting.pop_front();
                continue;
            };
            if live.cancelled {
                self.waiting.pop_front();
                continue;
            }
            let per = Self::rows_per(live.guided);
            let left = live.request.candidates - live.next;
            let mut k = left;
            while k > 0 && self.model.rows_after_join(k * per) > self.max_rows {
                k -= 1;
            }
            if k == 0 {
                break;
            }
            let Some(prompt) = live.prompt.as_ref() else {
                return Err(Error::InvalidInput(
                    "engine: prompt already released".into(),
                ));
            };
            let sources: Vec<usize> = (0..k)
                .map(|_| 0)
                .chain((0..if live.guided { k } else { 0 }).map(|_| 1))
                .collect();
            let t = Instant::now();
            let slots = self.model.join(prompt, &sources)?;
            let took = t.elapsed();
            self.stats.join += took;
            live.timings.sampling.broadcast += took;
            for j in 0..k {
                let candidate = live.next + j;
                live.tokens[candidate] = live.prime.clone();
                self.active.push(Active {
                    request: id,
                    candidate,
                    cond: slots[j],
                    uncond: live.guided.then(|| slots[k + j]),
                    rng: CandidateRng::new(live.request.params.seed, candidate as u64),
                });
                events.push(Event::Started {
                    request: id,
                    candidate,
                });
            }
            live.next += k;
            if live.next == live.request.candidates {
                self.waiting.pop_front();
                if let Some(p) = live.prompt.take() {
                    self.model.release(p);
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    /// One step (see the module docs). Returns what happened; an idle engine returns nothing.
    pub fn step(&mut self) -> Result<Vec<Event>, EngineError> {
        let started = Instant::now();
        let mut events = vec![];
        self.drop_cancelled(&mut events)?;
        self.admit_waiting(&mut events)?;
        let image_len = self.model.geometry().tokens();
        let mut leaving = vec![];
        let mut feeds = Vec::with_capacity(self.active.len() * 2);
        let mut finished_requests = vec![];
        let mut keep = Vec::with_capacity(self.active.len());
        let sampling_started = Instant::now();
        let mut active = std::mem::take(&mut self.active);
        let codes = self.sample_all(&mut active)?;
        for (a, code) in active.into_iter().zip(codes) {
            let Some((live, _)) = self.live.get_mut(&a.request) else {
                continue;
            };
            let seq = &mut live.tokens[a.candidate];
            seq.push(code);
            events.push(Event::Token {
                request: a.request,
                candidate: a.candidate,
                index: seq.len() - 1,
                code,
            });
            if seq.len() >= image_len {
                leaving.push(a.cond);
                leaving.extend(a.uncond);
                live.done += 1;
                events.push(Event::CandidateFinished {
                    request: a.request,
                    candidate: a.candidate,
                });
                if live.done == live.request.candidates {
                    finished_requests.push(a.request);
                }
            } else {
                feeds.push((a.cond, code));
                if let Some(u) = a.uncond {
                    feeds.push((u, code));
                }
                keep.push(a);
            }
        }
        self.active = keep;
        self.stats.sampling += sampling_started.elapsed();
        if !leaving.is_empty() {
            let t = Instant::now();
            self.model.leave(&leaving)?;
            self.stats.leave += t.elapsed();
        }
        let mut model_time = Duration::ZERO;
        if !feeds.is_empty() {
            let t = Instant::now();
            let cost = self.model.step(&feeds)?;
            self.stats.model_call += t.elapsed();
            model_time = cost.model;
            self.stats.steps += 1;
            self.stats.calls += cost.calls;
            self.stats.rows += cost.rows;
            self.stats.step_model += cost.model;
        }
        let wall = started.elapsed();
        if !feeds.is_empty() {
            self.stats.step_wall += wall;
        }
        // Per-request step timings: every request that had rows in this step.
        let mut seen: Vec<RequestId> = self.active.iter().map(|a| a.request).collect();
        // A request's candidates need not be adjacent (later waves join behind others).
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some((live, _)) = self.live.get_mut(&id) {
                let s = &mut live.timings.sampling;
                s.steps += 1;
                s.loop_total += wall;
                s.loop_model += model_time;
            }
        }
        for id in finished_requests {
            self.finish(id, false, &mut events);
        }
        Ok(events)
    }

    /// One code per running candidate, in order. With enough rows the candidates are split
    /// over the machine's cores (each has its own sampler settings, logits and random stream,
    /// so the split changes nothing drawn).
    fn sample_all(&mut self, active: &mut [Active]) -> Result<Vec<u32>, Error> {
        let mut jobs = Vec::with_capacity(active.len());
        for a in active.iter_mut() {
            let sampler = match self.live.get(&a.request) {
                Some((live, _)) => &live.sampler,
                None => {
                    return Err(Error::InvalidInput(
                        "engine: active row of no request".into(),
                    ));
                }
            };
            let cond = self.model.logits(a.cond)?;
            let uncond = match a.uncond {
                Some(s) => Some(self.model.logits(s)?),
                None => None,
            };
            jobs.push(SampleJob {
                sampler,
                cond,
                uncond,
                rng: &mut a.rng,
            });
        }
        let threads = self
            .sampling_threads
            .min(jobs.len() / MIN_ROWS_PER_THREAD)
            .max(1);
        if threads <= 1 {
            return jobs
                .iter_mut()
                .map(|j| j.run(&mut self.scratch[0]))
                .collect();
        }
        if self.scratch.len() < threads {
            self.scratch.resize_with(threads, SampleScratch::default);
        }
        let per = jobs.len().div_ceil(threads);
        let mut chunks = jobs.chunks_mut(per);
        let mut scratches = self.scratch.iter_mut();
        let (Some(first), Some(first_scratch)) = (chunks.next(), scratches.next()) else {
            return Ok(vec![]);
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .zip(scratches)
                .map(|(chunk, scratch)| {
                    scope.spawn(move || {
                        chunk
                            .iter_mut()
                            .map(|j| j.run(scratch))
                            .collect::<Result<Vec<u32>, Error>>()
                    })
                })
                .collect();
            let mut codes: Vec<u32> = first
                .iter_mut()
                .map(|j| j.run(first_scratch))
                .collect::<Result<_, _>>()?;
            for h in handles {
                let part = h.join().map_err(|_| {
                    Error::InvalidInput("engine: a sampling thread panicked".into())
                })?;
                codes.extend(part?);
            }
            Ok(codes)
        })
    }

    fn drop_cancelled(&mut self, events: &mut Vec<Event>) -> Result<(), Error> {
        let cancelled: Vec<RequestId> = self
            .live
            .iter()
            .filter(|(_, (l, _))| l.cancelled)
            .map(|(&id, _)| id)
            .collect();
        if cancelled.is_empty() {
            return Ok(());
        }
        let mut leaving = vec![];
        self.active.retain(|a| {
            if cancelled.contains(&a.request) {
                leaving.push(a.cond);
                leaving.extend(a.uncond);
                false
            } else {
                true
            }
        });
        if !leaving.is_empty() {
            let t = Instant::now();
            self.model.leave(&leaving)?;
            self.stats.leave += t.elapsed();
        }
        self.waiting.retain(|id| !cancelled.contains(id));
        for id in cancelled {
            self.finish(id, true, events);
        }
        Ok(())
    }

    fn finish(&mut self, id: RequestId, cancelled: bool, events: &mut Vec<Event>) {
        let Some((mut live, started)) = self.live.remove(&id) else {
            return;
        };
        if let Some(p) = live.prompt.take() {
            self.model.release(p);
        }
        events.push(Event::RequestFinished {
            request: id,
            cancelled,
        });
        if cancelled {
            return;
        }
        live.timings.total = started.elapsed();
        self.finished.insert(
            id,
            Finished {
                primed: live.prime.len(),
                tokens: live.tokens,
                timings: live.timings,
                request: live.request,
            },
        );
    }

    /// Steps until request `id` finishes (other requests advance with it); `progress` gets the
    /// number of its tokens sampled at each step.
    pub fn run_until_finished(
        &mut self,
        id: RequestId,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Finished, EngineError> {
        self.run_until_finished_observed(id, progress, &mut |_, _| Ok(()))
    }

    /// [`Engine::run_until_finished`], calling `observe` with the engine and every step's
    /// events before the next step (previews: [`Engine::preview`] still sees the candidates
    /// that have tokens left; a request is gone from it after its last token).
    pub fn run_until_finished_observed(
        &mut self,
        id: RequestId,
        progress: &mut dyn FnMut(usize),
        observe: &mut StepObserver<'_, M>,
    ) -> Result<Finished, EngineError> {
        loop {
            let events = self.step()?;
            observe(self, &events)?;
            let mut sampled = 0;
            let mut done = None;
            for e in &events {
                match e {
                    Event::Token { request, .. } if *request == id => sampled += 1,
                    Event::RequestFinished { request, cancelled } if *request == id => {
                        done = Some(*cancelled)
                    }
                    _ => {}
                }
            }
            if sampled > 0 {
                progress(sampled);
            }
            match done {
                Some(false) => {
                    return self.take(id).ok_or_else(|| {
                        Error::InvalidInput("engine: finished request vanished".into()).into()
                    });
                }
                Some(true) => {
                    return Err(Error::InvalidInput(format!("request {id} was cancelled")).into());
                }
                None if events.is_empty() && self.is_idle() => {
                    return Err(Error::InvalidInput(format!("request {id} is not running")).into());
                }
                None => {}
            }
        }
    }
}
