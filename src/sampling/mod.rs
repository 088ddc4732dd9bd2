//! Image-token sampling: validated settings, a composable logits-filter chain, and a seeded
//! sampler. This module is the only place that turns decoder logits into image tokens.
//!
//! Per row of image-vocabulary logits (`TokenLayout::image_vocab_size` wide: the decoder's
//! `image_logits` output, or the image range `[image_token_offset, total_vocab_size)` of its full
//! `logits`, cut out by the runtime) the [`ImageTokenSampler`] does, in this order:
//!
//! 1. Only image codes can be drawn: the result is an image *code* `0..image_vocab_size`.
//! 2. **Classifier-free guidance** ([`cfg_combine`]) when `cond_scale != 1`:
//!    `uncond + (cond - uncond) * cond_scale`, from two independent rows (never a shared cache).
//!    Models that were trained and released with min-dalle's spelling of the same formula
//!    (DALL·E mini/mega) use [`Guidance::Supercondition`], [`supercondition_combine`]:
//!    `uncond · (1 − f) + cond · f`, equal by algebra, rounded as min-dalle rounds.
//! 3. The [`FilterChain`]: [`Temperature`] → [`TopK`] → [`TopP`] (Hugging Face order; top-k is
//!    invariant to temperature, top-p is not).
//! 4. One draw by inverse CDF over the softmax of what is left ([`Sampler`]), using the
//!    candidate's own random stream ([`CandidateRng`]).
//!
//! Top-k comes in two spellings: `top_k` counts **image** tokens; `filter_thres` is
//! DALLE-pytorch's: `k = max(int((1 - thres) * num_logits), 1)` with `num_logits` the **full**
//! unified vocabulary (text + image). DALLE-pytorch's default `thres = 0.5` therefore keeps
//! `total_vocab / 2` logits, more than the image vocabulary (e.g. 28928 > 8192): **no effective
//! top-k**; its `generate.py` default 0.9 keeps 5785. Only one of the two may be set.
//!
//! Reproducibility: each candidate `i` draws from ChaCha20 seeded with `seed` on stream `i`
//! (`rand_chacha`, whose output is fixed by the algorithm, unlike `rand::rngs::StdRng` which may
//! change between `rand` versions). Results therefore depend only on `(seed, candidate index)`,
//! not on how many candidates run per batch.

mod filters;
mod sampler;

pub use filters::{
    FilterChain, LogitsFilter, Temperature, TopK, TopP, cfg_combine, supercondition_combine,
};
pub use sampler::{CandidateRng, ImageTokenSampler, SampleScratch, Sampler};

use crate::error::{Error, Result};
use serde::Serialize;

/// How a guided candidate's two rows are combined (the formula; the scale is `cond_scale`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Guidance {
    /// [`cfg_combine`]: `uncond + (cond − uncond) · scale` (DALLE-pytorch).
    #[default]
    Cfg,
    /// [`supercondition_combine`]: `uncond · (1 − f) + cond · f` (min-dalle).
    Supercondition,
}

