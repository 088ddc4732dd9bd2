//! Where a generation's sampling time went, recorded per request by the engine and written to
//! the sidecar.

use serde::Serialize;
use std::time::Duration;

/// Where the time went (whole-run totals).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoopTimings {
    /// The prefill call (prompt + primed tokens), wall time.
    pub prefill: Duration,
    /// Copying the prefilled state into the candidates' rows (joining the batch).
    pub broadcast: Duration,
    /// Engine steps that ran this request's rows (one decoder call each, shared with whatever
    /// else was in the batch).
    pub steps: usize,
    /// Wall time of the sampling loop after the prefill: sampling, state handling, model runs.
    pub loop_total: Duration,
    /// Time inside the model runs of those steps (ONNX Runtime's `run_binding`).
    pub loop_model: Duration,
}

impl LoopTimings {
    /// Mean wall time per decoder step.
    pub fn step_mean(&self) -> Duration {
        self.loop_total / u32::try_from(self.steps.max(1)).unwrap_or(u32::MAX)
    }

    /// Mean time per step spent outside the model run (sampling, bookkeeping, state handling).
    pub fn overhead_mean(&self) -> Duration {
        self.loop_total.saturating_sub(self.loop_model)
            / u32::try_from(self.steps.max(1)).unwrap_or(u32::MAX)
    }

    /// Share of the loop's wall time spent inside the model run (0..1).
    pub fn model_share(&self) -> f64 {
        let total = self.loop_total.as_secs_f64();
        if total > 0.0 {
            self.loop_model.as_secs_f64() / total
        } else {
            0.0
        }
    }
}
