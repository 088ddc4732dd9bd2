//! `dalle-ort serve`: an OpenAI-compatible image server (Images API shape, documented
//! extensions) over the generation [`engine`](crate::engine), with continuous batching, streamed
//! previews, Prometheus metrics and overload control.
//!
//! ```text
//! client ──HTTP──► axum handlers (tokio) ──validate──► BoundedQueue ──► engine thread
//!    ▲              routes, auth, params                (429 when full)    │ owns the ORT sessions
//!    │                                                                     │ admit FIFO, step all
//!    └── JSON / SSE ◄── per-request event channel ◄── previews, images ◄───┘ rows, cancel closed
//! ```
//!
//! Why this shape: ONNX Runtime sessions and the engine's KV state are not shared between
//! threads, and one decoder call over every active row is the whole point of batching, so a
//! single engine thread owns them (TGI's actor pattern). Handlers never wait on the engine: they
//! validate (tokenizing is cheap), push into a bounded queue (a full one answers 429 at once),
//! and await their own event channel. A handler that goes away drops its receiver, and the
//! engine thread cancels that request's rows before its next step.
//!
//! Files, one job each: [`routes`] (HTTP surface), [`params`] (request fields), [`sse`]
//! (streaming), [`images`] (PNG, base64, uploads), [`files`] (URL responses), [`auth`] (bearer
//! keys), [`queue`], [`job`] (handler ⇄ engine messages), [`worker`] (the engine thread),
//! [`load`] (model loading and warm-up), [`metrics`], [`state`] (what is shared), [`server`]
//! (runtime, signals, drain), [`error`] (OpenAI error objects).

pub mod auth;
pub mod error;
pub mod files;
pub mod images;
pub mod job;
pub mod load;
pub mod metrics;
pub mod params;
pub mod queue;
pub mod routes;
pub mod server;
pub mod sse;
pub mod state;
pub mod worker;

pub use auth::ApiKeys;
pub use error::{ApiError, ServeError};
pub use server::{ServeOptions, is_loopback, run};
pub use state::Settings;
