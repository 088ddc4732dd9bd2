//! Reading VQGAN checkpoints: min-dalle's `detoker.pt` (a plain state dict whose geometry is
//! read off the tensor shapes) and taming-transformers Lightning `.ckpt` files (their
//! `state_dict`, with the geometry from the training YAML).

use super::config::{PixelMap, VqKind, VqganConfig};
use super::names;
use crate::checkpoint::{ClassAllowList, read_pytorch, tensor_dict};
use crate::error::{ExportError, Result};
use crate::weights::Weights;
use std::path::Path;

/// The most resolution levels a checkpoint may describe (taming's published models have 4–5).
const MAX_LEVELS: usize = 16;

/// min-dalle's token grid side: `VQGanDetokenizer.forward` views codes as 16 × 16.
const MIN_DALLE_GRID: usize = 16;

/// Reads `detoker.pt`; returns its geometry and its weights.
pub fn load_min_dalle_detoker(path: &Path) -> Result<(VqganConfig, Weights)> {
    let root = read_pytorch(path, &ClassAllowList::none())?;
    let tensors = tensor_dict(&root)?;
    let w = Weights::new(path.display().to_string(), tensors);
    let cfg = infer_min_dalle_config(&w)?;
    Ok((cfg, w))
}

/// The geometry of a min-dalle detokenizer state dict, from its shapes: codebook
/// `embedding.weight`, the level widths of `decoder.up.{i}.block.0.conv1`, the blocks per level
/// and the levels with attention. The resolution is min-dalle's 16-code grid times the
/// upsampling; GroupNorm epsilon and the `clip(0, 1)` output are min-dalle's.
pub fn infer_min_dalle_config(w: &Weights) -> Result<VqganConfig> {
    let src = w.source();
    let codebook = shape(w, names::codebook(VqKind::MinDalle), 2)?;
    if w.contains(names::codebook(VqKind::VectorQuantizer))
        || w.contains(names::codebook(VqKind::Gumbel))
    {
        return Err(ExportError::Weights(format!(
            "{src}: holds a taming `quantize.*` codebook: this is a taming-transformers VQGAN \
             state dict, not min-dalle's detoker.pt"
        )));
    }
    let (n_embed, embed_dim) = (codebook[0], codebook[1]);
    let post = shape(w, &names::weight(names::POST_QUANT_CONV), 4)?;
    let z_channels = post[0];
    let net = names::DECODER;
    let level_conv = |i: usize| {
        names::weight(&names::child(
            &names::block(&names::level(net, i), 0),
            "conv1",
        ))
    };
    let levels = (0..=MAX_LEVELS)
        .take_while(|&i| w.contains(&level_conv(i)))
        .count();
    if levels == 0 || levels > MAX_LEVELS {
        return Err(ExportError::Weights(format!(
            "{src}: found {levels} decoder levels (`{}` …); expected 1 to {MAX_LEVELS}",
            level_conv(0)
        )));
    }
    let mut widths = Vec::with_capacity(levels);
    for i in 0..levels {
        widths.push(shape(w, &level_conv(i), 4)?[0]);
    }
    let ch = widths.iter().copied().fold(0, gcd);
    if ch == 0 {
        return Err(ExportError::Weights(format!(
            "{src}: a decoder level has 0 channels"
        )));
    }
    let level0 = names::level(net, 0);
    let blocks = (0..)
        .take_while(|&j| {
            w.contains(&names::weight(&names::child(
                &names::block(&level0, j),
                "conv1",
            )))
        })
        .count();
    let num_res_blocks = blocks.checked_sub(1).filter(|&n| n > 0).ok_or_else(|| {
        ExportError::Weights(format!(
            "{src}: decoder level 0 has {blocks} ResnetBlocks; expected at least 2"
        ))
    })?;
    let resolution = (MIN_DALLE_GRID << (levels - 1)).max(MIN_DALLE_GRID);
    let attn_resolutions = (0..levels)
        .filter(|&i| {
            w.contains(&names::weight(&names::child(
                &names::attn(&names::level(net, i), 0),
                "q",
            )))
        })
        .map(|i| resolution >> i)
        .collect();
    let out = shape(w, &names::weight(&names::conv_out(net)), 4)?;
    Ok(VqganConfig {
        kind: VqKind::MinDalle,
        n_embed,
        embed_dim,
        z_channels,
        ch,
        ch_mult: widths.iter().map(|c| c / ch).collect(),
        num_res_blocks,
        attn_resolutions,
        resolution,
        in_channels: 3,
        out_ch: out[0],
        double_z: false,
        norm_eps: 1e-5,
        pixels: PixelMap::Clip01,
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The shape of `name`, which must exist with rank `rank`.
fn shape<'a>(w: &'a Weights, name: &str, rank: usize) -> Result<&'a [usize]> {
    let s = w
        .shape_of(name)
        .ok_or_else(|| ExportError::Weights(format!("{}: missing tensor `{name}`", w.source())))?;
    if s.len() != rank {
        return Err(ExportError::Weights(format!(
            "{}: tensor `{name}` has shape {s:?}, expected rank {rank}",
            w.source()
        )));
    }
    Ok(s)
}
