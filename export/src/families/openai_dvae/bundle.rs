//! The one way OpenAI's dVAE goes into a bundle, shared by `dalle-export openai-dvae`,
//! `dalle-export demo` and the tests: each half from its released file or seeded random.

use super::{DecoderConfig, EncoderConfig};
use crate::bundle_writer::{BundleWriter, source_file};
use crate::error::{ExportError, Result};
use crate::families::Progress;
use std::path::Path;

/// Where one half of the dVAE comes from.
#[derive(Clone, Copy, Debug)]
pub enum Half<'a, C> {
    /// A checkpoint (`encoder.pkl`/`decoder.pkl` or the same weights as safetensors).
    File(&'a Path),
    /// Seeded random weights of the given size (no trained model: `demo`).
    Random { config: C, seed: u64 },
}

/// What to export (the `dalle-export openai-dvae` flags, or the demo's sizes and seeds).
#[derive(Clone, Copy, Debug)]
pub struct BundleOptions<'a> {
    pub encoder: Option<Half<'a, EncoderConfig>>,
    pub decoder: Option<Half<'a, DecoderConfig>>,
    /// Told each half's hyperparameters as it is read from a file (the CLI prints them).
    pub progress: Progress,
}

/// Adds the encoder and/or decoder graph to `writer`, the files they came from to the
/// provenance. At least one half must be given.
pub fn add_to_bundle(writer: &mut BundleWriter, options: BundleOptions<'_>) -> Result<()> {
    let BundleOptions {
        encoder,
        decoder,
        progress,
    } = options;
    if encoder.is_none() && decoder.is_none() {
        return Err(ExportError::Unsupported(
            "a dVAE bundle needs an encoder, a decoder, or both".into(),
        ));
    }
    for (role, half) in [
        ("encoder", encoder.and_then(file)),
        ("decoder", decoder.and_then(file)),
    ] {
        if let Some(p) = half {
            let source = source_file(role, p)?;
            writer.manifest_mut().provenance.sources.push(source);
        }
    }
    match encoder {
        Some(Half::File(p)) => {
            let (cfg, w) = super::load_encoder(p)
                .map_err(|e| e.context(format!("reading encoder {}", p.display())))?;
            progress(&format!("encoder: {cfg:?}"));
            writer.add_graph(super::encoder_entry(&cfg, w)?)?;
        }
        Some(Half::Random { config, seed }) => {
            let w = super::random_encoder(&config, seed)?;
            writer.add_graph(super::encoder_entry(&config, w)?)?;
        }
        None => {}
    }
    match decoder {
        Some(Half::File(p)) => {
            let (cfg, w) = super::load_decoder(p)
                .map_err(|e| e.context(format!("reading decoder {}", p.display())))?;
            progress(&format!("decoder: {cfg:?}"));
            writer.add_graph(super::decoder_entry(&cfg, w)?)?;
        }
        Some(Half::Random { config, seed }) => {
            let w = super::random_decoder(&config, seed)?;
            writer.add_graph(super::decoder_entry(&config, w)?)?;
        }
        None => {}
    }
    Ok(())
}

fn file<C>(half: Half<'_, C>) -> Option<&Path> {
    match half {
        Half::File(p) => Some(p),
        Half::Random { .. } => None,
    }
}
