//! The ONNX Runtime contrib ops the builder emits: `com.microsoft.GroupQueryAttention` and
//! `com.microsoft.MatMulNBits`.
//!
//! `MatMulNBits` is only emitted by `--precision int8` (`graph/precision/`), for the large
//! matrices of weight-only quantized graphs.
//!
//! `GroupQueryAttention` is only emitted for decoders exported with an in-place KV cache (`--kv-cache in-place`):
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

/// `A · dequant(B)ᵀ` with `B` a `[N, K]` matrix stored as blockwise-quantized unsigned bytes:
/// `w = (q − zero_point) · scale`, one scale per row and block of `block_size` along K, the
/// zero point `2^(bits−1)` (128 for 8 bits) when `zero_points` is omitted.
///
/// Inputs: `A` `[…, K]` float, `B` uint8 `[N, k_blocks, block_size·bits/8]`, `scales` (A's
/// dtype) `[N, k_blocks]`. Output `[…, N]`.
/// <https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.MatMulNBits>
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMulNBits {
    pub k: i64,
    pub n: i64,
    pub bits: i64,
    pub block_size: i64,
    /// Minimum compute precision (0: the provider's default, 1 fp32, 2 fp16, 3 bf16, 4 int8).
    pub accuracy_level: i64,
}

impl Op for MatMulNBits {
    fn op_type(&self) -> &'static str {
        "MatMulNBits"
    }
    fn domain(&self) -> &'static str {
        MS_DOMAIN
    }
    fn attributes(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("K", Attr::Int(self.k)),
            ("N", Attr::Int(self.n)),
            ("bits", Attr::Int(self.bits)),
            ("block_size", Attr::Int(self.block_size)),
            ("accuracy_level", Attr::Int(self.accuracy_level)),
        ]
    }
    fn input_arity(&self) -> (usize, usize) {
        (3, 3)
    }
    fn infer(&self, ctx: &mut InferCtx<'_>) -> Result<Vec<OutputFact>, String> {
        let dtype = same_dtype(ctx, &[0, 2], |d| d.is_float(), "a float type")?;
        if ctx.dtype(1)? != DType::U8 {
            return Err(format!("{} must be uint8", ctx.input(1)?.info.describe()));
        }
        let a = ctx.shape(0)?.clone();
        let k_blocks = (self.k + self.block_size - 1) / self.block_size.max(1);
        let blob = self.block_size * self.bits / 8;
        let want_b = vec![
            Dim::Fixed(self.n as u64),
            Dim::Fixed(k_blocks as u64),
            Dim::Fixed(blob as u64),
        ];
        let want_s = vec![Dim::Fixed(self.n as u64), Dim::Fixed(k_blocks as u64)];
        match a.last() {
            Some(Dim::Fixed(k)) if *k != self.k as u64 => {
                return Err(format!(
                    "A {} does not end in K = {}",
                    format_dims(&a),
                    self.k
                ));
            }
            None => return Err("A must have rank >= 1".into()),
            _ => {}
        }
        if ctx.shape(1)? != &want_b || ctx.shape(2)? != &want_s {
            return Err(format!(
                "B {} / scales {} must be {} / {}",
                format_dims(ctx.shape(1)?),
                format_dims(ctx.shape(2)?),
                format_dims(&want_b),
                format_dims(&want_s)
            ));
        }
        let mut out = a;
        if let Some(last) = out.last_mut() {
            *last = Dim::Fixed(self.n as u64);
        }
        Ok(vec![(dtype, out)])
    }
}
