//! The VQGAN image decoder (`dvae_decoder.onnx`): codes → pixels in [0, 1].
//!
//! ```text
//! image_tokens i64[batch, grid_height, grid_width]
//!   → Gather(codebook, tokens) → [B, h, w, embed_dim] → Transpose to NCHW   (no one-hot)
//!   → post_quant_conv 1×1 embed_dim → z_channels
//!   → decoder.conv_in 3×3 → ch·ch_mult[last]
//!   → decoder.mid: block_1 → attn_1 → block_2
//!   → decoder.up[levels−1 … 0]: num_res_blocks+1 ResnetBlocks (each followed by an AttnBlock
//!     where the level's resolution is in attn_resolutions), Upsample on every level but 0
//!   → decoder.norm_out → swish → decoder.conv_out 3×3 → out_ch
//!   → clip(x, 0, 1) (min-dalle) or (clamp(x, −1, 1) + 1)·0.5 (taming / VQGanVAE.decode)
//!   → pixels f32[batch, out_ch, f·grid_height, f·grid_width], f = 2^(levels−1)
//! ```
//!
//! Attention placement follows the configured `resolution`, as the reference decides it when the
//! module is built, so any grid size runs the same layers.

use super::blocks::{self, Ctx};
use super::config::{PixelMap, VqganConfig};
use super::names;
use crate::dims;
use crate::error::Result;
use crate::graph::ops::{Add, Clip, Gather, Mul, Transpose};
use crate::graph::{GraphBuilder, Value};
use crate::weights::Weights;
use dalle_bundle::DType;
use dalle_bundle::io::{dims as d, dvae};

/// Builds the decoder graph, taking every decoder-side weight from `w` (the caller checks
/// that nothing is left).
pub fn build(cfg: &VqganConfig, w: &mut Weights) -> Result<GraphBuilder> {
    cfg.validate()?;
    let mut g = GraphBuilder::new("vqgan_decoder");
    let tokens = g.input(
        dvae::IMAGE_TOKENS,
        DType::I64,
        dims![d::BATCH, d::GRID_HEIGHT, d::GRID_WIDTH],
    )?;
    let mut c = Ctx {
        w,
        eps: cfg.norm_eps,
    };
    let z = embed_codes(&mut g, &mut c, cfg, tokens)?;
    let z = blocks::conv(
        &mut g,
        &mut c,
        names::POST_QUANT_CONV,
        z,
        (cfg.embed_dim, cfg.z_channels, 1),
    )?;
    let x = body(&mut g, &mut c, cfg, z)?;
    let pixels = g.scoped("pixels", |g| map_pixels(g, cfg.pixels, x))?;
    let f = cfg.downsample();
    g.output_as(
        dvae::PIXELS,
        pixels,
        dims![
            d::BATCH,
            cfg.out_ch,
            format!("{}*{f}", d::GRID_HEIGHT),
            format!("{}*{f}", d::GRID_WIDTH)
        ],
    )?;
    Ok(g)
}

/// The codebook lookup, NCHW.
fn embed_codes(
    g: &mut GraphBuilder,
    c: &mut Ctx<'_>,
    cfg: &VqganConfig,
    tokens: Value,
) -> Result<Value> {
    let name = names::codebook(cfg.kind);
    let table = c.w.take_f32(name, &[cfg.n_embed, cfg.embed_dim])?;
    let table = g.initializer(name, table)?;
    g.scoped("codebook", |g| {
        let z = g.node1(Gather { axis: 0 }, &[table, tokens])?;
        g.node1(
            Transpose {
                perm: vec![0, 3, 1, 2],
            },
            &[z],
        )
    })
}

/// `Decoder.forward` from `z` `[B, z_channels, h, w]` to the raw `conv_out` output.
fn body(g: &mut GraphBuilder, c: &mut Ctx<'_>, cfg: &VqganConfig, z: Value) -> Result<Value> {
    let net = names::DECODER;
    let top = cfg.levels() - 1;
    let mut width = cfg.level_channels(top);
    let mut x = blocks::conv(g, c, &names::conv_in(net), z, (cfg.z_channels, width, 3))?;
    x = blocks::resnet_block(g, c, &names::mid(net, "block_1"), x, (width, width))?;
    x = blocks::attn_block(g, c, &names::mid(net, "attn_1"), x, width)?;
    x = blocks::resnet_block(g, c, &names::mid(net, "block_2"), x, (width, width))?;
    for level in (0..=top).rev() {
        let prefix = names::level(net, level);
        let out = cfg.level_channels(level);
        for j in 0..=cfg.num_res_blocks {
            x = blocks::resnet_block(g, c, &names::block(&prefix, j), x, (width, out))?;
            width = out;
            if cfg.has_attention(level) {
                x = blocks::attn_block(g, c, &names::attn(&prefix, j), x, width)?;
            }
        }
        if level != 0 {
            x = blocks::upsample(g, c, &names::upsample(&prefix), x, width)?;
        }
    }
    let x = blocks::norm_swish(g, c, &names::norm_out(net), x, width)?;
    blocks::conv(g, c, &names::conv_out(net), x, (width, cfg.out_ch, 3))
}

fn map_pixels(g: &mut GraphBuilder, map: PixelMap, x: Value) -> Result<Value> {
    let zero = g.scalar_float(0.0, DType::F32)?;
    let one = g.scalar_float(1.0, DType::F32)?;
    match map {
        PixelMap::Clip01 => g.node1(Clip, &[x, zero, one]),
        PixelMap::FromSigned => {
            let minus_one = g.scalar_float(-1.0, DType::F32)?;
            let half = g.scalar_float(0.5, DType::F32)?;
            let x = g.node1(Clip, &[x, minus_one, one])?;
            let x = g.node1(Add, &[x, one])?;
            g.node1(Mul, &[x, half])
        }
    }
}
