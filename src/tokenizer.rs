//! Prompt → text token ids, as DALLE-pytorch tokenizes them.
//!
//! A bundle that takes text carries a Hugging Face `tokenizer.json` (manifest `tokenizer`).
//! [`TextTokenizer`] loads it with the `tokenizers` crate and [`TextTokenizer::encode`] returns
//! the ids right-padded with 0 to the context length, like DALLE-pytorch's `tokenize`; a prompt
//! longer than the context is truncated and reported ([`Encoded::truncated`], a warning), never
//! cut silently ([`Encoded::ensure_fits`] turns it into an error).
//!
//! Two flavours, chosen by [`TextCleanup`]:
//! - [`TextCleanup::Clip`]: the exporter's CLIP BPE (DALLE-pytorch's default `SimpleTokenizer`).
//!   The text is first cleaned as `SimpleTokenizer` does ([`cleanup`]: ftfy subset, HTML
//!   unescaping twice, whitespace collapse, lower-casing), which `tokenizer.json` cannot
//!   express; the file does the CLIP regex split, byte-level mapping and BPE. No start/end
//!   tokens are added.
//! - [`TextCleanup::None`]: a user-supplied HF file (DALLE-pytorch `HugTokenizer`): the prompt
//!   goes to the file as is, without special tokens from its post-processor (DALLE-pytorch
//!   replaces that with a plain `ByteLevel` one).

mod ftfy;
mod html;
mod html_entities;

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The pre-tokenizer text cleanup applied before the `tokenizer.json` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextCleanup {
    /// `SimpleTokenizer`'s cleanup (see [`cleanup`]).
    Clip,
    /// The prompt is passed unchanged.
    None,
}

/// A bundle's text tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    cleanup: TextCleanup,
    path: PathBuf,
}

/// A tokenized prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, right-padded with 0 to the context length (cut to it when too long).
    pub ids: Vec<u32>,
    /// Number of tokens of the prompt before truncation.
    pub token_count: usize,
    /// Whether tokens were dropped to fit the context length.
    pub truncated: bool,
    /// Words of the prompt the vocabulary does not have (each became the unknown token).
    pub unknown: Vec<String>,
    /// Characters the cleanup removed (control characters, terminal escapes), each written as
    /// its Unicode escape (`\u{7}`).
    pub dropped: Vec<String>,
}

