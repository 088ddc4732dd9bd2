//! `PreShiftToken` (DALLE-pytorch `shift_tokens`) with explicit state.
//!
//! The reference shifts a branch's normalized input before the branch runs: at text positions
//! (BOS included) the first half of the channels comes from the previous position (zero at
//! position 0); at image position (r, c) the first quarter comes from the token above (zero in
//! row 0) and the second quarter from the token to the left (zero in column 0). To do this one
//! token at a time, the graph keeps earlier normalized inputs of the branch as state, in one of
//! two forms (the cache layout's, `decoder.rs`):
//!
//! Concatenated cache ([`shift_tokens`]): every earlier input, indexed by absolute position.
//!
//! ```text
//! hist = Concat(past_shift [B,P,dim], x [B,S,dim])  → present_shift [B,T,dim]
//! prev  = Gather(hist, max(pos − 1, 0))          above = Gather(hist, max(pos − fmap, 0))
//! ```
//!
//! In-place cache ([`shift_tokens_window`]): a rolling window of the last `W = fmap` inputs (the
//! token above is `fmap` back, the previous one 1 back; nothing further is ever read). Indices
//! are relative to each row's own past, so rows at different positions share them, and the
//! state has a fixed size, replaced every call:
//!
//! ```text
//! hist = Concat(past_shift [B,W,dim], x [B,S,dim])   [B, W+S, dim]
//! prev  = Gather(hist, W + s − 1)                 above = Gather(hist, W + s − fmap)
//! present_shift = hist[:, S:]                      [B, W, dim]
//! ```
//!
//! Both then pick per channel:
//!
//! ```text
//! out   = Where(use_prev, prev, Where(use_above, above, Where(zero, 0, x)))
//! ```
//! The masks `[S, dim]` (per row `[B, S, dim]`) come from each position's kind (text/image),
//! row and column and from constant channel ranges; where they pick `prev`/`above` the index is
//! in range, and a fresh row's all-zero window is never picked (position 0 and image row 0 are
//! zeroed). The reference skips shifting entirely when a call holds fewer than `text_len`
//! tokens; the runtime always prefills the whole text, so that case never arises.

use super::config::DalleConfig;
use super::positions::Positions;
use crate::error::Result;
use crate::graph::ops::{
    Add, And, Concat, Div, Equal, Gather, Less, Max, Mul, Not, Or, Range, Shape, Slice, Squeeze,
    Sub, Where,
};
use crate::graph::{GraphBuilder, Value};
use crate::tensor::TensorData;
use dalle_bundle::DType;

fn channel_mask(g: &mut GraphBuilder, dim: usize, range: std::ops::Range<usize>) -> Result<Value> {
    let bytes = (0..dim).map(|c| u8::from(range.contains(&c))).collect();
    g.constant(TensorData::from_bytes(DType::Bool, vec![1, dim], bytes)?)
}

/// Returns the shifted input and the new history (`present_shift`), concatenated-cache form.
pub fn shift_tokens(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    p: &Positions,
    x: Value,
    past: Value,
) -> Result<(Value, Value)> {
    g.scoped("shift", |g| {
        let hist = g.node1(Concat { axis: 1 }, &[past, x])?;
        let zero_i = g.scalar_i64(0)?;
        let one = g.scalar_i64(1)?;
        let fmap = g.scalar_i64(cfg.fmap as i64)?;

        let prev_idx = g.node1(Sub, &[p.pos, one])?;
        let prev_idx = g.node1(Max, &[prev_idx, zero_i])?;
        let above_idx = g.node1(Sub, &[p.pos, fmap])?;
        let above_idx = g.node1(Max, &[above_idx, zero_i])?;
        let prev = g.node1(Gather { axis: 1 }, &[hist, prev_idx])?;
        let above = g.node1(Gather { axis: 1 }, &[hist, above_idx])?;
        let out = select(g, cfg, p, x, prev, above)?;
        Ok((out, hist))
    })
}

/// The number of earlier inputs the rolling window keeps: `fmap` (the token above).
pub fn window(cfg: &DalleConfig) -> usize {
    cfg.fmap
}

