//! DALLE-pytorch hyperparameters (`hparams` of a `train_dalle.py` checkpoint), validated, and the
//! token layout derived from them (models.md §2.1–2.2; lucidrains/DALLE-pytorch v1.6.6).

use super::names::{self, Branch};
use crate::checkpoint::PickleValue;
use crate::error::{ExportError, Result};
use crate::families::vqgan::VqganConfig;
use crate::weights::Weights;
use dalle_bundle::TokenLayout;
use dalle_bundle::limits::{self, Limit};

/// `VQGanVAE.image_size`: DALLE-pytorch fixes it at 256 whatever the VQGAN's resolution.
pub const VQGAN_VAE_IMAGE_SIZE: usize = 256;

/// One layer's attention pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnType {
    /// Causal attention over everything before.
    Full,
    /// Image tokens attend all text plus earlier tokens of their own image row.
    AxialRow,
    /// Image tokens attend all text plus earlier tokens of their own image column.
    AxialCol,
    /// Image tokens attend all text plus a causal `kernel × kernel` window (rows r−k+1..r,
    /// columns c−k+1..c).
    ConvLike { kernel: usize },
}

impl AttnType {
    fn parse(s: &str) -> Result<AttnType> {
        Ok(match s {
            "full" => AttnType::Full,
            "axial_row" => AttnType::AxialRow,
            "axial_col" => AttnType::AxialCol,
            // SparseConvCausalAttention's defaults (kernel_size 5, dilation 1) are what the
            // Transformer builds; they are not stored in checkpoints.
            "conv_like" => AttnType::ConvLike { kernel: 5 },
            "sparse" => {
                return Err(ExportError::Unsupported(
                    "attention type `sparse` (DeepSpeed SparseSelfAttention): its block layout \
                     includes random blocks drawn by DeepSpeed at construction time and is not \
                     stored in the checkpoint, so it cannot be reproduced exactly in ONNX"
                        .into(),
                ));
            }
            other => {
                return Err(ExportError::Unsupported(format!(
                    "attention type `{other}` (known: full, axial_row, axial_col, conv_like)"
                )));
            }
        })
    }
}

/// Which VAE the checkpoint was trained with (`vae_class_name`).
#[derive(Clone, Debug, PartialEq)]
pub enum VaeKind {
    /// DALLE-pytorch's own `DiscreteVAE`; weights under `vae.`, hyperparameters in `vae_params`.
    Discrete,
    /// OpenAI's dVAE (`OpenAIDiscreteVAE`): 256 px, 3 layers, 8192 codes.
    OpenAi,
    /// `VQGanVAE`: a taming-transformers VQGAN; weights under `vae.model.` (or its `.ckpt`),
    /// geometry from its training YAML.
    Vqgan,
}

/// Validated transformer hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct DalleConfig {
    /// Tokenizer vocabulary (`num_text_tokens` before the per-position pads are added).
    pub num_text_tokens: usize,
    pub text_seq_len: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub dim_head: usize,
    pub reversible: bool,
    /// One entry per layer (the checkpoint's `attn_types` cycled over depth).
    pub attn_types: Vec<AttnType>,
    pub stable: bool,
    pub shift_tokens: bool,
    pub rotary_emb: bool,
    pub sandwich_norm: bool,
    /// Per layer: which attention module it uses (layers with equal ids share weights).
    pub shared_attn_ids: Vec<i64>,
    /// Per layer: which feed-forward module it uses.
    pub shared_ff_ids: Vec<i64>,
    pub share_input_output_emb: bool,
    /// Image tokens per side.
    pub fmap: usize,
    /// Image codebook size.
    pub num_image_tokens: usize,
    pub vae: VaeKind,
    /// dalle_pytorch `__version__` recorded in the checkpoint, if any.
    pub version: Option<String>,
}

impl DalleConfig {
    /// `num_text_tokens + text_seq_len`: text ids including one pad id per position.
    pub fn num_text_tokens_internal(&self) -> usize {
        self.num_text_tokens + self.text_seq_len
    }

    pub fn total_tokens(&self) -> usize {
        self.num_text_tokens_internal() + self.num_image_tokens
    }

    pub fn image_seq_len(&self) -> usize {
        self.fmap * self.fmap
    }

    /// BOS + text positions.
    pub fn text_len(&self) -> usize {
        self.text_seq_len + 1
    }

    /// Positions the model sees: BOS + text + all image tokens but the last.
    pub fn seq_len(&self) -> usize {
        self.text_seq_len + self.image_seq_len()
    }

    pub fn inner_dim(&self) -> usize {
        self.heads * self.dim_head
    }

    /// The bundle's token layout.
    pub fn token_layout(&self) -> TokenLayout {
        TokenLayout {
            text_length: self.text_seq_len as u64,
            text_vocab_size: self.num_text_tokens as u64,
            bos_id: 0,
            pad_id_base: self.num_text_tokens as u64,
            image_grid: self.fmap as u64,
            image_vocab_size: self.num_image_tokens as u64,
            image_token_offset: self.num_text_tokens_internal() as u64,
            total_vocab_size: self.total_tokens() as u64,
        }
    }

