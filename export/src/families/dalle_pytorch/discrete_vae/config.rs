//! `DiscreteVAE` hyperparameters: the keyword arguments of `DiscreteVAE.__init__`, as stored in
//! a checkpoint's `vae_params` (`train_dalle.py`) or `hparams` (`train_vae.py`), validated
//! against what the reference itself accepts (models.md §2.6; lucidrains/DALLE-pytorch v1.6.6,
//! `dalle_pytorch/dalle_pytorch.py`).

use crate::checkpoint::PickleValue;
use crate::error::{ExportError, Result};
use dalle_bundle::limits::{self, Limit};

/// Per-channel pixel normalization `(x − mean) / std` applied before the encoder (and undone
/// after the decoder by the exported graph).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// One entry per channel.
    pub mean: Vec<f32>,
    /// One entry per channel, never zero.
    pub std: Vec<f32>,
}

/// Validated `DiscreteVAE` hyperparameters.
///
/// `temperature`, `straight_through`, `reinmax`, `smooth_l1_loss` and `kl_div_loss_weight` only
/// affect training (Gumbel-softmax sampling and the loss); inference (`get_codebook_indices`,
/// `decode`) ignores them, so they are accepted and dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteVaeConfig {
    /// Side of the square training image (a power of two).
    pub image_size: usize,
    /// Codebook size (the image vocabulary).
    pub num_tokens: usize,
    /// Codebook vector width.
    pub codebook_dim: usize,
    /// Stride-2 conv layers in the encoder (transposed in the decoder); downsampling `2^num_layers`.
    pub num_layers: usize,
    pub num_resnet_blocks: usize,
    pub hidden_dim: usize,
    pub channels: usize,
    /// `None` when the checkpoint set `normalization=None` (images used as they are).
    pub normalization: Option<Normalization>,
}

/// Keyword arguments `DiscreteVAE.__init__` accepts; anything else would make the reference's
/// `DiscreteVAE(**vae_params)` fail.
const KNOWN_KEYS: &[&str] = &[
    "image_size",
    "num_tokens",
    "codebook_dim",
    "num_layers",
    "num_resnet_blocks",
    "hidden_dim",
    "channels",
    "smooth_l1_loss",
    "temperature",
    "straight_through",
    "reinmax",
    "kl_div_loss_weight",
    "normalization",
];

/// The reference default `((0.5,)*3 + (0,), (0.5,)*3 + (1,))`, before truncation to `channels`.
const DEFAULT_MEAN: [f64; 4] = [0.5, 0.5, 0.5, 0.0];
const DEFAULT_STD: [f64; 4] = [0.5, 0.5, 0.5, 1.0];

impl Default for DiscreteVaeConfig {
    /// `DiscreteVAE()`'s defaults.
    fn default() -> Self {
        DiscreteVaeConfig {
            image_size: 256,
            num_tokens: 512,
            codebook_dim: 512,
            num_layers: 3,
            num_resnet_blocks: 0,
            hidden_dim: 64,
            channels: 3,
            normalization: Some(Normalization {
                mean: vec![0.5; 3],
                std: vec![0.5; 3],
            }),
        }
    }
}

