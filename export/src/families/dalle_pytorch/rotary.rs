//! Rotary position embedding as DALLE-pytorch applies it (to q, k **and** v; models.md §2.4).
//!
//! The frequencies are the checkpoint's persistent buffer `transformer.pos_emb`
//! `[1, text_len + image_seq_len, rot]` (loaded, not recomputed: the rotary-embedding-torch
//! version is unpinned). Their cosines and sines become two constant tables; the graph gathers
//! the rows of the new tokens' absolute positions:
//!
//! ```text
//! t[..., :rot] · cos[pos] + rotate_half(t[..., :rot]) · sin[pos]  ‖  t[..., rot:]
//! rotate_half: pairs (x0, x1) → (−x1, x0)
//! ```

use crate::error::{ExportError, Result};
use crate::graph::ops::{Add, Concat, Gather, Mul, Neg, Reshape, Slice, Unsqueeze};
use crate::graph::{GraphBuilder, Value};
use crate::tensor::TensorData;

/// The cos/sin rows of the new tokens, `[S, rot]` each (`[B, S, rot]` for per-row positions),
/// shared by all layers.
pub struct RotaryTables {
    pub cos: Value,
    pub sin: Value,
    pub rot: usize,
}

/// Builds the tables from `transformer.pos_emb` and gathers the rows at `pos` (`[S]`, or
/// `[B, S]` for per-row positions).
pub fn tables(
    g: &mut GraphBuilder,
    pos_emb: &TensorData,
    dim_head: usize,
    pos: Value,
) -> Result<RotaryTables> {
    let shape = pos_emb.shape();
    let (n, rot) = match shape {
        [1, n, rot] => (*n, *rot),
        other => {
            return Err(ExportError::Weights(format!(
                "`transformer.pos_emb` has shape {other:?}, expected [1, positions, rot]"
            )));
        }
    };
    if rot % 2 != 0 || rot > dim_head {
        return Err(ExportError::Weights(format!(
            "`transformer.pos_emb` rotates {rot} dims; it must be even and at most dim_head {dim_head}"
        )));
    }
    let freqs = pos_emb.to_f32_vec()?;
    // cos/sin in f64, rounded once to f32: within half an ulp of torch's f32 cos/sin.
    let cos: Vec<f32> = freqs.iter().map(|&f| f64::from(f).cos() as f32).collect();
    let sin: Vec<f32> = freqs.iter().map(|&f| f64::from(f).sin() as f32).collect();
    g.scoped("rotary", |g| {
        let cos_t = g.constant(TensorData::from_f32(vec![n, rot], &cos)?)?;
        let sin_t = g.constant(TensorData::from_f32(vec![n, rot], &sin)?)?;
        Ok(RotaryTables {
            cos: g.node1(Gather { axis: 0 }, &[cos_t, pos])?,
            sin: g.node1(Gather { axis: 0 }, &[sin_t, pos])?,
            rot,
        })
    })
}

/// The tables for a sequence-major `[B, S, H, dim_head]` input from per-row tables
/// `[B, S, rot]`: `[B, S, 1, rot]` (the in-place cache's attention keeps q, k, v
/// sequence-major, and its positions are per row).
pub fn for_sequence_major(g: &mut GraphBuilder, t: RotaryTables) -> Result<RotaryTables> {
    g.scoped("rotary", |g| {
        let axis = g.const_i64(&[2])?;
        Ok(RotaryTables {
            cos: g.node1(Unsqueeze, &[t.cos, axis])?,
            sin: g.node1(Unsqueeze, &[t.sin, axis])?,
            rot: t.rot,
        })
    })
}

/// Applies the rotation to `t` `[B, H, S, dim_head]` (or `[B, S, H, dim_head]` with tables from
/// [`for_sequence_major`]): it acts on the last axis only.
pub fn apply(g: &mut GraphBuilder, r: &RotaryTables, t: Value, dim_head: usize) -> Result<Value> {
    let rot = r.rot as i64;
    let start = g.const_i64(&[0])?;
    let t_rot = if r.rot == dim_head {
        t
    } else {
        let axis = g.const_i64(&[3])?;
        let mid = g.const_i64(&[rot])?;
        g.node1(Slice, &[t, start, mid, axis])?
    };
    // rotate_half over interleaved pairs.
    let pairs_shape = g.const_i64(&[0, 0, 0, rot / 2, 2])?;
    let pairs = g.node1(Reshape, &[t_rot, pairs_shape])?;
    let last = g.const_i64(&[4])?;
    let one = g.const_i64(&[1])?;
    let two = g.const_i64(&[2])?;
    let x0 = g.node1(Slice, &[pairs, start, one, last])?;
    let x1 = g.node1(Slice, &[pairs, one, two, last])?;
    let neg_x1 = g.node1(Neg, &[x1])?;
    let rotated = g.node1(Concat { axis: 4 }, &[neg_x1, x0])?;
    let back = g.const_i64(&[0, 0, 0, rot])?;
    let rotated = g.node1(Reshape, &[rotated, back])?;
    let a = g.node1(Mul, &[t_rot, r.cos])?;
    let b = g.node1(Mul, &[rotated, r.sin])?;
    let out = g.node1(Add, &[a, b])?;
    if r.rot == dim_head {
        return Ok(out);
    }
    let axis = g.const_i64(&[3])?;
    let mid = g.const_i64(&[rot])?;
    let end = g.const_i64(&[dim_head as i64])?;
    let t_pass = g.node1(Slice, &[t, mid, end, axis])?;
    g.node1(Concat { axis: 3 }, &[out, t_pass])
}
