//! Hugging Face CLIP (`CLIPModel`, transformers 5.24.0 `models/clip/`; Radford et al. 2021;
//! facts: `shared/reference/models.md` §5) for reranking generated images.
//!
//! Reads a Hugging Face model directory (`config.json`; `model.safetensors` or
//! `pytorch_model.bin` through the restricted PyTorch reader; `tokenizer.json` or `vocab.json` +
//! `merges.txt`; optional `preprocessor_config.json`) and exports two graphs:
//! `clip_text.onnx` (`text.rs`) and `clip_image.onnx` (`vision.rs`), both ending in
//! L2-normalized embeddings, plus `clip_tokenizer.json` (`tokenizer.rs`) and the manifest's
//! `clip` entry (context, special ids, `logit_scale`, image size, mean/std from
//! `preprocessor.rs`). Any size works:
//! every width, depth, patch size and activation comes from `config.json` (`config.rs`).

pub mod config;
pub mod encoder;
pub mod names;
pub mod preprocessor;
pub mod text;
pub mod tokenizer;
pub mod vision;

pub use config::{Activation, ClipConfig, Pooling};
pub use tokenizer::CLIP_TOKENIZER_FILE;

use crate::bundle_writer::{BundleWriter, GraphEntry};
use crate::checkpoint::{ClassAllowList, read_pytorch, read_safetensors, tensor_dict};
use crate::error::{ExportError, Result};
use crate::weights::Weights;
use dalle_bundle::io::dims as d;
use dalle_bundle::{
    ClipImageAttributes, ClipInfo, ClipTextAttributes, ClipTowerAttributes, DimRange, GraphRole,
    SourceFile,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use preprocessor::{OPENAI_MEAN, OPENAI_STD};

/// A read CLIP directory.
pub struct ClipModel {
    pub cfg: ClipConfig,
    pub weights: Weights,
    /// The raw learned `logit_scale`.
    pub logit_scale: f64,
    /// The files read (for provenance).
    pub files: Vec<(&'static str, PathBuf)>,
}

/// Reads `config.json` and the weights of a Hugging Face CLIP directory.
pub fn load(dir: &Path) -> Result<ClipModel> {
    if !dir.is_dir() {
        return Err(ExportError::Weights(format!(
            "{}: not a directory (expected a Hugging Face CLIP model directory)",
            dir.display()
        )));
    }
    let config_path = dir.join("config.json");
    crate::checkpoint::open_regular(&config_path)?;
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        ExportError::Weights(format!("{}: cannot read: {e}", config_path.display()))
    })?;
    let cfg = ClipConfig::from_json(&text, &config_path.display().to_string())?;
    let st = dir.join("model.safetensors");
    let bin = dir.join("pytorch_model.bin");
    let (path, tensors) = if st.is_file() {
        let t = read_safetensors(&st)?;
        (st, t)
    } else if bin.is_file() {
        let root = read_pytorch(&bin, &ClassAllowList::none())?;
        (bin, tensor_dict(&root)?)
    } else {
        return Err(ExportError::Weights(format!(
            "{}: no weights: expected model.safetensors or pytorch_model.bin",
            dir.display()
        )));
    };
    let mut weights = Weights::new(path.display().to_string(), tensors);
    // Buffers some checkpoints carry; the graphs derive positions themselves.
    for tower in [names::Tower::Text, names::Tower::Vision] {
        let name = names::position_ids(tower);
        if let Some(shape) = weights.shape_of(&name).map(<[usize]>::to_vec) {
            weights.take(&name, &shape)?;
        }
    }
    let scale = weights.take_f32(names::LOGIT_SCALE, &[])?;
    let logit_scale = scale
        .to_f32_vec()?
        .first()
        .copied()
        .map(f64::from)
        .ok_or_else(|| ExportError::Weights("`logit_scale` is empty".into()))?;
    Ok(ClipModel {
        cfg,
        weights,
        logit_scale,
        files: vec![("clip_config", config_path), ("clip_weights", path)],
    })
}

