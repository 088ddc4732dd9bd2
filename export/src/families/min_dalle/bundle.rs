//! The one way a min-dalle model goes into a bundle, shared by `dalle-export min-dalle` and the
//! tests: provenance, the tokenizer, the token layout and sampling defaults, the
//! `text_encoder`, `cross_kv` and `decoder` graphs (the decoder's cache in the chosen
//! [`KvCacheLayout`]), and (when `detoker.pt` is given) the VQGAN image decoder as the
//! bundle's `dvae_decoder` (family `vqgan`).
//!
//! The start token: min-dalle (since commit `6ae7458`, "fix cuda bug") feeds `2**14 − 1` =
//! 16383, a real VQGAN code; dalle-mini was trained with `decoder_start_token_id` 16384, the
//! extra embedding row. The bundle uses min-dalle's 16383 by default (for a model with fewer
//! codes: the last code), because min-dalle is the reference these bundles are checked and
//! measured against and what its users' images come from; `--start-token 16384` gives the
//! training convention.

use super::config::MinDalleConfig;
use super::{cross_kv, decoder, encoder};
use crate::bundle_writer::{BundleWriter, GraphEntry, source_file};
use crate::error::{ExportError, Result};
use crate::families::Progress;
use crate::kv_cache::KvCacheLayout;
use crate::tokenizer::min_dalle::{PAD_ID, Vocabulary, tokenizer_json};
use dalle_bundle::io::dims as d;
use dalle_bundle::{DimRange, GraphRole, MinDalleAttributes, SamplingDefaults, TokenLayout};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// min-dalle's sampling defaults (`generate_raw_image_stream`): top-k 256, temperature 1,
/// super-conditioning factor 16.
pub const DEFAULT_TOP_K: u64 = 256;
pub const DEFAULT_SUPERCONDITION: f64 = 16.0;

/// The model's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFiles {
    pub encoder: PathBuf,
    pub decoder: PathBuf,
    pub vocab: PathBuf,
    pub merges: PathBuf,
    /// The VQGAN detokenizer, when present.
    pub detoker: Option<PathBuf>,
}

/// `DIR/stem.ext` or `DIR/stem_mini.ext` (min-dalle's names); both present is an error.
fn one_of(dir: &Path, stem: &str, ext: &str) -> Result<PathBuf> {
    let plain = dir.join(format!("{stem}.{ext}"));
    let mini = dir.join(format!("{stem}_mini.{ext}"));
    match (plain.is_file(), mini.is_file()) {
        (true, false) => Ok(plain),
        (false, true) => Ok(mini),
        (true, true) => Err(ExportError::Weights(format!(
            "{} has both {stem}.{ext} and {stem}_mini.{ext}: name the file with its own flag",
            dir.display()
        ))),
        (false, false) => Err(ExportError::Weights(format!(
            "{} has no {stem}.{ext} (or {stem}_mini.{ext})",
            dir.display()
        ))),
    }
}

impl ModelFiles {
    /// The files of a min-dalle directory (`encoder.pt` or `encoder_mini.pt`, ...; `detoker.pt`
    /// optional).
    pub fn from_dir(dir: &Path) -> Result<ModelFiles> {
        if !dir.is_dir() {
            return Err(ExportError::Weights(format!(
                "{}: not a directory",
                dir.display()
            )));
        }
        let detoker = dir.join("detoker.pt");
        Ok(ModelFiles {
            encoder: one_of(dir, "encoder", "pt")?,
            decoder: one_of(dir, "decoder", "pt")?,
            vocab: one_of(dir, "vocab", "json")?,
            merges: one_of(dir, "merges", "txt")?,
            detoker: detoker.is_file().then_some(detoker),
        })
    }
}

/// What to export (the `dalle-export min-dalle` flags).
#[derive(Clone, Debug)]
pub struct BundleOptions {
    pub files: ModelFiles,
    /// Attention heads (`--heads`; default: width / 64).
    pub heads: Option<usize>,
    /// The id fed first (`--start-token`; default: see the module docs).
    pub start_token: Option<usize>,
    /// The decoder's self-attention cache (`--kv-cache`; default concat, as DALLE-pytorch's).
    pub kv_cache: KvCacheLayout,
    pub progress: Progress,
}

/// One line describing a model's sizes.
pub fn describe(cfg: &MinDalleConfig) -> String {
    format!(
        "min-dalle: encoder {} × {}, decoder {} × {}, {} heads × {}, GLU {}/{}, text vocab {}, \
         {} image ids ({} codes sampled), {}×{} tokens, start token {}",
        cfg.encoder_layers,
        cfg.dim,
        cfg.decoder_layers,
        cfg.dim,
        cfg.heads,
        cfg.head_dim,
        cfg.encoder_glu,
        cfg.decoder_glu,
        cfg.text_vocab,
        cfg.decoder_vocab,
        cfg.image_codes,
        cfg.grid,
        cfg.grid,
        cfg.start_token
    )
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ExportError::io(path, e))
}

fn batch_ranges() -> BTreeMap<String, DimRange> {
    let mut r = BTreeMap::new();
    r.insert(d::BATCH.to_string(), DimRange::new(1, 2, 64));
    r
}

