//! The one way a DALLE-pytorch checkpoint goes into a bundle, shared by `dalle-export
//! dalle-pytorch` and the tests: provenance, tokenizer, manifest fields, `decoder.onnx`, the
//! dVAE graphs and, when asked, a CLIP for reranking.

use super::decoder::DecoderOptions;
use super::{DalleConfig, OpenAiVaeFiles, VqganVae};
use crate::bundle_writer::{BundleWriter, source_file};
use crate::error::Result;
use crate::families::{Progress, clip, vqgan};
use std::path::Path;

/// What to export (the `dalle-export dalle-pytorch` flags).
#[derive(Clone, Copy, Debug)]
pub struct BundleOptions<'a> {
    /// The `train_dalle.py` checkpoint (`--checkpoint`).
    pub checkpoint: &'a Path,
    /// The Hugging Face `tokenizer.json` it was trained with (`--tokenizer`; default: CLIP BPE).
    pub tokenizer: Option<&'a Path>,
    /// Released OpenAI dVAE files (`--vae-encoder`, `--vae-decoder`).
    pub vae_files: OpenAiVaeFiles<'a>,
    /// The taming VQGAN of a `VQGanVAE` checkpoint (`--vqgan-model`, `--vqgan-config`).
    pub vqgan: VqganFiles<'a>,
    /// A Hugging Face CLIP directory to add for reranking (`--clip`).
    pub clip: Option<&'a Path>,
    /// Logits output and cache layout (`--logits`, `--kv-cache`).
    pub decoder: DecoderOptions,
    /// Told what was read (the CLI prints it).
    pub progress: Progress,
}

/// The taming-transformers files of a checkpoint trained with `VQGanVAE`: the Lightning
/// `.ckpt` (optional when the checkpoint holds the VQGAN under `vae.model.`) and its training
/// `.yaml` (required: the geometry is not in the checkpoint).
#[derive(Clone, Copy, Debug, Default)]
pub struct VqganFiles<'a> {
    pub model: Option<&'a Path>,
    pub config: Option<&'a Path>,
}

/// One line describing a checkpoint's hyperparameters.
pub fn describe(cfg: &DalleConfig) -> String {
    format!(
        "dalle-pytorch {}: dim {}, depth {}, heads {}×{}, attention {:?}, rotary {}, shift tokens {}, {:?} VAE, {}×{} image tokens of {} codes",
        cfg.version.as_deref().unwrap_or("(version unknown)"),
        cfg.dim,
        cfg.depth,
        cfg.heads,
        cfg.dim_head,
        cfg.attn_types,
        cfg.rotary_emb,
        cfg.shift_tokens,
        cfg.vae,
        cfg.fmap,
        cfg.fmap,
        cfg.num_image_tokens
    )
}

/// Adds a DALLE-pytorch checkpoint to `writer`: its source files to the provenance, token
/// layout, sampling defaults and `tokenizer.json`, `decoder.onnx`, the dVAE graphs, and the CLIP
/// of `options.clip`.
pub fn add_to_bundle(writer: &mut BundleWriter, options: BundleOptions<'_>) -> Result<()> {
    let BundleOptions {
        checkpoint,
        tokenizer,
        vae_files,
        vqgan: vqgan_files,
        clip: clip_dir,
        decoder,
        progress,
    } = options;
    let mut sources = vec![source_file("checkpoint", checkpoint)?];
    let clip_model = match clip_dir {
        Some(dir) => {
            let m = clip::load(dir).map_err(|e| e.context("reading the --clip model"))?;
            sources.extend(clip::sources(&m)?);
            Some((dir, m))
        }
        None => None,
    };
    for (role, p) in [
        ("tokenizer", tokenizer),
        ("vae_encoder", vae_files.encoder),
        ("vae_decoder", vae_files.decoder),
        ("vqgan_model", vqgan_files.model),
        ("vqgan_config", vqgan_files.config),
    ] {
        if let Some(p) = p {
            sources.push(source_file(role, p)?);
        }
    }
    let vqgan_cfg = match (vqgan_files.config, vqgan_files.model) {
        (Some(p), _) => Some(vqgan::yaml::load(p)?),
        (None, Some(_)) => {
            return Err(crate::error::ExportError::Unsupported(
                "--vqgan-model needs --vqgan-config YAML (the VQGAN's geometry)".into(),
            ));
        }
        (None, None) => None,
    };
    let ckpt = super::load_with_vqgan(checkpoint, vqgan_cfg.as_ref())
        .map_err(|e| e.context(format!("reading {}", checkpoint.display())))?;
    let cfg = ckpt.cfg.clone();
    super::check_vae_files(&cfg, vae_files)?;
    progress(&describe(&cfg));
    let tokenizer_json = super::tokenizer_for(&cfg, tokenizer)?;
    {
        let m = writer.manifest_mut();
        m.provenance.sources.extend(sources);
        m.token_layout = Some(cfg.token_layout());
        m.sampling = Some(super::sampling_defaults(&cfg));
        m.tokenizer = Some(crate::tokenizer::TOKENIZER_FILE.to_string());
    }
    writer.add_file(crate::tokenizer::TOKENIZER_FILE, &tokenizer_json)?;
    writer.add_graph(super::decoder_entry(&cfg, ckpt.transformer, decoder)?)?;
    let vqgan_vae = vqgan_cfg.as_ref().map(|config| VqganVae {
        config,
        model: vqgan_files.model,
    });
    for entry in super::vae_entries_with_vqgan(&cfg, &ckpt.root, ckpt.vae, vae_files, vqgan_vae)? {
        writer.add_graph(entry)?;
    }
    if let Some((dir, m)) = clip_model {
        clip::add_to_bundle(writer, dir, m)
            .map_err(|e| e.context(format!("exporting CLIP {}", dir.display())))?;
    }
    Ok(())
}
