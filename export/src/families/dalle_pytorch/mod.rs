//! DALLE-pytorch (lucidrains/DALLE-pytorch v1.6.6; paper: Ramesh et al. 2021; facts:
//! `shared/reference/models.md` §2) checkpoints saved by `train_dalle.py`: a dict with `hparams`,
//! `vae_params`, `weights` (the state dict, fp32 or fp16), `vae_class_name`, `version` and
//! optimizer state, read with the restricted PyTorch reader.
//!
//! Exports the transformer as one KV-cache decoder step graph (`decoder.rs`) and its VAE as the
//! bundle's dVAE graphs. Supported: attention types full, axial_row, axial_col and conv_like in
//! any cycle; rotary embeddings; shift tokens; sandwich norm; stable; reversible; shared
//! attention/feed-forward ids; shared input/output embeddings; `DiscreteVAE`,
//! `OpenAIDiscreteVAE` and `VQGanVAE` (taming `VQModel`/`GumbelVQ`, built by
//! [`crate::families::vqgan`]). DeepSpeed `sparse` attention is a clear error.

mod bundle;
pub mod config;
pub mod decoder;
pub mod discrete_vae;
pub mod layers;
pub mod names;
pub mod positions;
pub mod rotary;
pub mod shift;

pub use bundle::{BundleOptions, VqganFiles, add_to_bundle, describe};
pub use config::{AttnType, DalleConfig, VaeKind};

use crate::bundle_writer::GraphEntry;
use crate::checkpoint::{ClassAllowList, PickleValue, RECORD_CLASSES, read_pytorch, tensor_dict};
use crate::error::{ExportError, Result};
use crate::families::{openai_dvae, vqgan};
use crate::weights::Weights;
use dalle_bundle::attributes::decoder as attr;
use dalle_bundle::io::dims as d;
use dalle_bundle::{DecoderAttributes, DimRange, DvaeAttributes, GraphRole, LogitsKind};
use std::collections::BTreeMap;
use std::path::Path;

/// A read checkpoint: hyperparameters, the transformer's tensors, the VAE's tensors (with the
/// `vae.` prefix stripped) and the raw pickle (for `vae_params`).
pub struct Checkpoint {
    pub cfg: DalleConfig,
    pub transformer: Weights,
    pub vae: Weights,
    pub root: PickleValue,
}

/// Reads a `train_dalle.py` checkpoint.
pub fn load(path: &Path) -> Result<Checkpoint> {
    load_with_vqgan(path, None)
}

/// [`load`] for a checkpoint that may have been trained with `VQGanVAE`: `vqgan` is the VQGAN's
/// config (`--vqgan-config`), which sets the image grid and codebook size.
pub fn load_with_vqgan(path: &Path, vqgan: Option<&vqgan::VqganConfig>) -> Result<Checkpoint> {
    let source = path.display().to_string();
    let root = read_pytorch(path, &ClassAllowList::new(RECORD_CLASSES.iter().copied()))
        .map_err(|e| wrong_family(path, e))?;
    let weights = match root.get("weights") {
        Some(PickleValue::Str(s)) => {
            return Err(ExportError::Unsupported(format!(
                "{source}: `weights` is the placeholder `{s}`: a DeepSpeed checkpoint keeps its weights \
                 in the `-ds-cp` directory; convert it with DeepSpeed's zero_to_fp32.py first"
            )));
        }
        Some(w) => tensor_dict(w)?,
        None => {
            return Err(ExportError::Weights(format!(
                "{source}: no `weights` entry: not a DALLE-pytorch checkpoint saved by train_dalle.py \
                 (a bare state dict lacks the hparams needed to rebuild the model)"
            )));
        }
    };
    // DataParallel / DeepSpeed engines prefix every key with `module.`.
    let weights = if !weights.is_empty() && weights.keys().all(|k| k.starts_with("module.")) {
        weights
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect()
    } else {
        weights
    };
    let mut transformer = Weights::new(source.clone(), weights);
    let vae = transformer.split_prefix("vae.", format!("{source} (vae.)"));
    let cfg = DalleConfig::from_checkpoint_with_vqgan(&root, &transformer, &source, vqgan)?;
    Ok(Checkpoint {
        cfg,
        transformer,
        vae,
        root,
    })
}

/// A pickled OpenAI dVAE module (`encoder.pkl`/`decoder.pkl`) given as the checkpoint names
/// classes outside the whitelist; say which family the file is instead of "forbidden global".
fn wrong_family(path: &Path, e: crate::checkpoint::CheckpointError) -> ExportError {
    match &e {
        crate::checkpoint::CheckpointError::ForbiddenGlobal { name, .. }
            if name.starts_with("dall_e.") =>
        {
            ExportError::Weights(format!(
                "{}: this is an OpenAI dVAE file (a pickled `{name}`), not a DALLE-pytorch \
                 checkpoint; export it with `dalle-export openai-dvae --vae-encoder/--vae-decoder`, \
                 or pass it to `dalle-pytorch` with --vae-encoder/--vae-decoder",
                path.display()
            ))
        }
        _ => e.into(),
    }
}

