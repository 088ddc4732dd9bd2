//! Neural-network layers every family builds from: PyTorch's `Linear`, `LayerNorm` and
//! `GroupNorm`, the attention core, swish and the GELU variants.
//!
//! They live here, one level above [`crate::graph`] (which knows ONNX ops, not layers), so that
//! CLIP, DALLE-pytorch and the dVAEs spell each layer once. Each function only wires nodes on
//! values it is given; taking weights out of a checkpoint stays with the family. The node order
//! of every function is part of the exported bytes: change it only on purpose.

use crate::error::Result;
use crate::graph::ops::{
    Add, Div, Erf, LayerNormalization, MatMul, Mul, ReduceMean, Reshape, Sigmoid, Softmax, Sqrt,
    Sub, Tanh, Transpose, Where,
};
use crate::graph::{GraphBuilder, Value};
use dalle_bundle::DType;

/// `x · wᵀ (+ b)` for a PyTorch `Linear` weight `[out, in]`.
pub fn linear(g: &mut GraphBuilder, x: Value, w: Value, b: Option<Value>) -> Result<Value> {
    let wt = g.node1(Transpose { perm: vec![1, 0] }, &[w])?;
    let y = g.node1(MatMul, &[x, wt])?;
    match b {
        Some(b) => g.node1(Add, &[y, b]),
        None => Ok(y),
    }
}

/// `nn.LayerNorm` over the last axis.
pub fn layer_norm(
    g: &mut GraphBuilder,
    x: Value,
    weight: Value,
    bias: Value,
    epsilon: f32,
) -> Result<Value> {
    g.node1(LayerNormalization { axis: -1, epsilon }, &[x, weight, bias])
}

/// `nn.GroupNorm(groups, C, eps)` on `x` `[N, C, D1, …]` with `weight` and `bias` `[C]`:
/// each sample's channels in `groups` equal groups, normalized over the group's channels and
/// positions with the biased variance, then `· weight[c] + bias[c]`.
///
/// Emitted from `ReduceMean` and element-wise ops, not ONNX `GroupNormalization`: ONNX
/// Runtime's CUDA provider registers no kernel for that op (`docs/OperatorKernels.md`; the
/// 1.31.1 binary has only the contrib NHWC `GroupNorm`), and these run on every provider. The group
/// statistics are computed on a `[N, groups, C/groups · D1 · …]` view and broadcast back to
/// `[N, C, 1, …]` by a multiply, so every intermediate keeps `x`'s (symbolic) dims.
pub fn group_norm(
    g: &mut GraphBuilder,
    x: Value,
    weight: Value,
    bias: Value,
    groups: usize,
    epsilon: f32,
) -> Result<Value> {
    let info = g.info(x)?.clone();
    let dtype = info.dtype;
    let rank = info.shape.len();
    let channels = match info.shape.get(1).and_then(|d| d.fixed()) {
        Some(c) if rank >= 3 => c,
        _ => {
            return Err(crate::ExportError::node(
                "group_norm",
                format!(
                    "input must be [N, C, D1, ...] with a fixed channel count, got {}",
                    info.describe()
                ),
            ));
        }
    };
    let groups_u = groups as u64;
    if groups == 0 || channels % groups_u != 0 {
        return Err(crate::ExportError::node(
            "group_norm",
            format!("{channels} channels do not split into {groups} groups"),
        ));
    }
    let per_group = channels / groups_u;
    let to_i64 = |n: u64| {
        i64::try_from(n).map_err(|_| crate::ExportError::node("group_norm", "size exceeds i64"))
    };
    let (groups_i, channels_i) = (to_i64(groups_u)?, to_i64(channels)?);
    let per_group = usize::try_from(per_group)
        .map_err(|_| crate::ExportError::node("group_norm", "group size exceeds usize"))?;
    // Statistics per (sample, group).
    let grouped = g.const_i64(&[0, groups_i, -1])?;
    let xg = g.node1(Reshape, &[x, grouped])?;
    let last = g.const_i64(&[2])?;
    let mean = g.node1(ReduceMean { keepdims: true }, &[xg, last])?;
    let centred = g.node1(Sub, &[xg, mean])?;
    let squared = g.node1(Mul, &[centred, centred])?;
    let var = g.node1(ReduceMean { keepdims: true }, &[squared, last])?;
    let eps = g.scalar_float(epsilon, dtype)?;
    let var = g.node1(Add, &[var, eps])?;
    let std = g.node1(Sqrt, &[var])?;
    // [N, groups, 1] → [N, groups, C/groups] → [N, C, 1, …].
    let ones = g.constant(
        crate::TensorData::from_f32(vec![per_group], &vec![1.0; per_group])?
            .to_float_dtype(dtype)?,
    )?;
    let mut per_channel = vec![0, channels_i];
    per_channel.resize(rank, 1);
    let per_channel = g.const_i64(&per_channel)?;
    let mean = g.node1(Mul, &[mean, ones])?;
    let mean = g.node1(Reshape, &[mean, per_channel])?;
    let std = g.node1(Mul, &[std, ones])?;
    let std = g.node1(Reshape, &[std, per_channel])?;
    // (x − mean) / std · weight + bias, the affine in x's layout.
    let mut affine = vec![channels_i];
    affine.resize(rank - 1, 1);
    let affine = g.const_i64(&affine)?;
    let weight = g.node1(Reshape, &[weight, affine])?;
    let bias = g.node1(Reshape, &[bias, affine])?;
    let y = g.node1(Sub, &[x, mean])?;
    let y = g.node1(Div, &[y, std])?;
    let y = g.node1(Mul, &[y, weight])?;
    g.node1(Add, &[y, bias])
}

