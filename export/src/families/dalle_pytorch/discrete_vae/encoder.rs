//! `dvae_encoder.onnx` for a `DiscreteVAE`: pixels in [0, 1] → image tokens, as the reference's
//! `get_codebook_indices` (`norm` → `encoder` → argmax over codes), keeping the grid shape.
//!
//! ```text
//! pixels f32[batch, C, height, width]   in [0, 1]
//!   → norm: (x − mean) / std per channel          (skipped when normalization is None)
//!   → encoder.{i}: Conv 4×4 stride 2 pad 1 → Relu,  i < L   (C → hid → … → hid)
//!   → encoder.{L+j}: ResBlock(hid),                 j < R
//!   → encoder.{L+R}: Conv 1×1 hid → num_tokens      (logits)
//!   → ArgMax over channels → image_tokens i64[batch, height/2^L, width/2^L]
//! ```
//! The reference flattens the grid to `[batch, fmap²]`; the bundle contract keeps
//! `[batch, h, w]` (row-major, so flattening gives the reference's order).

use super::blocks::{Kind, conv, conv_relu, res_block};
use super::config::DiscreteVaeConfig;
use super::names;
use crate::dims;
use crate::error::Result;
use crate::graph::ops::{ArgMax, Div, Sub};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{dims as d, dvae};

/// Builds the encoder graph, taking the `encoder.*` weights from `w`.
pub fn build(cfg: &DiscreteVaeConfig, w: &mut Weights) -> Result<GraphBuilder> {
    cfg.validate()?;
    let mut g = GraphBuilder::new("dvae_encoder");
    let pixels = g.input(
        dvae::PIXELS,
        DType::F32,
        dims![d::BATCH, cfg.channels, d::HEIGHT, d::WIDTH],
    )?;
    let mut x = normalize(&mut g, cfg, pixels)?;
    let mut width = cfg.channels;
    for i in 0..cfg.num_layers {
        x = conv_relu(
            &mut g,
            w,
            &names::encoder_down(i),
            x,
            (width, cfg.hidden_dim),
            Kind::Down4,
        )?;
        width = cfg.hidden_dim;
    }
    for j in 0..cfg.num_resnet_blocks {
        x = res_block(&mut g, w, &names::encoder_res(cfg, j), x, width)?;
    }
    let logits = conv(
        &mut g,
        w,
        &names::encoder_logits(cfg),
        x,
        (width, cfg.num_tokens),
        Kind::Same(1),
    )?;
    let tokens = g.scoped("argmax", |g| {
        g.node1(
            ArgMax {
                axis: 1,
                keepdims: false,
            },
            &[logits],
        )
    })?;
    let down = cfg.downsample();
    g.output_as(
        dvae::IMAGE_TOKENS,
        tokens,
        dims![
            d::BATCH,
            format!("{}/{down}", d::HEIGHT),
            format!("{}/{down}", d::WIDTH)
        ],
    )?;
    Ok(g)
}

/// `DiscreteVAE.norm`: `images.sub_(means).div_(stds)` with `[1, C, 1, 1]` constants.
fn normalize(g: &mut GraphBuilder, cfg: &DiscreteVaeConfig, x: Value) -> Result<Value> {
    let Some(n) = &cfg.normalization else {
        return Ok(x);
    };
    g.scoped("norm", |g| {
        let mean = g.const_f32(vec![1, cfg.channels, 1, 1], &n.mean)?;
        let std = g.const_f32(vec![1, cfg.channels, 1, 1], &n.std)?;
        let x = g.node1(Sub, &[x, mean])?;
        g.node1(Div, &[x, std])
    })
}
