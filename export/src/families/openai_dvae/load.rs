//! Reading dVAE weights and hyperparameters from a pickled whole module (`.pkl`, the released
//! format) or from safetensors (state-dict names), with clear errors for the wrong half, wrong
//! family, or inconsistent shapes.

use super::config::{DecoderConfig, EncoderConfig, GROUP_COUNT};
use super::{DECODER_CLASS, ENCODER_CLASS, names};
use crate::checkpoint::{
    ClassAllowList, PickleValue, module_state_dict, read_pytorch, read_safetensors,
};
use crate::error::{ExportError, Result};
use crate::tensor::TensorData;
use crate::weights::Weights;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Encoder,
    Decoder,
}

impl Half {
    fn name(self) -> &'static str {
        match self {
            Half::Encoder => "encoder",
            Half::Decoder => "decoder",
        }
    }
    fn class(self) -> &'static str {
        match self {
            Half::Encoder => ENCODER_CLASS,
            Half::Decoder => DECODER_CLASS,
        }
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Reads an encoder checkpoint (`encoder.pkl` or `.safetensors`).
pub fn load_encoder(path: &Path) -> Result<(EncoderConfig, Weights)> {
    let source = path.display().to_string();
    let (tensors, attrs) = read(path, Half::Encoder)?;
    let inferred = infer_encoder(&tensors, &source)?;
    let cfg = match attrs {
        Some(module) => {
            check_group_count(&module, &source)?;
            let cfg = EncoderConfig {
                n_hid: attr_usize(&module, "n_hid", &source)?,
                n_blk_per_group: attr_usize(&module, "n_blk_per_group", &source)?,
                input_channels: attr_usize(&module, "input_channels", &source)?,
                vocab_size: attr_usize(&module, "vocab_size", &source)?,
            };
            if cfg != inferred {
                return Err(ExportError::Weights(format!(
                    "{source}: module attributes say {cfg:?} but the tensor shapes say {inferred:?}"
                )));
            }
            cfg
        }
        None => inferred,
    };
    Ok((cfg, Weights::new(source, tensors)))
}

/// Reads a decoder checkpoint (`decoder.pkl` or `.safetensors`).
pub fn load_decoder(path: &Path) -> Result<(DecoderConfig, Weights)> {
    let source = path.display().to_string();
    let (tensors, attrs) = read(path, Half::Decoder)?;
    let inferred = infer_decoder(&tensors, &source)?;
    let cfg = match attrs {
        Some(module) => {
            check_group_count(&module, &source)?;
            let cfg = DecoderConfig {
                n_init: attr_usize(&module, "n_init", &source)?,
                n_hid: attr_usize(&module, "n_hid", &source)?,
                n_blk_per_group: attr_usize(&module, "n_blk_per_group", &source)?,
                output_channels: attr_usize(&module, "output_channels", &source)?,
                vocab_size: attr_usize(&module, "vocab_size", &source)?,
            };
            if cfg != inferred {
                return Err(ExportError::Weights(format!(
                    "{source}: module attributes say {cfg:?} but the tensor shapes say {inferred:?}"
                )));
            }
            cfg
        }
        None => inferred,
    };
    Ok((cfg, Weights::new(source, tensors)))
}

/// An encoder from an already read state dict (e.g. the `vae.enc.` tensors of a DALLE-pytorch
/// checkpoint trained with `OpenAIDiscreteVAE`); the hyperparameters come from the shapes.
pub fn encoder_from_state_dict(
    tensors: BTreeMap<String, TensorData>,
    source: &str,
) -> Result<(EncoderConfig, Weights)> {
    check_half_by_shapes(&tensors, Half::Encoder, Path::new(source))?;
    let cfg = infer_encoder(&tensors, source)?;
    Ok((cfg, Weights::new(source, tensors)))
}

/// A decoder from an already read state dict; see [`encoder_from_state_dict`].
pub fn decoder_from_state_dict(
    tensors: BTreeMap<String, TensorData>,
    source: &str,
) -> Result<(DecoderConfig, Weights)> {
    check_half_by_shapes(&tensors, Half::Decoder, Path::new(source))?;
    let cfg = infer_decoder(&tensors, source)?;
    Ok((cfg, Weights::new(source, tensors)))
}

