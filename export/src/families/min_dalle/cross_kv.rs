//! `cross_kv.onnx`: the decoder's cross-attention keys and values, once per prompt.
//!
//! ```text
//! encoder_hidden_states [B, T, dim], input_ids [B, T]
//!   per decoder layer i:  cross_key_values.{i}.key   = heads(encoder_attn.k_proj(states))ᵀ  [B, H, dh, T]
//!                         cross_key_values.{i}.value = heads(encoder_attn.v_proj(states))   [B, H, T, dh]
//!   cross_attention_bias  = (input_ids == pad) · −1e12                                   [B, 1, 1, T]
//! ```
//!
//! min-dalle runs `k_proj`/`v_proj` of every layer on the encoder states at every step
//! (2·L `[2n, 64, d]·[d, d]` matmuls per token); here they run once and the decoder takes the
//! results as constant state.

use super::config::MinDalleConfig;
use super::encoder::{padding_bias, proj};
use super::names;
use super::weights::Take;
use crate::dims;
use crate::error::Result;
use crate::graph::GraphBuilder;
use crate::layers;
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::dims as d;
use dalle_bundle::io::min_dalle as io;

/// Builds the graph, taking every layer's `encoder_attn.{k,v}_proj.weight` from the decoder's
/// tensors `w`.
pub fn build(cfg: &MinDalleConfig, w: &mut Weights, pad_id: i64) -> Result<GraphBuilder> {
    let mut g = GraphBuilder::new("cross_kv");
    let (dim, t_len) = (cfg.dim, cfg.text_length);
    let (h, dh) = (cfg.heads as i64, cfg.head_dim as i64);
    let states = g.input(
        io::ENCODER_HIDDEN_STATES,
        DType::F32,
        dims![d::BATCH, t_len, dim],
    )?;
    let ids = g.input(io::INPUT_IDS, DType::I64, dims![d::BATCH, t_len])?;
    let mut t = Take { w };
    for i in 0..cfg.decoder_layers {
        let (kt, v) = g.scoped(&format!("layers.{i}"), |g| {
            let attn = names::layer(i, names::ENCODER_ATTN);
            let kw = proj(g, &mut t, &attn, "k", dim)?;
            let vw = proj(g, &mut t, &attn, "v", dim)?;
            let k = layers::linear(g, states, kw, None)?;
            let v = layers::linear(g, states, vw, None)?;
            Ok((
                layers::split_heads(g, k, h, dh, true)?,
                layers::split_heads(g, v, h, dh, false)?,
            ))
        })?;
        g.output_as(
            &io::cross_key_name(i),
            kt,
            dims![d::BATCH, cfg.heads, cfg.head_dim, t_len],
        )?;
        g.output_as(
            &io::cross_value_name(i),
            v,
            dims![d::BATCH, cfg.heads, t_len, cfg.head_dim],
        )?;
    }
    let bias = padding_bias(&mut g, ids, pad_id)?;
    g.output_as(io::CROSS_ATTENTION_BIAS, bias, dims![d::BATCH, 1, 1, t_len])?;
    Ok(g)
}
