//! Text tokenizers for bundles: writes the `tokenizer.json` (Hugging Face `tokenizers` format)
//! that the runtime loads.
//!
//! - [`clip_bpe_tokenizer_json`]: DALLE-pytorch's default `SimpleTokenizer` (the CLIP BPE from
//!   the vendored `assets/bpe_simple_vocab_16e6.txt.gz`, 49408 ids) as a byte-level BPE with the
//!   `</w>` end-of-word suffix. Written by hand with `serde_json` (no `tokenizers` dependency);
//!   the runtime applies the text cleanup that the format cannot express (ftfy, HTML unescaping)
//!   before encoding. See [`clip`] for the exact layout.
//! - [`load_tokenizer_json`]: a user-supplied HF `tokenizer.json` (`--tokenizer FILE`, for
//!   checkpoints trained with DALLE-pytorch's `HugTokenizer`), checked to be a JSON object with
//!   a `model` object. The runtime does the full parse.
//! - [`min_dalle::tokenizer_json`]: min-dalle's `TextTokenizer` from its `vocab.json` and
//!   `merges.txt` (emoji names, lower-casing, ASCII only, BPE with the `Ġ` word prefix).

pub mod clip;
pub mod min_dalle;

use std::path::{Path, PathBuf};

pub use clip::{CLIP_VOCAB_SIZE, EOT_ID, SOT_ID, clip_bpe_tokenizer_json};

/// The tokenizer's file name inside a bundle (the manifest's `tokenizer` field).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Errors while building or reading a tokenizer file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerFileError {
    /// The vendored BPE merges file is corrupt (cannot happen with the committed asset).
    #[error("vendored CLIP BPE file: {0}")]
    Asset(String),

    /// A user-supplied tokenizer file could not be read.
    #[error("tokenizer file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A user-supplied tokenizer file is not a Hugging Face `tokenizer.json`.
    #[error("tokenizer file {}: not a Hugging Face tokenizer.json: {message}", path.display())]
    Invalid { path: PathBuf, message: String },

    /// JSON serialization failed (internal error).
    #[error("serializing tokenizer.json")]
    Json(#[from] serde_json::Error),
}

/// Reads a Hugging Face `tokenizer.json` for a bundle and returns its bytes unchanged.
///
/// Checks that it is a JSON object whose `model` is an object with a `type` string (`BPE`,
/// `WordPiece`, ...); everything else is left to the runtime's `tokenizers` parse.
pub fn load_tokenizer_json(path: &Path) -> Result<Vec<u8>, TokenizerFileError> {
    // A FIFO or a device would block or never end.
    crate::checkpoint::open_regular(path).map_err(|e| TokenizerFileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    let bytes = std::fs::read(path).map_err(|source| TokenizerFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    validate_tokenizer_json(&bytes).map_err(|message| TokenizerFileError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(bytes)
}

/// The structural check of [`load_tokenizer_json`], on bytes.
fn validate_tokenizer_json(bytes: &[u8]) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let top = value
        .as_object()
        .ok_or_else(|| "the top level is not a JSON object".to_string())?;
    let model = top
        .get("model")
        .ok_or_else(|| "no `model` entry".to_string())?
        .as_object()
        .ok_or_else(|| "`model` is not an object".to_string())?;
    match model.get("type") {
        Some(serde_json::Value::String(_)) => Ok(()),
        // Old files may omit the type; `tokenizers` then infers it from the fields.
        None if model.contains_key("vocab") => Ok(()),
        _ => Err("`model` has neither a `type` string nor a `vocab`".to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn validation_accepts_a_model_and_rejects_the_rest() {
        assert!(validate_tokenizer_json(br#"{"model": {"type": "BPE", "vocab": {}}}"#).is_ok());
        assert!(validate_tokenizer_json(br#"{"model": {"vocab": {}}}"#).is_ok());
        for bad in [
            &b"not json"[..],
            b"[1]",
            b"{}",
            br#"{"model": 3}"#,
            br#"{"model": {}}"#,
        ] {
            assert!(
                validate_tokenizer_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn load_reports_missing_and_invalid_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = load_tokenizer_json(&missing).unwrap_err();
        assert!(matches!(err, TokenizerFileError::Io { .. }), "{err}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"vocab\": {}}").unwrap();
        let err = load_tokenizer_json(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("`model`"), "{err}");
        let good = dir.path().join("tokenizer.json");
        let json = clip_bpe_tokenizer_json().unwrap();
        std::fs::write(&good, &json).unwrap();
        assert_eq!(load_tokenizer_json(&good).unwrap(), json);
    }
}
