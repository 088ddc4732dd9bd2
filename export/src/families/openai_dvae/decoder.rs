//! `dvae_decoder.onnx`: image tokens → pixels in [0, 1].
//!
//! ```text
//! image_tokens i64[batch, grid_height, grid_width]
//!   → blocks.input as an embedding: Gather(W, tokens) + b, W = blocks.input.w stored
//!     transposed as f32[vocab, n_init] (the reference's one-hot × 1×1 conv; no one-hot is built)
//!   → Transpose to NCHW
//!   → group_1..4: res blocks (widths 8,4,2,1 × n_hid), nearest 2× upsample after 1..3
//!   → blocks.output: Relu → 1×1 conv n_hid → 2·C   (μ and ln b of the logit-Laplace)
//!   → first C channels → Sigmoid → unmap_pixels: clamp((x − 0.1)/0.8, 0, 1)
//!   → pixels f32[batch, C, 8·grid_height, 8·grid_width]
//! ```

use super::blocks::{DECODER_KERNELS, conv, res_block};
use super::config::{DOWNSAMPLE, DecoderConfig, GROUP_COUNT, LOGIT_LAPLACE_EPS};
use super::names;
use crate::dims;
use crate::error::{ExportError, Result};
use crate::graph::ops::{
    Add, Clip, Div, Gather, Relu, ResizeNearest, Sigmoid, Slice, Sub, Transpose,
};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{dims as d, dvae};

/// Builds the decoder graph, taking every weight from `w`.
pub fn build(cfg: &DecoderConfig, w: &mut Weights) -> Result<GraphBuilder> {
    cfg.validate()?;
    let mut g = GraphBuilder::new("dvae_decoder");
    let tokens = g.input(
        dvae::IMAGE_TOKENS,
        DType::I64,
        dims![d::BATCH, d::GRID_HEIGHT, d::GRID_WIDTH],
    )?;
    let mut x = embed_tokens(&mut g, w, cfg, tokens)?;
    let post_gain = cfg.post_gain();
    let mut width = cfg.n_init;
    for group in 1..=GROUP_COUNT {
        let out = (cfg.n_hid << (GROUP_COUNT - 1)) >> (group - 1);
        for block in 1..=cfg.n_blk_per_group {
            let n_in = if block == 1 { width } else { out };
            x = res_block(
                &mut g,
                w,
                &names::block(group, block),
                x,
                (n_in, out),
                DECODER_KERNELS,
                post_gain,
            )?;
        }
        width = out;
        if group < GROUP_COUNT {
            x = upsample(&mut g, group, x)?;
        }
    }
    let x = g.scoped("blocks/output/relu", |g| g.node1(Relu, &[x]))?;
    let stats = conv(
        &mut g,
        w,
        &names::output_conv(),
        x,
        (width, 2 * cfg.output_channels, 1),
    )?;
    let pixels = g.scoped("unmap_pixels", |g| {
        let c = cfg.output_channels as i64;
        let starts = g.const_i64(&[0])?;
        let ends = g.const_i64(&[c])?;
        let axes = g.const_i64(&[1])?;
        let mu = g.node1(Slice, &[stats, starts, ends, axes])?;
        let x = g.node1(Sigmoid, &[mu])?;
        let eps = g.scalar_float(LOGIT_LAPLACE_EPS, DType::F32)?;
        let scale = g.scalar_float(1.0 - 2.0 * LOGIT_LAPLACE_EPS, DType::F32)?;
        let zero = g.scalar_float(0.0, DType::F32)?;
        let one = g.scalar_float(1.0, DType::F32)?;
        let x = g.node1(Sub, &[x, eps])?;
        let x = g.node1(Div, &[x, scale])?;
        g.node1(Clip, &[x, zero, one])
    })?;
    g.output_as(
        dvae::PIXELS,
        pixels,
        dims![
            d::BATCH,
            cfg.output_channels,
            format!("{}*{DOWNSAMPLE}", d::GRID_HEIGHT),
            format!("{}*{DOWNSAMPLE}", d::GRID_WIDTH)
        ],
    )?;
    Ok(g)
}

/// `blocks.input` on one-hot tokens, as a table lookup.
fn embed_tokens(
    g: &mut GraphBuilder,
    w: &mut Weights,
    cfg: &DecoderConfig,
    tokens: Value,
) -> Result<Value> {
    let prefix = names::input_conv();
    let weight = w.take_f32(&names::weight(&prefix), &[cfg.n_init, cfg.vocab_size, 1, 1])?;
    let bias = w.take_f32(&names::bias(&prefix), &[cfg.n_init])?;
    let table = transpose_2d(&weight.to_f32_vec()?, cfg.n_init, cfg.vocab_size);
    let table = crate::tensor::TensorData::from_f32(vec![cfg.vocab_size, cfg.n_init], &table)?;
    let table = g.initializer(&names::weight(&prefix), table)?;
    let bias = g.initializer(&names::bias(&prefix), bias)?;
    g.scoped(&names::scope(&prefix), |g| {
        let x = g.node1(Gather { axis: 0 }, &[table, tokens])?;
        let x = g.node1(Add, &[x, bias])?;
        g.node1(
            Transpose {
                perm: vec![0, 3, 1, 2],
            },
            &[x],
        )
    })
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose_2d(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

fn upsample(g: &mut GraphBuilder, group: usize, x: Value) -> Result<Value> {
    g.scoped(&format!("blocks/group_{group}/upsample"), |g| {
        let scales = g.const_f32(vec![4], &[1.0, 1.0, 2.0, 2.0])?;
        let out = g.node_opt(ResizeNearest, &[Some(x), None, Some(scales)])?;
        out.first()
            .copied()
            .ok_or_else(|| ExportError::node("upsample", "Resize produced no output"))
    })
}
