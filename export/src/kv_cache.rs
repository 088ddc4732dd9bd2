//! The decoder key/value cache layouts, shared by every family with a step decoder
//! (DALLE-pytorch, min-dalle): the layout choice (`--kv-cache`), its manifest attribute, and the
//! one attention step over each layout's cache.
//!
//! - [`KvCacheLayout::Concat`] (standard ONNX only: every execution provider, TensorRT's
//!   parser): `past` `[B, H, P, dh]` and the new keys/values are concatenated into `present`
//!   `[B, H, P+S, dh]` ([`attend_concat`]); the past length is a tensor dimension, one for the
//!   whole batch.
//! - [`KvCacheLayout::InPlace`]: fixed-capacity caches written in place by
//!   `com.microsoft.GroupQueryAttention` ([`attend_in_place`]), with a past length per row
//!   (`cache_length` `[B]`, turned into GQA's lengths by [`gqa_lengths`]).
//!
//! What a family adds around these (projections, rotary, masks, positions) stays with the
//! family; positions live in `families::dalle_pytorch::positions`, which min-dalle reuses.

use crate::error::{ExportError, Result};
use crate::graph::ops::{Cast, Concat, GroupQueryAttention, Squeeze, Sub, Transpose};
use crate::graph::{GraphBuilder, Value};
use crate::layers::{self, AttentionMask};
use dalle_bundle::io::decoder as io;
use dalle_bundle::{DType, KvCacheAttribute};

/// How a decoder graph keeps its key/value caches (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvCacheLayout {
    /// Growing caches, standard ONNX (every execution provider, TensorRT's parser).
    #[default]
    Concat,
    /// Fixed-capacity caches updated in place by `com.microsoft.GroupQueryAttention` (ONNX
    /// Runtime only; its float32 kernel is the CPU one).
    InPlace,
}

impl KvCacheLayout {
    /// The manifest's name for it (attribute `kv_cache`, the exporter's flag value).
    pub fn name(self) -> &'static str {
        match self {
            KvCacheLayout::Concat => io::KV_CONCAT,
            KvCacheLayout::InPlace => io::KV_IN_PLACE,
        }
    }

    /// The manifest attribute of a decoder in this layout: an in-place cache holds `capacity`
    /// tokens (and shift-token windows of `shift_window` positions, when the model has them).
    pub fn attribute(self, capacity: u64, shift_window: Option<u64>) -> KvCacheAttribute {
        match self {
            KvCacheLayout::Concat => KvCacheAttribute::Concat,
            KvCacheLayout::InPlace => KvCacheAttribute::InPlace {
                capacity,
                shift_window,
            },
        }
    }

    /// Whether the caches are written in place.
    pub fn in_place(self) -> bool {
        self == KvCacheLayout::InPlace
    }
}

/// The int32 lengths `GroupQueryAttention` takes, computed once per graph.
#[derive(Clone, Copy)]
pub struct GqaLengths {
    /// `[B]`: `cache_length + S − 1`, each row's last key index.
    pub seqlens_k: Value,
    /// Scalar `max(cache_length) + S`.
    pub total: Value,
}

/// `GroupQueryAttention`'s lengths from per-row positions: `row_total` i64 `[B]`
/// (`cache_length + S`) and `total` i64 `[1]` (`max(cache_length) + S`) give `seqlens_k` =
/// `row_total − 1` `[B]` and `total_sequence_length` scalar (both int32).
pub fn gqa_lengths(g: &mut GraphBuilder, row_total: Value, total: Value) -> Result<GqaLengths> {
    g.scoped("kv_lengths", |g| {
        let one = g.scalar_i64(1)?;
        let last = g.node1(Sub, &[row_total, one])?;
        let seqlens_k = g.node1(Cast { to: DType::I32 }, &[last])?;
        let total = g.node1(Cast { to: DType::I32 }, &[total])?;
        let axis0 = g.const_i64(&[0])?;
        let total = g.node1(Squeeze, &[total, axis0])?;
        Ok(GqaLengths { seqlens_k, total })
    })
}

/// Attention over a concatenated cache: per-head `q`, `k`, `v` `[B, H, S, dh]` of the new
/// tokens and `past` `[B, H, P, dh]` keys/values; returns the per-head output `[B, H, S, dh]`
/// and the presents `[B, H, P+S, dh]`. `mask` restricts queries to their keys (the causal mask
/// at least: the cache holds every earlier position).
pub fn attend_concat(
    g: &mut GraphBuilder,
    (q, k, v): (Value, Value, Value),
    (past_k, past_v): (Value, Value),
    scale: f32,
    mask: AttentionMask,
) -> Result<(Value, Value, Value)> {
    let k = g.node1(Concat { axis: 2 }, &[past_k, k])?;
    let v = g.node1(Concat { axis: 2 }, &[past_v, v])?;
    let kt = g.node1(
        Transpose {
            perm: vec![0, 1, 3, 2],
        },
        &[k],
    )?;
    let out = layers::attention_core(g, q, kt, v, scale, mask)?;
    Ok((out, k, v))
}

/// Attention over fixed-capacity caches written in place: `q`, `k`, `v` `[B, S, H·dh]` (any
/// rotary already applied), `past` `[B, H, capacity, dh]`; one `GroupQueryAttention` writes
/// each row's new keys/values at its own past length and attends causally over the row's valid
/// prefix (`bias`: an additive `[B, 1, S, total]` mask on top, for sparse attention). Returns
/// the output `[B, S, H·dh]` and the presents (the same buffers when bound as the pasts).
pub fn attend_in_place(
    g: &mut GraphBuilder,
    (q, k, v): (Value, Value, Value),
    (past_k, past_v): (Value, Value),
    lengths: GqaLengths,
    heads: i64,
    scale: f32,
    bias: Option<Value>,
) -> Result<(Value, Value, Value)> {
    let outs = g.node_opt(
        GroupQueryAttention {
            num_heads: heads,
            kv_num_heads: heads,
            scale,
        },
        &[
            Some(q),
            Some(k),
            Some(v),
            Some(past_k),
            Some(past_v),
            Some(lengths.seqlens_k),
            Some(lengths.total),
            None,
            None,
            None,
            bias,
        ],
    )?;
    <[Value; 3]>::try_from(outs)
        .map(|[out, present_k, present_v]| (out, present_k, present_v))
        .map_err(|_| ExportError::node("attention", "expected three outputs"))
}
