//! Everything derived from absolute positions inside the decoder graph: the positions of the
//! new tokens (from the past length), the attention masks of each attention type, the logits
//! mask, and the image row/column of a position. Kept in one place so every consumer (position
//! embeddings, rotary, masks, shift tokens) agrees on what a position is.
//!
//! Concatenated cache: one past length for the whole batch (it is a tensor dimension).
//!
//! ```text
//! P = Shape(past_key_values.0.key)[2]
//! S = Shape(input_ids)[1]
//! pos     = Range(P, P + S)   [S]   absolute positions of the new tokens (BOS = 0)
//! key_pos = Range(0, P + S)   [T]   positions of every key
//! causal  = key_pos[None, :] <= pos[:, None]   [S, T]
//! ```
//!
//! In-place cache: a past length per row (`cache_length` `[B]`), so a server can batch rows of
//! different requests sitting at different positions. Each row's cache starts at its own
//! position 0, so key index j is position j in every row; keys past a row's own length are
//! masked (and GroupQueryAttention's `seqlens_k` excludes them anyway).
//!
//! ```text
//! L = cache_length [B]              T = max(L) + S
//! pos     = L[:, None] + Range(0, S)[None, :]   [B, S]
//! key_pos = Range(0, T)                         [T]
//! causal  = key_pos[None, None, :] <= pos[:, :, None]   [B, S, T]
//! ```

use super::config::{AttnType, DalleConfig};
use crate::error::Result;
use crate::graph::ops::{
    Add, And, Div, Equal, GreaterOrEqual, Less, LessOrEqual, Mul, Or, Range, ReduceMax, Shape,
    Squeeze, Sub, Unsqueeze, Xor,
};
use crate::graph::{GraphBuilder, Value};

/// Position values shared by all layers of one graph.
pub struct Positions {
    /// i64 absolute positions of the new tokens: `[S]` (one past length) or `[B, S]` (per row).
    pub pos: Value,
    /// i64 `[1]`: `P + S` (per row: `max(cache_length) + S`), the key count after this call.
    pub total: Value,
    /// Per row only: i64 `[B]` `cache_length + S`, each row's tokens after this call.
    pub row_total: Option<Value>,
    /// i64 scalar, `total` squeezed (per row: built by [`keys`], which only masks need).
    end: Option<Value>,
}

impl Positions {
    /// Whether positions are per row (`pos` `[B, S]`).
    pub fn per_row(&self) -> bool {
        self.row_total.is_some()
    }
}

/// The key side of the attention masks (built only when a mask is: an in-place cache with full
/// attention needs none).
pub struct KeyPositions {
    /// i64 `[S, 1]` (per row `[B, S, 1]`): the new tokens' positions as a column ([`column()`]).
    pub pos_col: Value,
    /// i64 `[1, T]` (per row `[1, 1, T]`): positions of every key (`0..T`).
    pub key_row: Value,
    /// bool `[S, T]` (per row `[B, S, T]`): key position ≤ query position.
    pub causal: Value,
}

/// i64 `[1]`: the length of axis `axis` of `past` (a concatenated cache's past length).
pub fn past_length_of(g: &mut GraphBuilder, past: Value, axis: i64) -> Result<Value> {
    g.scoped("positions", |g| {
        g.node1(
            Shape {
                start: Some(axis),
                end: Some(axis + 1),
            },
            &[past],
        )
    })
}

/// Builds [`Positions`] from the past length (i64 `[1]`) and the new tokens.
pub fn positions(g: &mut GraphBuilder, input_ids: Value, past_len: Value) -> Result<Positions> {
    g.scoped("positions", |g| {
        let axis0 = g.const_i64(&[0])?;
        let new_len = g.node1(
            Shape {
                start: Some(1),
                end: Some(2),
            },
            &[input_ids],
        )?;
        let total = g.node1(Add, &[past_len, new_len])?;
        let start = g.node1(Squeeze, &[past_len, axis0])?;
        let end = g.node1(Squeeze, &[total, axis0])?;
        let one = g.scalar_i64(1)?;
        let pos = g.node1(Range, &[start, end, one])?;
        Ok(Positions {
            pos,
            total,
            row_total: None,
            end: Some(end),
        })
    })
}

