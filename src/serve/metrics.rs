//! Prometheus metrics (`GET /metrics`, text exposition via `prometheus-client`), named after
//! TGI's and vLLM's with a `dalle_` prefix: HTTP requests by route and status and their duration;
//! the queue (requests waiting for admission) and the running batch (requests, rows); decoder
//! steps (latency, rows per step); prefills; images and image tokens generated; time to the first
//! partial image; steps a request waited before it started decoding; and requests cancelled,
//! rejected or failed, by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

/// HTTP labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: String,
}

/// A route label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// Why a request ended early.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 100 µs · 1.5^k, 35 buckets (to ~150 s), as TGI's duration histograms.
    Histogram::new(exponential_buckets(1e-4, 1.5, 35))
}

/// Every metric the server exports. Cheap to share (`Arc` inside each metric).
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabel>,
    pub queue_size: Gauge,
    pub running_requests: Gauge,
    pub active_rows: Gauge,
    pub max_rows: Gauge,
    pub batch_rows: Histogram,
    pub step_duration: Histogram,
    pub prefill_duration: Histogram,
    pub queue_duration: Histogram,
    pub steps_to_start: Histogram,
    pub generation_duration: Histogram,
    pub time_to_first_partial: Histogram,
    pub images: Counter,
    pub image_tokens: Counter,
    pub partial_images: Counter,
    pub cancelled: Family<ReasonLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub failed: Family<ReasonLabel, Counter>,
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dalle");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(seconds_histogram);
        let queue_size = Gauge::default();
        let running_requests = Gauge::default();
        let active_rows = Gauge::default();
        let max_rows = Gauge::default();
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let step_duration = seconds_histogram();
        let prefill_duration = seconds_histogram();
        let queue_duration = seconds_histogram();
        let steps_to_start = Histogram::new(linear_buckets(0.0, 1.0, 11));
        let generation_duration = seconds_histogram();
        let time_to_first_partial = seconds_histogram();
        let images = Counter::default();
        let image_tokens = Counter::default();
        let partial_images = Counter::default();
        let cancelled = Family::<ReasonLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let failed = Family::<ReasonLabel, Counter>::default();
        let ready = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head (streams: to the first byte), by route",
            http_duration.clone(),
        );
        registry.register(
            "queue_size",
            "Requests accepted and waiting for admission to the batch",
            queue_size.clone(),
        );
        registry.register(
            "running_requests",
            "Requests admitted to the engine and not finished",
            running_requests.clone(),
        );
        registry.register(
            "active_rows",
            "Decoder rows in use by running candidates",
            active_rows.clone(),
        );
        registry.register(
            "max_rows",
            "Most decoder rows one step holds (--max-batch-rows within the decoder's range)",
            max_rows.clone(),
        );
        registry.register(
            "batch_rows",
            "Decoder rows computed per step",
            batch_rows.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Engine step latency (sampling and one decoder call over every active row)",
            step_duration.clone(),
        );
        registry.register(
            "prefill_duration_seconds",
            "Prompt prefill latency at admission",
            prefill_duration.clone(),
        );
        registry.register(
            "request_queue_duration_seconds",
            "Time from acceptance to the first candidate decoding",
            queue_duration.clone(),
        );
        registry.register(
            "request_steps_to_start",
            "Engine steps run between a request's acceptance and its first token",
            steps_to_start.clone(),
        );
        registry.register(
            "generation_duration_seconds",
            "Time from acceptance to the last image ready (decoded, reranked)",
            generation_duration.clone(),
        );
        registry.register(
            "time_to_first_partial_image_seconds",
            "Time from acceptance to a streamed request's first partial image",
            time_to_first_partial.clone(),
        );
        registry.register(
            "images_generated",
            "Images returned to clients",
            images.clone(),
        );
        registry.register(
            "image_tokens_generated",
            "Image tokens sampled (every candidate, reranked-away ones included)",
            image_tokens.clone(),
        );
        registry.register(
            "partial_images",
            "Partial (preview) images decoded for streams",
            partial_images.clone(),
        );
        registry.register(
            "requests_cancelled",
            "Admitted requests whose rows left early: disconnect, timeout, shutdown",
            cancelled.clone(),
        );
        registry.register(
            "requests_rejected",
            "Requests refused before queueing: queue_full, not_ready, draining",
            rejected.clone(),
        );
        registry.register(
            "requests_failed",
            "Requests that failed in the engine: validation, internal",
            failed.clone(),
        );
        registry.register(
            "ready",
            "1 when the model is loaded and the server is not draining",
            ready.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            queue_size,
            running_requests,
            active_rows,
            max_rows,
            batch_rows,
            step_duration,
            prefill_duration,
            queue_duration,
            steps_to_start,
            generation_duration,
            time_to_first_partial,
            images,
            image_tokens,
            partial_images,
            cancelled,
            rejected,
            failed,
            ready,
        }
    }

    /// Counts one event under `reason` in a family.
    pub fn inc(family: &Family<ReasonLabel, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        m.queue_size.set(3);
        Metrics::inc(&m.cancelled, "disconnect");
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/health".into(),
                status: "200".into(),
            })
            .inc();
        let text = m.encode();
        for needle in [
            "dalle_queue_size 3",
            "dalle_requests_cancelled_total{reason=\"disconnect\"} 1",
            "dalle_http_requests_total{route=\"/health\",status=\"200\"} 1",
            "# TYPE dalle_step_duration_seconds histogram",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}