    /// Reads `hparams` (and `vae_params`/`vae_class_name`) of a checkpoint. Keys missing from
    /// older checkpoints are inferred from the weights where that is unambiguous.
    pub fn from_checkpoint(root: &PickleValue, w: &Weights, source: &str) -> Result<DalleConfig> {
        Self::from_checkpoint_with_vqgan(root, w, source, None)
    }

    /// [`DalleConfig::from_checkpoint`] for checkpoints that may have been trained with
    /// `VQGanVAE`, whose image grid and codebook come from the VQGAN's config (`--vqgan-config`).
    pub fn from_checkpoint_with_vqgan(
        root: &PickleValue,
        w: &Weights,
        source: &str,
        vqgan: Option<&VqganConfig>,
    ) -> Result<DalleConfig> {
        let hp = root.get("hparams").filter(|h| h.as_dict().is_some()).ok_or_else(|| {
            ExportError::Weights(format!(
                "{source}: no `hparams` dict: not a DALLE-pytorch checkpoint saved by train_dalle.py"
            ))
        })?;
        // Every size is checked against its limit before it sizes anything (`depth` becomes
        // per-layer lists, the grid a mask, ...).
        let int = |k: &str, limit: Limit| -> Result<usize> {
            let v = hp.get(k).and_then(PickleValue::as_int).ok_or_else(|| {
                ExportError::Weights(format!("{source}: hparams `{k}` must be an integer"))
            })?;
            Ok(limits::check(&format!("hparams.{k}"), v, limit)?)
        };
        let flag = |k: &str| -> Option<bool> { hp.get(k).and_then(PickleValue::as_bool) };

        if flag("sparse_attn") == Some(true) {
            return Err(ExportError::Unsupported(format!(
                "{source}: sparse_attn=True (DeepSpeed block-sparse attention) cannot be exported"
            )));
        }
        let depth = int("depth", limits::LAYERS)?;
        let attn_names: Vec<String> = match hp.get("attn_types") {
            None | Some(PickleValue::None) => vec!["full".into()],
            Some(PickleValue::Str(s)) => vec![s.clone()],
            Some(v) => v
                .as_list()
                .and_then(|items| {
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ExportError::Weights(format!(
                        "{source}: hparams `attn_types` must be a string or a tuple of strings"
                    ))
                })?,
        };
        let cycle = attn_names
            .iter()
            .map(|s| AttnType::parse(s))
            .collect::<Result<Vec<_>>>()?;
        let attn_types: Vec<AttnType> = cycle.iter().copied().cycle().take(depth).collect();
        let ids = |k: &str| -> Result<Vec<i64>> {
            match hp.get(k) {
                None | Some(PickleValue::None) => Ok((0..depth as i64).collect()),
                Some(v) => {
                    // train_dalle.py stores them as strings (`tuple(args.shared_attn_ids.split(','))`).
                    let id = |p: &PickleValue| {
                        p.as_int()
                            .or_else(|| p.as_str().and_then(|s| s.trim().parse().ok()))
                    };
                    let items = v
                        .as_list()
                        .and_then(|i| i.iter().map(id).collect::<Option<Vec<_>>>())
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| ExportError::Weights(format!("{source}: hparams `{k}` must be a tuple of integers (or integer strings)")))?;
                    Ok(items.iter().copied().cycle().take(depth).collect())
                }
            }
        };
        let shared_attn_ids = ids("shared_attn_ids")?;
        let shared_ff_ids = ids("shared_ff_ids")?;
        for (i, id) in shared_attn_ids.iter().enumerate() {
            if let Some(j) = shared_attn_ids[..i].iter().position(|x| x == id)
                && attn_types[j] != attn_types[i]
            {
                return Err(ExportError::Weights(format!(
                    "{source}: layers {j} and {i} share attention id {id} but have different attention types"
                )));
            }
        }

        // Options older checkpoints do not record, read from where their tensors sit in layer
        // 0's module tree (exact names, see `names`).
        let reversible = flag("reversible").unwrap_or_else(|| {
            w.names()
                .any(|n| n.starts_with("transformer.layers.blocks.0."))
        });
        let attn0 = names::branch_prefix(0, Branch::Attention, reversible);
        let rotary_emb = flag("rotary_emb").unwrap_or_else(|| w.contains(names::ROTARY_POS_EMB));
        let shift_tokens = match flag("shift_tokens") {
            Some(v) => v,
            // PreShiftToken adds wrappers around attention: `0.fn.fn.fn.fn.fn.to_qkv`.
            None => names::wrapper_depths(Branch::Attention, true)
                .iter()
                .take(1)
                .any(|&d| w.contains(&names::wrapped(&attn0, d, names::TO_QKV))),
        };
        let sandwich_norm =
            flag("sandwich_norm").unwrap_or_else(|| w.contains(&names::norm_out(&attn0, "weight")));
        let share_input_output_emb =
            flag("share_input_output_emb").unwrap_or_else(|| w.contains(names::SHARED_TEXT_EMB[0]));

