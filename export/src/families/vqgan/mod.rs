//! VQGAN image codecs: one builder for min-dalle's detokenizer (`detoker.pt`) and for
//! taming-transformers `VQModel` / `GumbelVQ` Lightning checkpoints (`.ckpt` + `.yaml`, as
//! DALLE-pytorch's `VQGanVAE` loads them). Facts: `shared/reference/models.md` §3.6,
//! `shared/reference/gpu-and-minidalle.md` §4.3 and §5.
//!
//! Both write the bundle's dVAE roles with the dVAE I/O contract (`image_tokens` ↔ `pixels` in
//! [0, 1]), [`DvaeAttributes`] (`vocab_size` = `n_embed`, `downsample` = 2^(levels−1)) plus
//! [`VqganAttributes`], so the runtime's codec runs them unchanged. The two naming schemes
//! differ only in the codebook (`names.rs`); the geometry is read from the YAML (taming) or
//! from the tensor shapes (min-dalle, whose module hard-codes it), and every tensor of the
//! model must be used.
//!
//! Layout: `config.rs` (geometry), `names.rs` (both schemes), `blocks.rs` (ResnetBlock,
//! AttnBlock, up/downsampling), `decoder.rs`, `encoder.rs`, `yaml.rs` (taming's config file),
//! `load.rs` (reading both checkpoint formats).

mod blocks;
pub mod config;
pub mod decoder;
mod load;
pub mod names;

pub use config::{PixelMap, VqKind, VqganConfig};
pub use load::{infer_min_dalle_config, load_min_dalle_detoker};

use crate::bundle_writer::{BundleWriter, GraphEntry, source_file};
use crate::error::Result;
use crate::graph::GraphBuilder;
use crate::weights::Weights;
use dalle_bundle::io::dims as d;
use dalle_bundle::{DimRange, DvaeAttributes, GraphRole, VqKindAttribute, VqganAttributes};
use std::collections::BTreeMap;
use std::path::Path;

/// The decoder graph (role `dvae_decoder`) from `w`, which must hold exactly the decoder side:
/// codebook, `post_quant_conv.*`, `decoder.*`.
pub fn decoder_entry(cfg: &VqganConfig, mut w: Weights) -> Result<GraphEntry> {
    let graph = decoder::build(cfg, &mut w)?;
    w.finish()?;
    Ok(entry(GraphRole::DvaeDecoder, graph, cfg))
}

/// min-dalle's detokenizer as the bundle's `dvae_decoder` graph: reads `detoker.pt` (a plain
/// `torch.save(state_dict)`), infers its geometry from the tensor shapes and builds the graph.
/// Codes `[batch, 16, 16]` (any grid; a seamless `16g × 16g` grid too) → pixels `[batch, 3,
/// 256, 256]` in [0, 1] (min-dalle's `clip(0, 1)`, before its `· 255`).
pub fn min_dalle_decoder_entry(detoker: &Path) -> Result<GraphEntry> {
    let (cfg, w) = load_min_dalle_detoker(detoker)
        .map_err(|e| e.context(format!("reading {}", detoker.display())))?;
    decoder_entry(&cfg, w)
}

/// Adds min-dalle's detokenizer to `writer`: `detoker.pt` to the provenance (role
/// `detokenizer`) and its `dvae_decoder` graph ([`min_dalle_decoder_entry`]).
pub fn add_min_dalle_detoker(writer: &mut BundleWriter, detoker: &Path) -> Result<()> {
    let source = source_file("detokenizer", detoker)?;
    let entry = min_dalle_decoder_entry(detoker)?;
    writer.manifest_mut().provenance.sources.push(source);
    writer.add_graph(entry)?;
    Ok(())
}

/// The graph's manifest entry: dims, the codec's attributes and the geometry.
fn entry(role: GraphRole, graph: GraphBuilder, cfg: &VqganConfig) -> GraphEntry {
    let f = cfg.downsample() as u64;
    let grid = (cfg.resolution as u64 / f).max(1);
    let mut dim_ranges = BTreeMap::new();
    dim_ranges.insert(d::BATCH.to_string(), DimRange::new(1, 1, 16));
    match role {
        GraphRole::DvaeEncoder => {
            for dim in [d::HEIGHT, d::WIDTH] {
                dim_ranges.insert(dim.to_string(), DimRange::new(f, grid * f, 4 * grid * f));
            }
        }
        _ => {
            for dim in [d::GRID_HEIGHT, d::GRID_WIDTH] {
                dim_ranges.insert(dim.to_string(), DimRange::new(1, grid, 4 * grid));
            }
        }
    }
    let mut attributes = DvaeAttributes {
        vocab_size: cfg.n_embed as u64,
        downsample: f,
        image_size: Some(cfg.resolution as u64),
    }
    .to_attributes();
    attributes.extend(vqgan_attributes(cfg).to_attributes());
    GraphEntry {
        role,
        graph,
        dim_ranges,
        attributes,
    }
}

fn vqgan_attributes(cfg: &VqganConfig) -> VqganAttributes {
    VqganAttributes {
        vq_kind: match cfg.kind {
            VqKind::VectorQuantizer => VqKindAttribute::VectorQuantizer,
            VqKind::Gumbel => VqKindAttribute::Gumbel,
            VqKind::MinDalle => VqKindAttribute::MinDalle,
        },
        embed_dim: cfg.embed_dim as u64,
        z_channels: cfg.z_channels as u64,
        ch: cfg.ch as u64,
        ch_mult: cfg.ch_mult.iter().map(|&m| m as u64).collect(),
        num_res_blocks: cfg.num_res_blocks as u64,
        attn_resolutions: cfg.attn_resolutions.iter().map(|&r| r as u64).collect(),
    }
}
