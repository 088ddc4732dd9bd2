//! `dvae_encoder.onnx`: pixels in [0, 1] → image tokens.
//!
//! ```text
//! pixels f32[batch, C, height, width]
//!   → map_pixels: 0.8·x + 0.1                      (logit-Laplace ε = 0.1)
//!   → blocks.input: 7×7 conv C → n_hid
//!   → group_1..4: n_blk_per_group res blocks each (widths 1,2,4,8 × n_hid), MaxPool 2 after 1..3
//!   → blocks.output: Relu → 1×1 conv 8·n_hid → vocab   (logits)
//!   → ArgMax over channels → image_tokens i64[batch, height/8, width/8]
//! ```

use super::blocks::{ENCODER_KERNELS, conv, res_block};
use super::config::{DOWNSAMPLE, EncoderConfig, GROUP_COUNT, LOGIT_LAPLACE_EPS};
use super::names;
use crate::dims;
use crate::error::Result;
use crate::graph::ops::{Add, ArgMax, MaxPool, Mul, Relu};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{dims as d, dvae};

/// Builds the encoder graph, taking every weight from `w`.
pub fn build(cfg: &EncoderConfig, w: &mut Weights) -> Result<GraphBuilder> {
    cfg.validate()?;
    let mut g = GraphBuilder::new("dvae_encoder");
    let pixels = g.input(
        dvae::PIXELS,
        DType::F32,
        dims![d::BATCH, cfg.input_channels, d::HEIGHT, d::WIDTH],
    )?;
    let x = g.scoped("map_pixels", |g| {
        let scale = g.scalar_float(1.0 - 2.0 * LOGIT_LAPLACE_EPS, DType::F32)?;
        let eps = g.scalar_float(LOGIT_LAPLACE_EPS, DType::F32)?;
        let x = g.node1(Mul, &[pixels, scale])?;
        g.node1(Add, &[x, eps])
    })?;
    let mut x = conv(
        &mut g,
        w,
        &names::input_conv(),
        x,
        (cfg.input_channels, cfg.n_hid, 7),
    )?;
    let post_gain = cfg.post_gain();
    let mut width = cfg.n_hid;
    for group in 1..=GROUP_COUNT {
        let out = cfg.n_hid << (group - 1);
        for block in 1..=cfg.n_blk_per_group {
            let n_in = if block == 1 { width } else { out };
            x = res_block(
                &mut g,
                w,
                &names::block(group, block),
                x,
                (n_in, out),
                ENCODER_KERNELS,
                post_gain,
            )?;
        }
        width = out;
        if group < GROUP_COUNT {
            x = pool(&mut g, group, x)?;
        }
    }
    let x = g.scoped("blocks/output/relu", |g| g.node1(Relu, &[x]))?;
    let logits = conv(
        &mut g,
        w,
        &names::output_conv(),
        x,
        (width, cfg.vocab_size, 1),
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
    g.output_as(
        dvae::IMAGE_TOKENS,
        tokens,
        dims![
            d::BATCH,
            format!("{}/{DOWNSAMPLE}", d::HEIGHT),
            format!("{}/{DOWNSAMPLE}", d::WIDTH)
        ],
    )?;
    Ok(g)
}

fn pool(g: &mut GraphBuilder, group: usize, x: Value) -> Result<Value> {
    g.scoped(&format!("blocks/group_{group}/pool"), |g| {
        g.node1(
            MaxPool {
                kernel_shape: vec![2, 2],
                strides: vec![2, 2],
            },
            &[x],
        )
    })
}
