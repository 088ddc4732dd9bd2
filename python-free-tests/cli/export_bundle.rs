//! Shared by the `dalle` package's CLI test targets: a DALLE-pytorch checkpoint exported through
//! the library exactly as `dalle-export dalle-pytorch --tokenizer FILE [--clip DIR]` does.

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
    use dalle_export::families::dalle_pytorch as dp;
    let ckpt = dp::load(checkpoint).unwrap();
    let cfg = ckpt.cfg.clone();
    let tok = dp::tokenizer_for(&cfg, Some(tokenizer)).unwrap();
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
    let m = w.manifest_mut();
    m.token_layout = Some(cfg.token_layout());
    m.sampling = Some(dp::sampling_defaults(&cfg));
    m.tokenizer = Some("tokenizer.json".into());
    w.add_file("tokenizer.json", &tok).unwrap();
    w.add_graph(dp::decoder_entry(&cfg, ckpt.transformer, decoder).unwrap())
        .unwrap();
    for e in dp::vae_entries(&cfg, &ckpt.root, ckpt.vae, dp::OpenAiVaeFiles::default()).unwrap() {
        w.add_graph(e).unwrap();
    }
    if let Some(c) = clip {
        use dalle_export::families::clip;
        clip::add_to_bundle(&mut w, c, clip::load(c).unwrap()).unwrap();
    }
    w.commit().unwrap()
}
