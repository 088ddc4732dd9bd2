//! `decoder.onnx`: one step of min-dalle's `DalleBartDecoder`, with a self-attention KV cache
//! in either of DALLE-pytorch's layouts (`--kv-cache`, [`KvCacheLayout`]) and the
//! cross-attention state as constant inputs.
//!
//! ```text
//! input_ids [B, S] (decoder ids: codes, the start token)
//!   pos = P + 0..S                 concat:   P = the caches' past length, one for the batch
//!   pos = cache_length[:, None] + 0..S   in-place: per row (cache_length [B])
//!   x = embed_tokens(ids) + embed_positions(pos) ─ layernorm_embedding
//!   per layer i:
//!     x += self_attn_layer_norm(SelfAttn(pre_self_attn_layer_norm(x), past_key_values.{i}.*))
//!            concat:   Concat(past [B, H, P, dh], new) → present [B, H, P+S, dh], causal mask
//!            in-place: GroupQueryAttention on [B, H, 256, dh] written at cache_length
//!     x += encoder_attn_layer_norm(out_proj(softmax(q·cross_key_values.{i}.key / √dh
//!            + cross_attention_bias) · cross_key_values.{i}.value))
//!     x += GLU(x)
//!   last position ─ final_ln ─ lm_head rows 0..image_codes → image_logits [B, image_codes]
//! ```
//!
//! min-dalle's self-attention writes the new keys/values at `token_index` into a 256-slot
//! buffer and masks slots after it (`arange(256) <= i`, bias −1e12); attending over each row's
//! valid prefix is the same computation, which both layouts do (the shared
//! [`crate::kv_cache`] steps, as DALLE-pytorch's). Its cross-attention bias is
//! `(1 − mask) · −1e12` over the text pads, fed here as computed once by `cross_kv`.

use super::config::MinDalleConfig;
use super::encoder::{LAYER_NORM_EPS, attend, glu_weights, norm, proj};
use super::names;
use super::weights::Take;
use crate::dims;
use crate::error::{ExportError, Result};
use crate::families::dalle_pytorch::positions;
use crate::graph::ops::{Add, Gather, Slice, Squeeze};
use crate::graph::{GraphBuilder, Value};
use crate::kv_cache::{self, GqaLengths, KvCacheLayout};
use crate::layers::{self, AttentionMask};
use crate::tensor::TensorData;
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::decoder::{self as dio, KvKind};
use dalle_bundle::io::dims as d;
use dalle_bundle::io::min_dalle as io;

/// The first `count` rows of a row-major `[rows, width]` f32 tensor.
fn first_rows(t: &TensorData, count: usize) -> Result<TensorData> {
    let shape = t.shape();
    let width = shape.get(1).copied().unwrap_or(0);
    let all = t.bytes()?;
    let bytes = count
        .checked_mul(width)
        .and_then(|n| n.checked_mul(t.dtype().size()))
        .and_then(|n| all.get(..n))
        .ok_or_else(|| ExportError::Weights(format!("rows 0..{count} of a {shape:?} tensor")))?;
    TensorData::from_bytes(t.dtype(), vec![count, width], bytes.to_vec())
}

/// How the self-attention reads and extends its cache, per graph.
#[derive(Clone, Copy)]
enum SelfAttnCache {
    /// Causal mask bool `[S, P+S]`.
    Concat {
        causal: Value,
    },
    InPlace {
        lengths: GqaLengths,
    },
}

