//! `text_encoder.onnx`: min-dalle's `DalleBartEncoder`.
//!
//! ```text
//! input_ids [B, T] ─ embed_tokens + embed_positions(0..T) ─ layernorm_embedding
//!   bias = (input_ids == pad) · −1e12   [B, 1, 1, T]
//!   per layer:  x += self_attn_layer_norm(SelfAttn(pre_self_attn_layer_norm(x), bias))
//!               x += GLU(x)
//! ─ final_ln → encoder_hidden_states [B, T, dim]
//! ```
//!
//! Shared pieces (the text padding bias, one attention block, the GLU weights) are used by the
//! decoder-side graphs too.

use super::config::MinDalleConfig;
use super::names;
use super::weights::Take;
use crate::dims;
use crate::error::Result;
use crate::graph::ops::{Add, Cast, Equal, Gather, Mul, Unsqueeze};
use crate::graph::{GraphBuilder, Value};
use crate::layers::{self, AttentionMask, GluWeights};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::dims as d;
use dalle_bundle::io::min_dalle as io;

/// PyTorch's `nn.LayerNorm` default, every norm of min-dalle.
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// min-dalle's masked-score bias (`(1 − mask) · −1e12`).
pub const MASK_BIAS: f32 = -1e12;

/// `[B, 1, 1, T]` f32: −1e12 where `input_ids` is the pad id, 0 elsewhere.
pub fn padding_bias(g: &mut GraphBuilder, input_ids: Value, pad_id: i64) -> Result<Value> {
    g.scoped("padding_bias", |g| {
        let pad = g.scalar_i64(pad_id)?;
        let is_pad = g.node1(Equal, &[input_ids, pad])?;
        let is_pad = g.node1(Cast { to: DType::F32 }, &[is_pad])?;
        let k = g.scalar_float(MASK_BIAS, DType::F32)?;
        let bias = g.node1(Mul, &[is_pad, k])?;
        let axes = g.const_i64(&[1, 2])?;
        g.node1(Unsqueeze, &[bias, axes])
    })
}

/// A LayerNorm taken from `t` by its module name.
pub fn norm(g: &mut GraphBuilder, t: &mut Take, x: Value, name: &str, dim: usize) -> Result<Value> {
    let (w, b) = t.layer_norm(g, name, dim)?;
    layers::layer_norm(g, x, w, b, LAYER_NORM_EPS)
}

/// The `GLU` of `prefix` (`layers.{i}.glu`).
pub fn glu_weights(
    g: &mut GraphBuilder,
    t: &mut Take,
    prefix: &str,
    dim: usize,
    hidden: usize,
) -> Result<GluWeights> {
    Ok(GluWeights {
        ln0: t.layer_norm(g, &format!("{prefix}.ln0"), dim)?,
        fc0: t.tensor(g, &format!("{prefix}.fc0.weight"), &[hidden, dim])?,
        fc1: t.tensor(g, &format!("{prefix}.fc1.weight"), &[hidden, dim])?,
        ln1: t.layer_norm(g, &format!("{prefix}.ln1"), hidden)?,
        fc2: t.tensor(g, &format!("{prefix}.fc2.weight"), &[dim, hidden])?,
    })
}

/// One `{k,q,v,out}_proj` weight `[dim, dim]` of attention module `prefix`.
pub fn proj(
    g: &mut GraphBuilder,
    t: &mut Take,
    prefix: &str,
    which: &str,
    dim: usize,
) -> Result<Value> {
    t.tensor(g, &format!("{prefix}.{which}_proj.weight"), &[dim, dim])
}

/// `AttentionBase.forward` after the projections: per-head `q` `[B, H, S, dh]`, keys
/// transposed `kt` `[B, H, dh, T]`, `v` `[B, H, T, dh]`, an additive bias; `out_proj` applied.
pub fn attend(
    g: &mut GraphBuilder,
    cfg: &MinDalleConfig,
    (q, kt, v): (Value, Value, Value),
    bias: Value,
    out_proj: Value,
) -> Result<Value> {
    let out = layers::attention_core(
        g,
        q,
        kt,
        v,
        (cfg.head_dim as f32).powf(-0.5),
        AttentionMask::Bias(bias),
    )?;
    let out = layers::merge_heads(g, out, cfg.dim as i64)?;
    layers::linear(g, out, out_proj, None)
}

/// Builds the graph, taking the encoder's tensors from `w`.
pub fn build(cfg: &MinDalleConfig, w: &mut Weights, pad_id: i64) -> Result<GraphBuilder> {
    let mut g = GraphBuilder::new("text_encoder");
    let (dim, t_len) = (cfg.dim, cfg.text_length);
    let (h, dh) = (cfg.heads as i64, cfg.head_dim as i64);
    let ids = g.input(io::INPUT_IDS, DType::I64, dims![d::BATCH, t_len])?;
    let mut t = Take { w };
    let mut x = g.scoped("embed", |g| {
        let table = t.tensor(g, names::EMBED_TOKENS, &[cfg.text_vocab, dim])?;
        let pos = t.tensor(g, names::EMBED_POSITIONS, &[t_len, dim])?;
        let x = g.node1(Gather { axis: 0 }, &[table, ids])?;
        let x = g.node1(Add, &[x, pos])?;
        norm(g, &mut t, x, names::LAYERNORM_EMBEDDING, dim)
    })?;
    let bias = padding_bias(&mut g, ids, pad_id)?;
    for i in 0..cfg.encoder_layers {
        x = g.scoped(&format!("layers.{i}"), |g| {
            let attn = names::layer(i, names::SELF_ATTN);
            let hs = norm(g, &mut t, x, &names::layer(i, names::PRE_SELF_ATTN_LN), dim)?;
            let kw = proj(g, &mut t, &attn, "k", dim)?;
            let vw = proj(g, &mut t, &attn, "v", dim)?;
            let qw = proj(g, &mut t, &attn, "q", dim)?;
            let ow = proj(g, &mut t, &attn, "out", dim)?;
            let k = layers::linear(g, hs, kw, None)?;
            let v = layers::linear(g, hs, vw, None)?;
            let q = layers::linear(g, hs, qw, None)?;
            let kt = layers::split_heads(g, k, h, dh, true)?;
            let v = layers::split_heads(g, v, h, dh, false)?;
            let q = layers::split_heads(g, q, h, dh, false)?;
            let a = attend(g, cfg, (q, kt, v), bias, ow)?;
            let a = norm(g, &mut t, a, &names::layer(i, names::SELF_ATTN_LN), dim)?;
            let x = g.node1(Add, &[x, a])?;
            let glu = glu_weights(
                g,
                &mut t,
                &names::layer(i, names::GLU),
                dim,
                cfg.encoder_glu,
            )?;
            let f = layers::glu(g, x, glu, LAYER_NORM_EPS)?;
            g.node1(Add, &[x, f])
        })?;
    }
    let out = norm(&mut g, &mut t, x, names::FINAL_LN, dim)?;
    g.output_as(io::ENCODER_HIDDEN_STATES, out, dims![d::BATCH, t_len, dim])?;
    Ok(g)
}
