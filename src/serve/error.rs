//! Errors: [`ApiError`] is what a client sees — OpenAI's error object
//! `{"error": {"message", "type", "param", "code"}}` (all four keys always present) with its HTTP
//! status — and [`ServeError`] is why the server could not start or stop cleanly.
//!
//! Every failure a request can cause ends as an `ApiError`: validation (400, naming the field in
//! `param`), auth (401), unknown routes or models (404), body limits (413), a full queue (429 with
//! `Retry-After`), engine failures (500), timeouts (504), and not-ready or draining (503).

use crate::engine::RequestError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

/// A failed request as the client sees it. See the module docs.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`, `service_unavailable_error`.
    pub kind: &'static str,
    /// The request field at fault, if any.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Sent as `Retry-After` (whole seconds, rounded up) and `retry-after-ms`.
    pub retry_after: Option<Duration>,
}

/// The wire shape of [`ApiError`].
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 for a bad field.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: param.map(str::to_owned),
            code: Some("invalid_value"),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// 400 from the engine's validation, with the engine's field renamed to the API's.
    pub fn from_request(e: &RequestError, param_of: impl Fn(&str) -> String) -> ApiError {
        let param = param_of(e.field);
        ApiError::invalid(Some(&param), format!("invalid {param}: {}", e.message))
    }

    /// 401: no key, or not one of the server's.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
        }
    }

    /// 404 for an unknown route or file.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("not_found"),
            ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
        }
    }

    /// 404 for a `model` the server does not serve.
    pub fn model_not_found(model: &str, served: &str) -> ApiError {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist; this server serves `{served}`"),
            )
        }
    }

    /// 405 for a known route with the wrong method.
    pub fn method_not_allowed() -> ApiError {
        ApiError {
            code: Some("method_not_allowed"),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method not allowed on this route",
            )
        }
    }

    /// 413: the body (or an uploaded image) is over the limit.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("payload_too_large"),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                message,
            )
        }
    }

    /// 429: the queue is full; retry after `retry_after`.
    pub fn queue_full(queued: usize, retry_after: Duration) -> ApiError {
        ApiError {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the server's queue is full ({queued} requests waiting); retry after {} s",
                    retry_after.as_secs_f64().ceil()
                ),
            )
        }
    }

    /// 500: the engine failed (not the request's fault).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("server_error"),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
        }
    }

    /// 503: the model is not loaded yet, or the server is shutting down.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(code),
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable_error",
                message,
            )
        }
    }

    /// 504: the request ran past `--request-timeout` (its rows have left).
    pub fn timeout(limit: Duration) -> ApiError {
        ApiError {
            code: Some("timeout"),
            ..ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!(
                    "the request did not finish within the server's request timeout ({} s)",
                    limit.as_secs_f64()
                ),
            )
        }
    }

    /// The JSON body (`{"error": {...}}`).
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }

    /// The JSON body as text (for SSE `error` events).
    pub fn json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_else(|_| {
            r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#.into()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.json(),
        )
            .into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            let h = response.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert(
                "retry-after-ms",
                HeaderValue::from(after.as_millis() as u64),
            );
        }
        response
    }
}

/// Why the server could not start, or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("reading the API key file {path}: {source}")]
    KeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the API key file {0} holds no key")]
    NoKeys(std::path::PathBuf),
    #[error("starting the {what}: {source}")]
    Runtime {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("loading the model: {0}")]
    Load(#[from] crate::Error),
    #[error("the engine thread stopped before the model was loaded")]
    EngineGone,
    #[error("serving HTTP: {0}")]
    Http(std::io::Error),
    #[error("invalid setting {setting}: {message}")]
    Setting {
        setting: &'static str,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_error_object_is_present() {
        let v: serde_json::Value =
            serde_json::from_str(&ApiError::internal("boom").json()).unwrap_or_default();
        let e = &v["error"];
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "{key} missing in {v}");
        }
        assert!(e["param"].is_null());
    }

    #[test]
    fn queue_full_sets_retry_after() {
        let r = ApiError::queue_full(3, Duration::from_millis(1500)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()["retry-after-ms"], "1500");
    }
}
