//! CLIP hyperparameters from a Hugging Face `config.json` (`CLIPConfig`, transformers 5.24.0
//! `models/clip/configuration_clip.py`), validated. Absent keys take Hugging Face's defaults
//! (openai/clip-vit-base-patch32 shapes, `shared/reference/models.md` §5.1).

use crate::error::{ExportError, Result};
use dalle_bundle::limits;
use serde::Deserialize;

/// The feed-forward activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (OpenAI's CLIP).
    QuickGelu,
    /// Exact erf GELU.
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    fn parse(name: &str, tower: &str) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(ExportError::Unsupported(format!(
                "{tower}_config.hidden_act `{other}` (supported: quick_gelu, gelu, gelu_new, \
                 gelu_pytorch_tanh)"
            ))),
        }
    }
}

/// Where the text model pools its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// `argmax(input_ids)`: the legacy rule, used when `eos_token_id == 2` (EOT is the largest
    /// id of the CLIP vocabulary).
    ArgMaxId,
    /// The first position whose id equals `eos_token_id`.
    FirstEos(i64),
}

/// One transformer tower.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TowerConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub activation: Activation,
    pub layer_norm_eps: f32,
}

impl TowerConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// The text tower.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextConfig {
    pub tower: TowerConfig,
    pub vocab_size: usize,
    /// `max_position_embeddings`: the fixed context (77).
    pub context_length: usize,
    pub pooling: Pooling,
}

/// The vision tower.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VisionConfig {
    pub tower: TowerConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub channels: usize,
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions: patches plus the class token.
    pub fn positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

/// A whole `CLIPModel`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

#[derive(Deserialize, Default)]
struct RawTower {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    // text
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    eos_token_id: Option<i64>,
    // vision
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_channels: Option<usize>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    projection_dim: Option<usize>,
    text_config: Option<RawTower>,
    vision_config: Option<RawTower>,
}

