//! Graph input/output names: the one place that spells them.
//!
//! Names follow Hugging Face Optimum and onnxruntime-genai (`input_ids`, `past_key_values.{i}.key`,
//! `present.{i}.value`, `pixel_values`, `text_embeds`) so users of those tools recognize them.
//! Symbolic dimension names live here too, so TensorRT optimization profiles in the manifest and
//! the graphs agree.

/// Symbolic dimension names shared by all graphs.
pub mod dims {
    /// Batch dimension.
    pub const BATCH: &str = "batch";
    /// Image height in pixels (dVAE encoder input).
    pub const HEIGHT: &str = "height";
    /// Image width in pixels (dVAE encoder input).
    pub const WIDTH: &str = "width";
    /// Token-grid height (dVAE decoder input).
    pub const GRID_HEIGHT: &str = "grid_height";
    /// Token-grid width (dVAE decoder input).
    pub const GRID_WIDTH: &str = "grid_width";
    /// New tokens fed in one decoder call.
    pub const SEQUENCE: &str = "sequence";
    /// Tokens already held in the KV cache.
    pub const PAST_SEQUENCE: &str = "past_sequence_length";
    /// `past_sequence_length + sequence`.
    pub const TOTAL_SEQUENCE: &str = "total_sequence_length";
}

/// The OpenAI dVAE graphs (`dvae_encoder.onnx`, `dvae_decoder.onnx`).
pub mod dvae {
    /// Encoder input: f32 `[batch, 3, height, width]` in [0, 1]; decoder output, same range.
    pub const PIXELS: &str = "pixels";
    /// Encoder output / decoder input: i64 `[batch, grid_height, grid_width]` codebook indices.
    pub const IMAGE_TOKENS: &str = "image_tokens";
}

/// The transformer decoder step graph (`decoder.onnx`).
///
/// One graph serves prefill and decoding: feed any number of new tokens with the state of the
/// tokens before them (zero-length on the first call). Positions are derived inside the graph
/// from the past length, so the caller never passes positions. Every state input is named
/// `past_*` and has one output that replaces it on the next call ([`present_for`](decoder::present_for)).
///
/// Two cache layouts (manifest attribute [`KV_CACHE_ATTRIBUTE`](decoder::KV_CACHE_ATTRIBUTE)):
/// - [`KV_CONCAT`](decoder::KV_CONCAT): one past length for the whole batch, the `past_sequence_length` axis of
///   every state input, which grows by the number of tokens fed.
/// - [`KV_IN_PLACE`](decoder::KV_IN_PLACE): a past length per row ([`CACHE_LENGTH`](decoder::CACHE_LENGTH) `[batch]`), so rows of different
///   requests at different positions share one call; every state has a fixed shape. Every row
///   takes the same number of new tokens per call; ONNX Runtime's CPU `GroupQueryAttention`
///   takes more than one new token after a non-empty past only at batch 1 (prefill with every
///   length 0).
pub mod decoder {
    /// i64 `[batch, sequence]` token ids in the unified vocabulary (see `TokenLayout`).
    pub const INPUT_IDS: &str = "input_ids";
    /// f32 `[batch, sequence, total_vocab]`; entries the reference masks (text positions
    /// predicting image ids and vice versa) hold `-f32::MAX`.
    pub const LOGITS: &str = "logits";
    /// f32 `[batch, image_vocab]`: logits over the image codes (code 0 first) at each row's
    /// **last** position only, in graphs exported for generation (`--logits last-image`); such a
    /// graph has no `logits` output and skips the text rows of the output projection.
    pub const IMAGE_LOGITS: &str = "image_logits";

    /// i64 `[batch]`: tokens already held in each row's caches, in graphs exported with an
    /// in-place KV cache (manifest attribute [`KV_CACHE_ATTRIBUTE`] = [`KV_IN_PLACE`]); rows may
    /// differ (each row's positions are `cache_length[row] + 0..sequence`). Their
    /// `past_key_values.*` are `[batch, heads, capacity, head_dim]` (capacity = attribute
    /// [`KV_CAPACITY_ATTRIBUTE`]), row `b` valid up to `cache_length[b]`, and their `present.*`
    /// are the same buffers with each row's new tokens written at `cache_length[b]..`: bind one
    /// buffer as both and nothing is copied (only `past_key_values.*` are in place; shift
    /// windows are replaced, see [`past_shift_name`]). `cache_length[b] + sequence` must not
    /// exceed the capacity.
    pub const CACHE_LENGTH: &str = "cache_length";