/// Returns the shifted input and the new window (`present_shift` `[B, W, dim]`), in-place-cache
/// form (see the module docs).
pub fn shift_tokens_window(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    p: &Positions,
    x: Value,
    past: Value,
) -> Result<(Value, Value)> {
    g.scoped("shift", |g| {
        let w = window(cfg) as i64;
        let hist = g.node1(Concat { axis: 1 }, &[past, x])?;
        let axis0 = g.const_i64(&[0])?;
        let axis1 = g.const_i64(&[1])?;
        let new_len = g.node1(
            Shape {
                start: Some(1),
                end: Some(2),
            },
            &[x],
        )?;
        let new_len = g.node1(Squeeze, &[new_len, axis0])?;
        // Index of new token s in hist: W + s.
        let first = g.scalar_i64(w)?;
        let end = g.node1(Add, &[new_len, first])?;
        let one = g.scalar_i64(1)?;
        let at = g.node1(Range, &[first, end, one])?;
        let prev_idx = g.node1(Sub, &[at, one])?;
        let fmap = g.scalar_i64(cfg.fmap as i64)?;
        let above_idx = g.node1(Sub, &[at, fmap])?;
        let prev = g.node1(Gather { axis: 1 }, &[hist, prev_idx])?;
        let above = g.node1(Gather { axis: 1 }, &[hist, above_idx])?;
        let out = select(g, cfg, p, x, prev, above)?;
        let starts = g.const_i64(&[-w])?;
        let ends = g.const_i64(&[i64::MAX])?;
        let present = g.node1(Slice, &[hist, starts, ends, axis1])?;
        Ok((out, present))
    })
}

/// Picks per position and channel among the previous token, the token above, zero and `x`.
fn select(
    g: &mut GraphBuilder,
    cfg: &DalleConfig,
    p: &Positions,
    x: Value,
    prev: Value,
    above: Value,
) -> Result<Value> {
    let dim = cfg.dim;
    let zero_i = g.scalar_i64(0)?;
    let fmap = g.scalar_i64(cfg.fmap as i64)?;
    let text_len = g.scalar_i64(cfg.text_len() as i64)?;

    // Per-position facts, [S, 1] (per row [B, S, 1]).
    let pos_col = super::positions::column(g, p)?;
    let is_text = g.node1(Less, &[pos_col, text_len])?;
    let is_image = g.node1(Not, &[is_text])?;
    let first = g.node1(Equal, &[pos_col, zero_i])?;
    let j = g.node1(Sub, &[pos_col, text_len])?;
    let row = g.node1(Div, &[j, fmap])?;
    let row_start = g.node1(Mul, &[row, fmap])?;
    let col = g.node1(Sub, &[j, row_start])?;
    let row0 = g.node1(Equal, &[row, zero_i])?;
    let col0 = g.node1(Equal, &[col, zero_i])?;
    let not_first = g.node1(Not, &[first])?;
    let not_row0 = g.node1(Not, &[row0])?;
    let not_col0 = g.node1(Not, &[col0])?;

    // Channel ranges, [1, dim].
    let half = channel_mask(g, dim, 0..dim / 2)?;
    let q1 = channel_mask(g, dim, 0..dim / 4)?;
    let q2 = channel_mask(g, dim, dim / 4..dim / 2)?;

    let and3 = |g: &mut GraphBuilder, a: Value, b: Value, c: Value| -> Result<Value> {
        let ab = g.node1(And, &[a, b])?;
        g.node1(And, &[ab, c])
    };
    let text_prev = and3(g, is_text, not_first, half)?;
    let image_prev = and3(g, is_image, not_col0, q2)?;
    let use_prev = g.node1(Or, &[text_prev, image_prev])?;
    let use_above = and3(g, is_image, not_row0, q1)?;
    let text_zero = and3(g, is_text, first, half)?;
    let top_zero = and3(g, is_image, row0, q1)?;
    let left_zero = and3(g, is_image, col0, q2)?;
    let zero = g.node1(Or, &[text_zero, top_zero])?;
    let zero = g.node1(Or, &[zero, left_zero])?;

    let zero_f = g.scalar_float(0.0, DType::F32)?;
    let out = g.node1(Where, &[zero, zero_f, x])?;
    let out = g.node1(Where, &[use_above, above, out])?;
    g.node1(Where, &[use_prev, prev, out])
}
