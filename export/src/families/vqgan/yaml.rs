//! taming-transformers' training config (`configs/*.yaml`, loaded by DALLE-pytorch's
//! `VQGanVAE` with OmegaConf): `model.target` and `model.params.{embed_dim, n_embed, remap,
//! ddconfig}`. Parsed with `serde-saphyr` (panic-free, with alias and event budgets); keys the
//! reference ignores are ignored here too, and defaults are the reference's
//! (`taming/modules/diffusionmodules/model.py`: `ch_mult` (1,2,4,8), `double_z` true,
//! `resamp_with_conv` true).

use super::config::{PixelMap, VqKind, VqganConfig};
use crate::error::{ExportError, Result};
use serde::Deserialize;
use std::io::Read;
use std::path::Path;

/// The largest config file read (the published ones are ~2 KB).
pub const MAX_YAML_BYTES: u64 = 1 << 20;

/// `model.target` of a `VQModel`.
pub const VQMODEL_TARGET: &str = "taming.models.vqgan.VQModel";
/// `model.target` of a `GumbelVQ`.
pub const GUMBELVQ_TARGET: &str = "taming.models.vqgan.GumbelVQ";

/// taming's `Normalize` epsilon.
const TAMING_EPS: f32 = 1e-6;

#[derive(Deserialize)]
struct ConfigFile {
    model: Model,
}

#[derive(Deserialize)]
struct Model {
    target: String,
    params: Params,
}

#[derive(Deserialize)]
struct Params {
    embed_dim: usize,
    n_embed: usize,
    ddconfig: DdConfig,
    #[serde(default)]
    remap: Option<String>,
}

#[derive(Deserialize)]
struct DdConfig {
    ch: usize,
    out_ch: usize,
    ch_mult: Option<Vec<usize>>,
    num_res_blocks: usize,
    attn_resolutions: Vec<usize>,
    in_channels: usize,
    resolution: usize,
    z_channels: usize,
    double_z: Option<bool>,
    resamp_with_conv: Option<bool>,
    give_pre_end: Option<bool>,
}

/// Reads and checks a taming config file.
pub fn load(path: &Path) -> Result<VqganConfig> {
    let file = std::fs::File::open(path).map_err(|e| ExportError::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_YAML_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ExportError::io(path, e))?;
    if text.len() as u64 > MAX_YAML_BYTES {
        return Err(ExportError::Weights(format!(
            "{}: larger than {MAX_YAML_BYTES} bytes: not a taming-transformers config",
            path.display()
        )));
    }
    parse(&text).map_err(|e| e.context(format!("reading {}", path.display())))
}

/// Parses a taming config's text.
pub fn parse(text: &str) -> Result<VqganConfig> {
    let file: ConfigFile = serde_saphyr::from_str(text).map_err(|e| {
        ExportError::Weights(format!(
            "not a taming-transformers VQGAN config (model.target, model.params with \
             embed_dim, n_embed, ddconfig): {e}"
        ))
    })?;
    let Model { target, params } = file.model;
    let kind = match target.as_str() {
        VQMODEL_TARGET => VqKind::VectorQuantizer,
        GUMBELVQ_TARGET => VqKind::Gumbel,
        other => {
            return Err(ExportError::Unsupported(format!(
                "model.target `{other}`: only `{VQMODEL_TARGET}` and `{GUMBELVQ_TARGET}` are \
                 supported"
            )));
        }
    };
    if let Some(r) = params.remap {
        return Err(ExportError::Unsupported(format!(
            "model.params.remap `{r}`: codebook remapping (an index file outside the \
             checkpoint) is not supported"
        )));
    }
    let dd = params.ddconfig;
    if dd.resamp_with_conv == Some(false) {
        return Err(ExportError::Unsupported(
            "ddconfig.resamp_with_conv: false (resampling without convs) is not supported".into(),
        ));
    }
    if dd.give_pre_end == Some(true) {
        return Err(ExportError::Unsupported(
            "ddconfig.give_pre_end: true (a decoder without its output layers) is not supported"
                .into(),
        ));
    }
    let cfg = VqganConfig {
        kind,
        n_embed: params.n_embed,
        embed_dim: params.embed_dim,
        z_channels: dd.z_channels,
        ch: dd.ch,
        ch_mult: dd.ch_mult.unwrap_or_else(|| vec![1, 2, 4, 8]),
        num_res_blocks: dd.num_res_blocks,
        attn_resolutions: dd.attn_resolutions,
        resolution: dd.resolution,
        in_channels: dd.in_channels,
        out_ch: dd.out_ch,
        double_z: dd.double_z.unwrap_or(true),
        norm_eps: TAMING_EPS,
        pixels: PixelMap::FromSigned,
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VQ: &str = "model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 256
    n_embed: 1024
    ddconfig:
      double_z: False
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult: [ 1,1,2,2,4]
      num_res_blocks: 2
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: False
        disc_start: 250001
";

    #[test]
    fn reads_the_published_imagenet_config() {
        let c = parse(VQ).unwrap();
        assert_eq!(c.kind, VqKind::VectorQuantizer);
        assert_eq!((c.n_embed, c.embed_dim, c.ch), (1024, 256, 128));
        assert_eq!(c.ch_mult, vec![1, 1, 2, 2, 4]);
        assert_eq!(c.attn_resolutions, vec![16]);
        assert_eq!(c.downsample(), 16);
        assert_eq!(c.norm_eps, 1e-6);
    }

    #[test]
    fn rejects_what_it_cannot_export() {
        let e = parse(&VQ.replace("VQModel", "EMAVQ"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("taming.models.vqgan.EMAVQ"), "{e}");
        let e = parse(&VQ.replace("double_z: False", "double_z: True"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("double_z"), "{e}");
        let e = parse(&VQ.replace("      double_z: False\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("double_z"), "default is true: {e}");
        let e = parse(&VQ.replace("ch: 128", "ch: 100"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of the 32"), "{e}");
        let e = parse(&VQ.replace("n_embed: 1024", "n_embed: -3"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a taming"), "{e}");
        let e = parse("model: [").unwrap_err().to_string();
        assert!(e.contains("not a taming"), "{e}");
        let e = parse(&VQ.replace("    ddconfig:", "    remap: used.npy\n    ddconfig:"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("remap"), "{e}");
    }

    #[test]
    fn alias_bombs_are_refused_by_the_budget() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("b{}", i - 1)
            };
            s.push_str(&format!(
                "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        s.push_str("model: *b11\n");
        assert!(parse(&s).is_err());
    }
}