/// Builds per-row [`Positions`] from `cache_length` (i64 `[B]`) and the new tokens.
pub fn positions_per_row(
    g: &mut GraphBuilder,
    input_ids: Value,
    cache_length: Value,
) -> Result<Positions> {
    g.scoped("positions", |g| {
        let axis0 = g.const_i64(&[0])?;
        let axis1 = g.const_i64(&[1])?;
        let new_len = g.node1(
            Shape {
                start: Some(1),
                end: Some(2),
            },
            &[input_ids],
        )?;
        let zero = g.scalar_i64(0)?;
        let one = g.scalar_i64(1)?;
        let s = g.node1(Squeeze, &[new_len, axis0])?;
        let steps = g.node1(Range, &[zero, s, one])?;
        let steps = g.node1(Unsqueeze, &[steps, axis0])?;
        let starts = g.node1(Unsqueeze, &[cache_length, axis1])?;
        let pos = g.node1(Add, &[starts, steps])?;
        let longest = g.node1(ReduceMax { keepdims: true }, &[cache_length, axis0])?;
        let total = g.node1(Add, &[longest, new_len])?;
        let row_total = g.node1(Add, &[cache_length, new_len])?;
        Ok(Positions {
            pos,
            total,
            row_total: Some(row_total),
            end: None,
        })
    })
}

/// Builds [`KeyPositions`] for `p`.
pub fn keys(g: &mut GraphBuilder, p: &Positions) -> Result<KeyPositions> {
    g.scoped("positions", |g| {
        let axis0 = g.const_i64(&[0])?;
        let zero = g.scalar_i64(0)?;
        let one = g.scalar_i64(1)?;
        let end = match p.end {
            Some(end) => end,
            None => g.node1(Squeeze, &[p.total, axis0])?,
        };
        let key_pos = g.node1(Range, &[zero, end, one])?;
        let key_row = if p.per_row() {
            let axes = g.const_i64(&[0, 1])?;
            g.node1(Unsqueeze, &[key_pos, axes])?
        } else {
            g.node1(Unsqueeze, &[key_pos, axis0])?
        };
        let pos_col = column(g, p)?;
        let causal = g.node1(LessOrEqual, &[key_row, pos_col])?;
        Ok(KeyPositions {
            pos_col,
            key_row,
            causal,
        })
    })
}

/// i64 `[S, 1]` (per row `[B, S, 1]`): the new tokens' positions as a column, for `[S, …]`
/// (`[B, S, …]`) per-position masks.
pub fn column(g: &mut GraphBuilder, p: &Positions) -> Result<Value> {
    let last = g.const_i64(&[if p.per_row() { 2 } else { 1 }])?;
    g.node1(Unsqueeze, &[p.pos, last])
}

/// Image row of positions `p` (meaningful where `p >= text_len`): `(p − text_len) / fmap`.
fn image_row(g: &mut GraphBuilder, cfg: &DalleConfig, p: Value) -> Result<Value> {
    let text_len = g.scalar_i64(cfg.text_len() as i64)?;
    let fmap = g.scalar_i64(cfg.fmap as i64)?;
    let j = g.node1(Sub, &[p, text_len])?;
    g.node1(Div, &[j, fmap])
}

/// Image column of positions `p` given their row: `(p − text_len) − row · fmap`.
fn image_col(g: &mut GraphBuilder, cfg: &DalleConfig, p: Value, row: Value) -> Result<Value> {
    let text_len = g.scalar_i64(cfg.text_len() as i64)?;
    let fmap = g.scalar_i64(cfg.fmap as i64)?;
    let j = g.node1(Sub, &[p, text_len])?;
    let row_start = g.node1(Mul, &[row, fmap])?;
    g.node1(Sub, &[j, row_start])
}

