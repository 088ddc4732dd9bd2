//! Shared by the `dalle` package's CLI test targets: a DALLE-pytorch checkpoint exported through
//! the same `dalle_pytorch::add_to_bundle` that `dalle-export dalle-pytorch --tokenizer FILE
//! [--clip DIR]` calls.

use std::path::{Path, PathBuf};

/// Exports `checkpoint` with `tokenizer` (and the CLIP of a Hugging Face directory when given)
/// into `out`; returns the bundle directory.
#[allow(dead_code)] // each including test target uses `export`, `export_with` or both
pub fn export(checkpoint: &Path, tokenizer: &Path, clip: Option<&Path>, out: &Path) -> PathBuf {
    export_with(checkpoint, tokenizer, clip, out, Default::default())
}

/// [`export`] with the given decoder options (`--logits`, `--kv-cache`).
pub fn export_with(
    checkpoint: &Path,
    tokenizer: &Path,
    clip: Option<&Path>,
    out: &Path,
    decoder: dalle_export::families::dalle_pytorch::decoder::DecoderOptions,
) -> PathBuf {
    use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
    use dalle_export::families::{dalle_pytorch as dp, quiet};
    let prov = dalle_bundle::Provenance {
        exporter: "test".into(),
        sources: vec![],
        notes: vec![],
    };
    let mut w = BundleWriter::create(
        out,
        dalle_bundle::ModelFamily::DallePytorch,
        prov,
        false,
        ExternalDataPolicy::default(),
    )
    .unwrap();
    let options = dp::BundleOptions {
        checkpoint,
        tokenizer: Some(tokenizer),
        vae_files: dp::OpenAiVaeFiles::default(),
        vqgan: dp::VqganFiles::default(),
        clip,
        decoder,
        progress: quiet,
    };
    dp::add_to_bundle(&mut w, options).unwrap();
    w.commit().unwrap()
}

/// The min-dalle bundle of `python-free-tests/fixtures/min_dalle_small` (encoder, decoder,
/// vocabulary; 4 heads), with the matching detokenizer of `fixtures/min_dalle_pipeline` when
/// `detoker`, exported through the same `min_dalle::add_to_bundle` as `dalle-export min-dalle
/// --model DIR [--detoker FILE] --heads 4 --start-token 255` (255: min-dalle's start token, the
/// last code, for this 256-code model) with decoder caches `kv_cache` (`--kv-cache`) into `out`;
/// returns the bundle directory.
#[allow(dead_code)] // not every including test target runs a min-dalle bundle
pub fn export_min_dalle(
    fixtures: &Path,
    out: &Path,
    kv_cache: dalle_export::kv_cache::KvCacheLayout,
    detoker: bool,
) -> PathBuf {
    use dalle_export::bundle_writer::{BundleWriter, ExternalDataPolicy};
    use dalle_export::families::{min_dalle, quiet};
    let prov = dalle_bundle::Provenance {
        exporter: "test".into(),
        sources: vec![],
        notes: vec![],
    };
    let mut w = BundleWriter::create(
        out,
        dalle_bundle::ModelFamily::MinDalle,
        prov,
        false,
        ExternalDataPolicy::default(),
    )
    .unwrap();
    let mut files = min_dalle::ModelFiles::from_dir(&fixtures.join("min_dalle_small")).unwrap();
    if detoker {
        files.detoker = Some(fixtures.join("min_dalle_pipeline/detoker.pt"));
    }
    let options = min_dalle::BundleOptions {
        files,
        heads: Some(4),
        start_token: Some(255),
        kv_cache,
        progress: quiet,
    };
    min_dalle::add_to_bundle(&mut w, options).unwrap();
    w.commit().unwrap()
}
