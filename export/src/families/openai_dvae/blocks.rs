//! Building blocks shared by the dVAE encoder and decoder: the custom `Conv2d` (stride 1,
//! "same" padding, weights `w`/`b`) and the residual block.

use super::names;
use crate::error::Result;
use crate::graph::ops::{Add, Conv, Mul, Relu};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;
use dalle_bundle::DType;

/// `dall_e.utils.Conv2d`: `conv2d(x, w, b, padding=(kw-1)//2)`, weights taken from
/// `{prefix}.w` `[n_out, n_in, kw, kw]` and `{prefix}.b` `[n_out]`.
pub fn conv(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: Value,
    (n_in, n_out, kw): (usize, usize, usize),
) -> Result<Value> {
    let weight = w.take_f32(&names::weight(prefix), &[n_out, n_in, kw, kw])?;
    let bias = w.take_f32(&names::bias(prefix), &[n_out])?;
    let weight = g.initializer(&names::weight(prefix), weight)?;
    let bias = g.initializer(&names::bias(prefix), bias)?;
    g.scoped(&names::scope(prefix), |g| {
        g.node1(Conv::same(kw as i64), &[x, weight, bias])
    })
}

/// Kernel sizes of `conv_1..conv_4` on the residual path.
pub type ResKernels = [usize; 4];

/// Encoder blocks use 3,3,3,1; decoder blocks 1,3,3,3.
pub const ENCODER_KERNELS: ResKernels = [3, 3, 3, 1];
pub const DECODER_KERNELS: ResKernels = [1, 3, 3, 3];

/// `EncoderBlock` / `DecoderBlock`: `id_path(x) + post_gain * res_path(x)`.
///
/// ```text
///  x ──┬── id_path: 1×1 conv if n_in != n_out, else identity ───────────────┐
///      └── Relu → conv_1 → Relu → conv_2 → Relu → conv_3 → Relu → conv_4 → Mul(post_gain) → Add
/// ```
/// The residual path is `n_in → n_out/4 → n_out/4 → n_out/4 → n_out`.
pub fn res_block(
    g: &mut GraphBuilder,
    w: &mut Weights,
    prefix: &str,
    x: Value,
    (n_in, n_out): (usize, usize),
    kernels: ResKernels,
    post_gain: f32,
) -> Result<Value> {
    let n_hid = n_out / 4;
    let id = if n_in != n_out {
        conv(g, w, &names::id_path(prefix), x, (n_in, n_out, 1))?
    } else {
        x
    };
    let channels = [
        (n_in, n_hid),
        (n_hid, n_hid),
        (n_hid, n_hid),
        (n_hid, n_out),
    ];
    let mut h = x;
    for (j, ((cin, cout), kw)) in channels.into_iter().zip(kernels).enumerate() {
        let conv_prefix = names::res_conv(prefix, j + 1);
        h = g.scoped(&format!("{}/relu_{}", names::scope(prefix), j + 1), |g| {
            g.node1(Relu, &[h])
        })?;
        h = conv(g, w, &conv_prefix, h, (cin, cout, kw))?;
    }
    g.scoped(&names::scope(prefix), |g| {
        let gain = g.scalar_float(post_gain, DType::F32)?;
        let scaled = g.node1(Mul, &[h, gain])?;
        g.node1(Add, &[id, scaled])
    })
}