    /// Manifest attribute naming the cache layout: [`KV_CONCAT`] or [`KV_IN_PLACE`].
    pub const KV_CACHE_ATTRIBUTE: &str = "kv_cache";
    /// Manifest attribute: the token capacity of an in-place cache.
    pub const KV_CAPACITY_ATTRIBUTE: &str = "kv_capacity";
    /// Manifest attribute of in-place graphs with shift tokens: `W`, the positions each
    /// `past_shift.*` rolling window holds (see [`past_shift_name`]).
    pub const SHIFT_WINDOW_ATTRIBUTE: &str = "shift_window";
    /// Growing caches (`past_sequence_length` axis), concatenated each call.
    pub const KV_CONCAT: &str = "concat";
    /// Fixed-capacity caches written in place (see [`CACHE_LENGTH`]).
    pub const KV_IN_PLACE: &str = "in-place";

    /// Which half of a layer's attention cache.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum KvKind {
        Key,
        Value,
    }

    impl KvKind {
        fn suffix(self) -> &'static str {
            match self {
                KvKind::Key => "key",
                KvKind::Value => "value",
            }
        }
    }

    /// `past_key_values.{layer}.key|value`: f32 `[batch, heads, past_sequence_length, head_dim]`.
    pub fn past_name(layer: usize, kind: KvKind) -> String {
        format!("past_key_values.{layer}.{}", kind.suffix())
    }

    /// `present.{layer}.key|value`: f32 `[batch, heads, total_sequence_length, head_dim]`.
    pub fn present_name(layer: usize, kind: KvKind) -> String {
        format!("present.{layer}.{}", kind.suffix())
    }

    /// Which residual branch a shift-token history belongs to.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Branch {
        Attention,
        FeedForward,
    }

    impl Branch {
        fn suffix(self) -> &'static str {
            match self {
                Branch::Attention => "attn",
                Branch::FeedForward => "ff",
            }
        }
    }

    /// `past_shift.{layer}.attn|ff`: the normalized inputs of that branch at earlier positions
    /// (DALLE-pytorch `shift_tokens`). Concatenated cache: f32
    /// `[batch, past_sequence_length, dim]`, every earlier position. In-place cache: f32
    /// `[batch, W, dim]` (W = attribute [`SHIFT_WINDOW_ATTRIBUTE`]), a rolling window of each
    /// row's last W positions, oldest first; all zeros for a fresh row (`cache_length` 0).
    pub fn past_shift_name(layer: usize, branch: Branch) -> String {
        format!("past_shift.{layer}.{}", branch.suffix())
    }

    /// `present_shift.{layer}.attn|ff`: concatenated cache f32
    /// `[batch, total_sequence_length, dim]`; in-place cache f32 `[batch, W, dim]`, the window
    /// after this call's tokens, a new tensor that replaces `past_shift` (not written in place:
    /// bind a fresh output, not the past's buffer).
    pub fn present_shift_name(layer: usize, branch: Branch) -> String {
        format!("present_shift.{layer}.{}", branch.suffix())
    }

    /// Whether `name` is a state input (`past_*`) or output (`present.*`, `present_*`), or
    /// constant state (min-dalle's `cross_*`, [`super::min_dalle::is_constant_state`]: the
    /// decoder's inputs and the `cross_kv` outputs that fill them): the tensors whose dtype
    /// follows the graph's compute precision (float16 caches in a float16 decoder), unlike every
    /// other float input and output, which stays float32.
    pub fn is_state(name: &str) -> bool {
        present_for(name).is_some()
            || name.starts_with("present.")
            || name.starts_with("present_")
            || super::min_dalle::is_constant_state(name)
    }

    /// The output that carries state input `past` to the next call:
    /// `past_key_values.X` → `present.X`, `past_X` → `present_X`; `None` if `past` is not a
    /// state input name.
    pub fn present_for(past: &str) -> Option<String> {
        if let Some(rest) = past.strip_prefix("past_key_values.") {
            Some(format!("present.{rest}"))
        } else {
            past.strip_prefix("past_")
                .map(|rest| format!("present_{rest}"))
        }
    }
}

