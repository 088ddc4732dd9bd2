//! One transformer layer's two residual branches (`transformer.py`):
//!
//! ```text
//! branch(x) = scale ⊙ norm_out( fn( shift( LayerNorm(x) ) ) )     (shift, norm_out optional)
//! sequential:  x = x + attn_branch(x);  x = x + ff_branch(x)
//! reversible:  y1 = x1 + attn_branch(x2);  y2 = x2 + ff_branch(y1)
//! ```
//!
//! Attention (every type has the same parameters; only the mask differs):
//!
//! ```text
//! qkv = x · to_qkvᵀ → q, k, v  [B, H, S, dh]  → rotary (q, k, v) → q · dh^-½
//! k, v = Concat(past, new) along the sequence → present
//! out  = Softmax(Where(mask, q·kᵀ, −f32::MAX)) · v → [B, S, H·dh] · to_outᵀ + b
//!        (the shared `crate::kv_cache::attend_concat`, min-dalle's too)
//! ```
//!
//! With an in-place cache ([`KvCache::InPlace`]) q, k, v stay `[B, S, H·dh]` (rotary applied
//! per head on a `[B, S, H, dh]` view, with per-row tables) and one `GroupQueryAttention`
//! ([`crate::kv_cache::attend_in_place`]) does the rest: it writes each row's new keys/values
//! into the fixed-capacity caches at that row's past length and attends causally over the
//! row's valid prefix, the sparse masks given as a per-row additive bias (0 / −f32::MAX).
//!
//! Feed-forward: `x · W1ᵀ + b1 → (a, g) → a · gelu(g) → · W2ᵀ + b2` (exact erf GELU, written
//! so that ONNX Runtime fuses it into one `Gelu`).

use super::config::DalleConfig;
use super::rotary::{self, RotaryTables};
use crate::error::Result;
use crate::graph::ops::{Add, Div, Erf, Mul, Reshape, Split, Transpose};
use crate::graph::{GraphBuilder, Value};
use dalle_bundle::DType;

/// PyTorch's `nn.LayerNorm` default epsilon.
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Initializers of one LayerNorm.
#[derive(Clone, Copy)]
pub struct Norm {
    pub weight: Value,
    pub bias: Value,
}

/// Initializers of one attention module (possibly shared by several layers).
#[derive(Clone, Copy)]
pub struct AttentionWeights {
    pub to_qkv: Value,
    pub to_out_w: Value,
    pub to_out_b: Value,
}

/// Initializers of one feed-forward module (possibly shared).
#[derive(Clone, Copy)]
pub struct FeedForwardWeights {
    pub w1: Value,
    pub b1: Value,
    pub w2: Value,
    pub b2: Value,
}

/// A branch's own (never shared) parameters.
#[derive(Clone, Copy)]
pub struct BranchWeights {
    pub scale: Value,
    pub norm: Norm,
    pub norm_out: Option<Norm>,
}

/// `nn.LayerNorm` with PyTorch's default epsilon (the shared [`crate::layers::layer_norm`]).
pub fn layer_norm(g: &mut GraphBuilder, x: Value, n: Norm) -> Result<Value> {
    crate::layers::layer_norm(g, x, n.weight, n.bias, LAYER_NORM_EPS)
}

pub use crate::layers::linear;

/// How one layer's attention reads and extends its key/value cache.
#[derive(Clone, Copy)]
pub enum KvCache {
    /// `past` `[B, H, P, dh]` caches, concatenated with the new keys/values into `present`
    /// `[B, H, P+S, dh]`; `mask` bool `[S, P+S]`, true where a query may attend a key.
    Concat {
        past_k: Value,
        past_v: Value,
        mask: Value,
    },
    /// Fixed-capacity `[B, H, C, dh]` caches updated in place by `GroupQueryAttention`.
    InPlace {
        past_k: Value,
        past_v: Value,
        lengths: GqaLengths,
        /// f32 `[B, 1, S, max(cache_length) + S]` additive per-row mask for the sparse attention
        /// types; `None` = causal.
        bias: Option<Value>,
    },
}

pub use crate::kv_cache::GqaLengths;

