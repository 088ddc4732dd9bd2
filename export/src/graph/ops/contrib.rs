//! The one ONNX Runtime contrib op the builder emits: `com.microsoft.GroupQueryAttention`.
//!
//! It is only emitted for decoders exported with an in-place KV cache (`--kv-cache in-place`):
//! its CPU kernel attends over the valid prefix of a fixed-capacity cache and, when the caller
//! binds the same buffer as `past_key` and `present_key`, writes the new keys in place instead
//! of concatenating the whole cache every step (serving.md §1.2). Graphs without it stay in the
//! default domain (portable to TensorRT's parser).
//! <https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.GroupQueryAttention>

use crate::graph::op::{Attr, InferCtx, Op, OutputFact, same_dtype};
use dalle_bundle::{DType, Dim, dtype::format_dims};

/// The contrib domain's name.
pub const MS_DOMAIN: &str = "com.microsoft";

/// Causal attention with a KV cache.
///
/// Inputs: `query`, `key`, `value` `[B, S, heads·head_dim]` (BSNH, unrotated here: rotary is
/// applied by the caller), `past_key`, `past_value` `[B, kv_heads, capacity, head_dim]`,
/// `seqlens_k` i32 `[B]` (= total − 1 per row), `total_sequence_length` i32 scalar, then the
/// optional `cos_cache`, `sin_cache`, `position_ids` (never given here) and `attention_bias`
/// `[1, 1, S, total]` (additive; the sparse attention masks). Outputs: the attention output
/// `[B, S, heads·head_dim]` and the presents, shaped like the pasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupQueryAttention {
    pub num_heads: i64,
    pub kv_num_heads: i64,
    pub scale: f32,
}

impl Op for GroupQueryAttention {
    fn op_type(&self) -> &'static str {
        "GroupQueryAttention"
    }
    fn domain(&self) -> &'static str {
        MS_DOMAIN
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("num_heads", Attr::Int(self.num_heads)),
            ("kv_num_heads", Attr::Int(self.kv_num_heads)),
            ("scale", Attr::Float(self.scale)),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (7, 11)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 1, 2, 3, 4], |d| d.is_float(), "a float type")?;
        for i in [5, 6] {
            if ctx.dtype(i)? != DType::I32 {
                return Err(format!("{} must be int32", ctx.input(i)?.info.describe()));
            }
        }
        let q = ctx.shape(0)?.clone();
        let past = ctx.shape(3)?.clone();
        if q.len() != 3 || past.len() != 4 {
            return Err(format!(
                "query {} must be [B, S, hidden] and past_key {} [B, kv_heads, capacity, head_dim]",
                format_dims(&q),
                format_dims(&past)
            ));
        }
        if ctx.shape(4)? != &past {
            return Err("past_key and past_value must have one shape".into());
        }
        if let (Dim::Fixed(hidden), Dim::Fixed(heads), Dim::Fixed(head_dim)) =
            (&q[2], &past[1], &past[3])
            && (*heads != self.kv_num_heads as u64 || *hidden != self.num_heads as u64 * head_dim)
        {
            return Err(format!(
                "query {} and past_key {} disagree with {} heads",
                format_dims(&q),
                format_dims(&past),
                self.num_heads
            ));
        }
        if let Some(bias) = ctx.optional(10)
            && bias.info.dtype != dtype
        {
            return Err(format!("attention_bias must be {dtype}"));
        }
        Ok(vec![(dtype, q), (dtype, past.clone()), (dtype, past)])
    }
}
