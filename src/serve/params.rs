//! The API's request fields (OpenAI Images API plus documented extensions) read from a JSON body
//! or a multipart form, each checked once with an error that names it (`param`).
//!
//! | field | values | default |
//! |---|---|---|
//! | `prompt` | string (required) | — |
//! | `model` | the served model's name | the served model |
//! | `n` | `1..=--max-candidates` | 1 |
//! | `size` | the bundle's size (`"WxH"`) or `"auto"` | the bundle's |
//! | `response_format` | `b64_json`, `url` | `b64_json` |
//! | `output_format` | `png` | `png` |
//! | `stream`, `partial_images` | bool, `0..=3` | false, 0 |
//! | `user` | string (logged) | — |
//! | `seed`, `top_k`, `top_p`, `temperature`, `cond_scale` (extensions) | as `generate` | the bundle's |
//! | `candidates` (extension) | `n..=--max-candidates`: sample this many, return the CLIP-best `n` | `n` |
//! | `init_rows` / `prime_rows` (edits) | `1..grid` token rows kept from `image` | 7/16 of the grid |
//!
//! `quality`, `background`, `style` and `moderation` are accepted and ignored (DALL·E‑1 has no such
//! knob). Multipart fields arrive as text, so numbers and booleans may also be given as strings.

use super::error::ApiError;
use crate::engine::SamplingOverrides;
use serde_json::{Map, Value};

/// Where the images go in the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    B64Json,
    Url,
}

/// The request fields, from JSON or a form.
#[derive(Debug, Default)]
pub struct Fields {
    map: Map<String, Value>,
}

/// OpenAI's limit for the GPT image models; far beyond any DALL·E‑1 text length.
pub const MAX_PROMPT_CHARS: usize = 32_000;

/// Most partial images per image (OpenAI's range).
pub const MAX_PARTIAL_IMAGES: u64 = 3;

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), message)
}

impl Fields {
    /// A JSON body, which must be an object.
    pub fn from_json(value: Value) -> Result<Fields, ApiError> {
        match value {
            Value::Object(map) => Ok(Fields { map }),
            other => Err(ApiError::invalid(
                None,
                format!(
                    "the request body must be a JSON object, got {}",
                    kind_of(&other)
                ),
            )),
        }
    }

    /// A JSON body as bytes.
    pub fn from_json_bytes(body: &[u8]) -> Result<Fields, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(None, format!("the request body is not valid JSON: {e}"))
        })?;
        Fields::from_json(value)
    }

    /// Sets a text field (multipart forms).
    pub fn insert_text(&mut self, name: &str, value: String) {
        self.map.insert(name.to_owned(), Value::String(value));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(invalid(
                name,
                format!("`{name}` must be a string, got {}", kind_of(v)),
            )),
        }
    }

    pub fn uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let bad = |v: &Value| {
            invalid(
                name,
                format!("`{name}` must be a non-negative integer, got {}", show(v)),
            )
        };
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(v)),
            Some(v @ Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }

    pub fn float(&self, name: &str) -> Result<Option<f64>, ApiError> {
        let bad = |v: &Value| invalid(name, format!("`{name}` must be a number, got {}", show(v)));
        let x = match self.get(name) {
            None => return Ok(None),
            Some(v @ Value::Number(n)) => n.as_f64().ok_or_else(|| bad(v))?,
            Some(v @ Value::String(s)) => s.trim().parse::<f64>().map_err(|_| bad(v))?,
            Some(v) => return Err(bad(v)),
        };
        if x.is_finite() {
            Ok(Some(x))
        } else {
            Err(invalid(name, format!("`{name}` must be finite")))
        }
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let bad = |v: &Value| {
            invalid(
                name,
                format!("`{name}` must be true or false, got {}", show(v)),
            )
        };
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v @ Value::String(s)) => match s.trim() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(bad(v)),
            },
            Some(v) => Err(bad(v)),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// What the fields are checked against.
#[derive(Clone, Debug)]
pub struct Limits<'a> {
    /// The served model's name (`model`).
    pub model: &'a str,
    /// The bundle's image size, `"WxH"`.
    pub size: &'a str,
    pub max_candidates: usize,
    /// Whether this is `/v1/images/edits` (`init_rows` allowed).
    pub edit: bool,
}