/// The attention module on an already normalized (and shifted) input; returns the output and
/// the new key/value caches.
pub fn attention(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    w: AttentionWeights,
    x: Value,
    cache: KvCache,
    rotary: Option<&RotaryTables>,
) -> Result<(Value, Value, Value)> {
    let inner = cfg.inner_dim() as i64;
    let qkv = linear(g, x, w.to_qkv, None)?;
    let sizes = g.const_i64(&[inner, inner, inner])?;
    let parts = g.node(Split { axis: 2 }, &[qkv, sizes])?;
    let [q, k, v] = <[Value; 3]>::try_from(parts)
        .map_err(|_| crate::error::ExportError::node("attention", "expected q, k and v"))?;
    match cache {
        KvCache::Concat {
            past_k,
            past_v,
            mask,
        } => attention_concat(g, cfg, w, [q, k, v], (past_k, past_v), mask, rotary),
        KvCache::InPlace {
            past_k,
            past_v,
            lengths,
            bias,
        } => {
            let (h, dh) = (cfg.heads as i64, cfg.dim_head as i64);
            let mut rotated = [q, k, v];
            if let Some(r) = rotary {
                let heads_shape = g.const_i64(&[0, 0, h, dh])?;
                let merged = g.const_i64(&[0, 0, inner])?;
                for t in &mut rotated {
                    let per_head = g.node1(Reshape, &[*t, heads_shape])?;
                    let turned = rotary::apply(g, r, per_head, cfg.dim_head)?;
                    *t = g.node1(Reshape, &[turned, merged])?;
                }
            }
            let (out, present_k, present_v) = crate::kv_cache::attend_in_place(
                g,
                (rotated[0], rotated[1], rotated[2]),
                (past_k, past_v),
                lengths,
                h,
                (cfg.dim_head as f32).powf(-0.5),
                bias,
            )?;
            let out = linear(g, out, w.to_out_w, Some(w.to_out_b))?;
            Ok((out, present_k, present_v))
        }
    }
}

/// The standard-ONNX attention over a concatenated cache (see the module docs).
fn attention_concat(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    w: AttentionWeights,
    parts: [Value; 3],
    (past_k, past_v): (Value, Value),
    mask: Value,
    rotary: Option<&RotaryTables>,
) -> Result<(Value, Value, Value)> {
    let (h, dh, inner) = (
        cfg.heads as i64,
        cfg.dim_head as i64,
        cfg.inner_dim() as i64,
    );
    let heads_shape = g.const_i64(&[0, 0, h, dh])?;
    let mut qkv = Vec::with_capacity(3);
    for part in parts {
        let t = g.node1(Reshape, &[part, heads_shape])?;
        let t = g.node1(
            Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[t],
        )?;
        let t = match rotary {
            Some(r) => rotary::apply(g, r, t, cfg.dim_head)?,
            None => t,
        };
        qkv.push(t);
    }
    let [q, k, v] = <[Value; 3]>::try_from(qkv)
        .map_err(|_| crate::error::ExportError::node("attention", "expected q, k and v"))?;
    let (out, k, v) = crate::kv_cache::attend_concat(
        g,
        (q, k, v),
        (past_k, past_v),
        (cfg.dim_head as f32).powf(-0.5),
        crate::layers::AttentionMask::Allow(mask),
    )?;
    let out = crate::layers::merge_heads(g, out, inner)?;
    let out = linear(g, out, w.to_out_w, Some(w.to_out_b))?;
    Ok((out, k, v))
}

/// The GEGLU feed-forward module.
pub fn feed_forward(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    w: FeedForwardWeights,
    x: Value,
) -> Result<Value> {
    let hidden = (cfg.dim * 4) as i64;
    let y = linear(g, x, w.w1, Some(w.b1))?;
    let sizes = g.const_i64(&[hidden, hidden])?;
    let parts = g.node(Split { axis: -1 }, &[y, sizes])?;
    let (a, gate) = match parts.as_slice() {
        [a, b] => (*a, *b),
        _ => {
            return Err(crate::error::ExportError::node(
                "feed_forward",
                "expected two halves",
            ));
        }
    };
    // F.gelu (exact): x · (1 + erf(x / √2)) · ½, in the node order ONNX Runtime's GeluFusion
    // recognizes (Div, Erf, Add, Mul, Mul → one Gelu kernel).
    let sqrt2 = g.scalar_float(std::f32::consts::SQRT_2, DType::F32)?;
    let half = g.scalar_float(0.5, DType::F32)?;
    let one = g.scalar_float(1.0, DType::F32)?;
    let e = g.node1(Div, &[gate, sqrt2])?;
    let e = g.node1(Erf, &[e])?;
    let e = g.node1(Add, &[e, one])?;
    let ge = g.node1(Mul, &[gate, e])?;
    let gelu = g.node1(Mul, &[ge, half])?;
    let y = g.node1(Mul, &[a, gelu])?;
    linear(g, y, w.w2, Some(w.b2))
}

/// Wraps a branch body: LayerNorm before, optional sandwich LayerNorm after, LayerScale.
pub fn branch(
    g: &mut GraphBuilder,
    w: BranchWeights,
    x: Value,
    body: impl FnOnce(&mut GraphBuilder, Value) -> Result<Value>,
) -> Result<Value> {
    let h = layer_norm(g, x, w.norm)?;
    let h = body(g, h)?;
    let h = match w.norm_out {
        Some(n) => layer_norm(g, h, n)?,
        None => h,
    };
    g.node1(Mul, &[h, w.scale])
}
