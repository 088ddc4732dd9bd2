//! The VQGAN image encoder (`dvae_encoder.onnx`, taming only): pixels in [0, 1] → codes.
//!
//! ```text
//! pixels f32[batch, in_channels, height, width] in [0, 1]
//!   → 2·x − 1                                   (DALLE-pytorch VQGanVAE.get_codebook_indices)
//!   → encoder.conv_in 3×3 → ch
//!   → encoder.down[0 … levels−1]: num_res_blocks ResnetBlocks (each followed by an AttnBlock
//!     where the level's resolution is in attn_resolutions), Downsample on every level but the
//!     last (pad right/bottom by 1, 3×3 stride 2)
//!   → encoder.mid: block_1 → attn_1 → block_2 → norm_out → swish → conv_out 3×3 → z_channels
//!   → quant_conv 1×1 → embed_dim
//!   → VectorQuantizer2: argmin_j |z − e_j|² = argmax_j (2 z·e_j − |e_j|²)   (|z|² is common)
//!     GumbelQuantize:   argmax_j quantize.proj(z)_j   (the noise-free mode: the reference
//!                       adds Gumbel noise even in eval mode, so its codes are a random draw)
//!   → image_tokens i64[batch, height/f, width/f], f = 2^(levels−1)
//! ```

use super::blocks::{self, Ctx};
use super::config::{VqKind, VqganConfig};
use super::names;
use crate::dims;
use crate::error::{ExportError, Result};
use crate::graph::ops::{Add, ArgMax, MatMul, Mul, Sub, Transpose};
use crate::graph::{GraphBuilder, Value};
use crate::tensor::TensorData;
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{dims as d, dvae};

/// Builds the encoder graph, taking every encoder-side weight from `w`.
pub fn build(cfg: &VqganConfig, w: &mut Weights) -> Result<GraphBuilder> {
    cfg.validate()?;
    if cfg.kind == VqKind::MinDalle {
        return Err(ExportError::Unsupported(
            "min-dalle's detokenizer has no encoder".into(),
        ));
    }
    let mut g = GraphBuilder::new("vqgan_encoder");
    let pixels = g.input(
        dvae::PIXELS,
        DType::F32,
        dims![d::BATCH, cfg.in_channels, d::HEIGHT, d::WIDTH],
    )?;
    let x = g.scoped("pixels", |g| {
        let two = g.scalar_float(2.0, DType::F32)?;
        let one = g.scalar_float(1.0, DType::F32)?;
        let x = g.node1(Mul, &[pixels, two])?;
        g.node1(Sub, &[x, one])
    })?;
    let mut c = Ctx {
        w,
        eps: cfg.norm_eps,
    };
    let h = body(&mut g, &mut c, cfg, x)?;
    let z = blocks::conv(
        &mut g,
        &mut c,
        names::QUANT_CONV,
        h,
        (cfg.z_channels, cfg.embed_dim, 1),
    )?;
    let codes = match cfg.kind {
        VqKind::Gumbel => {
            let logits = blocks::conv(
                &mut g,
                &mut c,
                names::GUMBEL_PROJ,
                z,
                (cfg.z_channels, cfg.n_embed, 1),
            )?;
            g.scoped("quantize", |g| {
                g.node1(
                    ArgMax {
                        axis: 1,
                        keepdims: false,
                    },
                    &[logits],
                )
            })?
        }
        _ => nearest_code(&mut g, &mut c, cfg, z)?,
    };
    let f = cfg.downsample();
    g.output_as(
        dvae::IMAGE_TOKENS,
        codes,
        dims![
            d::BATCH,
            format!("{}/{f}", d::HEIGHT),
            format!("{}/{f}", d::WIDTH)
        ],
    )?;
    Ok(g)
}

/// `Encoder.forward` from pixels in [−1, 1] to `conv_out`'s `[B, z_channels, h, w]`.
fn body(g: &mut GraphBuilder, c: &mut Ctx<'_>, cfg: &VqganConfig, x: Value) -> Result<Value> {
    let net = names::ENCODER;
    let mut width = cfg.ch;
    let mut x = blocks::conv(g, c, &names::conv_in(net), x, (cfg.in_channels, width, 3))?;
    let last = cfg.levels() - 1;
    for level in 0..=last {
        let prefix = names::level(net, level);
        let out = cfg.level_channels(level);
        for j in 0..cfg.num_res_blocks {
            x = blocks::resnet_block(g, c, &names::block(&prefix, j), x, (width, out))?;
            width = out;
            if cfg.has_attention(level) {
                x = blocks::attn_block(g, c, &names::attn(&prefix, j), x, width)?;
            }
        }
        if level != last {
            x = blocks::downsample(g, c, &names::downsample(&prefix), x, width)?;
        }
    }
    x = blocks::resnet_block(g, c, &names::mid(net, "block_1"), x, (width, width))?;
    x = blocks::attn_block(g, c, &names::mid(net, "attn_1"), x, width)?;
    x = blocks::resnet_block(g, c, &names::mid(net, "block_2"), x, (width, width))?;
    let x = blocks::norm_swish(g, c, &names::norm_out(net), x, width)?;
    blocks::conv(g, c, &names::conv_out(net), x, (width, cfg.z_channels, 3))
}

/// `VectorQuantizer2`'s nearest codebook entry of each position of `z` `[B, E, h, w]`.
fn nearest_code(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    cfg: &VqganConfig,
    z: Value,
) -> Result<Value> {
    let name = names::codebook(cfg.kind);
    let (n, e) = (cfg.n_embed, cfg.embed_dim);
    let book = c.w.take_f32(name, &[n, e])?;
    let values = book.to_f32_vec()?;
    // 2·eᵀ [E, n] and −|e_j|² [n], folded at export time (f64 sums, rounded once).
    let mut twice_t = vec![0.0f32; values.len()];
    let mut neg_norms = vec![0.0f32; n];
    for (j, row) in values.chunks_exact(e).enumerate() {
        for (k, v) in row.iter().enumerate() {
            twice_t[k * n + j] = 2.0 * v;
        }
        neg_norms[j] = -(row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>() as f32);
    }
    let twice_t = g.initializer(
        &format!("{name}/twice_transposed"),
        TensorData::from_f32(vec![e, n], &twice_t)?,
    )?;
    let neg_norms = g.initializer(
        &format!("{name}/negative_squared_norms"),
        TensorData::from_f32(vec![n], &neg_norms)?,
    )?;
    g.scoped("quantize", |g| {
        let z = g.node1(
            Transpose {
                perm: vec![0, 2, 3, 1],
            },
            &[z],
        )?;
        let dots = g.node1(MatMul, &[z, twice_t])?;
        let score = g.node1(Add, &[dots, neg_norms])?;
        g.node1(
            ArgMax {
                axis: -1,
                keepdims: false,
            },
            &[score],
        )
    })
}