/// Sampling settings, checked by [`SamplingParams::validate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplingParams {
    /// Keep the `k` most likely image tokens (a count over image tokens; `k >= image vocab` keeps
    /// all).
    pub top_k: Option<usize>,
    /// DALLE-pytorch top-k threshold in `[0, 1)`: `k = max(int((1 - thres) * total_vocab), 1)`
    /// (see the module docs: 0.5 is no effective top-k).
    pub filter_thres: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`
    /// (in `(0, 1]`; 1 keeps all).
    pub top_p: Option<f64>,
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// Seed of every candidate's random stream.
    pub seed: u64,
    /// Classifier-free guidance scale (1 = off, no unconditional rows are run).
    pub cond_scale: f64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            top_k: None,
            filter_thres: None,
            top_p: None,
            temperature: 1.0,
            seed: 0,
            cond_scale: 1.0,
        }
    }
}

fn invalid(setting: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidSetting {
        setting,
        message: message.into(),
    }
}

impl SamplingParams {
    /// Rejects settings that cannot sample: `top_k = 0`, temperature not > 0 (or NaN), `top_p`
    /// outside `(0, 1]`, `filter_thres` outside `[0, 1)`, a non-finite `cond_scale`, and both
    /// `top_k` and `filter_thres` at once.
    pub fn validate(&self) -> Result<()> {
        if self.top_k == Some(0) {
            return Err(invalid(
                "top_k",
                "must be at least 1 (1 = always the most likely token)",
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(invalid(
                "temperature",
                format!("must be a finite number > 0, got {}", self.temperature),
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(invalid("top_p", format!("must be in (0, 1], got {p}")));
        }
        if let Some(t) = self.filter_thres
            && !(0.0..1.0).contains(&t)
        {
            return Err(invalid(
                "filter_thres",
                format!("must be in [0, 1), got {t}"),
            ));
        }
        if self.top_k.is_some() && self.filter_thres.is_some() {
            return Err(invalid(
                "filter_thres",
                "cannot be combined with top_k (both set a top-k; use one)",
            ));
        }
        if !self.cond_scale.is_finite() {
            return Err(invalid(
                "cond_scale",
                format!("must be a finite number, got {}", self.cond_scale),
            ));
        }
        Ok(())
    }

    /// Whether classifier-free guidance is on (unconditional rows are run).
    pub fn guided(&self) -> bool {
        self.cond_scale != 1.0
    }

    /// The top-k over image tokens these settings mean, `None` when nothing is cut: `top_k`
    /// directly, or `filter_thres` over the full vocabulary (DALLE-pytorch), both capped at the
    /// image vocabulary.
    pub fn effective_top_k(&self, total_vocab: usize, image_vocab: usize) -> Option<usize> {
        let k = match (self.top_k, self.filter_thres) {
            (Some(k), _) => k,
            (None, Some(thres)) => {
                // int() truncates toward zero, as in Python.
                let k = ((1.0 - thres) * total_vocab as f64) as usize;
                k.max(1)
            }
            (None, None) => return None,
        };
        (k < image_vocab).then_some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(p: SamplingParams) -> String {
        p.validate().unwrap_err().to_string()
    }

    #[test]
    fn invalid_settings_are_named() {
        let base = SamplingParams::default();
        assert!(base.validate().is_ok());
        let m = msg(SamplingParams {
            top_k: Some(0),
            ..base.clone()
        });
        assert!(m.contains("top_k") && m.contains("at least 1"), "{m}");
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let m = msg(SamplingParams {
                temperature: t,
                ..base.clone()
            });
            assert!(m.contains("temperature") && m.contains("> 0"), "{m}");
        }
        for p in [0.0, 1.5, f64::NAN] {
            let m = msg(SamplingParams {
                top_p: Some(p),
                ..base.clone()
            });
            assert!(m.contains("top_p") && m.contains("(0, 1]"), "{m}");
        }
        for t in [1.0, -0.1, f64::NAN] {
            let m = msg(SamplingParams {
                filter_thres: Some(t),
                ..base.clone()
            });
            assert!(m.contains("filter_thres") && m.contains("[0, 1)"), "{m}");
        }
        let m = msg(SamplingParams {
            cond_scale: f64::NAN,
            ..base.clone()
        });
        assert!(m.contains("cond_scale"), "{m}");
        let m = msg(SamplingParams {
            top_k: Some(3),
            filter_thres: Some(0.9),
            ..base
        });
        assert!(m.contains("use one"), "{m}");
    }

    #[test]
    fn filter_thres_counts_the_full_vocabulary() {
        let p = |t| SamplingParams {
            filter_thres: Some(t),
            ..SamplingParams::default()
        };
        // DALLE-pytorch: 57856 logits, 8192 image tokens.
        assert_eq!(
            p(0.5).effective_top_k(57856, 8192),
            None,
            "no effective top-k"
        );
        assert_eq!(p(0.9).effective_top_k(57856, 8192), Some(5785));
        assert_eq!(p(0.99999).effective_top_k(57856, 8192), Some(1));
        let k = SamplingParams {
            top_k: Some(128),
            ..SamplingParams::default()
        };
        assert_eq!(k.effective_top_k(57856, 8192), Some(128));
        assert_eq!(k.effective_top_k(57856, 64), None);
    }
}