/// The checked fields of one request. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageParams {
    pub prompt: String,
    /// Images returned.
    pub n: usize,
    /// Candidates sampled (`n` unless `candidates` asks for CLIP reranking).
    pub candidates: usize,
    pub rerank: bool,
    pub response_format: ResponseFormat,
    pub stream: bool,
    pub partial_images: usize,
    pub sampling: SamplingOverrides,
    pub user: Option<String>,
    pub init_rows: Option<u64>,
}

fn bounded(fields: &Fields, name: &str, lo: u64, hi: u64) -> Result<Option<usize>, ApiError> {
    match fields.uint(name)? {
        None => Ok(None),
        Some(v) if (lo..=hi).contains(&v) => Ok(Some(v as usize)),
        Some(v) => Err(invalid(
            name,
            format!("`{name}` must be in {lo}..={hi}, got {v}"),
        )),
    }
}

/// Checks every field. See the module docs.
pub fn parse(fields: &Fields, limits: &Limits<'_>) -> Result<ImageParams, ApiError> {
    let prompt = fields
        .string("prompt")?
        .ok_or_else(|| invalid("prompt", "Missing required parameter: 'prompt'"))?;
    if prompt.trim().is_empty() {
        return Err(invalid("prompt", "`prompt` must not be empty"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(invalid(
            "prompt",
            format!("`prompt` is longer than {MAX_PROMPT_CHARS} characters"),
        ));
    }
    if let Some(model) = fields.string("model")?
        && model != limits.model
    {
        return Err(ApiError::model_not_found(&model, limits.model));
    }
    let max = limits.max_candidates as u64;
    let n = bounded(fields, "n", 1, max)?.unwrap_or(1);
    let candidates = bounded(fields, "candidates", n as u64, max)?;
    if let Some(size) = fields.string("size")?
        && size != "auto"
        && size != limits.size
    {
        return Err(invalid(
            "size",
            format!(
                "size {size:?} is not supported; this model makes {} images (or use \"auto\")",
                limits.size
            ),
        ));
    }
    let response_format = match fields.string("response_format")?.as_deref() {
        None | Some("b64_json") => ResponseFormat::B64Json,
        Some("url") => ResponseFormat::Url,
        Some(other) => {
            return Err(invalid(
                "response_format",
                format!("response_format {other:?} is not supported: use \"b64_json\" or \"url\""),
            ));
        }
    };
    match fields.string("output_format")?.as_deref() {
        None | Some("png") => {}
        Some(other) => {
            return Err(invalid(
                "output_format",
                format!("output_format {other:?} is not supported: this server writes \"png\""),
            ));
        }
    }
    let stream = fields.boolean("stream")?.unwrap_or(false);
    let partial_images = bounded(fields, "partial_images", 0, MAX_PARTIAL_IMAGES)?.unwrap_or(0);
    let top_k = match fields.uint("top_k")? {
        None => None,
        Some(k) => Some(usize::try_from(k).map_err(|_| invalid("top_k", "`top_k` is too large"))?),
    };
    let sampling = SamplingOverrides {
        top_k,
        filter_thres: None,
        top_p: fields.float("top_p")?,
        temperature: fields.float("temperature")?,
        cond_scale: fields.float("cond_scale")?,
        seed: fields.uint("seed")?,
    };
    let init_rows = if limits.edit {
        match (fields.uint("init_rows")?, fields.uint("prime_rows")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    "init_rows",
                    "`init_rows` and `prime_rows` disagree (they are the same setting)",
                ));
            }
            (a, b) => a.or(b),
        }
    } else {
        for name in ["init_rows", "prime_rows", "image"] {
            if fields.contains(name) {
                return Err(invalid(
                    name,
                    format!("`{name}` belongs to /v1/images/edits (image priming)"),
                ));
            }
        }
        None
    };
    if limits.edit && fields.contains("mask") {
        return Err(invalid(
            "mask",
            "masks are not supported: DALL·E-1 priming keeps the image's top rows; set init_rows",
        ));
    }
    Ok(ImageParams {
        prompt,
        n,
        candidates: candidates.unwrap_or(n),
        rerank: candidates.is_some(),
        response_format,
        stream,
        partial_images,
        sampling,
        user: fields.string("user")?,
        init_rows,
    })
}