/// DALL·E mini/mega (min-dalle): `text_encoder.onnx`, `cross_kv.onnx` and the decoder step
/// (`decoder.onnx`, whose `input_ids`, `past_key_values.*`, `present.*`, `cache_length` and
/// `image_logits` are named as in [`decoder`]).
///
/// The decoder's cross-attention keys/values depend only on the prompt, so `cross_kv` computes
/// them once per prompt and the decoder takes them as **constant state**: inputs named
/// `cross_*` with no `present` output, set once per row and fed unchanged every step. Like the
/// KV state they are stored in the graphs' compute type (float16 in a `--precision fp16`
/// bundle, on both sides: `cross_kv`'s outputs and the decoder's inputs); the `f32` below is
/// their float32 bundles' type.
pub mod min_dalle {
    /// Text encoder input: i64 `[batch, text_length]` BART ids, padded with the pad id.
    pub const INPUT_IDS: &str = "input_ids";
    /// Text encoder output, `cross_kv` input: f32 `[batch, text_length, dim]`.
    pub const ENCODER_HIDDEN_STATES: &str = "encoder_hidden_states";
    /// `cross_kv` output, decoder input: f32 `[batch, 1, 1, text_length]`, 0 where the text
    /// token is not padding and −1e12 where it is (min-dalle's `(1 − mask) · −1e12`).
    pub const CROSS_ATTENTION_BIAS: &str = "cross_attention_bias";
    /// Prefix of every constant-state input of the decoder.
    pub const CONSTANT_STATE_PREFIX: &str = "cross_";

    /// `cross_key_values.{layer}.key`: f32 `[batch, heads, head_dim, text_length]`, the
    /// encoder-attention keys **transposed** (ready for `q · kᵀ`).
    pub fn cross_key_name(layer: usize) -> String {
        format!("cross_key_values.{layer}.key")
    }

    /// `cross_key_values.{layer}.value`: f32 `[batch, heads, text_length, head_dim]`.
    pub fn cross_value_name(layer: usize) -> String {
        format!("cross_key_values.{layer}.value")
    }

    /// Whether a decoder input is constant state (see the module docs).
    pub fn is_constant_state(name: &str) -> bool {
        name.starts_with(CONSTANT_STATE_PREFIX)
    }
}

/// The CLIP graphs (`clip_text.onnx`, `clip_image.onnx`).
pub mod clip {
    /// i64 `[batch, context_length]`.
    pub const INPUT_IDS: &str = "input_ids";
    /// f32 `[batch, projection_dim]`, L2-normalized.
    pub const TEXT_EMBEDS: &str = "text_embeds";
    /// f32 `[batch, 3, size, size]`, normalized with the manifest's mean/std.
    pub const PIXEL_VALUES: &str = "pixel_values";
    /// f32 `[batch, projection_dim]`, L2-normalized.
    pub const IMAGE_EMBEDS: &str = "image_embeds";
}

#[cfg(test)]
mod tests {
    use super::decoder::*;

    #[test]
    fn kv_names_follow_optimum() {
        assert_eq!(past_name(3, KvKind::Key), "past_key_values.3.key");
        assert_eq!(present_name(0, KvKind::Value), "present.0.value");
    }

    #[test]
    fn every_past_has_its_present() {
        for (past, present) in [
            (past_name(2, KvKind::Value), present_name(2, KvKind::Value)),
            (
                past_shift_name(1, Branch::FeedForward),
                present_shift_name(1, Branch::FeedForward),
            ),
        ] {
            assert_eq!(present_for(&past), Some(present));
        }
        assert_eq!(present_for("input_ids"), None);
    }

    #[test]
    fn constant_state_is_state_for_precision() {
        use super::min_dalle::{CROSS_ATTENTION_BIAS, cross_key_name, cross_value_name};
        for name in [
            cross_key_name(0),
            cross_value_name(3),
            CROSS_ATTENTION_BIAS.to_string(),
            past_name(1, KvKind::Key),
            present_name(1, KvKind::Value),
        ] {
            assert!(is_state(&name), "{name}");
        }
        for name in [
            INPUT_IDS,
            IMAGE_LOGITS,
            CACHE_LENGTH,
            "encoder_hidden_states",
        ] {
            assert!(!is_state(name), "{name}");
        }
    }
}
