//! A generation request as every caller fills it ([`Request`]: the CLI, the evaluator, an HTTP
//! handler) and the one function that turns it into what the engine runs
//! ([`RequestRules::validate`] → [`ValidatedRequest`]): tokenizes (truncation and unknown
//! tokens reported), merges the bundle's sampling defaults, checks every bound, and fails with a
//! [`RequestError`] that names the field. Validation happens once, here; the engine trusts a
//! validated request.

use super::model::ImageGeometry;
use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;
use crate::tokenizer::TextTokenizer;
use dalle_bundle::{GraphRole, SamplingDefaults};
use image::RgbImage;
use serde::Serialize;

/// A bad request: which field, and why. Always the client's fault (HTTP 4xx).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct RequestError {
    /// The request field (`prompt`, `candidates`, `top_k`, `init_rows`, ...).
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        field,
        message: message.into(),
    }
}

/// The prompt: text for the bundle's tokenizer, or tokenizer ids directly (0 = padding).
#[derive(Clone, Debug)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
}

/// Image priming: the first token rows of the image are kept and the rest generated.
#[derive(Clone, Debug)]
pub enum InitInput {
    /// A picture, encoded by the bundle's image encoder; `rows` token rows are kept (default:
    /// the paper's 7/16 of the grid).
    Image { image: RgbImage, rows: Option<u64> },
    /// Image codes given directly (whole rows or not; benches and tests).
    Codes(Vec<u32>),
}

/// Sampling settings the caller sets; `None` takes the bundle's default, then the library's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingOverrides {
    pub top_k: Option<usize>,
    pub filter_thres: Option<f64>,
    pub top_p: Option<f64>,
    pub temperature: Option<f64>,
    pub cond_scale: Option<f64>,
    /// `None`: a random seed (recorded in the validated request).
    pub seed: Option<u64>,
}

/// What to generate. See the module docs.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: PromptInput,
    /// Candidates (images) to sample.
    pub candidates: usize,
    pub sampling: SamplingOverrides,
    pub init: Option<InitInput>,
    /// Keep the CLIP-best this many (needs CLIP graphs in the bundle).
    pub rerank: Option<usize>,
}

impl Request {
    /// A text prompt with every other field at its default (one candidate).
    pub fn text(prompt: impl Into<String>) -> Request {
        Request {
            prompt: PromptInput::Text(prompt.into()),
            candidates: 1,
            sampling: SamplingOverrides::default(),
            init: None,
            rerank: None,
        }
    }
}

/// The prompt after tokenizing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextTokens {
    /// The prompt text (empty when ids were given).
    pub prompt: String,
    /// Tokenizer ids, right-padded with 0 to the text length.
    pub ids: Vec<u32>,
    /// Tokens of the prompt before truncation.
    pub token_count: usize,
    /// Whether tokens were cut to fit the text length.
    pub truncated: bool,
    /// Words the tokenizer did not know (they became its unknown token), then characters its
    /// cleanup removed (as Unicode escapes, `\u{7}`).
    pub unknown: Vec<String>,
}

/// Priming after validation.
#[derive(Clone, Debug)]
pub enum ValidInit {
    /// Encode this picture and keep `rows` token rows (`1..grid`).
    Image { image: RgbImage, rows: usize },
    /// These codes (fewer than a whole image, each in the codebook).
    Codes(Vec<u32>),
}

impl ValidInit {
    /// Primed token rows, when given as rows.
    pub fn rows(&self) -> Option<usize> {
        match self {
            ValidInit::Image { rows, .. } => Some(*rows),
            ValidInit::Codes(_) => None,
        }
    }
}

/// A request the engine can run as it is.
#[derive(Clone, Debug)]
pub struct ValidatedRequest {
    pub text: TextTokens,
    pub candidates: usize,
    /// Effective sampling settings (defaults merged, seed chosen).
    pub params: SamplingParams,
    pub init: Option<ValidInit>,
    pub rerank: Option<usize>,
}

/// Everything validation checks against, read once from a bundle.
pub struct RequestRules {
    pub geometry: ImageGeometry,
    /// Text positions after BOS.
    pub text_length: usize,
    /// Tokenizer ids are `0..text_vocab`.
    pub text_vocab: usize,
    pub defaults: Option<SamplingDefaults>,
    pub tokenizer: Option<TextTokenizer>,
    /// The bundle can encode pictures (image priming).
    pub image_encoder: bool,
    /// The bundle has CLIP graphs (reranking).
    pub clip: bool,
    /// Most candidates one request may ask for.
    pub max_candidates: usize,
    /// Words the tokenizer does not know (and characters its cleanup removes) are an error
    /// (`prompt`) instead of a warning.
    pub strict_vocabulary: bool,
}

