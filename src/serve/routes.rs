//! The HTTP surface (axum): routes, the request-id/metrics/log middleware, API-key checks, and
//! the image handlers that turn fields into a [`Job`] for the engine thread.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/images/generations` | JSON → images (`b64_json` or `url`), or SSE with `stream` |
//! | `POST /v1/images/edits` | multipart `image` + fields: image priming (top `init_rows` rows kept) |
//! | `GET /v1/images/files/{id}.png` | images of `response_format: "url"` (bounded time and count) |
//! | `GET /v1/models`, `GET /v1/models/{id}` | the served model |
//! | `GET /health` | liveness: 200 while the process serves HTTP |
//! | `GET /ready` | 200 when the model is loaded and the server is not draining, else 503 |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//!
//! `/v1/*` routes other than image files need `Authorization: Bearer KEY` when the server has
//! keys. Every response carries `x-request-id` (the client's, when it sent a sane one).

use super::error::ApiError;
use super::images;
use super::job::{InflightToken, Job, JobEvent, Usage};
use super::load::unix_now;
use super::metrics::{HttpLabels, Metrics, RouteLabel};
use super::params::{self, Fields, ImageParams, Limits, ResponseFormat};
use super::queue::Full;
use super::sse;
use super::state::{ModelInfo, Shared};
use crate::engine::{InitInput, PromptInput, Request, ValidInit};
use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// The request id of the request being handled.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

type AppState = State<Arc<Shared>>;

/// The whole router. See the module docs.
pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.settings.max_body_bytes;
    let keyed = Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/images/edits", post(edits))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_key));
    Router::new()
        .merge(keyed)
        .route("/v1/images/files/{file}", get(file))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

/// Request id, metrics and an access log line for every request.
async fn observe(State(s): AppState, mut req: axum::extract::Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = req.method().clone();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(sane_request_id)
        .unwrap_or_else(|| format!("req_{:024x}", rand::random::<u128>() >> 32));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    let m = &s.metrics;
    m.http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            status: status.as_u16().to_string(),
        })
        .inc();
    m.http_duration
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    if route != "/metrics" && route != "/health" && route != "/ready" {
        tracing::info!(
            request = %id,
            "{method} {route} {} in {:.1} ms",
            status.as_u16(),
            elapsed.as_secs_f64() * 1e3
        );
    }
    response
}

async fn require_key(State(s): AppState, req: axum::extract::Request, next: Next) -> Response {
    if let Some(keys) = &s.keys {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = keys.check(auth) {
            return e.into_response();
        }
    }
    next.run(req).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(s): AppState) -> Response {
    match s.accepting() {
        Ok(_) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(s): AppState) -> Response {
    s.metrics.queue_size.set(s.queue.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

fn model_object(s: &Shared, m: &ModelInfo) -> Value {
    json!({
        "id": s.settings.model_name,
        "object": "model",
        "created": m.created,
        "owned_by": "dalle-ort",
        "size": m.size(),
        "max_n": s.settings.max_candidates,
        "clip_rerank": m.rules.clip,
        "image_priming": m.rules.image_encoder,
        "image_token_rows": m.grid,
    })
}

fn loaded(s: &Shared) -> Result<Arc<ModelInfo>, ApiError> {
    s.model()
        .ok_or_else(|| ApiError::unavailable("not_ready", "the model is still loading"))
}

async fn models(State(s): AppState) -> Result<Response, ApiError> {
    let m = loaded(&s)?;
    Ok(axum::Json(json!({"object": "list", "data": [model_object(&s, &m)]})).into_response())
}

async fn model(State(s): AppState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let m = loaded(&s)?;
    if id != s.settings.model_name {
        return Err(ApiError::model_not_found(&id, &s.settings.model_name));
    }
    Ok(axum::Json(model_object(&s, &m)).into_response())
}

async fn file(State(s): AppState, Path(name): Path<String>) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found(format!("no image file {name} (URLs expire)"));
    let id = name.strip_suffix(".png").ok_or_else(missing)?;
    let png = s.files.get(id).ok_or_else(missing)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png.as_ref().clone()).into_response())
}

