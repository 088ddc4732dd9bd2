//! Server-Sent Events for `stream: true`, in OpenAI's shape: `event:` equals the JSON `type`,
//! `image_generation.partial_image` (or `image_edit.partial_image`) for each preview and
//! `image_generation.completed` for each returned image; on failure one `error` event with the
//! usual `{"error": {...}}` body, then the stream closes. No `[DONE]` sentinel (the spec's
//! example has none).
//!
//! Extensions: `image_index` on both events says which image a partial or completed event
//! belongs to (with `n > 1` OpenAI's events cannot say; for a partial it is the candidate
//! index); `completed` events also carry `candidate`, `seed` and `clip_score` (when reranked).
//! Dropping the stream (the client went away) drops the job's receiver, which cancels its rows.

use super::error::ApiError;
use super::images;
use super::job::JobEvent;
use super::routes::ResponseCtx;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use tokio::sync::mpsc::UnboundedReceiver;

fn error_event(e: &ApiError) -> Event {
    Event::default().event("error").data(e.json())
}

fn typed_event(kind: &str, mut fields: Map<String, Value>, ctx: &ResponseCtx) -> Event {
    fields.insert("type".into(), kind.into());
    fields.insert("created_at".into(), ctx.created.into());
    fields.insert("size".into(), ctx.size.clone().into());
    fields.insert("quality".into(), "auto".into());
    fields.insert("background".into(), "opaque".into());
    fields.insert("output_format".into(), "png".into());
    Event::default()
        .event(kind)
        .data(Value::Object(fields).to_string())
}

async fn encode(image: image::RgbImage) -> Result<Vec<u8>, ApiError> {
    tokio::task::spawn_blocking(move || images::png(&image))
        .await
        .map_err(|e| ApiError::internal(format!("encoding a PNG: {e}")))?
}

/// The next SSE event for a job, or `None` when the stream ends.
async fn next(
    rx: &mut UnboundedReceiver<JobEvent>,
    ctx: &ResponseCtx,
) -> Result<Option<Event>, ApiError> {
    let prefix = if ctx.edit {
        "image_edit"
    } else {
        "image_generation"
    };
    loop {
        let Some(event) = rx.recv().await else {
            return Err(ApiError::internal(
                "the engine dropped the request without an answer",
            ));
        };
        match event {
            JobEvent::Started { .. } => {}
            JobEvent::Partial {
                candidate,
                index,
                image,
            } => {
                let png = encode(image).await?;
                let mut fields = Map::new();
                fields.insert("b64_json".into(), images::b64(&png).into());
                fields.insert("partial_image_index".into(), index.into());
                fields.insert("image_index".into(), candidate.into());
                return Ok(Some(typed_event(
                    &format!("{prefix}.partial_image"),
                    fields,
                    ctx,
                )));
            }
            JobEvent::Image {
                index,
                candidate,
                image,
                clip_score,
            } => {
                let png = encode(image).await?;
                let mut fields = ctx.item(candidate, png, clip_score)?;
                fields.insert("image_index".into(), index.into());
                fields.insert("usage".into(), json!(ctx.usage));
                return Ok(Some(typed_event(
                    &format!("{prefix}.completed"),
                    fields,
                    ctx,
                )));
            }
            JobEvent::Done { .. } => return Ok(None),
            JobEvent::Failed(e) => return Err(e),
        }
    }
}

/// The SSE response for a job. See the module docs.
pub fn stream(
    rx: UnboundedReceiver<JobEvent>,
    ctx: ResponseCtx,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures_util::stream::unfold(Some((rx, ctx)), |state| async move {
        let (mut rx, ctx) = state?;
        match next(&mut rx, &ctx).await {
            Ok(Some(event)) => Some((Ok(event), Some((rx, ctx)))),
            Ok(None) => None,
            Err(e) => Some((Ok(error_event(&e)), None)),
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