/// Builds the graph in cache `layout`, taking the decoder's tensors (except the
/// cross-attention `k_proj`/`v_proj`, taken by `cross_kv`) from `w`.
pub fn build(cfg: &MinDalleConfig, w: &mut Weights, layout: KvCacheLayout) -> Result<GraphBuilder> {
    let mut g = GraphBuilder::new("decoder");
    let (dim, t_len, cap) = (cfg.dim, cfg.text_length, cfg.image_length);
    let (h, dh) = (cfg.heads as i64, cfg.head_dim as i64);
    if layout.in_place() && !cfg.head_dim.is_multiple_of(8) {
        return Err(ExportError::Unsupported(format!(
            "--kv-cache in-place needs a head dim that is a multiple of 8 (ONNX Runtime's \
             GroupQueryAttention kernel); this model has {}: use --kv-cache concat",
            cfg.head_dim
        )));
    }
    let ids = g.input(dio::INPUT_IDS, DType::I64, dims![d::BATCH, d::SEQUENCE])?;
    let (kv_in, kv_out) = if layout.in_place() {
        let fixed = dims![d::BATCH, cfg.heads, cap, cfg.head_dim];
        (fixed.clone(), fixed)
    } else {
        (
            dims![d::BATCH, cfg.heads, d::PAST_SEQUENCE, cfg.head_dim],
            dims![d::BATCH, cfg.heads, d::TOTAL_SEQUENCE, cfg.head_dim],
        )
    };
    let mut past = Vec::with_capacity(cfg.decoder_layers);
    for i in 0..cfg.decoder_layers {
        let k = g.input(&dio::past_name(i, KvKind::Key), DType::F32, kv_in.clone())?;
        let v = g.input(&dio::past_name(i, KvKind::Value), DType::F32, kv_in.clone())?;
        past.push((k, v));
    }
    let cache_length = if layout.in_place() {
        Some(g.input(dio::CACHE_LENGTH, DType::I64, dims![d::BATCH])?)
    } else {
        None
    };
    let mut cross = Vec::with_capacity(cfg.decoder_layers);
    for i in 0..cfg.decoder_layers {
        let kt = g.input(
            &io::cross_key_name(i),
            DType::F32,
            dims![d::BATCH, cfg.heads, cfg.head_dim, t_len],
        )?;
        let v = g.input(
            &io::cross_value_name(i),
            DType::F32,
            dims![d::BATCH, cfg.heads, t_len, cfg.head_dim],
        )?;
        cross.push((kt, v));
    }
    let bias = g.input(
        io::CROSS_ATTENTION_BIAS,
        DType::F32,
        dims![d::BATCH, 1, 1, t_len],
    )?;
    let (p, cache) = match cache_length {
        Some(cache_length) => {
            let p = positions::positions_per_row(&mut g, ids, cache_length)?;
            let row_total = p.row_total.ok_or_else(|| {
                ExportError::node("kv_lengths", "the in-place cache needs per-row positions")
            })?;
            let lengths = kv_cache::gqa_lengths(&mut g, row_total, p.total)?;
            (p, SelfAttnCache::InPlace { lengths })
        }
        None => {
            let first = past
                .first()
                .map(|&(k, _)| k)
                .ok_or_else(|| ExportError::Unsupported("no decoder layers".into()))?;
            let past_len = positions::past_length_of(&mut g, first, 2)?;
            let p = positions::positions(&mut g, ids, past_len)?;
            let causal = positions::keys(&mut g, &p)?.causal;
            (p, SelfAttnCache::Concat { causal })
        }
    };
    let mut t = Take { w };
    let mut x = g.scoped("embed", |g| {
        let table = t.tensor(g, names::EMBED_TOKENS, &[cfg.decoder_vocab, dim])?;
        let pos_table = t.tensor(g, names::EMBED_POSITIONS, &[cap, dim])?;
        let x = g.node1(Gather { axis: 0 }, &[table, ids])?;
        let pos = g.node1(Gather { axis: 0 }, &[pos_table, p.pos])?;
        let x = g.node1(Add, &[x, pos])?;
        norm(g, &mut t, x, names::LAYERNORM_EMBEDDING, dim)
    })?;
    let mut presents = Vec::with_capacity(cfg.decoder_layers);
    for (i, (&(past_k, past_v), &(cross_kt, cross_v))) in past.iter().zip(&cross).enumerate() {
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
            let scale = (cfg.head_dim as f32).powf(-0.5);
            let (a, present_k, present_v) = match cache {
                SelfAttnCache::InPlace { lengths } => kv_cache::attend_in_place(
                    g,
                    (q, k, v),
                    (past_k, past_v),
                    lengths,
                    h,
                    scale,
                    None,
                )?,
                SelfAttnCache::Concat { causal } => {
                    let heads = |g: &mut GraphBuilder, x| layers::split_heads(g, x, h, dh, false);
                    let (q, k, v) = (heads(g, q)?, heads(g, k)?, heads(g, v)?);
                    let (a, pk, pv) = kv_cache::attend_concat(
                        g,
                        (q, k, v),
                        (past_k, past_v),
                        scale,
                        AttentionMask::Allow(causal),
                    )?;
                    (layers::merge_heads(g, a, dim as i64)?, pk, pv)
                }
            };
            presents.push((present_k, present_v));
            let a = layers::linear(g, a, ow, None)?;
            let a = norm(g, &mut t, a, &names::layer(i, names::SELF_ATTN_LN), dim)?;
            let x = g.node1(Add, &[x, a])?;

            let cattn = names::layer(i, names::ENCODER_ATTN);
            let hs = norm(
                g,
                &mut t,
                x,
                &names::layer(i, names::PRE_ENCODER_ATTN_LN),
                dim,
            )?;
            let qw = proj(g, &mut t, &cattn, "q", dim)?;
            let ow = proj(g, &mut t, &cattn, "out", dim)?;
            let q = layers::linear(g, hs, qw, None)?;
            let q = layers::split_heads(g, q, h, dh, false)?;
            let c = attend(g, cfg, (q, cross_kt, cross_v), bias, ow)?;
            let c = norm(g, &mut t, c, &names::layer(i, names::ENCODER_ATTN_LN), dim)?;
            let x = g.node1(Add, &[x, c])?;

            let glu = glu_weights(
                g,
                &mut t,
                &names::layer(i, names::GLU),
                dim,
                cfg.decoder_glu,
            )?;
            let f = layers::glu(g, x, glu, LAYER_NORM_EPS)?;
            g.node1(Add, &[x, f])
        })?;
    }
    let logits = g.scoped("lm_head", |g| {
        let starts = g.const_i64(&[-1])?;
        let ends = g.const_i64(&[i64::MAX])?;
        let axes = g.const_i64(&[1])?;
        let last = g.node1(Slice, &[x, starts, ends, axes])?;
        let last = g.node1(Squeeze, &[last, axes])?;
        let hs = norm(g, &mut t, last, names::FINAL_LN, dim)?;
        let head = t.w.take_f32(names::LM_HEAD, &[cfg.decoder_vocab, dim])?;
        let rows = g.initializer(
            &format!("{}.image_codes", names::LM_HEAD),
            first_rows(&head, cfg.image_codes)?,
        )?;
        layers::linear(g, hs, rows, None)
    })?;
    g.output_as(dio::IMAGE_LOGITS, logits, dims![d::BATCH, cfg.image_codes])?;
    for (i, (k, v)) in presents.into_iter().enumerate() {
        g.output_as(&dio::present_name(i, KvKind::Key), k, kv_out.clone())?;
        g.output_as(&dio::present_name(i, KvKind::Value), v, kv_out.clone())?;
    }
    Ok(g)
}