/// Builds `decoder.onnx` with the chosen logits output and cache layout and checks every
/// transformer tensor was used.
pub fn decoder_entry(
    cfg: &DalleConfig,
    mut w: Weights,
    opts: decoder::DecoderOptions,
) -> Result<GraphEntry> {
    let graph = decoder::build(cfg, &mut w, opts)?;
    w.finish()?;
    let seq = cfg.seq_len() as u64;
    let mut dim_ranges = BTreeMap::new();
    dim_ranges.insert(d::BATCH.to_string(), DimRange::new(1, 8, 64));
    dim_ranges.insert(d::SEQUENCE.to_string(), DimRange::new(1, 1, seq));
    dim_ranges.insert(
        d::PAST_SEQUENCE.to_string(),
        DimRange::new(0, seq - 1, seq - 1),
    );
    let attn_types = cfg
        .attn_types
        .iter()
        .map(|t| {
            match t {
                AttnType::Full => attr::ATTN_FULL,
                AttnType::AxialRow => attr::ATTN_AXIAL_ROW,
                AttnType::AxialCol => attr::ATTN_AXIAL_COL,
                AttnType::ConvLike { .. } => attr::ATTN_CONV_LIKE,
            }
            .to_string()
        })
        .collect();
    let attributes = DecoderAttributes {
        layers: cfg.depth as u64,
        heads: cfg.heads as u64,
        head_dim: cfg.dim_head as u64,
        dim: cfg.dim as u64,
        attn_types,
        max_sequence_length: seq,
        rotary_emb: cfg.rotary_emb,
        shift_tokens: cfg.shift_tokens,
        reversible: cfg.reversible,
        logits: match opts.logits {
            decoder::LogitsOutput::Full => LogitsKind::Full,
            decoder::LogitsOutput::LastImage => LogitsKind::LastImage,
        },
        kv_cache: opts
            .kv_cache
            .attribute(seq, cfg.shift_tokens.then(|| shift::window(cfg) as u64)),
        dalle_pytorch_version: cfg.version.clone(),
    }
    .to_attributes();
    Ok(GraphEntry {
        role: GraphRole::Decoder,
        graph,
        dim_ranges,
        attributes,
    })
}

/// The OpenAI dVAE files given by flag, for checkpoints trained with `OpenAIDiscreteVAE`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAiVaeFiles<'a> {
    pub encoder: Option<&'a Path>,
    pub decoder: Option<&'a Path>,
}

