//! What the HTTP handlers and the engine thread share: settings, the queue, metrics, the file
//! store, the model's facts once loaded, and the server's phase (loading → ready → draining).

use super::auth::ApiKeys;
use super::error::ApiError;
use super::files::FileStore;
use super::job::Job;
use super::metrics::Metrics;
use super::queue::BoundedQueue;
use crate::engine::RequestRules;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// The server's limits and knobs (the `serve` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The name `/v1/models` lists and `model` is checked against.
    pub model_name: String,
    /// `--max-batch-rows` (capped by the decoder's batch range); `None`: the decoder's.
    pub max_batch_rows: Option<usize>,
    pub max_queue: usize,
    pub max_candidates: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_body_bytes: usize,
    /// Largest width or height of an uploaded image, checked before it is decoded.
    pub max_image_side: u32,
    pub file_ttl: Duration,
    pub max_files: usize,
    /// Sleep after every engine step (tests and load experiments only).
    pub step_delay: Duration,
    /// Report engine step number N (from 1, after warm-up) as failed, once (tests only: the
    /// 500 path and the reload after an engine failure).
    pub fail_step: Option<u64>,
}

/// The server's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The model is loading (or reloading after an engine failure).
    Loading,
    Ready,
    /// SIGTERM/SIGINT: no new requests, in-flight ones finish.
    Draining,
    /// The model could not be loaded.
    Failed,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Ready,
            2 => Phase::Draining,
            3 => Phase::Failed,
            _ => Phase::Loading,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Phase::Loading => 0,
            Phase::Ready => 1,
            Phase::Draining => 2,
            Phase::Failed => 3,
        }
    }
}

/// Facts about the loaded model the handlers need.
pub struct ModelInfo {
    pub rules: RequestRules,
    pub width: u32,
    pub height: u32,
    /// Token rows and columns of an image.
    pub grid: usize,
    /// Most rows per engine step.
    pub max_rows: usize,
    /// Unix time the model was loaded (`/v1/models` `created`).
    pub created: u64,
}

impl ModelInfo {
    /// `"WxH"`.
    pub fn size(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// See the module docs.
pub struct Shared {
    pub settings: Settings,
    pub queue: BoundedQueue<Job>,
    pub metrics: Metrics,
    pub files: FileStore,
    pub keys: Option<ApiKeys>,
    phase: AtomicU8,
    model: RwLock<Option<Arc<ModelInfo>>>,
    /// Accepted requests not finished (queued or running).
    pub inflight: Arc<AtomicUsize>,
    /// Engine steps run so far.
    pub steps: AtomicU64,
    /// Shutdown timeout passed: fail everything still queued or running.
    pub abort: AtomicBool,
    /// The engine thread should exit.
    pub stop: AtomicBool,
    /// Mean seconds from admission to done (exponentially weighted), for `Retry-After`.
    service_secs: Mutex<f64>,
}

impl Shared {
    pub fn new(settings: Settings, keys: Option<ApiKeys>) -> Shared {
        Shared {
            queue: BoundedQueue::new(settings.max_queue),
            files: FileStore::new(settings.file_ttl, settings.max_files),
            metrics: Metrics::new(),
            keys,
            phase: AtomicU8::new(Phase::Loading.to_u8()),
            model: RwLock::new(None),
            inflight: Arc::new(AtomicUsize::new(0)),
            steps: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            service_secs: Mutex::new(0.0),
            settings,
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// Moves to `phase`; a draining server never becomes ready again.
    pub fn set_phase(&self, phase: Phase) {
        let _ = self
            .phase
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                (Phase::from_u8(old) != Phase::Draining || phase == Phase::Draining)
                    .then_some(phase.to_u8())
            });
        self.metrics
            .ready
            .set(i64::from(self.phase() == Phase::Ready));
    }

    pub fn set_model(&self, info: Arc<ModelInfo>) {
        *self.model.write().unwrap_or_else(PoisonError::into_inner) = Some(info);
    }

    /// The model, if loaded (even while draining).
    pub fn model(&self) -> Option<Arc<ModelInfo>> {
        self.model
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The model when the server takes new requests; else the 503 to answer.
    pub fn accepting(&self) -> Result<Arc<ModelInfo>, ApiError> {
        match self.phase() {
            Phase::Ready => self
                .model()
                .ok_or_else(|| ApiError::unavailable("not_ready", "the model is still loading")),
            Phase::Loading => Err(ApiError::unavailable(
                "not_ready",
                "the model is still loading",
            )),
            Phase::Draining => Err(ApiError::unavailable(
                "shutting_down",
                "the server is shutting down and takes no new requests",
            )),
            Phase::Failed => Err(ApiError::unavailable(
                "model_unavailable",
                "the model failed to load; see the server log",
            )),
        }
    }

    /// Records a finished request's service time (admission to done).
    pub fn record_service(&self, d: Duration) {
        let mut s = self
            .service_secs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let x = d.as_secs_f64();
        *s = if *s == 0.0 { x } else { 0.8 * *s + 0.2 * x };
    }

    /// How long a client refused with 429 should wait: the queue's length in batches times the
    /// mean service time, within 1..=60 s.
    pub fn retry_after(&self) -> Duration {
        let service = *self
            .service_secs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rows = self.model().map_or(1, |m| m.max_rows.max(1));
        let batches = self.queue.len().div_ceil(rows).max(1) as f64;
        Duration::from_secs_f64((service * batches).clamp(1.0, 60.0))
    }
}