impl ClipConfig {
    /// Parses and validates `config.json` text; `source` names the file in messages.
    pub fn from_json(text: &str, source: &str) -> Result<ClipConfig> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ExportError::Weights(format!("{source}: not a CLIP config.json: {e}")))?;
        if let Some(t) = &raw.model_type
            && t != "clip"
        {
            return Err(ExportError::Unsupported(format!(
                "{source}: model_type `{t}` (only `clip` CLIPModel directories are exported)"
            )));
        }
        let t = raw.text_config.unwrap_or_default();
        let v = raw.vision_config.unwrap_or_default();
        let tower = |r: &RawTower, name: &str, d: (usize, usize, usize, usize)| {
            Ok::<_, ExportError>(TowerConfig {
                hidden: r.hidden_size.unwrap_or(d.0),
                intermediate: r.intermediate_size.unwrap_or(d.1),
                layers: r.num_hidden_layers.unwrap_or(d.2),
                heads: r.num_attention_heads.unwrap_or(d.3),
                activation: Activation::parse(
                    r.hidden_act.as_deref().unwrap_or("quick_gelu"),
                    name,
                )?,
                layer_norm_eps: r.layer_norm_eps.unwrap_or(1e-5) as f32,
            })
        };
        let eos = t.eos_token_id.unwrap_or(2);
        let cfg = ClipConfig {
            text: TextConfig {
                tower: tower(&t, "text", (512, 2048, 12, 8))?,
                vocab_size: t.vocab_size.unwrap_or(49408),
                context_length: t.max_position_embeddings.unwrap_or(77),
                pooling: if eos == 2 {
                    Pooling::ArgMaxId
                } else {
                    Pooling::FirstEos(eos)
                },
            },
            vision: VisionConfig {
                tower: tower(&v, "vision", (768, 3072, 12, 12))?,
                image_size: v.image_size.unwrap_or(224),
                patch_size: v.patch_size.unwrap_or(32),
                channels: v.num_channels.unwrap_or(3),
            },
            projection_dim: raw.projection_dim.unwrap_or(512),
        };
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// Every size within its limit (`dalle_bundle::limits`), then the reference's rules.
    fn validate(&self, source: &str) -> Result<()> {
        let bad = |what: String| Err(ExportError::Unsupported(format!("{source}: {what}")));
        let limit = |name: String, value: usize, limit: limits::Limit| -> Result<()> {
            limits::check(&name, value, limit)
                .map_err(|e| ExportError::Unsupported(format!("{source}: {e}")))?;
            Ok(())
        };
        for (name, t) in [("text", &self.text.tower), ("vision", &self.vision.tower)] {
            for (field, value, l) in [
                ("hidden_size", t.hidden, limits::WIDTH),
                ("intermediate_size", t.intermediate, limits::WIDTH),
                ("num_hidden_layers", t.layers, limits::LAYERS),
                ("num_attention_heads", t.heads, limits::HEADS),
            ] {
                limit(format!("{name}_config.{field}"), value, l)?;
            }
            if !t.hidden.is_multiple_of(t.heads) {
                return bad(format!(
                    "{name}_config.hidden_size {} is not a multiple of num_attention_heads {}",
                    t.hidden, t.heads
                ));
            }
            if !(t.layer_norm_eps > 0.0 && t.layer_norm_eps.is_finite()) {
                return bad(format!(
                    "{name}_config.layer_norm_eps {} must be positive and finite in float32",
                    t.layer_norm_eps
                ));
            }
        }
        let v = &self.vision;
        for (field, value, l) in [
            (
                "text_config.vocab_size",
                self.text.vocab_size,
                limits::VOCAB,
            ),
            (
                "text_config.max_position_embeddings",
                self.text.context_length,
                limits::TEXT_LENGTH,
            ),
            ("projection_dim", self.projection_dim, limits::WIDTH),
            ("vision_config.image_size", v.image_size, limits::IMAGE_SIDE),
            ("vision_config.patch_size", v.patch_size, limits::IMAGE_SIDE),
            ("vision_config.num_channels", v.channels, limits::CHANNELS),
        ] {
            limit(field.to_string(), value, l)?;
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "vision_config.image_size {} must be a positive multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        limit(
            "vision positions (image_size / patch_size)² + 1".into(),
            v.positions(),
            limits::SEQUENCE,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vit_b32_and_legacy_pooling() {
        let c = ClipConfig::from_json("{}", "config.json").unwrap();
        assert_eq!(c.text.tower.hidden, 512);
        assert_eq!(c.vision.tower.hidden, 768);
        assert_eq!(c.vision.positions(), 50);
        assert_eq!(c.text.pooling, Pooling::ArgMaxId);
        assert_eq!(c.text.tower.activation, Activation::QuickGelu);
    }

    #[test]
    fn eos_pooling_and_bad_activation() {
        let c = ClipConfig::from_json(
            r#"{"text_config": {"eos_token_id": 49407, "hidden_act": "gelu"}}"#,
            "c",
        )
        .unwrap();
        assert_eq!(c.text.pooling, Pooling::FirstEos(49407));
        let err = ClipConfig::from_json(r#"{"vision_config": {"hidden_act": "relu"}}"#, "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden_act `relu`"), "{err}");
    }

    #[test]
    fn huge_sizes_name_the_value_and_the_limit() {
        for (json, needle) in [
            (
                r#"{"text_config": {"max_position_embeddings": 1099511627776}}"#,
                "`text_config.max_position_embeddings` = 1099511627776 is outside the supported range 1..=65536",
            ),
            (
                r#"{"vision_config": {"num_hidden_layers": 2147483648}}"#,
                "`vision_config.num_hidden_layers` = 2147483648 is outside",
            ),
            (
                r#"{"text_config": {"num_attention_heads": 0}}"#,
                "`text_config.num_attention_heads` = 0 is outside",
            ),
            (
                r#"{"vision_config": {"image_size": 16384, "patch_size": 1}}"#,
                "vision positions (image_size / patch_size)² + 1` = 268435457 is outside",
            ),
            (
                r#"{"text_config": {"layer_norm_eps": 1e300}}"#,
                "layer_norm_eps inf must be positive and finite in float32",
            ),
        ] {
            let err = ClipConfig::from_json(json, "c").unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