/// Default cap on candidates per request.
pub const MAX_CANDIDATES: usize = 1024;

/// The paper's priming depth: 0.4375 of the rows (14 of 32).
pub fn default_init_rows(grid: u64) -> u64 {
    grid * 7 / 16
}

impl RequestRules {
    /// Reads the rules of a DALLE-pytorch bundle (token layout, defaults, tokenizer, graphs).
    pub fn from_bundle(bundle: &Bundle) -> Result<RequestRules> {
        let m = bundle.manifest();
        let layout = m.token_layout.clone().ok_or(Error::NoTokenLayout)?;
        let size = |v: u64, what: &str| {
            usize::try_from(v)
                .map_err(|_| Error::InvalidInput(format!("token layout: {what} {v} too large")))
        };
        let tokenizer = match &m.tokenizer {
            Some(file) => Some(TextTokenizer::open(&bundle.dir().join(file))?),
            None => None,
        };
        Ok(RequestRules {
            geometry: ImageGeometry {
                grid: size(layout.image_grid, "image_grid")?,
                vocab: size(layout.image_vocab_size, "image_vocab_size")?,
                total_vocab: size(layout.total_vocab_size, "total_vocab_size")?,
            },
            text_length: size(layout.text_length, "text_length")?,
            text_vocab: size(layout.text_vocab_size, "text_vocab_size")?,
            defaults: m.sampling.clone(),
            tokenizer,
            image_encoder: m.graphs.contains_key(&GraphRole::DvaeEncoder),
            clip: crate::clip::info(bundle).is_ok(),
            max_candidates: MAX_CANDIDATES,
            strict_vocabulary: false,
        })
    }

    /// The effective sampling settings: the caller's, else the bundle's defaults, else the
    /// library's (no top-k, temperature 1, no guidance); a missing seed is drawn from the clock.
    pub fn sampling(&self, o: &SamplingOverrides) -> SamplingParams {
        let d = self.defaults.as_ref();
        SamplingParams {
            top_k: match (o.top_k, o.filter_thres) {
                (None, None) => d
                    .and_then(|d| d.top_k)
                    .map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
                (k, _) => k,
            },
            filter_thres: o.filter_thres,
            top_p: o.top_p.or(d.and_then(|d| d.top_p)),
            temperature: o.temperature.or(d.map(|d| d.temperature)).unwrap_or(1.0),
            seed: o.seed.unwrap_or_else(random_seed),
            cond_scale: o.cond_scale.or(d.map(|d| d.cond_scale)).unwrap_or(1.0),
        }
    }

    /// See the module docs.
    pub fn validate(&self, request: Request) -> Result<ValidatedRequest, RequestError> {
        if request.candidates == 0 || request.candidates > self.max_candidates {
            return Err(bad(
                "candidates",
                format!(
                    "must be in [1, {}], got {}",
                    self.max_candidates, request.candidates
                ),
            ));
        }
        let params = self.sampling(&request.sampling);
        params.validate().map_err(|e| match e {
            Error::InvalidSetting { setting, message } => bad(setting, message),
            other => bad("sampling", other.to_string()),
        })?;
        check_f32(&params)?;
        if let Some(k) = request.rerank {
            if !self.clip {
                return Err(bad("rerank", "the bundle has no CLIP graphs to rank with"));
            }
            if k == 0 || k > request.candidates {
                return Err(bad(
                    "rerank",
                    format!(
                        "must be in [1, {}] (the number of candidates), got {k}",
                        request.candidates
                    ),
                ));
            }
        }
        let text = self.tokenize(request.prompt)?;
        let init = match request.init {
            None => None,
            Some(init) => Some(self.init(init)?),
        };
        Ok(ValidatedRequest {
            text,
            candidates: request.candidates,
            params,
            init,
            rerank: request.rerank,
        })
    }