impl DiscreteVaeConfig {
    /// Reads the `vae_params` / `hparams` dict. Missing keys take `DiscreteVAE`'s defaults.
    pub fn from_vae_params(p: &PickleValue) -> Result<Self> {
        let items = p.as_dict().ok_or_else(|| {
            ExportError::Weights(format!(
                "DiscreteVAE hyperparameters must be a dict, got {}",
                p.type_name()
            ))
        })?;
        for (k, _) in items {
            match k.as_str() {
                Some(k) if KNOWN_KEYS.contains(&k) => {}
                _ => {
                    return Err(ExportError::Unsupported(format!(
                        "DiscreteVAE hyperparameter {} is not an argument of DiscreteVAE \
                         (known: {})",
                        describe_key(k),
                        KNOWN_KEYS.join(", ")
                    )));
                }
            }
        }
        let d = DiscreteVaeConfig::default();
        // Each size within its limit before it sizes a layer list or a graph dim.
        let int = |k: &str, default: usize, limit: Limit| -> Result<usize> {
            match p.get(k) {
                None => Ok(default),
                Some(PickleValue::Int(i)) => {
                    Ok(limits::check(&format!("DiscreteVAE {k}"), *i, limit)?)
                }
                Some(other) => Err(ExportError::Weights(format!(
                    "DiscreteVAE `{k}` must be an integer, got {}",
                    other.type_name()
                ))),
            }
        };
        let channels = int("channels", d.channels, limits::CHANNELS)?;
        let cfg = DiscreteVaeConfig {
            image_size: int("image_size", d.image_size, limits::IMAGE_SIDE)?,
            num_tokens: int("num_tokens", d.num_tokens, limits::VOCAB)?,
            codebook_dim: int("codebook_dim", d.codebook_dim, limits::WIDTH)?,
            num_layers: int("num_layers", d.num_layers, limits::DOWNSAMPLE_LAYERS)?,
            num_resnet_blocks: int("num_resnet_blocks", d.num_resnet_blocks, limits::BLOCKS)?,
            hidden_dim: int("hidden_dim", d.hidden_dim, limits::WIDTH)?,
            channels,
            normalization: normalization(p.get("normalization"), channels)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the reference asserts plus what an exportable graph needs.
    pub fn validate(&self) -> Result<()> {
        for (name, v, limit) in [
            ("image_size", self.image_size, limits::IMAGE_SIDE),
            ("num_tokens", self.num_tokens, limits::VOCAB),
            ("codebook_dim", self.codebook_dim, limits::WIDTH),
            ("num_layers", self.num_layers, limits::DOWNSAMPLE_LAYERS),
            ("num_resnet_blocks", self.num_resnet_blocks, limits::BLOCKS),
            ("hidden_dim", self.hidden_dim, limits::WIDTH),
            ("channels", self.channels, limits::CHANNELS),
        ] {
            limits::check(&format!("DiscreteVAE {name}"), v, limit)?;
        }
        let unsupported = |m: String| Err(ExportError::Unsupported(m));
        if self.num_layers < 1 {
            return unsupported(format!(
                "DiscreteVAE num_layers = {} (the reference requires >= 1)",
                self.num_layers
            ));
        }
        if !self.image_size.is_power_of_two() {
            return unsupported(format!(
                "DiscreteVAE image_size = {} is not a power of 2 (the reference requires one)",
                self.image_size
            ));
        }
        if self.image_size.trailing_zeros() < self.num_layers as u32 {
            return unsupported(format!(
                "DiscreteVAE image_size {} is smaller than its downsampling 2^{}",
                self.image_size, self.num_layers
            ));
        }
        for (name, v) in [
            ("num_tokens", self.num_tokens),
            ("codebook_dim", self.codebook_dim),
            ("hidden_dim", self.hidden_dim),
            ("channels", self.channels),
        ] {
            if v == 0 {
                return unsupported(format!("DiscreteVAE {name} = 0"));
            }
        }
        if let Some(n) = &self.normalization
            && (n.mean.len() != self.channels || n.std.len() != self.channels)
        {
            return unsupported(format!(
                "DiscreteVAE normalization has {} means and {} stds for {} channels",
                n.mean.len(),
                n.std.len(),
                self.channels
            ));
        }
        Ok(())
    }

    /// The downsampling factor `2^num_layers`.
    pub fn downsample(&self) -> usize {
        1 << self.num_layers
    }

    /// Image tokens per side at `image_size`.
    pub fn fmap(&self) -> usize {
        self.image_size >> self.num_layers
    }

    /// Channels entering the decoder's first transposed conv: the codebook width without
    /// resnet blocks, else `hidden_dim` (after the 1×1 input conv).
    pub fn decoder_init_channels(&self) -> usize {
        if self.num_resnet_blocks > 0 {
            self.hidden_dim
        } else {
            self.codebook_dim
        }
    }
}

fn describe_key(k: &PickleValue) -> String {
    match k.as_str() {
        Some(s) => format!("`{s}`"),
        None => format!("key of type {}", k.type_name()),
    }
}

/// `tuple(map(lambda t: t[:channels], normalization))`, as the reference: absent → the default;
/// `None` → no normalization; otherwise `(means, stds)`, each truncated to `channels` entries.
/// A single entry broadcasts over channels (as `torch` would); other lengths fail in the
/// reference and are rejected here.
fn normalization(v: Option<&PickleValue>, channels: usize) -> Result<Option<Normalization>> {
    let (mean, std): (Vec<f64>, Vec<f64>) = match v {
        None => (DEFAULT_MEAN.to_vec(), DEFAULT_STD.to_vec()),
        Some(PickleValue::None) => return Ok(None),
        Some(v) => {
            let pair = v.as_list().filter(|p| p.len() == 2).ok_or_else(|| {
                ExportError::Unsupported(format!(
                    "DiscreteVAE normalization must be (means, stds), got {}",
                    v.type_name()
                ))
            })?;
            let floats = |x: &PickleValue| -> Result<Vec<f64>> {
                x.as_list()
                    .and_then(|items| items.iter().map(PickleValue::as_float).collect())
                    .ok_or_else(|| {
                        ExportError::Unsupported(format!(
                            "DiscreteVAE normalization entries must be sequences of numbers, got {}",
                            x.type_name()
                        ))
                    })
            };
            (floats(&pair[0])?, floats(&pair[1])?)
        }
    };
    let fit = |mut x: Vec<f64>, what: &str| -> Result<Vec<f32>> {
        x.truncate(channels);
        if x.len() == 1 {
            x = vec![x[0]; channels];
        }
        if x.len() != channels {
            return Err(ExportError::Unsupported(format!(
                "DiscreteVAE normalization has {} {what} for {channels} channels \
                 (the reference cannot broadcast them)",
                x.len()
            )));
        }
        Ok(x.into_iter().map(|v| v as f32).collect())
    };
    let mean = fit(mean, "means")?;
    let std = fit(std, "stds")?;
    if mean.iter().chain(&std).any(|v| !v.is_finite()) || std.contains(&0.0) {
        return Err(ExportError::Unsupported(format!(
            "DiscreteVAE normalization means {mean:?} / stds {std:?}: values must be finite and \
             stds non-zero"
        )));
    }
    Ok(Some(Normalization { mean, std }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(k: &str) -> PickleValue {
        PickleValue::Str(k.into())
    }

    fn dict(items: Vec<(&str, PickleValue)>) -> PickleValue {
        PickleValue::Dict(items.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    fn floats(v: &[f64]) -> PickleValue {
        PickleValue::Tuple(v.iter().map(|x| PickleValue::Float(*x)).collect())
    }

    #[test]
    fn empty_dict_gives_reference_defaults() {
        let cfg = DiscreteVaeConfig::from_vae_params(&dict(vec![])).unwrap();
        assert_eq!(cfg, DiscreteVaeConfig::default());
        assert_eq!(cfg.fmap(), 32);
        assert_eq!(cfg.downsample(), 8);
    }

    #[test]
    fn default_normalization_is_truncated_to_channels() {
        let cfg =
            DiscreteVaeConfig::from_vae_params(&dict(vec![("channels", PickleValue::Int(4))]))
                .unwrap();
        let n = cfg.normalization.unwrap();
        assert_eq!(n.mean, vec![0.5, 0.5, 0.5, 0.0]);
        assert_eq!(n.std, vec![0.5, 0.5, 0.5, 1.0]);
        let cfg =
            DiscreteVaeConfig::from_vae_params(&dict(vec![("channels", PickleValue::Int(1))]))
                .unwrap();
        assert_eq!(cfg.normalization.unwrap().mean, vec![0.5]);
        // Five channels: the default has only four entries; the reference fails to broadcast.
        let err =
            DiscreteVaeConfig::from_vae_params(&dict(vec![("channels", PickleValue::Int(5))]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("4 means for 5 channels"), "{err}");
    }

    #[test]
    fn explicit_and_absent_normalization() {
        let p = dict(vec![(
            "normalization",
            PickleValue::Tuple(vec![floats(&[0.1, 0.2, 0.3, 9.0]), floats(&[2.0])].into()),
        )]);
        let n = DiscreteVaeConfig::from_vae_params(&p)
            .unwrap()
            .normalization
            .unwrap();
        assert_eq!(n.mean, vec![0.1, 0.2, 0.3]);
        assert_eq!(n.std, vec![2.0; 3]);
        let p = dict(vec![("normalization", PickleValue::None)]);
        assert!(
            DiscreteVaeConfig::from_vae_params(&p)
                .unwrap()
                .normalization
                .is_none()
        );
        let p = dict(vec![(
            "normalization",
            PickleValue::Tuple(vec![floats(&[0.5]), floats(&[0.0])].into()),
        )]);
        assert!(DiscreteVaeConfig::from_vae_params(&p).is_err());
    }

    #[test]
    fn training_only_keys_are_ignored_and_unknown_keys_rejected() {
        let p = dict(vec![
            ("temperature", PickleValue::Float(0.9)),
            ("straight_through", PickleValue::Bool(true)),
            ("kl_div_loss_weight", PickleValue::Float(0.0)),
            ("smooth_l1_loss", PickleValue::Bool(false)),
            ("reinmax", PickleValue::Bool(false)),
        ]);
        assert_eq!(
            DiscreteVaeConfig::from_vae_params(&p).unwrap(),
            DiscreteVaeConfig::default()
        );
        let err = DiscreteVaeConfig::from_vae_params(&dict(vec![("emb_dim", PickleValue::Int(3))]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`emb_dim`"), "{err}");
    }

    #[test]
    fn unsupported_shapes_are_clear_errors() {
        for (k, v, needle) in [
            (
                "num_layers",
                0,
                "`DiscreteVAE num_layers` = 0 is outside the supported range 1..=16",
            ),
            ("image_size", 48, "not a power of 2"),
            ("num_layers", 9, "smaller than its downsampling 2^9"),
            (
                "num_tokens",
                0,
                "`DiscreteVAE num_tokens` = 0 is outside the supported range 1..=",
            ),
            ("hidden_dim", -1, "`DiscreteVAE hidden_dim` = -1 is outside"),
            (
                "hidden_dim",
                1 << 40,
                "`DiscreteVAE hidden_dim` = 1099511627776 is outside",
            ),
            (
                "num_layers",
                1 << 62,
                "`DiscreteVAE num_layers` = 4611686018427387904 is outside",
            ),
        ] {
            let err = DiscreteVaeConfig::from_vae_params(&dict(vec![(k, PickleValue::Int(v))]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{k}={v}: {err}");
        }
        let err = DiscreteVaeConfig::from_vae_params(&PickleValue::None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a dict"), "{err}");
    }
}