/// The state dict, plus the pickled module (for its attributes) when reading a `.pkl`.
fn read(path: &Path, half: Half) -> Result<(BTreeMap<String, TensorData>, Option<PickleValue>)> {
    if is_safetensors(path) {
        let tensors = read_safetensors(path)?;
        check_half_by_shapes(&tensors, half, path)?;
        return Ok((tensors, None));
    }
    let root = read_pytorch(path, &ClassAllowList::dvae())?;
    match root.class_name() {
        Some(c) if c == half.class() => {}
        Some(c) if c == ENCODER_CLASS || c == DECODER_CLASS => {
            let other = if half == Half::Encoder {
                "decoder"
            } else {
                "encoder"
            };
            return Err(ExportError::Weights(format!(
                "{}: this file holds the dVAE {other} (`{c}`), but it was given as the {}",
                path.display(),
                half.name()
            )));
        }
        found => {
            return Err(ExportError::Weights(format!(
                "{}: expected a pickled `{}` module (OpenAI dVAE {}), found {}",
                path.display(),
                half.class(),
                half.name(),
                found
                    .map(|c| format!("`{c}`"))
                    .unwrap_or_else(|| root.type_name())
            )));
        }
    }
    let tensors = module_state_dict(&root)?;
    Ok((tensors, Some(root)))
}

fn check_half_by_shapes(
    tensors: &BTreeMap<String, TensorData>,
    half: Half,
    path: &Path,
) -> Result<()> {
    let input = names::weight(&names::input_conv());
    let Some(t) = tensors.get(&input) else {
        return Err(ExportError::Weights(format!(
            "{}: no `{input}` tensor: not an OpenAI dVAE state dict",
            path.display()
        )));
    };
    // The encoder's input conv is 7×7 over pixels; the decoder's is 1×1 over one-hot codes.
    let kernel = t.shape().get(2).copied();
    let found = match kernel {
        Some(7) => Half::Encoder,
        Some(1) => Half::Decoder,
        _ => {
            return Err(ExportError::Weights(format!(
                "{}: `{input}` has shape {:?}: not an OpenAI dVAE state dict",
                path.display(),
                t.shape()
            )));
        }
    };
    if found != half {
        return Err(ExportError::Weights(format!(
            "{}: this file holds the dVAE {} (its `{input}` is {:?}), but it was given as the {}",
            path.display(),
            found.name(),
            t.shape(),
            half.name()
        )));
    }
    Ok(())
}

fn attr_usize(module: &PickleValue, name: &str, source: &str) -> Result<usize> {
    module
        .get(name)
        .and_then(PickleValue::as_int)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| {
            ExportError::Weights(format!(
                "{source}: the pickled module has no non-negative integer attribute `{name}`"
            ))
        })
}

fn check_group_count(module: &PickleValue, source: &str) -> Result<()> {
    match module.get("group_count").and_then(PickleValue::as_int) {
        Some(n) if n != GROUP_COUNT as i64 => Err(ExportError::Unsupported(format!(
            "{source}: group_count {n} (only {GROUP_COUNT} exists in the reference)"
        ))),
        _ => Ok(()),
    }
}

fn shape<'a>(
    t: &'a BTreeMap<String, TensorData>,
    name: &str,
    rank: usize,
    source: &str,
) -> Result<&'a [usize]> {
    let s = t
        .get(name)
        .map(TensorData::shape)
        .ok_or_else(|| ExportError::Weights(format!("{source}: missing tensor `{name}`")))?;
    if s.len() != rank {
        return Err(ExportError::Weights(format!(
            "{source}: tensor `{name}` has shape {s:?}, expected rank {rank}"
        )));
    }
    Ok(s)
}

fn count_blocks(t: &BTreeMap<String, TensorData>) -> usize {
    (1..)
        .take_while(|b| t.contains_key(&names::weight(&names::res_conv(&names::block(1, *b), 1))))
        .count()
}

fn infer_encoder(t: &BTreeMap<String, TensorData>, source: &str) -> Result<EncoderConfig> {
    let input = shape(t, &names::weight(&names::input_conv()), 4, source)?;
    let output = shape(t, &names::weight(&names::output_conv()), 4, source)?;
    Ok(EncoderConfig {
        n_hid: input[0],
        input_channels: input[1],
        vocab_size: output[0],
        n_blk_per_group: count_blocks(t),
    })
}

fn infer_decoder(t: &BTreeMap<String, TensorData>, source: &str) -> Result<DecoderConfig> {
    let input = shape(t, &names::weight(&names::input_conv()), 4, source)?;
    let output = shape(t, &names::weight(&names::output_conv()), 4, source)?;
    if output[0] % 2 != 0 {
        return Err(ExportError::Weights(format!(
            "{source}: `{}` has {} output channels; the logit-Laplace head needs an even count",
            names::weight(&names::output_conv()),
            output[0]
        )));
    }
    Ok(DecoderConfig {
        n_init: input[0],
        vocab_size: input[1],
        n_hid: output[1],
        output_channels: output[0] / 2,
        n_blk_per_group: count_blocks(t),
    })
}