/// `--vae-encoder`/`--vae-decoder` are for `OpenAIDiscreteVAE` checkpoints only: a
/// `DiscreteVAE` checkpoint holds its own VAE, and the files would be recorded as sources
/// without being used.
pub fn check_vae_files(cfg: &DalleConfig, files: OpenAiVaeFiles<'_>) -> Result<()> {
    if cfg.vae != VaeKind::Discrete {
        return Ok(());
    }
    let given = [
        ("--vae-encoder", files.encoder),
        ("--vae-decoder", files.decoder),
    ]
    .into_iter()
    .find_map(|(flag, p)| p.map(|p| (flag, p)));
    match given {
        Some((flag, path)) => Err(ExportError::Unsupported(format!(
            "{flag} {}: the checkpoint was trained with DiscreteVAE, whose weights it holds \
             under `vae.`; {flag} is only for OpenAIDiscreteVAE checkpoints, leave it out",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Builds the bundle's dVAE graphs from the checkpoint's VAE: `DiscreteVAE` from its `vae.`
/// tensors and `vae_params`; `OpenAIDiscreteVAE` from its `vae.enc.`/`vae.dec.` tensors or from
/// the released files given by flag (when both exist they must be identical). Every VAE tensor
/// must be used.
pub fn vae_entries(
    cfg: &DalleConfig,
    root: &PickleValue,
    vae: Weights,
    files: OpenAiVaeFiles<'_>,
) -> Result<Vec<GraphEntry>> {
    vae_entries_with_vqgan(cfg, root, vae, files, None)
}

/// A `VQGanVAE` checkpoint's VQGAN: its config and, when given, its `.ckpt`.
#[derive(Clone, Copy, Debug)]
pub struct VqganVae<'a> {
    pub config: &'a vqgan::VqganConfig,
    pub model: Option<&'a Path>,
}

/// [`vae_entries`], plus `VQGanVAE`: the VQGAN from the checkpoint's `vae.model.` tensors or
/// from `vqgan.model` (when both exist they must be identical; the training losses' `loss.*`
/// are not compared).
pub fn vae_entries_with_vqgan(
    cfg: &DalleConfig,
    root: &PickleValue,
    mut vae: Weights,
    files: OpenAiVaeFiles<'_>,
    vqgan: Option<VqganVae<'_>>,
) -> Result<Vec<GraphEntry>> {
    if vqgan.is_some() && cfg.vae != VaeKind::Vqgan {
        return Err(ExportError::Unsupported(format!(
            "--vqgan-model/--vqgan-config were given, but the checkpoint was trained with {:?}, \
             not VQGanVAE",
            cfg.vae
        )));
    }
    let entries = match cfg.vae {
        VaeKind::Vqgan => {
            let v = vqgan.ok_or_else(|| {
                ExportError::Unsupported(
                    "the checkpoint was trained with VQGanVAE: pass --vqgan-config YAML".into(),
                )
            })?;
            let inside = vae.split_prefix("model.", format!("{} (vae.model.)", vae.source()));
            vqgan_vae_entries(cfg, inside, v)?
        }
        VaeKind::Discrete => {
            check_vae_files(cfg, files)?;
            let params = root.get("vae_params").ok_or_else(|| {
                ExportError::Weights(
                    "the checkpoint uses DiscreteVAE but has no `vae_params`".into(),
                )
            })?;
            let vcfg = discrete_vae::DiscreteVaeConfig::from_vae_params(params)?;
            if vcfg.fmap() != cfg.fmap || vcfg.num_tokens != cfg.num_image_tokens {
                return Err(ExportError::Weights(format!(
                    "vae_params give a {}×{} grid of {} codes, the transformer expects {}×{} of {}",
                    vcfg.fmap(),
                    vcfg.fmap(),
                    vcfg.num_tokens,
                    cfg.fmap,
                    cfg.fmap,
                    cfg.num_image_tokens
                )));
            }
            let enc = discrete_vae::encoder_entry(&vcfg, &mut vae)?;
            let dec = discrete_vae::decoder_entry(&vcfg, &mut vae)?;
            vec![enc, dec]
        }
        VaeKind::OpenAi => {
            let inside_enc = vae.split_prefix("enc.", format!("{} (vae.enc.)", vae.source()));
            let inside_dec = vae.split_prefix("dec.", format!("{} (vae.dec.)", vae.source()));
            let enc = openai_half(inside_enc, files.encoder, true)?;
            let dec = openai_half(inside_dec, files.decoder, false)?;
            for e in [&enc, &dec] {
                let vocab = DvaeAttributes::from_attributes(&e.attributes)
                    .ok()
                    .map(|a| a.vocab_size);
                if vocab != Some(cfg.num_image_tokens as u64) {
                    return Err(ExportError::Weights(format!(
                        "the dVAE {} has {} codes but the transformer embeds {} image tokens",
                        e.role,
                        vocab.map_or("an unknown number of".to_string(), |v| v.to_string()),
                        cfg.num_image_tokens
                    )));
                }
            }
            vec![enc, dec]
        }
    };
    vae.finish()?;
    Ok(entries)
}

fn vqgan_vae_entries(
    cfg: &DalleConfig,
    inside: Weights,
    v: VqganVae<'_>,
) -> Result<Vec<GraphEntry>> {
    if v.config.n_embed != cfg.num_image_tokens {
        return Err(ExportError::Weights(format!(
            "the VQGAN config has {} codes but the transformer embeds {} image tokens",
            v.config.n_embed, cfg.num_image_tokens
        )));
    }
    let weights = match v.model {
        Some(path) => {
            let from_file = vqgan::load_taming_state_dict(path)?;
            for (name, t) in inside.into_map() {
                if name.starts_with(vqgan::names::LOSS_PREFIX) {
                    continue;
                }
                if from_file.get(&name) != Some(&t) {
                    return Err(ExportError::Weights(format!(
                        "{}: tensor `{name}` differs from the checkpoint's own copy under \
                         `vae.model.`: the --vqgan-model file is not the VQGAN this model was \
                         trained with",
                        path.display()
                    )));
                }
            }
            from_file
        }
        None if inside.names().next().is_none() => {
            return Err(ExportError::Weights(
                "the checkpoint was trained with VQGanVAE but holds no `vae.model.` weights: \
                 pass the VQGAN with --vqgan-model CKPT"
                    .into(),
            ));
        }
        None => inside,
    };
    let model = vqgan::taming_from_weights(v.config.clone(), weights)?;
    Ok(vec![
        vqgan::encoder_entry(&model.cfg, model.encoder)?,
        vqgan::decoder_entry(&model.cfg, model.decoder)?,
    ])
}

fn openai_half(inside: Weights, file: Option<&Path>, encoder: bool) -> Result<GraphEntry> {
    let flag = if encoder {
        "--vae-encoder"
    } else {
        "--vae-decoder"
    };
    let (which, release) = if encoder {
        ("encoder", "encoder.pkl")
    } else {
        ("decoder", "decoder.pkl")
    };
    let source = inside.source().to_string();
    let inside = inside.into_map();
    if let Some(path) = file {
        let check = |w: &Weights| -> Result<()> {
            for (name, t) in &inside {
                if w.get(name) != Some(t) {
                    return Err(ExportError::Weights(format!(
                        "{}: tensor `{name}` differs from the checkpoint's own copy under `vae.`: \
                         the {which} file is not the VAE this model was trained with",
                        path.display()
                    )));
                }
            }
            Ok(())
        };
        return if encoder {
            let (c, w) = openai_dvae::load_encoder(path)?;
            check(&w)?;
            openai_dvae::encoder_entry(&c, w)
        } else {
            let (c, w) = openai_dvae::load_decoder(path)?;
            check(&w)?;
            openai_dvae::decoder_entry(&c, w)
        };
    }
    if inside.is_empty() {
        return Err(ExportError::Weights(format!(
            "the checkpoint was trained with OpenAIDiscreteVAE but holds no {which} weights: \
             pass the released file with {flag} {release}"
        )));
    }
    if encoder {
        let (c, w) = openai_dvae::encoder_from_state_dict(inside, &source)?;
        openai_dvae::encoder_entry(&c, w)
    } else {
        let (c, w) = openai_dvae::decoder_from_state_dict(inside, &source)?;
        openai_dvae::decoder_entry(&c, w)
    }
}

/// Sampling defaults of DALLE-pytorch's `generate.py` (`--top_k 0.9`, i.e. keep the top 10% of
/// the full vocabulary), expressed as a count over image tokens.
pub fn sampling_defaults(cfg: &DalleConfig) -> dalle_bundle::SamplingDefaults {
    let k = ((0.1 * cfg.total_tokens() as f64) as usize).clamp(1, cfg.num_image_tokens);
    dalle_bundle::SamplingDefaults {
        top_k: Some(k as u64),
        top_p: None,
        temperature: 1.0,
        cond_scale: 1.0,
    }
}

/// The largest token id a Hugging Face `tokenizer.json` can produce (its model's vocabulary and
/// its added tokens), or `None` if the file has neither.
fn max_token_id(json: &serde_json::Value) -> Option<u64> {
    let vocab = json.get("model").and_then(|m| m.get("vocab"));
    let from_vocab = match vocab {
        Some(serde_json::Value::Object(map)) => {
            map.values().filter_map(serde_json::Value::as_u64).max()
        }
        // Unigram: a list of [piece, score] whose index is the id.
        Some(serde_json::Value::Array(items)) => items.len().checked_sub(1).map(|n| n as u64),
        _ => None,
    };
    let from_added = json
        .get("added_tokens")
        .and_then(serde_json::Value::as_array)
        .and_then(|a| {
            a.iter()
                .filter_map(|t| t.get("id").and_then(serde_json::Value::as_u64))
                .max()
        });
    from_vocab.into_iter().chain(from_added).max()
}

/// The tokenizer for the bundle: the given `tokenizer.json`, else the default CLIP BPE of
/// DALLE-pytorch's `SimpleTokenizer`. Errors when the tokenizer can produce ids the checkpoint's
/// text embedding does not have.
pub fn tokenizer_for(cfg: &DalleConfig, file: Option<&Path>) -> Result<Vec<u8>> {
    let (bytes, what) = match file {
        Some(p) => (
            crate::tokenizer::load_tokenizer_json(p)?,
            p.display().to_string(),
        ),
        None => (
            crate::tokenizer::clip_bpe_tokenizer_json()?,
            "the default tokenizer (DALLE-pytorch's SimpleTokenizer, CLIP BPE)".to_string(),
        ),
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ExportError::Weights(format!("{what}: not JSON: {e}")))?;
    let max_id = max_token_id(&json)
        .ok_or_else(|| ExportError::Weights(format!("{what}: no vocabulary found")))?;
    if max_id >= cfg.num_text_tokens as u64 {
        return Err(ExportError::Weights(format!(
            "{what} produces ids up to {max_id}, but the checkpoint's text vocabulary has {} ids \
             (hparams num_text_tokens){}",
            cfg.num_text_tokens,
            if file.is_none() {
                ": pass the tokenizer it was trained with via --tokenizer FILE"
            } else {
                ""
            }
        )));
    }
    Ok(bytes)
}