/// Image size and normalization from `preprocessor_config.json` (`preprocessor.rs`; without
/// one, OpenAI's).
fn preprocessing(dir: &Path, cfg: &ClipConfig) -> Result<preprocessor::Preprocessing> {
    let size = cfg.vision.image_size as u64;
    let p = dir.join("preprocessor_config.json");
    if !p.is_file() {
        return Ok(preprocessor::default_for(size));
    }
    preprocessor::read(&p, size)
}

fn entry(role: GraphRole, graph: crate::graph::GraphBuilder, cfg: &ClipConfig) -> GraphEntry {
    let mut dim_ranges = BTreeMap::new();
    dim_ranges.insert(d::BATCH.to_string(), DimRange::new(1, 8, 64));
    let tower = |t: &config::TowerConfig| ClipTowerAttributes {
        projection_dim: cfg.projection_dim as u64,
        layers: t.layers as u64,
        hidden: t.hidden as u64,
        heads: t.heads as u64,
        activation: format!("{:?}", t.activation),
    };
    let attributes = match role {
        GraphRole::ClipText => ClipTextAttributes {
            tower: tower(&cfg.text.tower),
            context_length: cfg.text.context_length as u64,
            pooling: match cfg.text.pooling {
                Pooling::ArgMaxId => "argmax_id".to_string(),
                Pooling::FirstEos(id) => format!("first_eos_{id}"),
            },
        }
        .to_attributes(),
        _ => ClipImageAttributes {
            tower: tower(&cfg.vision.tower),
            image_size: cfg.vision.image_size as u64,
            patch_size: cfg.vision.patch_size as u64,
        }
        .to_attributes(),
    };
    GraphEntry {
        role,
        graph,
        dim_ranges,
        attributes,
    }
}

/// Both graphs; every tensor of the checkpoint must be used.
pub fn entries(model: ClipModel) -> Result<(GraphEntry, GraphEntry)> {
    let ClipModel {
        cfg, mut weights, ..
    } = model;
    let text = text::build(&cfg, &mut weights)?;
    let image = vision::build(&cfg, &mut weights)?;
    weights.finish()?;
    Ok((
        entry(GraphRole::ClipText, text, &cfg),
        entry(GraphRole::ClipImage, image, &cfg),
    ))
}

/// Source files of a CLIP directory for the manifest's provenance.
pub fn sources(model: &ClipModel) -> Result<Vec<SourceFile>> {
    model
        .files
        .iter()
        .map(|(role, p)| crate::bundle_writer::source_file(role, p))
        .collect()
}

/// Adds a CLIP directory to a bundle: both graphs, `clip_tokenizer.json` and the manifest's
/// `clip` entry.
pub fn add_to_bundle(writer: &mut BundleWriter, dir: &Path, model: ClipModel) -> Result<()> {
    let (tok, ids) = tokenizer::tokenizer_for_dir(dir)?;
    let pre = preprocessing(dir, &model.cfg)?;
    let info = ClipInfo {
        tokenizer: CLIP_TOKENIZER_FILE.to_string(),
        context_length: model.cfg.text.context_length as u64,
        bos_id: ids.bos,
        eos_id: ids.eos,
        pad_id: ids.pad,
        logit_scale: model.logit_scale,
        image_size: pre.image_size,
        image_mean: pre.mean,
        image_std: pre.std,
        projection_dim: model.cfg.projection_dim as u64,
    };
    let vocab = model.cfg.text.vocab_size as u64;
    if ids.bos >= vocab || ids.eos >= vocab || ids.pad >= vocab {
        return Err(ExportError::Weights(format!(
            "the CLIP tokenizer's special ids {ids:?} exceed the text model's vocab_size {vocab}"
        )));
    }
    let (text, image) = entries(model)?;
    writer.add_file(CLIP_TOKENIZER_FILE, &tok)?;
    writer.add_graph(text)?;
    writer.add_graph(image)?;
    writer.manifest_mut().clip = Some(info);
    Ok(())
}