/// Adds a min-dalle model to `writer` (see the module docs).
pub fn add_to_bundle(writer: &mut BundleWriter, options: BundleOptions) -> Result<()> {
    let BundleOptions {
        files,
        heads,
        start_token,
        kv_cache,
        progress,
    } = options;
    let sources = vec![
        source_file("encoder", &files.encoder)?,
        source_file("decoder", &files.decoder)?,
        source_file("vocab", &files.vocab)?,
        source_file("merges", &files.merges)?,
    ];
    let vocab_bytes = read(&files.vocab)?;
    let merges_bytes = read(&files.merges)?;
    let merges = String::from_utf8(merges_bytes)
        .map_err(|_| ExportError::Weights(format!("{}: not UTF-8", files.merges.display())))?;
    let vocab = Vocabulary::parse(&vocab_bytes, &merges)
        .map_err(|m| ExportError::Weights(format!("{}: {m}", files.vocab.display())))?;
    let mut model = super::load(&files.encoder, &files.decoder)?;
    let cfg = MinDalleConfig::from_weights(&model.encoder, &model.decoder, heads, start_token)?;
    progress(&describe(&cfg));
    if vocab.max_id() >= cfg.text_vocab as u64 {
        return Err(ExportError::Weights(format!(
            "{} has ids up to {}, but the encoder embeds {} text ids: not this model's vocabulary",
            files.vocab.display(),
            vocab.max_id(),
            cfg.text_vocab
        )));
    }
    let tokenizer = tokenizer_json(&vocab)?;
    {
        let m = writer.manifest_mut();
        m.provenance.sources.extend(sources);
        // Text: the tokenizer's ids without <s>/</s>, which the runtime adds; one position is
        // left for <s> (min-dalle keeps `[<s>] + ids + [</s>]` cut to `text_length`).
        m.token_layout = Some(TokenLayout {
            text_length: cfg.text_length as u64 - 1,
            text_vocab_size: cfg.text_vocab as u64,
            bos_id: vocab.special.bos,
            pad_id_base: PAD_ID,
            image_grid: cfg.grid as u64,
            image_vocab_size: cfg.image_codes as u64,
            image_token_offset: 0,
            total_vocab_size: cfg.image_codes as u64,
        });
        m.sampling = Some(SamplingDefaults {
            top_k: Some(DEFAULT_TOP_K.min(cfg.image_codes as u64)),
            top_p: None,
            temperature: 1.0,
            cond_scale: DEFAULT_SUPERCONDITION,
        });
        m.tokenizer = Some(crate::tokenizer::TOKENIZER_FILE.to_string());
    }
    writer.add_file(crate::tokenizer::TOKENIZER_FILE, &tokenizer)?;
    let pad = PAD_ID as i64;
    let enc = encoder::build(&cfg, &mut model.encoder, pad)?;
    std::mem::take(&mut model.encoder).finish()?;
    writer.add_graph(GraphEntry {
        role: GraphRole::TextEncoder,
        graph: enc,
        dim_ranges: batch_ranges(),
        attributes: BTreeMap::new(),
    })?;
    let ckv = cross_kv::build(&cfg, &mut model.decoder, pad)?;
    writer.add_graph(GraphEntry {
        role: GraphRole::CrossKv,
        graph: ckv,
        dim_ranges: batch_ranges(),
        attributes: BTreeMap::new(),
    })?;
    let dec = decoder::build(&cfg, &mut model.decoder, kv_cache)?;
    model.decoder.finish()?;
    let positions = cfg.image_length as u64;
    let mut ranges = batch_ranges();
    ranges.insert(d::SEQUENCE.to_string(), DimRange::new(1, 1, positions));
    if !kv_cache.in_place() {
        ranges.insert(
            d::PAST_SEQUENCE.to_string(),
            DimRange::new(0, positions - 1, positions - 1),
        );
    }
    let attributes = MinDalleAttributes {
        layers: cfg.decoder_layers as u64,
        heads: cfg.heads as u64,
        head_dim: cfg.head_dim as u64,
        dim: cfg.dim as u64,
        glu_dim: cfg.decoder_glu as u64,
        text_length: cfg.text_length as u64,
        image_length: cfg.image_length as u64,
        decoder_vocab: cfg.decoder_vocab as u64,
        image_codes: cfg.image_codes as u64,
        start_token: cfg.start_token as u64,
        bos_id: vocab.special.bos,
        eos_id: vocab.special.eos,
        pad_id: PAD_ID,
        kv_cache: kv_cache.attribute(positions, None),
    }
    .to_attributes();
    writer.add_graph(GraphEntry {
        role: GraphRole::Decoder,
        graph: dec,
        dim_ranges: ranges,
        attributes,
    })?;
    if let Some(detoker) = &files.detoker {
        let entry = crate::families::vqgan::min_dalle_decoder_entry(detoker)?;
        let codes = dalle_bundle::DvaeAttributes::from_attributes(&entry.attributes)
            .map(|a| a.vocab_size)
            .unwrap_or(0);
        if codes < cfg.image_codes as u64 {
            return Err(ExportError::Weights(format!(
                "{} decodes {codes} codes, but the decoder samples {}: not this model's VQGAN",
                detoker.display(),
                cfg.image_codes
            )));
        }
        writer
            .manifest_mut()
            .provenance
            .sources
            .push(source_file("detokenizer", detoker)?);
        writer.add_graph(entry)?;
    }
    Ok(())
}
