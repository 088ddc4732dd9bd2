//! Reading VQGAN checkpoints: min-dalle's `detoker.pt` (a plain state dict whose geometry is
//! read off the tensor shapes) and taming-transformers Lightning `.ckpt` files (their
//! `state_dict`, with the geometry from the training YAML).

use super::config::{PixelMap, VqKind, VqganConfig};
use super::names;
use crate::checkpoint::{ClassAllowList, read_pytorch, tensor_dict};
use crate::error::{ExportError, Result};
use crate::weights::Weights;
use std::collections::BTreeMap;
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

/// The Lightning callback classes a taming `.ckpt` may name (as the keys of its `callbacks`
/// dict in Lightning 1.x); read as inert records, never used.
pub const LIGHTNING_CLASSES: &[&str] = &[
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
];

/// A taming VQGAN split into its two graphs' weights.
#[derive(Debug)]
pub struct TamingModel {
    pub cfg: VqganConfig,
    /// `encoder.*`, `quant_conv.*`, and the codebook (vector quantizer) or `quantize.proj.*`.
    pub encoder: Weights,
    /// The codebook, `post_quant_conv.*`, `decoder.*`.
    pub decoder: Weights,
}

/// Reads a taming-transformers Lightning checkpoint (`state_dict` of a `.ckpt`) with its
/// training config (`.yaml`).
pub fn load_taming(ckpt: &Path, yaml: &Path) -> Result<TamingModel> {
    let cfg = super::yaml::load(yaml)?;
    taming_from_weights(cfg, load_taming_state_dict(ckpt)?)
}

/// The `state_dict` of a taming Lightning checkpoint, every tensor (losses included).
pub fn load_taming_state_dict(ckpt: &Path) -> Result<Weights> {
    let root = read_pytorch(ckpt, &ClassAllowList::none().with(LIGHTNING_CLASSES))
        .map_err(|e| ExportError::from(e).context(format!("reading {}", ckpt.display())))?;
    let state = root.get("state_dict").ok_or_else(|| {
        ExportError::Weights(format!(
            "{}: no `state_dict` entry: not a PyTorch Lightning checkpoint of a taming VQGAN",
            ckpt.display()
        ))
    })?;
    let tensors = tensor_dict(state)?;
    Ok(Weights::new(ckpt.display().to_string(), tensors))
}

/// Splits a taming `VQModel`/`GumbelVQ` state dict (top-level names, e.g. a DALLE-pytorch
/// checkpoint's `vae.model.*` with the prefix stripped) into the encoder's and the decoder's
/// weights. The training losses' tensors (`loss.*`: LPIPS, discriminator) are dropped; any
/// other tensor the two graphs do not use is an error when they are built.
pub fn taming_from_weights(cfg: VqganConfig, mut all: Weights) -> Result<TamingModel> {
    let src = all.source().to_string();
    let _losses = all.split_prefix(names::LOSS_PREFIX, format!("{src} (loss.)"));
    let codebook = names::codebook(cfg.kind);
    if cfg.kind == VqKind::MinDalle {
        return Err(ExportError::Unsupported(
            "min-dalle's detokenizer is not a taming checkpoint".into(),
        ));
    }
    let other = match cfg.kind {
        VqKind::Gumbel => names::codebook(VqKind::VectorQuantizer),
        _ => names::codebook(VqKind::Gumbel),
    };
    if !all.contains(codebook) && all.contains(other) {
        return Err(ExportError::Weights(format!(
            "{src}: has `{other}` but the config's model.target says {:?} (codebook `{codebook}`): \
             the checkpoint and the YAML belong to different models",
            cfg.kind
        )));
    }
    let mut decoder = BTreeMap::new();
    for prefix in [names::DECODER, names::POST_QUANT_CONV] {
        let part = all.split_prefix(&format!("{prefix}."), src.clone());
        decoder.extend(
            part.into_map()
                .into_iter()
                .map(|(k, v)| (format!("{prefix}.{k}"), v)),
        );
    }
    // The decoder looks codes up in the codebook; the vector quantizer's encoder needs it too
    // (nearest entry), Gumbel's encoder only its projection `quantize.proj`.
    match cfg.kind {
        VqKind::Gumbel => decoder.extend(
            all.split_prefix(codebook, src.clone())
                .into_map()
                .into_iter()
                .map(|(rest, t)| (format!("{codebook}{rest}"), t)),
        ),
        _ => {
            if let Some(t) = all.get(codebook) {
                decoder.insert(codebook.to_string(), t.clone());
            }
        }
    }
    Ok(TamingModel {
        cfg,
        encoder: Weights::new(format!("{src} (encoder side)"), all.into_map()),
        decoder: Weights::new(format!("{src} (decoder side)"), decoder),
    })
}