/// `x · σ(x)` (swish / SiLU).
pub fn swish(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    let s = g.node1(Sigmoid, &[x])?;
    g.node1(Mul, &[x, s])
}

/// How the attention scores are restricted.
#[derive(Clone, Copy, Debug)]
pub enum AttentionMask {
    /// Every query attends every key.
    None,
    /// bool, broadcastable to the scores: true where a query may attend a key; the others get
    /// `−f32::MAX` before the softmax.
    Allow(Value),
    /// f32 added to the scores (0 to attend, `−f32::MAX` not to).
    Bias(Value),
}

/// `Softmax(mask(q·scale · kt)) · v` for per-head `q` `[B, H, S, dh]`, `kt` `[B, H, dh, T]` (keys
/// already transposed) and `v` `[B, H, T, dh]`; returns `[B, H, S, dh]`.
pub fn attention_core(
    g: &mut GraphBuilder,
    q: Value,
    kt: Value,
    v: Value,
    scale: f32,
    mask: AttentionMask,
) -> Result<Value> {
    let scale = g.scalar_float(scale, DType::F32)?;
    let q = g.node1(Mul, &[q, scale])?;
    let scores = g.node1(MatMul, &[q, kt])?;
    let scores = match mask {
        AttentionMask::None => scores,
        AttentionMask::Allow(m) => {
            let neg = g.scalar_float(-f32::MAX, DType::F32)?;
            g.node1(Where, &[m, scores, neg])?
        }
        AttentionMask::Bias(b) => g.node1(Add, &[scores, b])?,
    };
    let probs = g.node1(Softmax { axis: -1 }, &[scores])?;
    g.node1(MatMul, &[probs, v])
}

/// `[B, H, S, dh]` → `[B, S, width]` (`width` = H·dh): the heads side by side again.
pub fn merge_heads(g: &mut GraphBuilder, x: Value, width: i64) -> Result<Value> {
    let x = g.node1(
        Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[x],
    )?;
    let merged = g.const_i64(&[0, 0, width])?;
    g.node1(Reshape, &[x, merged])
}

/// `x · σ(1.702 x)` (OpenAI CLIP's `quick_gelu`).
pub fn quick_gelu(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    let k = g.scalar_float(1.702, DType::F32)?;
    let s = g.node1(Mul, &[x, k])?;
    let s = g.node1(Sigmoid, &[s])?;
    g.node1(Mul, &[x, s])
}

/// Exact GELU `½x · (1 + erf(x/√2))`, as Hugging Face's `gelu`.
pub fn gelu(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    let inv_sqrt2 = g.scalar_float(std::f32::consts::FRAC_1_SQRT_2, DType::F32)?;
    let half = g.scalar_float(0.5, DType::F32)?;
    let one = g.scalar_float(1.0, DType::F32)?;
    let e = g.node1(Mul, &[x, inv_sqrt2])?;
    let e = g.node1(Erf, &[e])?;
    let e = g.node1(Add, &[e, one])?;
    let h = g.node1(Mul, &[x, half])?;
    g.node1(Mul, &[h, e])
}

/// The tanh approximation `½x · (1 + tanh(√(2/π) (x + 0.044715 x³)))` (`gelu_new`,
/// `gelu_pytorch_tanh`).
pub fn gelu_tanh(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    let half = g.scalar_float(0.5, DType::F32)?;
    let one = g.scalar_float(1.0, DType::F32)?;
    let k = g.scalar_float((2.0 / std::f32::consts::PI).sqrt(), DType::F32)?;
    let a = g.scalar_float(0.044715, DType::F32)?;
    let x3 = g.node1(Mul, &[x, x])?;
    let x3 = g.node1(Mul, &[x3, x])?;
    let x3 = g.node1(Mul, &[x3, a])?;
    let inner = g.node1(Add, &[x, x3])?;
    let inner = g.node1(Mul, &[inner, k])?;
    let t = g.node1(Tanh, &[inner])?;
    let t = g.node1(Add, &[t, one])?;
    let h = g.node1(Mul, &[x, half])?;
    g.node1(Mul, &[h, t])
}

/// `[B, S, H·dh]` → `[B, H, S, dh]`: the heads apart (`transpose_kt` gives `[B, H, dh, S]`).
pub fn split_heads(
    g: &mut GraphBuilder,
    x: Value,
    heads: i64,
    head_dim: i64,
    transpose_kt: bool,
) -> Result<Value> {
    let shape = g.const_i64(&[0, 0, heads, head_dim])?;
    let x = g.node1(Reshape, &[x, shape])?;
    let perm = if transpose_kt {
        vec![0, 2, 3, 1]
    } else {
        vec![0, 2, 1, 3]
    };
    g.node1(Transpose { perm }, &[x])
}

/// Initializers of a gated feed-forward block (dalle-mini's `GLU`, no biases on the Linears).
#[derive(Clone, Copy, Debug)]
pub struct GluWeights {
    pub ln0: (Value, Value),
    pub fc0: Value,
    pub fc1: Value,
    pub ln1: (Value, Value),
    pub fc2: Value,
}

/// `fc2(ln1(gelu(fc0(ln0 x)) · fc1(ln0 x)))` with the exact GELU (min-dalle's `GLU`).
pub fn glu(g: &mut GraphBuilder, x: Value, w: GluWeights, epsilon: f32) -> Result<Value> {
    let z = layer_norm(g, x, w.ln0.0, w.ln0.1, epsilon)?;
    let a = linear(g, z, w.fc0, None)?;
    let a = gelu(g, a)?;
    let b = linear(g, z, w.fc1, None)?;
    let h = g.node1(Mul, &[a, b])?;
    let h = layer_norm(g, h, w.ln1.0, w.ln1.1, epsilon)?;
    linear(g, h, w.fc2, None)
}
