//! `dvae_decoder.onnx` for a `DiscreteVAE`: image tokens → pixels in [0, 1].
//!
//! ```text
//! image_tokens i64[batch, grid_height, grid_width]
//!   → codebook: Gather(codebook.weight f32[num_tokens, codebook_dim], tokens)
//!     → Transpose to NCHW                          (the reference's `self.codebook(img_seq)`)
//!   → decoder.0: Conv 1×1 codebook_dim → hid        (only when R > 0)
//!   → decoder.{1+j}: ResBlock(hid),                 j < R
//!   → decoder.{o+i}: ConvTranspose 4×4 stride 2 pad 1 → Relu,  i < L   (o = R+1, or 0)
//!   → decoder.{o+L}: Conv 1×1 hid → C               (the reference's `decode` output)
//!   → denormalize: x · std + mean per channel, Clip [0, 1]
//!   → pixels f32[batch, C, grid_height·2^L, grid_width·2^L]
//! ```
//! The reference's `decode` returns images in the *normalized* space (what `norm` produces
//! from [0, 1] pixels) and leaves undoing it to the caller; the bundle contract promises [0, 1],
//! so the graph undoes `norm` and clamps. With `normalization=None` only the clamp remains.
//! The reference takes `[batch, fmap²]` and assumes a square grid; this graph takes the grid.

use super::blocks::{Kind, conv, conv_relu, res_block};
use super::config::DiscreteVaeConfig;
use super::names;
use crate::dims;
use crate::error::Result;
use crate::graph::ops::{Add, Clip, Gather, Mul, Transpose};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{dims as d, dvae};

/// Builds the decoder graph, taking `codebook.weight` and the `decoder.*` weights from `w`.
pub fn build(cfg: &DiscreteVaeConfig, w: &mut Weights) -> Result<GraphBuilder> {
    cfg.validate()?;
    let mut g = GraphBuilder::new("dvae_decoder");
    let tokens = g.input(
        dvae::IMAGE_TOKENS,
        DType::I64,
        dims![d::BATCH, d::GRID_HEIGHT, d::GRID_WIDTH],
    )?;
    let mut x = embed(&mut g, w, cfg, tokens)?;
    let mut width = cfg.codebook_dim;
    if cfg.num_resnet_blocks > 0 {
        x = conv(
            &mut g,
            w,
            &names::decoder_input(),
            x,
            (width, cfg.hidden_dim),
            Kind::Same(1),
        )?;
        width = cfg.hidden_dim;
        for j in 0..cfg.num_resnet_blocks {
            x = res_block(&mut g, w, &names::decoder_res(j), x, width)?;
        }
    }
    for i in 0..cfg.num_layers {
        x = conv_relu(
            &mut g,
            w,
            &names::decoder_up(cfg, i),
            x,
            (width, cfg.hidden_dim),
            Kind::Up4,
        )?;
        width = cfg.hidden_dim;
    }
    let x = conv(
        &mut g,
        w,
        &names::decoder_output(cfg),
        x,
        (width, cfg.channels),
        Kind::Same(1),
    )?;
    let pixels = denormalize(&mut g, cfg, x)?;
    let up = cfg.downsample();
    g.output_as(
        dvae::PIXELS,
        pixels,
        dims![
            d::BATCH,
            cfg.channels,
            format!("{}*{up}", d::GRID_HEIGHT),
            format!("{}*{up}", d::GRID_WIDTH)
        ],
    )?;
    Ok(g)
}

/// `self.codebook(tokens)` as a table lookup, then `b h w d → b d h w`.
fn embed(
    g: &mut GraphBuilder,
    w: &mut Weights,
    cfg: &DiscreteVaeConfig,
    tokens: Value,
) -> Result<Value> {
    let table = w.take_f32(names::CODEBOOK, &[cfg.num_tokens, cfg.codebook_dim])?;
    let table = g.initializer(names::CODEBOOK, table)?;
    g.scoped("codebook", |g| {
        let x = g.node1(Gather { axis: 0 }, &[table, tokens])?;
        g.node1(
            Transpose {
                perm: vec![0, 3, 1, 2],
            },
            &[x],
        )
    })
}

/// `clamp(x · std + mean, 0, 1)` with `[1, C, 1, 1]` constants (only the clamp without
/// normalization).
fn denormalize(g: &mut GraphBuilder, cfg: &DiscreteVaeConfig, x: Value) -> Result<Value> {
    g.scoped("denormalize", |g| {
        let x = match &cfg.normalization {
            Some(n) => {
                let std = g.const_f32(vec![1, cfg.channels, 1, 1], &n.std)?;
                let mean = g.const_f32(vec![1, cfg.channels, 1, 1], &n.mean)?;
                let x = g.node1(Mul, &[x, std])?;
                g.node1(Add, &[x, mean])?
            }
            None => x,
        };
        let zero = g.scalar_float(0.0, DType::F32)?;
        let one = g.scalar_float(1.0, DType::F32)?;
        g.node1(Clip, &[x, zero, one])
    })
}
