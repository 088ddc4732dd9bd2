//! VQGAN hyperparameters (taming-transformers `ddconfig` + `n_embed`/`embed_dim`, or min-dalle's
//! constants), validated before any graph is built (`shared/reference/gpu-and-minidalle.md` §5).

use crate::error::{ExportError, Result};

/// Every `Normalize` in taming's `model.py` and every `nn.GroupNorm` in min-dalle has 32 groups.
pub const GROUPS: usize = 32;

/// How codes are looked up and (encoder) chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VqKind {
    /// `VectorQuantizer2` (`VQModel`): codebook `quantize.embedding.weight`, nearest code.
    VectorQuantizer,
    /// `GumbelQuantize` (`GumbelVQ`): codebook `quantize.embed.weight`, code logits from the
    /// 1×1 `quantize.proj`.
    Gumbel,
    /// min-dalle's `VQGanDetokenizer`: codebook `embedding.weight`, decoder only.
    MinDalle,
}

/// What the decoder's raw output is mapped through to reach pixels in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelMap {
    /// min-dalle: `clip(x, 0, 1)` (its VQGAN was trained on [0, 1] images).
    Clip01,
    /// taming / DALLE-pytorch `VQGanVAE.decode`: `(clamp(x, −1, 1) + 1) · 0.5`.
    FromSigned,
}

/// One VQGAN's geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct VqganConfig {
    pub kind: VqKind,
    /// Codebook size.
    pub n_embed: usize,
    /// Codebook vector width.
    pub embed_dim: usize,
    pub z_channels: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Feature-map sides (at the configured `resolution`) that get attention blocks.
    pub attn_resolutions: Vec<usize>,
    /// The training image side.
    pub resolution: usize,
    pub in_channels: usize,
    pub out_ch: usize,
    /// The encoder writes `2·z_channels` channels (never for the VQ models here).
    pub double_z: bool,
    /// GroupNorm epsilon: taming 1e-6, min-dalle PyTorch's default 1e-5.
    pub norm_eps: f32,
    pub pixels: PixelMap,
}

impl VqganConfig {
    /// min-dalle's detokenizer (`min_dalle/models/vqgan_detokenizer.py`; the
    /// `vqgan_imagenet_f16_16384` geometry).
    pub fn min_dalle() -> VqganConfig {
        VqganConfig {
            kind: VqKind::MinDalle,
            n_embed: 16384,
            embed_dim: 256,
            z_channels: 256,
            ch: 128,
            ch_mult: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            resolution: 256,
            in_channels: 3,
            out_ch: 3,
            double_z: false,
            norm_eps: 1e-5,
            pixels: PixelMap::Clip01,
        }
    }

    /// Number of resolution levels (`len(ch_mult)`).
    pub fn levels(&self) -> usize {
        self.ch_mult.len()
    }

    /// Pixels per code along each side: `2^(levels − 1)`.
    pub fn downsample(&self) -> usize {
        1 << (self.levels() - 1)
    }

    /// Channels of level `i` (`ch · ch_mult[i]`).
    pub fn level_channels(&self, level: usize) -> usize {
        self.ch * self.ch_mult[level]
    }

    /// The feature-map side at level `i` when the input is `resolution` pixels.
    pub fn level_resolution(&self, level: usize) -> usize {
        self.resolution >> level
    }

    /// Whether level `i` has attention blocks.
    pub fn has_attention(&self, level: usize) -> bool {
        self.attn_resolutions
            .contains(&self.level_resolution(level))
    }

    /// Rejects geometries the reference could not build or whose sizes overflow.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ExportError::Unsupported(format!("VQGAN config: {m}")));
        for (name, v) in [
            ("n_embed", self.n_embed),
            ("embed_dim", self.embed_dim),
            ("z_channels", self.z_channels),
            ("ch", self.ch),
            ("resolution", self.resolution),
            ("in_channels", self.in_channels),
            ("out_ch", self.out_ch),
        ] {
            if v == 0 {
                return bad(format!("{name} must be >= 1, got 0"));
            }
        }
        if self.num_res_blocks == 0 {
            return bad("num_res_blocks must be >= 1, got 0".into());
        }
        if self.ch_mult.is_empty() || self.ch_mult.len() > 16 {
            return bad(format!(
                "ch_mult must have 1 to 16 levels, got {}",
                self.ch_mult.len()
            ));
        }
        if i64::try_from(self.n_embed).is_err() {
            return bad(format!("n_embed {} is too large", self.n_embed));
        }
        for (i, &m) in self.ch_mult.iter().enumerate() {
            let c = self.ch.checked_mul(m);
            match c {
                Some(c) if c > 0 && c.is_multiple_of(GROUPS) => {}
                _ => {
                    return bad(format!(
                        "level {i}: ch {} × ch_mult {m} must be a positive multiple of the \
                         {GROUPS} GroupNorm groups",
                        self.ch
                    ));
                }
            }
        }
        if !self.resolution.is_multiple_of(self.downsample()) {
            return bad(format!(
                "resolution {} is not a multiple of the downsampling {}",
                self.resolution,
                self.downsample()
            ));
        }
        if self.double_z {
            return bad("double_z: true is a KL autoencoder, not a VQ model".into());
        }
        if self.kind == VqKind::Gumbel && self.embed_dim != self.z_channels {
            return bad(format!(
                "GumbelQuantize projects z_channels {} but quant_conv gives embed_dim {}: the \
                 reference cannot run this model",
                self.z_channels, self.embed_dim
            ));
        }
        Ok(())
    }
}
