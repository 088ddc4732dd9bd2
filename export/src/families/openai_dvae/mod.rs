//! OpenAI's released dVAE (`encoder.pkl` / `decoder.pkl`, PyPI `dall-e` 0.1, openai/DALL-E
//! `5be4b23`; paper: Ramesh et al. 2021, appendix A; facts: `shared/reference/models.md` §1).
//!
//! The released files are whole pickled `nn.Module`s. They are read with the restricted
//! PyTorch reader (no code runs): the module classes are inert records, hyperparameters come
//! from their attributes, and the weights from their `_parameters`. The same weights as
//! safetensors (state-dict key names) are accepted too; the hyperparameters are then inferred
//! from tensor shapes.

pub mod blocks;
mod bundle;
pub mod config;
pub mod decoder;
pub mod encoder;
mod load;
pub mod names;
mod random;

pub use bundle::{BundleOptions, Half, add_to_bundle};
pub use config::{DecoderConfig, EncoderConfig};
pub use load::{decoder_from_state_dict, encoder_from_state_dict, load_decoder, load_encoder};
pub use random::{random_decoder, random_encoder};

use crate::bundle_writer::GraphEntry;
use crate::error::Result;
use crate::graph::GraphBuilder;
use crate::weights::Weights;
use dalle_bundle::attributes::openai_dvae as attr;
use dalle_bundle::io::dims as d;
use dalle_bundle::{DimRange, DvaeAttributes, GraphRole};
use serde_json::json;
use std::collections::BTreeMap;

/// The image size the released dVAE was trained on (manifest attribute `image_size`).
pub const IMAGE_SIZE: u64 = 256;

/// The encoder's module class.
pub const ENCODER_CLASS: &str = "dall_e.encoder.Encoder";
/// The decoder's module class.
pub const DECODER_CLASS: &str = "dall_e.decoder.Decoder";

/// Builds the encoder graph and checks that every weight was used.
pub fn encoder_entry(cfg: &EncoderConfig, mut w: Weights) -> Result<GraphEntry> {
    let graph = encoder::build(cfg, &mut w)?;
    w.finish()?;
    Ok(entry(
        GraphRole::DvaeEncoder,
        graph,
        cfg.vocab_size,
        cfg.n_hid,
        cfg.n_blk_per_group,
    ))
}

/// Builds the decoder graph and checks that every weight was used.
pub fn decoder_entry(cfg: &DecoderConfig, mut w: Weights) -> Result<GraphEntry> {
    let graph = decoder::build(cfg, &mut w)?;
    w.finish()?;
    let mut e = entry(
        GraphRole::DvaeDecoder,
        graph,
        cfg.vocab_size,
        cfg.n_hid,
        cfg.n_blk_per_group,
    );
    e.attributes.insert(attr::N_INIT.into(), json!(cfg.n_init));
    Ok(e)
}

fn entry(
    role: GraphRole,
    graph: GraphBuilder,
    vocab: usize,
    n_hid: usize,
    n_blk: usize,
) -> GraphEntry {
    let mut dim_ranges = BTreeMap::new();
    dim_ranges.insert(d::BATCH.to_string(), DimRange::new(1, 1, 16));
    match role {
        GraphRole::DvaeEncoder => {
            dim_ranges.insert(d::HEIGHT.to_string(), DimRange::new(8, 256, 512));
            dim_ranges.insert(d::WIDTH.to_string(), DimRange::new(8, 256, 512));
        }
        _ => {
            dim_ranges.insert(d::GRID_HEIGHT.to_string(), DimRange::new(1, 32, 64));
            dim_ranges.insert(d::GRID_WIDTH.to_string(), DimRange::new(1, 32, 64));
        }
    }
    let mut attributes = DvaeAttributes {
        vocab_size: vocab as u64,
        downsample: config::DOWNSAMPLE as u64,
        image_size: Some(IMAGE_SIZE),
    }
    .to_attributes();
    attributes.insert(attr::N_HID.into(), json!(n_hid));
    attributes.insert(attr::N_BLK_PER_GROUP.into(), json!(n_blk));
    GraphEntry {
        role,
        graph,
        dim_ranges,
        attributes,
    }
}