        let vae_class = root
            .get("vae_class_name")
            .and_then(PickleValue::as_str)
            .unwrap_or("");
        let vae_params = root.get("vae_params").filter(|v| !v.is_none());
        let (vae, image_size, num_layers, num_image_tokens) = match (vae_class, vae_params) {
            ("VQGanVAE", _) => match vqgan {
                Some(v) => (
                    VaeKind::Vqgan,
                    VQGAN_VAE_IMAGE_SIZE,
                    v.dalle_pytorch_num_layers()?,
                    v.n_embed,
                ),
                None => {
                    return Err(ExportError::Unsupported(format!(
                        "{source}: the checkpoint was trained with VQGanVAE (taming-transformers \
                         VQGAN): pass its config with --vqgan-config YAML (and its weights with \
                         --vqgan-model CKPT unless the checkpoint holds them under `vae.model.`)"
                    )));
                }
            },
            ("OpenAIDiscreteVAE", _) | ("", None) => (VaeKind::OpenAi, 256, 3, 8192),
            (_, Some(p)) => {
                let get = |k: &str, limit: Limit| -> Result<usize> {
                    let v = p.get(k).and_then(PickleValue::as_int).ok_or_else(|| {
                        ExportError::Weights(format!(
                            "{source}: vae_params `{k}` must be an integer"
                        ))
                    })?;
                    Ok(limits::check(&format!("vae_params.{k}"), v, limit)?)
                };
                (
                    VaeKind::Discrete,
                    get("image_size", limits::IMAGE_SIDE)?,
                    get("num_layers", limits::DOWNSAMPLE_LAYERS)?,
                    get("num_tokens", limits::VOCAB)?,
                )
            }
            (other, None) => {
                return Err(ExportError::Unsupported(format!(
                    "{source}: vae_class_name `{other}` without vae_params"
                )));
            }
        };
        let fmap = image_size.checked_shr(num_layers as u32).unwrap_or(0);
        if fmap == 0 || fmap.checked_shl(num_layers as u32) != Some(image_size) {
            return Err(ExportError::Unsupported(format!(
                "{source}: image_size {image_size} is not divisible by 2^{num_layers}"
            )));
        }
        limits::check(
            "image grid (image_size / 2^num_layers)",
            fmap,
            limits::IMAGE_GRID,
        )?;

        let cfg = DalleConfig {
            num_text_tokens: int("num_text_tokens", limits::VOCAB)?,
            text_seq_len: int("text_seq_len", limits::TEXT_LENGTH)?,
            dim: int("dim", limits::WIDTH)?,
            depth,
            heads: int("heads", limits::HEADS)?,
            dim_head: int("dim_head", limits::HEAD_DIM)?,
            reversible,
            attn_types,
            stable: flag("stable").unwrap_or(false),
            shift_tokens,
            rotary_emb,
            sandwich_norm,
            shared_attn_ids,
            shared_ff_ids,
            share_input_output_emb,
            fmap,
            num_image_tokens,
            vae,
            version: root
                .get("version")
                .and_then(PickleValue::as_str)
                .map(str::to_string),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Constraints of the reference implementation, and sizes derived from several
    /// hyperparameters within their limits.
    pub fn validate(&self) -> Result<()> {
        let inner = limits::checked_product(
            "heads × dim_head",
            &[("heads", self.heads), ("dim_head", self.dim_head)],
        )?;
        limits::check("heads × dim_head", inner, limits::WIDTH)?;
        let grid = limits::checked_product("fmap²", &[("fmap", self.fmap), ("fmap", self.fmap)])?;
        let seq = limits::checked_sum(
            "text_seq_len + fmap²",
            &[
                ("text_seq_len", self.text_seq_len as u64),
                ("fmap²", grid as u64),
            ],
        )?;
        limits::check("text_seq_len + fmap²", seq, limits::SEQUENCE)?;
        limits::checked_sum(
            "num_text_tokens + text_seq_len + num_image_tokens",
            &[
                ("num_text_tokens", self.num_text_tokens as u64),
                ("text_seq_len", self.text_seq_len as u64),
                ("num_image_tokens", self.num_image_tokens as u64),
            ],
        )?;
        for (name, v, limit) in [
            ("num_text_tokens", self.num_text_tokens, limits::VOCAB),
            ("num_image_tokens", self.num_image_tokens, limits::VOCAB),
            ("depth", self.depth, limits::LAYERS),
            ("dim", self.dim, limits::WIDTH),
        ] {
            limits::check(name, v, limit)?;
        }
        if self.shift_tokens && !self.dim.is_multiple_of(4) {
            return Err(ExportError::Unsupported(format!(
                "shift_tokens needs dim divisible by 4, got {}",
                self.dim
            )));
        }
        Ok(())
    }
}