    fn tokenize(&self, prompt: PromptInput) -> Result<TextTokens, RequestError> {
        match prompt {
            PromptInput::Ids(ids) => {
                if ids.len() > self.text_length {
                    return Err(bad(
                        "prompt",
                        format!(
                            "{} text tokens, but the model reads at most {}",
                            ids.len(),
                            self.text_length
                        ),
                    ));
                }
                if let Some((i, &t)) = ids
                    .iter()
                    .enumerate()
                    .find(|&(_, &t)| t as usize >= self.text_vocab)
                {
                    return Err(bad(
                        "prompt",
                        format!(
                            "text token {t} at position {i} is outside the text vocabulary 0..{}",
                            self.text_vocab
                        ),
                    ));
                }
                let token_count = ids.iter().filter(|&&t| t != 0).count();
                let mut padded = ids;
                padded.resize(self.text_length, 0);
                Ok(TextTokens {
                    prompt: String::new(),
                    ids: padded,
                    token_count,
                    truncated: false,
                    unknown: vec![],
                })
            }
            PromptInput::Text(text) => {
                let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
                    bad(
                        "prompt",
                        "the bundle has no tokenizer; pass the prompt's token ids instead",
                    )
                })?;
                let encoded = tokenizer
                    .encode(&text, self.text_length)
                    .map_err(|e| bad("prompt", e.to_string()))?;
                if let Some((i, &t)) = encoded
                    .ids
                    .iter()
                    .enumerate()
                    .find(|&(_, &t)| t as usize >= self.text_vocab)
                {
                    return Err(bad(
                        "prompt",
                        format!(
                            "the tokenizer made id {t} at position {i}, outside the model's text \
                             vocabulary 0..{}",
                            self.text_vocab
                        ),
                    ));
                }
                if !encoded.unknown.is_empty() {
                    let words = encoded
                        .unknown
                        .iter()
                        .map(|w| format!("{w:?}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let unk = tokenizer
                        .unknown_token()
                        .unwrap_or_else(|| "the unknown token".into());
                    if self.strict_vocabulary {
                        return Err(bad(
                            "prompt",
                            format!("not in the model's vocabulary: {words}"),
                        ));
                    }
                    tracing::warn!("not in the model's vocabulary, read as {unk}: {words}");
                }
                if !encoded.dropped.is_empty() {
                    let chars = encoded.dropped.join(", ");
                    if self.strict_vocabulary {
                        return Err(bad(
                            "prompt",
                            format!("characters the prompt cleanup removes: {chars}"),
                        ));
                    }
                    tracing::warn!("removed by the prompt cleanup: {chars}");
                }
                let mut unknown = encoded.unknown;
                unknown.extend(encoded.dropped);
                Ok(TextTokens {
                    prompt: text,
                    ids: encoded.ids,
                    token_count: encoded.token_count,
                    truncated: encoded.truncated,
                    unknown,
                })
            }
        }
    }

    fn init(&self, init: InitInput) -> Result<ValidInit, RequestError> {
        let grid = self.geometry.grid;
        match init {
            InitInput::Image { image, rows } => {
                if !self.image_encoder {
                    return Err(bad(
                        "init_image",
                        "the bundle has no image encoder (dvae_encoder) to prime with",
                    ));
                }
                let rows = rows.unwrap_or_else(|| default_init_rows(grid as u64));
                if rows == 0 || rows >= grid as u64 {
                    return Err(bad(
                        "init_rows",
                        format!(
                            "must be in [1, {grid}) (the image has {grid} token rows), got {rows}"
                        ),
                    ));
                }
                Ok(ValidInit::Image {
                    image,
                    rows: rows as usize,
                })
            }
            InitInput::Codes(codes) => {
                let image_len = self.geometry.tokens();
                if codes.len() >= image_len {
                    return Err(bad(
                        "init_codes",
                        format!(
                            "{} primed tokens leave nothing to sample in a {image_len}-token image",
                            codes.len()
                        ),
                    ));
                }
                if let Some((i, &c)) = codes
                    .iter()
                    .enumerate()
                    .find(|&(_, &c)| c as usize >= self.geometry.vocab)
                {
                    return Err(bad(
                        "init_codes",
                        format!(
                            "image code {c} at position {i} is outside the codebook 0..{}",
                            self.geometry.vocab
                        ),
                    ));
                }
                Ok(ValidInit::Codes(codes))
            }
        }
    }
}

/// The smallest temperature: the sampler multiplies the float32 logits by `1 / temperature`,
/// and below this real logits overflow to ±inf (at 1e-38 every logit above 3.4 did, and the
/// draw saw NaNs). At 1e-6 a logit would have to exceed 3.4e32 to overflow; sampling is then
/// already the argmax for any logits a model produces.
pub const MIN_TEMPERATURE: f64 = 1e-6;

/// The sampler computes in float32: settings finite as f64 may still overflow there.
fn check_f32(p: &SamplingParams) -> Result<(), RequestError> {
    let t = p.temperature as f32;
    if !(t.is_finite() && p.temperature >= MIN_TEMPERATURE && (1.0 / t).is_finite()) {
        return Err(bad(
            "temperature",
            format!(
                "{} is out of range: it must be in [{MIN_TEMPERATURE:e}, {:e}] (the float32 \
                 logits are multiplied by 1/temperature)",
                p.temperature,
                f32::MAX
            ),
        ));
    }
    if !(p.cond_scale as f32).is_finite() || (p.cond_scale as f32).abs() > 1e6 {
        return Err(bad(
            "cond_scale",
            format!("must be within ±1e6, got {}", p.cond_scale),
        ));
    }
    Ok(())
}

/// A seed from the clock, for requests that leave it unset.
pub fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
