//! DALLE-pytorch's own `DiscreteVAE` (lucidrains/DALLE-pytorch v1.6.6,
//! <https://github.com/lucidrains/DALLE-pytorch/blob/1.6.6/dalle_pytorch/dalle_pytorch.py>,
//! classes `ResBlock` and `DiscreteVAE`; facts: `shared/reference/models.md` §2.6), exported to
//! the same bundle contract as OpenAI's dVAE (`dalle_bundle::io::dvae`):
//!
//! - `dvae_encoder.onnx`: `pixels` f32 `[batch, C, height, width]` in [0, 1] → `image_tokens`
//!   i64 `[batch, height/2^L, width/2^L]` — `norm`, encoder, argmax (see [`encoder`]).
//! - `dvae_decoder.onnx`: `image_tokens` → `pixels` in [0, 1] — codebook `Gather`, decoder,
//!   then the inverse of `norm` and a clamp (see [`decoder`]). The reference's `decode` stops
//!   before de-normalizing; tests compare against its output de-normalized the same way.
//!
//! Hyperparameters come from a `train_dalle.py` checkpoint's `vae_params` or a `train_vae.py`
//! checkpoint's `hparams` ([`DiscreteVaeConfig::from_vae_params`]); weights are the VAE's state
//! dict (`codebook.weight`, `encoder.*`, `decoder.*`; inside a DALLE checkpoint the caller strips
//! the `vae.` prefix). Gumbel-softmax temperature, straight-through and reinmax only matter in
//! training (`forward` with sampling) and are ignored; inference is deterministic.

pub mod blocks;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod names;

pub use config::{DiscreteVaeConfig, Normalization};

use crate::bundle_writer::GraphEntry;
use crate::checkpoint::{ClassAllowList, read_pytorch, tensor_dict};
use crate::error::{ExportError, Result};
use crate::graph::GraphBuilder;
use crate::weights::Weights;
use dalle_bundle::attributes::discrete_vae as attr;
use dalle_bundle::io::dims as d;
use dalle_bundle::{DimRange, DvaeAttributes, GraphRole};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// Builds `dvae_encoder`, taking the `encoder.*` tensors from `w` (the caller calls
/// [`Weights::finish`] once both halves are built).
pub fn encoder_entry(cfg: &DiscreteVaeConfig, w: &mut Weights) -> Result<GraphEntry> {
    let graph = encoder::build(cfg, w)?;
    Ok(entry(GraphRole::DvaeEncoder, graph, cfg))
}

/// Builds `dvae_decoder`, taking `codebook.weight` and the `decoder.*` tensors from `w`.
pub fn decoder_entry(cfg: &DiscreteVaeConfig, w: &mut Weights) -> Result<GraphEntry> {
    let graph = decoder::build(cfg, w)?;
    Ok(entry(GraphRole::DvaeDecoder, graph, cfg))
}

/// Reads a `train_vae.py` checkpoint: `{'hparams': DiscreteVAE kwargs, 'weights': state_dict}`.
/// Returns the config and all of its weights (no prefix).
pub fn load_train_vae(path: &Path) -> Result<(DiscreteVaeConfig, Weights)> {
    let source = path.display().to_string();
    let root = read_pytorch(path, &ClassAllowList::none())?;
    let hparams = root.get("hparams").ok_or_else(|| {
        ExportError::Weights(format!(
            "{source}: no `hparams`: not a DALLE-pytorch train_vae.py checkpoint"
        ))
    })?;
    let cfg = DiscreteVaeConfig::from_vae_params(hparams).map_err(|e| prefix_error(&source, e))?;
    let weights = root.get("weights").ok_or_else(|| {
        ExportError::Weights(format!(
            "{source}: no `weights` (a DeepSpeed checkpoint keeps them in a separate directory)"
        ))
    })?;
    let tensors = tensor_dict(weights)?;
    Ok((cfg, Weights::new(source, tensors)))
}

fn prefix_error(source: &str, e: ExportError) -> ExportError {
    match e {
        ExportError::Unsupported(m) => ExportError::Unsupported(format!("{source}: {m}")),
        ExportError::Weights(m) => ExportError::Weights(format!("{source}: {m}")),
        other => other,
    }
}

fn entry(role: GraphRole, graph: GraphBuilder, cfg: &DiscreteVaeConfig) -> GraphEntry {
    let down = cfg.downsample() as u64;
    let size = cfg.image_size as u64;
    let fmap = cfg.fmap() as u64;
    let mut dim_ranges = BTreeMap::new();
    dim_ranges.insert(d::BATCH.to_string(), DimRange::new(1, 1, 16));
    match role {
        GraphRole::DvaeEncoder => {
            dim_ranges.insert(d::HEIGHT.to_string(), DimRange::new(down, size, 2 * size));
            dim_ranges.insert(d::WIDTH.to_string(), DimRange::new(down, size, 2 * size));
        }
        _ => {
            dim_ranges.insert(d::GRID_HEIGHT.to_string(), DimRange::new(1, fmap, 2 * fmap));
            dim_ranges.insert(d::GRID_WIDTH.to_string(), DimRange::new(1, fmap, 2 * fmap));
        }
    }
    let mut attributes = DvaeAttributes {
        vocab_size: cfg.num_tokens as u64,
        downsample: down,
        image_size: Some(size),
    }
    .to_attributes();
    for (name, value) in [
        (attr::NUM_LAYERS, cfg.num_layers),
        (attr::NUM_RESNET_BLOCKS, cfg.num_resnet_blocks),
        (attr::HIDDEN_DIM, cfg.hidden_dim),
        (attr::CODEBOOK_DIM, cfg.codebook_dim),
        (attr::CHANNELS, cfg.channels),
    ] {
        attributes.insert(name.into(), json!(value));
    }
    attributes.insert(
        attr::NORMALIZATION.into(),
        match &cfg.normalization {
            Some(n) => json!({ "mean": n.mean, "std": n.std }),
            None => serde_json::Value::Null,
        },
    );
    GraphEntry {
        role,
        graph,
        dim_ranges,
        attributes,
    }
}
