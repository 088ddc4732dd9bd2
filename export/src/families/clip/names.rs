//! Hugging Face `CLIPModel` parameter names (transformers 5.24.0 `models/clip/modeling_clip.py`;
//! `shared/reference/models.md` §5.2): the one place that spells them.

/// Which tower a name belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tower {
    Text,
    Vision,
}

impl Tower {
    /// `text_model` / `vision_model`.
    pub fn prefix(self) -> &'static str {
        match self {
            Tower::Text => "text_model",
            Tower::Vision => "vision_model",
        }
    }
}

/// `logit_scale` (a scalar).
pub const LOGIT_SCALE: &str = "logit_scale";
/// `[projection_dim, text hidden]`, no bias.
pub const TEXT_PROJECTION: &str = "text_projection.weight";
/// `[projection_dim, vision hidden]`, no bias.
pub const VISUAL_PROJECTION: &str = "visual_projection.weight";
pub const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";
pub const CLASS_EMBEDDING: &str = "vision_model.embeddings.class_embedding";
pub const PATCH_EMBEDDING: &str = "vision_model.embeddings.patch_embedding.weight";
/// `text_model.final_layer_norm`.
pub const TEXT_FINAL_NORM: &str = "text_model.final_layer_norm";
/// `vision_model.pre_layrnorm` (sic).
pub const VISION_PRE_NORM: &str = "vision_model.pre_layrnorm";
pub const VISION_POST_NORM: &str = "vision_model.post_layernorm";

/// `{tower}.embeddings.position_embedding.weight`.
pub fn position_embedding(t: Tower) -> String {
    format!("{}.embeddings.position_embedding.weight", t.prefix())
}

/// `{tower}.embeddings.position_ids`: a buffer older checkpoints saved; not a parameter.
pub fn position_ids(t: Tower) -> String {
    format!("{}.embeddings.position_ids", t.prefix())
}

/// `{tower}.encoder.layers.{i}.{rest}` (`self_attn.q_proj`, `layer_norm1`, `mlp.fc1`, ...).
pub fn layer(t: Tower, i: usize, rest: &str) -> String {
    format!("{}.encoder.layers.{i}.{rest}", t.prefix())
}