fn body_error(s: &Shared, status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "the request body is over this server's limit of {} bytes",
            s.settings.max_body_bytes
        ))
    } else {
        ApiError::invalid(None, format!("reading the request body: {text}"))
    }
}

fn limits<'a>(s: &'a Shared, size: &'a str, edit: bool) -> Limits<'a> {
    Limits {
        model: &s.settings.model_name,
        size,
        max_candidates: s.settings.max_candidates,
        edit,
    }
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn generations(
    State(s): AppState,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| body_error(&s, e.status(), e.body_text()))?;
    let model = s.accepting()?;
    let fields = Fields::from_json_bytes(&body)?;
    let size = model.size();
    let params = params::parse(&fields, &limits(&s, &size, false))?;
    submit(s, model, rid, params, None, false, base_url(&headers)).await
}

fn multipart_error(s: &Shared, e: MultipartError) -> ApiError {
    body_error(s, e.status(), e.body_text())
}

async fn edits(
    State(s): AppState,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(
            None,
            format!("expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let model = s.accepting()?;
    let mut fields = Fields::default();
    let mut image: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&s, e))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" | "image[]" => {
                if image.is_some() {
                    return Err(ApiError::invalid(
                        Some("image"),
                        "send exactly one `image` (DALL·E-1 primes with one picture)",
                    ));
                }
                image = Some(field.bytes().await.map_err(|e| multipart_error(&s, e))?);
            }
            "mask" => {
                field.bytes().await.map_err(|e| multipart_error(&s, e))?;
                fields.insert_text("mask", "(file)".into());
            }
            _ => {
                let text = field.text().await.map_err(|e| multipart_error(&s, e))?;
                fields.insert_text(&name, text);
            }
        }
    }
    let size = model.size();
    let params = params::parse(&fields, &limits(&s, &size, true))?;
    let bytes = image
        .ok_or_else(|| ApiError::invalid(Some("image"), "Missing required parameter: 'image'"))?;
    let max_side = s.settings.max_image_side;
    let picture = tokio::task::spawn_blocking(move || images::decode_upload(&bytes, max_side))
        .await
        .map_err(|e| ApiError::internal(format!("decoding the image: {e}")))??;
    let init = InitInput::Image {
        image: picture,
        rows: params.init_rows,
    };
    submit(s, model, rid, params, Some(init), true, base_url(&headers)).await
}

/// What a response needs besides the images.
#[derive(Clone)]
pub struct ResponseCtx {
    pub shared: Arc<Shared>,
    pub created: u64,
    pub size: String,
    pub seed: u64,
    pub usage: Usage,
    pub format: ResponseFormat,
    pub base: String,
    pub edit: bool,
}

impl ResponseCtx {
    /// One `data[]` item (or the image fields of an SSE `completed` event).
    pub fn item(
        &self,
        candidate: usize,
        png: Vec<u8>,
        clip_score: Option<f32>,
    ) -> Result<serde_json::Map<String, Value>, ApiError> {
        let mut item = serde_json::Map::new();
        match self.format {
            ResponseFormat::B64Json => {
                item.insert("b64_json".into(), images::b64(&png).into());
            }
            ResponseFormat::Url => {
                let id = self.shared.files.put(png).ok_or_else(|| {
                    ApiError::internal("image URLs are turned off on this server (--max-files 0)")
                })?;
                item.insert(
                    "url".into(),
                    format!("{}/v1/images/files/{id}.png", self.base).into(),
                );
            }
        }
        item.insert("seed".into(), self.seed.into());
        item.insert("candidate".into(), candidate.into());
        if let Some(score) = clip_score {
            item.insert("clip_score".into(), f64::from(score).into());
        }
        Ok(item)
    }
}

