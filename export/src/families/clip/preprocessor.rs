//! `preprocessor_config.json` (Hugging Face `CLIPImageProcessor`, transformers 5.24.0
//! `models/clip/image_processing_clip.py`): every setting is honoured or refused, none ignored.
//!
//! The runtime (`dalle::clip`) resizes the shortest side to the vision model's `image_size`
//! with PIL's bicubic filter, crops the centre square and normalizes pixels in [0, 1] with the
//! manifest's mean and std. So:
//! - `do_resize` with `size.shortest_edge` (or a plain `size`) equal to the crop, `resample`
//!   3 (bicubic), `do_center_crop` with `crop_size` equal to `image_size`: honoured; anything
//!   else would need a different pipeline and is refused;
//! - `do_rescale`/`rescale_factor` and `do_normalize`/`image_mean`/`image_std`: honoured
//!   exactly by folding them into the manifest's mean and std: on an 8-bit value `v = 255 p`
//!   the processor computes `(v · r − m) / s = (p − m / 255r) / (s / 255r)`;
//! - `do_convert_rgb`: the runtime always feeds RGB.

use crate::error::{ExportError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// OpenAI's CLIP normalization (the `CLIPImageProcessor` default).
pub const OPENAI_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// PIL's `Image.BICUBIC`, the only filter the runtime implements.
const BICUBIC: u64 = 3;

/// What the runtime needs: the square side and the normalization on pixels in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocessing {
    pub image_size: u64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

#[derive(Deserialize, Default)]
struct Raw {
    image_processor_type: Option<String>,
    feature_extractor_type: Option<String>,
    do_resize: Option<bool>,
    size: Option<Value>,
    resample: Option<u64>,
    do_center_crop: Option<bool>,
    crop_size: Option<Value>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<[f64; 3]>,
    image_std: Option<[f64; 3]>,
}

/// OpenAI's settings for a vision model of side `image_size` (no `preprocessor_config.json`).
pub fn default_for(image_size: u64) -> Preprocessing {
    Preprocessing {
        image_size,
        mean: OPENAI_MEAN,
        std: OPENAI_STD,
    }
}

/// Reads `path` (`preprocessor_config.json`) for a vision model of side `image_size`.
pub fn read(path: &Path, image_size: u64) -> Result<Preprocessing> {
    crate::checkpoint::open_regular(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| ExportError::io(path, e))?;
    from_json(&text, image_size, &path.display().to_string())
}

/// Parses `preprocessor_config.json` text; `source` names it in messages.
pub fn from_json(text: &str, image_size: u64, source: &str) -> Result<Preprocessing> {
    let raw: Raw = serde_json::from_str(text)
        .map_err(|e| ExportError::Weights(format!("{source}: not a preprocessor config: {e}")))?;
    let refuse = |what: String| {
        Err(ExportError::Unsupported(format!(
            "{source}: {what} (the runtime resizes the shortest side to {image_size} with \
             bicubic filtering and crops the centre {image_size}×{image_size})"
        )))
    };
    for t in [&raw.image_processor_type, &raw.feature_extractor_type]
        .into_iter()
        .flatten()
    {
        if !matches!(
            t.as_str(),
            "CLIPImageProcessor" | "CLIPImageProcessorFast" | "CLIPFeatureExtractor"
        ) {
            return refuse(format!("processor type `{t}` is not CLIPImageProcessor"));
        }
    }
    if raw.do_resize == Some(false) {
        return refuse("do_resize = false".into());
    }
    if let Some(size) = &raw.size {
        let edge = size
            .as_u64()
            .or_else(|| size.get("shortest_edge").and_then(Value::as_u64));
        match edge {
            Some(e) if e == image_size => {}
            Some(e) => {
                return refuse(format!(
                    "size.shortest_edge {e} differs from the crop size {image_size}"
                ));
            }
            None => return refuse(format!("size {size} is not a shortest_edge resize")),
        }
    }
    if let Some(r) = raw.resample
        && r != BICUBIC
    {
        return refuse(format!(
            "resample = {r} (PIL filter {}), only 3 (bicubic) is implemented",
            pil_filter(r)
        ));
    }
    if raw.do_center_crop == Some(false) {
        return refuse("do_center_crop = false".into());
    }
    if let Some(c) = &raw.crop_size {
        let (h, w) = match c.as_u64() {
            Some(n) => (Some(n), Some(n)),
            None => (
                c.get("height").and_then(Value::as_u64),
                c.get("width").and_then(Value::as_u64),
            ),
        };
        if h != Some(image_size) || w != Some(image_size) {
            return refuse(format!(
                "crop_size {c} differs from the vision model's image_size {image_size}"
            ));
        }
    }
    // Scale of 8-bit values: v · rescale_factor (1 without rescaling).
    let factor = match raw.do_rescale {
        Some(false) => 1.0,
        _ => raw.rescale_factor.unwrap_or(1.0 / 255.0),
    };
    if !(factor.is_finite() && factor > 0.0) {
        return refuse(format!(
            "rescale_factor {factor} must be positive and finite"
        ));
    }
    let (mean, std) = if raw.do_normalize == Some(false) {
        ([0.0; 3], [1.0; 3])
    } else {
        (
            raw.image_mean.unwrap_or(OPENAI_MEAN),
            raw.image_std.unwrap_or(OPENAI_STD),
        )
    };
    if mean.iter().chain(&std).any(|v| !v.is_finite()) || std.iter().any(|s| *s <= 0.0) {
        return refuse(format!(
            "image_mean {mean:?} / image_std {std:?} must be finite with positive stds"
        ));
    }
    let unit = 255.0 * factor;
    let (mean, std) = if (unit - 1.0).abs() < 1e-9 {
        (mean, std)
    } else {
        (mean.map(|m| m / unit), std.map(|s| s / unit))
    };
    Ok(Preprocessing {
        image_size,
        mean,
        std,
    })
}

fn pil_filter(r: u64) -> &'static str {
    match r {
        0 => "nearest",
        1 => "lanczos",
        2 => "bilinear",
        4 => "box",
        5 => "hamming",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HF: &str = r#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true,
        "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(HF).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn the_hugging_face_default_is_openais() {
        assert_eq!(from_json(HF, 224, "p").unwrap(), default_for(224));
        assert_eq!(from_json("{}", 224, "p").unwrap(), default_for(224));
        assert_eq!(
            from_json(&with("size", "224"), 224, "p").unwrap(),
            default_for(224)
        );
    }

    #[test]
    fn rescaling_and_normalization_are_folded_into_mean_and_std() {
        let p = from_json(&with("do_normalize", "false"), 224, "p").unwrap();
        assert_eq!((p.mean, p.std), ([0.0; 3], [1.0; 3]));
        // No rescaling: the processor normalizes 0..255 values.
        let p = from_json(&with("do_rescale", "false"), 224, "p").unwrap();
        for c in 0..3 {
            assert!((p.mean[c] - OPENAI_MEAN[c] / 255.0).abs() < 1e-15);
            assert!((p.std[c] - OPENAI_STD[c] / 255.0).abs() < 1e-15);
        }
        // (v · r − m) / s at v = 255 p equals (p − mean) / std.
        let text = with("rescale_factor", "0.5");
        let p = from_json(&text, 224, "p").unwrap();
        for v in [0.0f64, 17.0, 255.0] {
            let hf = (v * 0.5 - OPENAI_MEAN[1]) / OPENAI_STD[1];
            let ours = (v / 255.0 - p.mean[1]) / p.std[1];
            assert!((hf - ours).abs() < 1e-9, "{v}: {hf} vs {ours}");
        }
    }

    #[test]
    fn settings_the_runtime_cannot_follow_are_refused() {
        for (key, value, needle) in [
            ("do_resize", "false", "do_resize = false"),
            (
                "size",
                r#"{"shortest_edge": 256}"#,
                "size.shortest_edge 256 differs",
            ),
            (
                "size",
                r#"{"height": 224, "width": 224}"#,
                "is not a shortest_edge resize",
            ),
            ("resample", "2", "resample = 2 (PIL filter bilinear)"),
            ("do_center_crop", "false", "do_center_crop = false"),
            ("crop_size", r#"{"height": 224, "width": 200}"#, "crop_size"),
            ("rescale_factor", "0", "rescale_factor 0 must be positive"),
            ("image_std", "[0.5, 0, 0.5]", "positive stds"),
            (
                "image_processor_type",
                r#""SiglipImageProcessor""#,
                "is not CLIPImageProcessor",
            ),
        ] {
            let err = from_json(&with(key, value), 224, "p")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{key}={value}: {err}");
        }
    }
}
