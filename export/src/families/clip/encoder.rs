//! The pre-LN transformer layers both CLIP towers share (`CLIPEncoderLayer`, transformers
//! 5.24.0 `models/clip/modeling_clip.py`):
//!
//! ```text
//! x = x + out_proj( Softmax( mask(q·kᵀ) ) · v )    q, k, v = {q,k,v}_proj(layer_norm1(x)),
//!                                                    q scaled by head_dim^-½, heads split
//! x = x + fc2( act( fc1( layer_norm2(x) ) ) )       act: quick_gelu | gelu | gelu (tanh)
//! ```

use super::config::{Activation, TowerConfig};
use super::names::{self, Tower};
use crate::error::Result;
use crate::graph::ops::{Add, Div, Mul, ReduceSum, Reshape, Sqrt, Transpose};
use crate::graph::{GraphBuilder, Value};
use crate::layers::{self, AttentionMask, linear};
use crate::weights::Weights;

/// Takes a float tensor from `w` as an initializer of the same name.
pub fn param(g: &mut GraphBuilder, w: &mut Weights, name: &str, shape: &[usize]) -> Result<Value> {
    let t = w.take_f32(name, shape)?;
    g.initializer(name, t)
}

/// `nn.LayerNorm(dim)` named `{prefix}.weight` / `{prefix}.bias`.
pub fn layer_norm(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    dim: usize,
    eps: f32,
    x: Value,
) -> Result<Value> {
    let weight = param(g, w, &format!("{prefix}.weight"), &[dim])?;
    let bias = param(g, w, &format!("{prefix}.bias"), &[dim])?;
    layers::layer_norm(g, x, weight, bias, eps)
}

/// `nn.Linear(inp, out, bias)` named `{prefix}.weight` (`[out, inp]`) / `{prefix}.bias`.
pub fn dense(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    (inp, out): (usize, usize),
    bias: bool,
    x: Value,
) -> Result<Value> {
    let weight = param(g, w, &format!("{prefix}.weight"), &[out, inp])?;
    let b = if bias {
        Some(param(g, w, &format!("{prefix}.bias"), &[out])?)
    } else {
        None
    };
    linear(g, x, weight, b)
}

/// `x / ‖x‖₂` over the last axis (the towers' outputs).
pub fn l2_normalize(g: &mut GraphBuilder, x: Value) -> Result<Value> {
    let sq = g.node1(Mul, &[x, x])?;
    let axes = g.const_i64(&[-1])?;
    let sum = g.node1(ReduceSum { keepdims: true }, &[sq, axes])?;
    let norm = g.node1(Sqrt, &[sum])?;
    g.node1(Div, &[x, norm])
}

fn activation(g: &mut GraphBuilder, act: Activation, x: Value) -> Result<Value> {
    match act {
        Activation::QuickGelu => layers::quick_gelu(g, x),
        Activation::Gelu => layers::gelu(g, x),
        Activation::GeluTanh => layers::gelu_tanh(g, x),
    }
}

fn attention(
    g: &mut GraphBuilder,
    w: &mut Weights,
    tower: Tower,
    i: usize,
    cfg: &TowerConfig,
    x: Value,
    mask: Option<Value>,
) -> Result<Value> {
    let d = cfg.hidden;
    let (h, dh) = (cfg.heads as i64, cfg.head_dim() as i64);
    let p = |rest: &str| names::layer(tower, i, &format!("self_attn.{rest}"));
    let q = dense(g, w, &p("q_proj"), (d, d), true, x)?;
    let k = dense(g, w, &p("k_proj"), (d, d), true, x)?;
    let v = dense(g, w, &p("v_proj"), (d, d), true, x)?;
    let heads = g.const_i64(&[0, 0, h, dh])?;
    let split = |g: &mut GraphBuilder, t: Value, perm: Vec<i64>| -> Result<Value> {
        let t = g.node1(Reshape, &[t, heads])?;
        g.node1(Transpose { perm }, &[t])
    };
    let q = split(g, q, vec![0, 2, 1, 3])?;
    let kt = split(g, k, vec![0, 2, 3, 1])?;
    let v = split(g, v, vec![0, 2, 1, 3])?;
    let mask = match mask {
        Some(m) => AttentionMask::Allow(m),
        None => AttentionMask::None,
    };
    let scale = (cfg.head_dim() as f32).powf(-0.5);
    let out = layers::attention_core(g, q, kt, v, scale, mask)?;
    let out = layers::merge_heads(g, out, d as i64)?;
    dense(g, w, &p("out_proj"), (d, d), true, out)
}

/// All `cfg.layers` encoder layers of `tower` on `x` `[batch, seq, hidden]`; `mask` (bool
/// `[seq, seq]`, true = attend) is the text model's causal mask.
pub fn layers(
    g: &mut GraphBuilder,
    w: &mut Weights,
    tower: Tower,
    cfg: &TowerConfig,
    mut x: Value,
    mask: Option<Value>,
) -> Result<Value> {
    let d = cfg.hidden;
    for i in 0..cfg.layers {
        x = g.scoped(&format!("encoder/layers.{i}"), |g| {
            let n = |rest: &str| names::layer(tower, i, rest);
            let h = layer_norm(g, w, &n("layer_norm1"), d, cfg.layer_norm_eps, x)?;
            let h = g.scoped("self_attn", |g| attention(g, w, tower, i, cfg, h, mask))?;
            let x = g.node1(Add, &[x, h])?;
            let h = layer_norm(g, w, &n("layer_norm2"), d, cfg.layer_norm_eps, x)?;
            let h = g.scoped("mlp", |g| {
                let h = dense(g, w, &n("mlp.fc1"), (d, cfg.intermediate), true, h)?;
                let h = activation(g, cfg.activation, h)?;
                dense(g, w, &n("mlp.fc2"), (cfg.intermediate, d), true, h)
            })?;
            g.node1(Add, &[x, h])
        })?;
    }
    Ok(x)
}
