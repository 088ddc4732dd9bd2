//! min-dalle's state-dict names (`models/dalle_bart_encoder.py`, `dalle_bart_decoder.py`).

pub const EMBED_TOKENS: &str = "embed_tokens.weight";
pub const EMBED_POSITIONS: &str = "embed_positions.weight";
pub const LAYERNORM_EMBEDDING: &str = "layernorm_embedding";
pub const FINAL_LN: &str = "final_ln";
pub const LM_HEAD: &str = "lm_head.weight";

pub const PRE_SELF_ATTN_LN: &str = "pre_self_attn_layer_norm";
pub const SELF_ATTN: &str = "self_attn";
pub const SELF_ATTN_LN: &str = "self_attn_layer_norm";
pub const PRE_ENCODER_ATTN_LN: &str = "pre_encoder_attn_layer_norm";
pub const ENCODER_ATTN: &str = "encoder_attn";
pub const ENCODER_ATTN_LN: &str = "encoder_attn_layer_norm";
pub const GLU: &str = "glu";

/// LayerNorms that dalle-mini's "normformer" layout creates without a scale, so the converted
/// files may lack their `.weight` (min-dalle's `strict=False` load then leaves 1.0): the
/// pre-attention norms, the GLU's `ln0`/`ln1` and `final_ln` (models.md §3.2).
pub fn may_lack_scale(norm: &str) -> bool {
    norm == FINAL_LN
        || norm.ends_with(PRE_SELF_ATTN_LN)
        || norm.ends_with(PRE_ENCODER_ATTN_LN)
        || norm.ends_with(".glu.ln0")
        || norm.ends_with(".glu.ln1")
}

/// `layers.{i}.{rest}`.
pub fn layer(i: usize, rest: &str) -> String {
    format!("layers.{i}.{rest}")
}

/// Number of layers: one more than the largest `layers.{i}.` index.
pub fn layer_count<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names
        .filter_map(|n| {
            n.strip_prefix("layers.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1)
}