/// The API field an engine validation field comes from.
pub fn api_param(engine_field: &str, params: &ImageParams) -> String {
    match engine_field {
        "candidates" if params.rerank => "candidates",
        "candidates" => "n",
        "rerank" => "candidates",
        "init_image" => "image",
        "init_codes" => "image",
        other => other,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn limits() -> Limits<'static> {
        Limits {
            model: "shapes",
            size: "32x32",
            max_candidates: 4,
            edit: false,
        }
    }

    fn parse_json(body: &str) -> Result<ImageParams, ApiError> {
        parse(&Fields::from_json_bytes(body.as_bytes())?, &limits())
    }

    #[test]
    fn defaults_and_extensions() {
        let p = parse_json(r#"{"prompt":"a red circle"}"#).unwrap();
        assert_eq!(
            (p.n, p.candidates, p.rerank, p.stream),
            (1, 1, false, false)
        );
        assert_eq!(p.response_format, ResponseFormat::B64Json);
        let p = parse_json(
            r#"{"prompt":"x","n":2,"candidates":4,"seed":7,"top_k":16,"cond_scale":3,
                "response_format":"url","stream":true,"partial_images":2,"size":"32x32",
                "model":"shapes","quality":"high","user":"u1"}"#,
        )
        .unwrap();
        assert_eq!((p.n, p.candidates, p.rerank), (2, 4, true));
        assert_eq!(p.sampling.seed, Some(7));
        assert_eq!(p.sampling.top_k, Some(16));
        assert_eq!(p.sampling.cond_scale, Some(3.0));
        assert_eq!((p.stream, p.partial_images), (true, 2));
        assert_eq!(p.user.as_deref(), Some("u1"));
    }

    #[test]
    fn errors_name_the_field() {
        for (body, param) in [
            (r#"{}"#, "prompt"),
            (r#"{"prompt":""}"#, "prompt"),
            (r#"{"prompt":5}"#, "prompt"),
            (r#"{"prompt":"x","n":0}"#, "n"),
            (r#"{"prompt":"x","n":5}"#, "n"),
            (r#"{"prompt":"x","n":"two"}"#, "n"),
            (r#"{"prompt":"x","n":2,"candidates":1}"#, "candidates"),
            (r#"{"prompt":"x","size":"1024x1024"}"#, "size"),
            (
                r#"{"prompt":"x","response_format":"jpeg"}"#,
                "response_format",
            ),
            (r#"{"prompt":"x","output_format":"webp"}"#, "output_format"),
            (r#"{"prompt":"x","partial_images":4}"#, "partial_images"),
            (r#"{"prompt":"x","stream":"maybe"}"#, "stream"),
            (r#"{"prompt":"x","temperature":"hot"}"#, "temperature"),
            (r#"{"prompt":"x","seed":-1}"#, "seed"),
            (r#"{"prompt":"x","init_rows":3}"#, "init_rows"),
        ] {
            let e = parse_json(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        }
        let e = parse_json(r#"{"prompt":"x","model":"dall-e-3"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.code, Some("model_not_found"));
        let e = parse_json("[1]").unwrap_err();
        assert_eq!((e.status, e.param), (StatusCode::BAD_REQUEST, None));
        assert!(parse_json("{").is_err());
    }

    #[test]
    fn form_fields_are_text() {
        let mut f = Fields::default();
        f.insert_text("prompt", "a".into());
        f.insert_text("n", "2".into());
        f.insert_text("stream", "true".into());
        f.insert_text("prime_rows", "3".into());
        let p = parse(
            &f,
            &Limits {
                edit: true,
                ..limits()
            },
        )
        .unwrap();
        assert_eq!((p.n, p.stream, p.init_rows), (2, true, Some(3)));
    }
}
