//! Layers shared by the `DiscreteVAE` encoder and decoder: `nn.Conv2d` / `nn.ConvTranspose2d`
//! with PyTorch weight names, and `ResBlock`.

use super::names;
use crate::error::Result;
use crate::graph::ops::{Add, Conv, ConvTranspose, Relu};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;

/// How a conv layer slides.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `nn.Conv2d(k, stride=1, padding=(k-1)/2)` (k = 1 or 3).
    Same(usize),
    /// `nn.Conv2d(4, stride=2, padding=1)`: exact 2× downsampling.
    Down4,
    /// `nn.ConvTranspose2d(4, stride=2, padding=1)`: exact 2× upsampling.
    Up4,
}

/// A conv with weights `{prefix}.weight` and `{prefix}.bias`. `Conv2d` weights are
/// `[n_out, n_in, k, k]`; `ConvTranspose2d` weights `[n_in, n_out, k, k]` (ONNX uses the same
/// layouts, so tensors are stored as they are).
pub fn conv(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: Value,
    (n_in, n_out): (usize, usize),
    kind: Kind,
) -> Result<Value> {
    let (k, shape) = match kind {
        Kind::Same(k) => (k, [n_out, n_in, k, k]),
        Kind::Down4 => (4, [n_out, n_in, 4, 4]),
        Kind::Up4 => (4, [n_in, n_out, 4, 4]),
    };
    let weight = w.take_f32(&names::weight(prefix), &shape)?;
    let bias = w.take_f32(&names::bias(prefix), &[n_out])?;
    let weight = g.initializer(&names::weight(prefix), weight)?;
    let bias = g.initializer(&names::bias(prefix), bias)?;
    g.scoped(&names::scope(prefix), |g| match kind {
        Kind::Same(_) => g.node1(Conv::same(k as i64), &[x, weight, bias]),
        Kind::Down4 => g.node1(
            Conv {
                kernel_shape: vec![4, 4],
                strides: vec![2, 2],
                pads: vec![1, 1, 1, 1],
                dilations: vec![1, 1],
                group: 1,
            },
            &[x, weight, bias],
        ),
        Kind::Up4 => g.node1(ConvTranspose::upsample2(4), &[x, weight, bias]),
    })
}

/// `conv` followed by `ReLU` (the `Sequential(conv, ReLU)` pairs at `{index}.0` / `{index}.1`).
pub fn conv_relu(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: Value,
    channels: (usize, usize),
    kind: Kind,
) -> Result<Value> {
    let y = conv(g, w, prefix, x, channels, kind)?;
    g.scoped(&format!("{}/relu", names::scope(prefix)), |g| {
        g.node1(Relu, &[y])
    })
}

/// `ResBlock(chan)`: `net(x) + x`.
///
/// ```text
///  x ──┬──────────────────────────────────────────────────────────────────┐
///      └── net.0 conv3×3 → ReLU → net.2 conv3×3 → ReLU → net.4 conv1×1 ── Add
/// ```
pub fn res_block(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: Value,
    chan: usize,
) -> Result<Value> {
    let mut h = x;
    for (k, kernel) in [3, 3, 1].into_iter().enumerate() {
        let conv_prefix = names::res_conv(prefix, k);
        h = if k < 2 {
            conv_relu(g, w, &conv_prefix, h, (chan, chan), Kind::Same(kernel))?
        } else {
            conv(g, w, &conv_prefix, h, (chan, chan), Kind::Same(kernel))?
        };
    }
    g.scoped(&names::scope(prefix), |g| g.node1(Add, &[h, x]))
}