impl Encoded {
    /// Fails when the prompt did not fit (DALLE-pytorch's `truncate_text=False`).
    pub fn ensure_fits(&self) -> Result<()> {
        if self.truncated {
            return Err(Error::PromptTooLong {
                tokens: self.token_count,
                context_length: self.ids.len(),
            });
        }
        Ok(())
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`; the cleanup is [`TextCleanup::Clip`] when the file is the
    /// CLIP BPE (`<|startoftext|>` = 49406, `<|endoftext|>` = 49407, 49408 ids, `</w>`
    /// merges), [`TextCleanup::None`] otherwise. Override with [`TextTokenizer::with_cleanup`].
    pub fn open(path: &Path) -> Result<TextTokenizer> {
        if !path.is_file() {
            return Err(Error::Tokenizer {
                path: path.to_path_buf(),
                message: "file does not exist".to_string(),
            });
        }
        let mut inner = load_hf_tokenizer(path).map_err(|message| Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        })?;
        // Truncation and padding are done here (and reported), not by the file's settings.
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer {
                path: path.to_path_buf(),
                message: format!("cannot disable truncation: {e}"),
            })?
            .with_padding(None);
        let cleanup = if is_clip_bpe(&inner) {
            TextCleanup::Clip
        } else {
            TextCleanup::None
        };
        Ok(TextTokenizer {
            inner,
            cleanup,
            path: path.to_path_buf(),
        })
    }

    /// Uses `cleanup` instead of the detected one.
    pub fn with_cleanup(mut self, cleanup: TextCleanup) -> TextTokenizer {
        self.cleanup = cleanup;
        self
    }

    /// The cleanup applied before tokenizing.
    pub fn cleanup(&self) -> TextCleanup {
        self.cleanup
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token ids of `prompt` without padding or truncation.
    pub fn token_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.tokens(prompt)?.0)
    }

    /// The unknown-token id of the vocabulary, if it has one.
    fn unknown_id(&self) -> Option<u32> {
        self.unknown_token()
            .and_then(|t| self.inner.token_to_id(&t))
    }

    /// The vocabulary's unknown token (`[UNK]`), if it has one.
    pub fn unknown_token(&self) -> Option<String> {
        ["[UNK]", "<unk>", "<|unk|>"]
            .iter()
            .find(|t| self.inner.token_to_id(t).is_some())
            .map(|t| t.to_string())
    }

    /// The tokens a prompt can be made of, in id order, special tokens (padding = id 0, the
    /// unknown token, start/end) left out: for a word-level vocabulary, the words the model knows.
    pub fn vocabulary(&self) -> Vec<String> {
        // Id 0 is DALLE-pytorch's padding whatever its name.
        let mut special: std::collections::HashSet<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .chain([0])
            .collect();
        special.extend(self.unknown_id());
        let mut tokens: Vec<(u32, String)> = self
            .inner
            .get_vocab(false)
            .into_iter()
            .filter(|(_, id)| !special.contains(id))
            .map(|(t, id)| (id, t))
            .collect();
        tokens.sort();
        tokens.into_iter().map(|(_, t)| t).collect()
    }

    /// Whether the vocabulary is word-level (each token a whole word, so unknown words exist).
    pub fn is_word_level(&self) -> bool {
        matches!(
            self.inner.get_model(),
            tokenizers::models::ModelWrapper::WordLevel(_)
        )
    }

    /// Ids of `prompt` and the pieces of text that became the unknown token.
    fn tokens(&self, prompt: &str) -> Result<(Vec<u32>, Vec<String>)> {
        let text = match self.cleanup {
            TextCleanup::Clip => cleanup(prompt),
            TextCleanup::None => prompt.to_string(),
        };
        let encoding = self
            .inner
            .encode(text.as_str(), false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode prompt {prompt:?}: {e}"),
            })?;
        let ids = encoding.get_ids().to_vec();
        let mut unknown = vec![];
        if let Some(unk) = self.unknown_id() {
            for (&id, &(start, end)) in ids.iter().zip(encoding.get_offsets()) {
                if id == unk {
                    let word = text.get(start..end).unwrap_or("?").to_string();
                    if !unknown.contains(&word) {
                        unknown.push(word);
                    }
                }
            }
        }
        Ok((ids, unknown))
    }

    /// Tokenizes `prompt` into exactly `context_length` ids (0-padded). A prompt that does not
    /// fit is cut to `context_length` tokens, with [`Encoded::truncated`] set and a warning
    /// logged. An empty prompt (after cleanup) gives all padding, as in DALLE-pytorch.
    pub fn encode(&self, prompt: &str, context_length: usize) -> Result<Encoded> {
        let (mut ids, unknown) = self.tokens(prompt)?;
        let mut dropped: Vec<String> = vec![];
        if self.cleanup == TextCleanup::Clip {
            for c in prompt.chars().filter(|&c| ftfy::is_removed_control(c)) {
                let escaped = c.escape_unicode().to_string();
                if !dropped.contains(&escaped) {
                    dropped.push(escaped);
                }
            }
        }
        let token_count = ids.len();
        let truncated = token_count > context_length;
        if truncated {
            tracing::warn!(
                "prompt has {token_count} tokens, more than the context length {context_length}: \
                 keeping the first {context_length}"
            );
        }
        ids.resize(context_length, 0);
        Ok(Encoded {
            ids,
            token_count,
            truncated,
            unknown,
            dropped,
        })
    }

    /// Text of `ids` (padding 0, special tokens and ids outside the vocabulary skipped), for
    /// logs and debugging.
    ///
    /// `tokenizers` 0.23's `Strip` decoder (the CLIP file's last step) panics on an empty text,
    /// so no ids left gives `""` without calling it, and a decoder that panics on a hostile
    /// file's tokens is an error, not a crash.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let special: std::collections::HashSet<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id != 0 && !special.contains(&id) && self.inner.id_to_token(id).is_some())
            .collect();
        if ids.is_empty() {
            return Ok(String::new());
        }
        let failed = |message: String| Error::Tokenizer {
            path: self.path.clone(),
            message,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.inner.decode(&ids, true)
        }))
        .map_err(|_| failed("the file's decoder panicked on these ids".to_string()))?
        .map_err(|e| failed(format!("cannot decode: {e}")))
    }
}

/// The largest `tokenizer.json` read (real ones are 0.5–20 MB; the file is parsed twice, into
/// `serde_json::Value` and then by `tokenizers`, each a few times the file's size in memory).
pub const MAX_TOKENIZER_FILE_BYTES: u64 = 64 << 20;

/// Parses a Hugging Face `tokenizer.json`; the error is a message for [`Error::Tokenizer`].
///
/// `tokenizers` 0.23 panics (`expect("Helper")`, `decoders/mod.rs:90`) when the `decoder` entry
/// does not convert to a `serde_json::Value`: a syntax error inside it (reproducer
/// `{"decoder": x}`) or a string that is not UTF-8 (a `0x8d` byte in a key); both found by the
/// `tokenizer` fuzz target. So the file is read within [`MAX_TOKENIZER_FILE_BYTES`], checked to
/// be UTF-8 and parsed whole into a `Value` first (every string, escape and number validated),
/// and any other panic of the parser becomes an error too.
pub(crate) fn load_hf_tokenizer(path: &Path) -> std::result::Result<tokenizers::Tokenizer, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKENIZER_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_TOKENIZER_FILE_BYTES {
        return Err(format!(
            "the file is larger than the {MAX_TOKENIZER_FILE_BYTES}-byte limit for tokenizer files"
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("cannot parse: not UTF-8: {e}"))?;
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| format!("cannot parse: {e}"))?;
    std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(text.as_bytes()))
        .map_err(|_| "cannot parse: the tokenizers library panicked on this file".to_string())?
        .map_err(|e| format!("cannot parse: {e}"))
}

/// Whether the tokenizer is the CLIP BPE of `bpe_simple_vocab_16e6`.
fn is_clip_bpe(tokenizer: &tokenizers::Tokenizer) -> bool {
    tokenizer.get_vocab_size(true) == 49408
        && tokenizer.token_to_id("<|startoftext|>") == Some(49406)
        && tokenizer.token_to_id("<|endoftext|>") == Some(49407)
        && tokenizer.token_to_id("!</w>") == Some(256)
}

/// `SimpleTokenizer`'s text cleanup: `whitespace_clean(basic_clean(text)).lower()`, that is
/// `ftfy.fix_text` (the subset documented in `tokenizer/ftfy.rs`), `html.unescape` twice,
/// whitespace runs → one space, strip, lower-case (full Unicode mapping, final sigma included).
pub fn cleanup(text: &str) -> String {
    let fixed = ftfy::fix_text(text);
    let unescaped = html::unescape(&html::unescape(&fixed));
    let collapsed = unescaped.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.to_lowercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cleanup_matches_simple_tokenizer_steps() {
        assert_eq!(cleanup("  A  Photo\tof\n a CAT  "), "a photo of a cat");
        assert_eq!(cleanup("Tom &amp;amp; Jerry"), "tom & jerry");
        assert_eq!(cleanup("cafÃ© &nbsp; “Quoted”"), "café \"quoted\"");
        assert_eq!(cleanup("ΟΔΟΣ"), "οδος");
        assert_eq!(cleanup("   "), "");
    }

    fn clip_tokenizer(dir: &Path) -> TextTokenizer {
        let path = dir.join("tokenizer.json");
        std::fs::write(
            &path,
            dalle_export::tokenizer::clip_bpe_tokenizer_json().unwrap(),
        )
        .unwrap();
        TextTokenizer::open(&path).unwrap()
    }

    #[test]
    fn encodes_pads_and_reports_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let tok = clip_tokenizer(dir.path());
        assert_eq!(tok.cleanup(), TextCleanup::Clip);
        assert_eq!(tok.vocab_size(), 49408);
        let e = tok.encode("A cat", 4).unwrap();
        assert_eq!(e.ids, vec![320, 2368, 0, 0]);
        assert_eq!((e.token_count, e.truncated), (2, false));
        e.ensure_fits().unwrap();
        let e = tok.encode("a cat on a mat", 3).unwrap();
        assert_eq!((e.ids.len(), e.token_count, e.truncated), (3, 5, true));
        assert!(matches!(
            e.ensure_fits(),
            Err(Error::PromptTooLong { tokens: 5, .. })
        ));
        let e = tok.encode("a\u{7}cat\u{1b}[1m", 8).unwrap();
        assert_eq!(e.dropped, ["\\u{7}", "\\u{1b}"]);
        assert!(tok.encode("a cat", 8).unwrap().dropped.is_empty());
        let e = tok.encode(" \n ", 3).unwrap();
        assert_eq!((e.ids, e.token_count), (vec![0, 0, 0], 0));
        // All padding or special tokens: nothing reaches the file's decoder (whose `Strip`
        // step panics on an empty text; found by the `prompt` fuzz target).
        assert_eq!(tok.decode(&[0, 0, 0]).unwrap(), "");
        assert_eq!(tok.decode(&[0, 49406, 49407, 60000]).unwrap(), "");
        assert_eq!(
            tok.decode(&tok.encode("a photo of a cat", 8).unwrap().ids)
                .unwrap(),
            "a photo of a cat"
        );
    }

    #[test]
    fn missing_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tokenizer.json");
        let err = TextTokenizer::open(&missing).err().unwrap().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("does not exist"),
            "{err}"
        );
        std::fs::write(&missing, b"{\"model\": 1}").unwrap();
        let err = TextTokenizer::open(&missing).err().unwrap().to_string();
        assert!(err.contains("cannot parse"), "{err}");
        // A syntax error inside `decoder` made tokenizers 0.23 panic (`tokenizer` fuzz target).
        std::fs::write(&missing, b"{\"decoder\": x}").unwrap();
        let err = TextTokenizer::open(&missing).err().unwrap().to_string();
        assert!(err.contains("cannot parse"), "{err}");
        // A byte that is not UTF-8 in a key inside `decoder` made it panic too (same fuzz
        // target; reproducer `fuzz/seeds/tokenizer/regression_decoder_not_utf8.json`).
        std::fs::write(&missing, b"{\"decoder\":{\"\x8d\":1}}").unwrap();
        let err = TextTokenizer::open(&missing).err().unwrap().to_string();
        assert!(err.contains("cannot parse: not UTF-8"), "{err}");
        // Over the size limit: refused before it is parsed (a sparse file, nothing written).
        let f = std::fs::File::create(&missing).unwrap();
        f.set_len(MAX_TOKENIZER_FILE_BYTES + 1).unwrap();
        let err = TextTokenizer::open(&missing).err().unwrap().to_string();
        assert!(err.contains("limit for tokenizer files"), "{err}");
    }
}
