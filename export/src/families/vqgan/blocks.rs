//! The VQGAN building blocks (taming's `diffusionmodules/model.py`, min-dalle's
//! `vqgan_detokenizer.py`; identical up to the GroupNorm epsilon): conv, GroupNorm,
//! `ResnetBlock`, single-head spatial `AttnBlock`, nearest `Upsample` + conv, strided
//! `Downsample`. Each takes its weights by checkpoint name from [`Weights`].

use super::config::GROUPS;
use super::names;
use crate::error::Result;
use crate::graph::ops::{Add, Conv, Reshape, ResizeNearest, Shape, Transpose};
use crate::graph::{GraphBuilder, Value};
use crate::layers::{AttentionMask, attention_core, group_norm, swish};
use crate::weights::Weights;

/// What every block needs besides its input: the weights and the GroupNorm epsilon.
pub struct Ctx<'w> {
    pub w: &'w mut Weights,
    pub eps: f32,
}

/// `nn.Conv2d(n_in, n_out, k, padding=k//2)` from `{prefix}.weight`/`.bias`.
pub fn conv(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    (n_in, n_out, k): (usize, usize, usize),
) -> Result<Value> {
    conv_with(g, c, prefix, x, (n_in, n_out, k), Conv::same(k as i64))
}

fn conv_with(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    (n_in, n_out, k): (usize, usize, usize),
    op: Conv,
) -> Result<Value> {
    let weight = c.w.take_f32(&names::weight(prefix), &[n_out, n_in, k, k])?;
    let bias = c.w.take_f32(&names::bias(prefix), &[n_out])?;
    let weight = g.initializer(&names::weight(prefix), weight)?;
    let bias = g.initializer(&names::bias(prefix), bias)?;
    g.scoped(&names::scope(prefix), |g| g.node1(op, &[x, weight, bias]))
}

/// `GroupNorm(32, channels)` from `{prefix}.weight`/`.bias`.
pub fn norm(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    channels: usize,
) -> Result<Value> {
    let weight = c.w.take_f32(&names::weight(prefix), &[channels])?;
    let bias = c.w.take_f32(&names::bias(prefix), &[channels])?;
    let weight = g.initializer(&names::weight(prefix), weight)?;
    let bias = g.initializer(&names::bias(prefix), bias)?;
    let eps = c.eps;
    g.scoped(&names::scope(prefix), |g| {
        group_norm(g, x, GROUPS, weight, bias, eps)
    })
}

/// `GroupNorm → swish` (the pre-activation every conv of the nets sees).
pub fn norm_swish(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    channels: usize,
) -> Result<Value> {
    let h = norm(g, c, prefix, x, channels)?;
    g.scoped(&format!("{}/swish", names::scope(prefix)), |g| swish(g, h))
}

/// `ResnetBlock`:
///
/// ```text
///  x ──┬── nin_shortcut 1×1 (only when n_in != n_out) ────────────────────────────┐
///      └── norm1 → swish → conv1 3×3 → norm2 → swish → (dropout) → conv2 3×3 ──── Add
/// ```
pub fn resnet_block(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    (n_in, n_out): (usize, usize),
) -> Result<Value> {
    let h = norm_swish(g, c, &names::child(prefix, "norm1"), x, n_in)?;
    let h = conv(g, c, &names::child(prefix, "conv1"), h, (n_in, n_out, 3))?;
    let h = norm_swish(g, c, &names::child(prefix, "norm2"), h, n_out)?;
    let h = conv(g, c, &names::child(prefix, "conv2"), h, (n_out, n_out, 3))?;
    let shortcut = if n_in != n_out {
        conv(
            g,
            c,
            &names::child(prefix, "nin_shortcut"),
            x,
            (n_in, n_out, 1),
        )?
    } else {
        x
    };
    g.scoped(&names::scope(prefix), |g| g.node1(Add, &[shortcut, h]))
}

/// `AttnBlock`: one head over the `H·W` positions,
/// `x + proj_out(v · softmax(qᵀk / √C)ᵀ)` with `q, k, v` 1×1 convs of `norm(x)`.
pub fn attn_block(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    channels: usize,
) -> Result<Value> {
    let h = norm(g, c, &names::child(prefix, "norm"), x, channels)?;
    let mut qkv = Vec::with_capacity(3);
    for part in ["q", "k", "v"] {
        qkv.push(conv(
            g,
            c,
            &names::child(prefix, part),
            h,
            (channels, channels, 1),
        )?);
    }
    let (q, k, v) = (qkv[0], qkv[1], qkv[2]);
    let attended = g.scoped(&names::scope(prefix), |g| {
        let flat = g.const_i64(&[0, 0, -1])?;
        let swap = Transpose {
            perm: vec![0, 2, 1],
        };
        // [B, C, H, W] → q [B, N, C], kᵀ [B, C, N], v [B, N, C]
        let q = g.node1(Reshape, &[q, flat])?;
        let q = g.node1(swap.clone(), &[q])?;
        let kt = g.node1(Reshape, &[k, flat])?;
        let v = g.node1(Reshape, &[v, flat])?;
        let v = g.node1(swap.clone(), &[v])?;
        let scale = (channels as f32).powf(-0.5);
        let out = attention_core(g, q, kt, v, scale, AttentionMask::None)?;
        let out = g.node1(swap, &[out])?;
        let spatial = g.node1(
            Shape {
                start: None,
                end: None,
            },
            &[x],
        )?;
        g.node1(Reshape, &[out, spatial])
    })?;
    let h = conv(
        g,
        c,
        &names::child(prefix, "proj_out"),
        attended,
        (channels, channels, 1),
    )?;
    g.scoped(&names::scope(prefix), |g| g.node1(Add, &[x, h]))
}

/// `Upsample(with_conv=True)`: nearest 2× then a 3×3 conv.
pub fn upsample(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    prefix: &str,
    x: Value,
    channels: usize,
) -> Result<Value> {
    let up = g.scoped(&names::scope(prefix), |g| {
        let scales = g.const_f32(vec![4], &[1.0, 1.0, 2.0, 2.0])?;
        let out = g.node_opt(ResizeNearest, &[Some(x), None, Some(scales)])?;
        out.first()
            .copied()
            .ok_or_else(|| crate::error::ExportError::node("upsample", "Resize produced no output"))
    })?;
    conv(
        g,
        c,
        &names::child(prefix, "conv"),
        up,
        (channels, channels, 3),
    )
}