/// bool `[S, T]` (per row `[B, S, T]`), true where query may attend key, for one attention type.
///
/// `full` is causal. The sparse types (models.md §2.4, `attention.py`) keep text causal and let
/// an image query see all text plus: its own row up to itself (`axial_row`), its own column up to
/// itself (`axial_col`), or the causal window rows r−k+1..r × columns c−k+1..c (`conv_like`).
pub fn attention_mask(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    k: &KeyPositions,
    ty: AttnType,
) -> Result<Value> {
    if ty == AttnType::Full {
        return Ok(k.causal);
    }
    let scope = match ty {
        AttnType::AxialRow => "mask_axial_row",
        AttnType::AxialCol => "mask_axial_col",
        _ => "mask_conv_like",
    };
    g.scoped(scope, |g| {
        let text_len = g.scalar_i64(cfg.text_len() as i64)?;
        let q_text = g.node1(Less, &[k.pos_col, text_len])?;
        let k_text = g.node1(Less, &[k.key_row, text_len])?;
        let qr = image_row(g, cfg, k.pos_col)?;
        let kr = image_row(g, cfg, k.key_row)?;
        let image_rule = match ty {
            AttnType::AxialRow => g.node1(Equal, &[qr, kr])?,
            AttnType::AxialCol => {
                let qc = image_col(g, cfg, k.pos_col, qr)?;
                let kc = image_col(g, cfg, k.key_row, kr)?;
                g.node1(Equal, &[qc, kc])?
            }
            AttnType::ConvLike { kernel } => {
                let qc = image_col(g, cfg, k.pos_col, qr)?;
                let kc = image_col(g, cfg, k.key_row, kr)?;
                let reach = g.scalar_i64(kernel as i64 - 1)?;
                let min_r = g.node1(Sub, &[qr, reach])?;
                let min_c = g.node1(Sub, &[qc, reach])?;
                let r_lo = g.node1(GreaterOrEqual, &[kr, min_r])?;
                let r_hi = g.node1(LessOrEqual, &[kr, qr])?;
                let c_lo = g.node1(GreaterOrEqual, &[kc, min_c])?;
                let c_hi = g.node1(LessOrEqual, &[kc, qc])?;
                let r = g.node1(And, &[r_lo, r_hi])?;
                let c = g.node1(And, &[c_lo, c_hi])?;
                g.node1(And, &[r, c])?
            }
            AttnType::Full => k.causal,
        };
        let text_any = g.node1(Or, &[q_text, k_text])?;
        let allowed = g.node1(Or, &[text_any, image_rule])?;
        g.node1(And, &[k.causal, allowed])
    })
}

/// bool `[S, V]` (per row `[B, S, V]`), true where the reference masks a logit: positions
/// before `text_seq_len` predict text ids only, later positions image ids only.
pub fn logits_mask(g: &mut GraphBuilder, cfg: &DalleConfig, p: &Positions) -> Result<Value> {
    g.scoped("logits_mask", |g| {
        let text_seq_len = g.scalar_i64(cfg.text_seq_len as i64)?;
        let pos_col = column(g, p)?;
        let predicts_image = g.node1(GreaterOrEqual, &[pos_col, text_seq_len])?;
        let ntext = cfg.num_text_tokens_internal();
        let is_image_id: Vec<bool> = (0..cfg.total_tokens()).map(|v| v >= ntext).collect();
        let bytes = is_image_id.iter().map(|&b| u8::from(b)).collect();
        let ids = crate::tensor::TensorData::from_bytes(
            dalle_bundle::DType::Bool,
            vec![1, cfg.total_tokens()],
            bytes,
        )?;
        let ids = g.constant(ids)?;
        // Masked where the two disagree: Xor, not Not(Equal) — TensorRT's Equal takes no bool.
        g.node1(Xor, &[predicts_image, ids])
    })
}