/// Validates, queues, and answers (JSON or SSE).
async fn submit(
    s: Arc<Shared>,
    model: Arc<ModelInfo>,
    rid: RequestId,
    params: ImageParams,
    init: Option<InitInput>,
    edit: bool,
    base: String,
) -> Result<Response, ApiError> {
    let request = Request {
        prompt: PromptInput::Text(params.prompt.clone()),
        candidates: params.candidates,
        sampling: params.sampling.clone(),
        init,
        rerank: params.rerank.then_some(params.n),
    };
    let validated = model
        .rules
        .validate(request)
        .map_err(|e| ApiError::from_request(&e, |f| params::api_param(f, &params)))?;
    let seed = validated.params.seed;
    let primed = match &validated.init {
        Some(ValidInit::Image { rows, .. }) => rows * model.grid,
        Some(ValidInit::Codes(c)) => c.len(),
        None => 0,
    };
    let text_tokens = validated.text.ids.iter().filter(|&&t| t != 0).count();
    let sampled = (model.grid * model.grid).saturating_sub(primed);
    let usage = Usage::new(text_tokens, primed, validated.candidates * sampled);
    let (tx, rx) = unbounded_channel();
    let now = Instant::now();
    let job = Job {
        id: rid.0.clone(),
        request: validated,
        keep: params.n,
        rerank: params.rerank,
        partial_images: if params.stream {
            params.partial_images
        } else {
            0
        },
        accepted: now,
        deadline: now + s.settings.request_timeout,
        accepted_step: s.steps.load(Ordering::SeqCst),
        events: tx,
        inflight: InflightToken::new(&s.inflight),
    };
    if let Err(Full(job)) = s.queue.try_push(job) {
        drop(job);
        Metrics::inc(&s.metrics.rejected, "queue_full");
        return Err(ApiError::queue_full(s.queue.len(), s.retry_after()));
    }
    s.metrics.queue_size.set(s.queue.len() as i64);
    tracing::info!(
        request = %rid.0,
        user = params.user.as_deref().unwrap_or("-"),
        "accepted: n {}, candidates {}, seed {seed}, stream {}, {} prompt tokens",
        params.n,
        params.candidates,
        params.stream,
        text_tokens
    );
    let ctx = ResponseCtx {
        shared: s.clone(),
        created: unix_now(),
        size: model.size(),
        seed,
        usage,
        format: params.response_format,
        base,
        edit,
    };
    if params.stream {
        Ok(sse::stream(rx, ctx).into_response())
    } else {
        collect(rx, ctx).await
    }
}

/// Waits for every image of a non-streamed request and builds the JSON response. Dropping this
/// future (the client went away) drops the receiver, which cancels the request's rows.
async fn collect(
    mut rx: UnboundedReceiver<JobEvent>,
    ctx: ResponseCtx,
) -> Result<Response, ApiError> {
    let mut got = vec![];
    while let Some(event) = rx.recv().await {
        match event {
            JobEvent::Started { .. } | JobEvent::Partial { .. } => {}
            JobEvent::Image {
                index,
                candidate,
                image,
                clip_score,
            } => got.push((index, candidate, image, clip_score)),
            JobEvent::Failed(e) => return Err(e),
            JobEvent::Done { timings } => {
                got.sort_by_key(|g| g.0);
                let encoded = tokio::task::spawn_blocking(move || {
                    got.into_iter()
                        .map(|(_, c, image, score)| Ok((c, images::png(&image)?, score)))
                        .collect::<Result<Vec<_>, ApiError>>()
                })
                .await
                .map_err(|e| ApiError::internal(format!("encoding the images: {e}")))??;
                let mut data = vec![];
                for (c, png, score) in encoded {
                    data.push(Value::Object(ctx.item(c, png, score)?));
                }
                let body = json!({
                    "created": ctx.created,
                    "data": data,
                    "usage": ctx.usage,
                    "size": ctx.size,
                    "output_format": "png",
                    "timings": timings,
                });
                return Ok(axum::Json(body).into_response());
            }
        }
    }
    Err(ApiError::internal(
        "the engine dropped the request without an answer",
    ))
}
