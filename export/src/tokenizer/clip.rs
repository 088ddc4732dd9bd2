//! The CLIP BPE (`bpe_simple_vocab_16e6`) as a Hugging Face `tokenizer.json`, reproducing
//! DALLE-pytorch's `SimpleTokenizer` (taken from openai/CLIP's `simple_tokenizer.py`).
//!
//! `SimpleTokenizer` builds its vocabulary from the merges file: the 256 byte characters of the
//! GPT-2 byte↔unicode map, the same with `</w>`, one token per merge (48894, lines 1..=48894 of
//! the file), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). Text is split with the
//! CLIP regex (case-insensitive), each piece mapped to byte characters, and merged with `</w>`
//! appended to the piece's last character. It adds no start/end tokens.
//!
//! The JSON written here:
//! - `normalizer`: whitespace collapse, strip, lower-case. No-ops on text the runtime has
//!   already cleaned; they make the file usable on its own (Python `tokenizers`). NFC is left
//!   out on purpose: `SimpleTokenizer` normalizes *before* HTML unescaping, which can produce
//!   decomposed text that it then keeps as is.
//! - `pre_tokenizer`: `Split` on the CLIP regex (`(?i)`, matches kept, the rest removed), then
//!   `ByteLevel` without prefix space or GPT-2 regex.
//! - `model`: `BPE` with `end_of_word_suffix: "</w>"`, no unknown token (every byte has an id).
//! - `added_tokens`: the two special tokens, so their literal text maps to their ids as in
//!   `SimpleTokenizer`'s cache.
//! - no `post_processor` (unlike HF `CLIPTokenizer`, which adds BOS/EOS).
//! - `decoder`: byte-level, then `</w>` → space, then one trailing space stripped.
//!
//! The bytes are deterministic: maps are written in a fixed order.

use super::TokenizerFileError;
use serde_json::{Map, Value, json};
use std::io::Read;

/// The vendored merges file (gzip of `dalle_pytorch/data/bpe_simple_vocab_16e6.txt`).
const BPE_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// Number of merges `SimpleTokenizer` uses (`49152 - 256 - 2`).
const MERGES: usize = 49152 - 256 - 2;

/// Vocabulary size (DALLE-pytorch `num_text_tokens` for the default tokenizer).
pub const CLIP_VOCAB_SIZE: u32 = 49408;
/// Id of `<|startoftext|>`.
pub const SOT_ID: u32 = 49406;
/// Id of `<|endoftext|>`.
pub const EOT_ID: u32 = 49407;

/// The split regex of `SimpleTokenizer` (compiled there with `re.IGNORECASE`).
pub const CLIP_SPLIT_REGEX: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

const SOT: &str = "<|startoftext|>";
const EOT: &str = "<|endoftext|>";

/// Builds `tokenizer.json` for the CLIP BPE; the same bytes on every call.
pub fn clip_bpe_tokenizer_json() -> Result<Vec<u8>, TokenizerFileError> {
    let merges = read_merges()?;
    let vocab = build_vocab(&merges)?;
    let mut json = serde_json::to_vec_pretty(&tokenizer_value(vocab, &merges))?;
    json.push(b'\n');
    Ok(json)
}

/// The merge pairs of the vendored file, as `SimpleTokenizer` selects them.
fn read_merges() -> Result<Vec<(String, String)>, TokenizerFileError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(BPE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| TokenizerFileError::Asset(format!("cannot decompress: {e}")))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(selected) = lines.get(1..=MERGES) else {
        return Err(TokenizerFileError::Asset(format!(
            "{} lines, expected at least {}",
            lines.len(),
            MERGES + 1
        )));
    };
    selected
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(TokenizerFileError::Asset(format!(
                    "line {}: expected two symbols, found {line:?}",
                    i + 2
                ))),
            }
        })
        .collect()
}

/// GPT-2's byte → printable character map, in `bytes_to_unicode()` order (printable bytes
/// first, then the rest mapped to U+0100 onwards).
pub fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut order: Vec<u32> = (0..256).filter(|&b| printable(b)).collect();
    let mut chars: Vec<u32> = order.clone();
    let mut next = 256;
    for b in 0..256 {
        if !printable(b) {
            order.push(b);
            chars.push(next);
            next += 1;
        }
    }
    chars.into_iter().filter_map(char::from_u32).collect()
}

/// Token strings in id order.
fn build_vocab(merges: &[(String, String)]) -> Result<Vec<String>, TokenizerFileError> {
    let bytes = byte_chars();
    let mut vocab: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    vocab.extend(bytes.iter().map(|c| format!("{c}</w>")));
    vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.push(SOT.to_string());
    vocab.push(EOT.to_string());
    let unique: std::collections::HashSet<&str> = vocab.iter().map(String::as_str).collect();
    if vocab.len() != CLIP_VOCAB_SIZE as usize || unique.len() != vocab.len() {
        return Err(TokenizerFileError::Asset(format!(
            "{} tokens ({} distinct), expected {CLIP_VOCAB_SIZE} distinct",
            vocab.len(),
            unique.len()
        )));
    }
    Ok(vocab)
}

fn added_token(id: u32, content: &str) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": true,
    })
}

fn tokenizer_value(vocab: Vec<String>, merges: &[(String, String)]) -> Value {
    let mut vocab_map = Map::new();
    for (id, token) in vocab.into_iter().enumerate() {
        vocab_map.insert(token, Value::from(id));
    }
    let merges: Vec<Value> = merges.iter().map(|(a, b)| json!([a, b])).collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added_token(SOT_ID, SOT), added_token(EOT_ID, EOT)],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Strip", "strip_left": true, "strip_right": true},
                {"type": "Lowercase"},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": CLIP_SPLIT_REGEX},
                    "behavior": "Removed",
                    "invert": true,
                },
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ],
        },
        "post_processor": null,
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
                {"type": "Replace", "pattern": {"String": "</w>"}, "content": " "},
                {"type": "Strip", "content": " ", "start": 0, "stop": 1},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": "</w>",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab_map,
            "merges": merges,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        let chars = byte_chars();
        assert_eq!(chars.len(), 256);
        assert_eq!(chars[0], '!');
        assert_eq!(chars[93], '~');
        // Byte 0 is the first non-printable one: U+0100; space (0x20) is U+0120 'Ġ'.
        assert_eq!(chars[188], '\u{100}');
        assert!(chars.contains(&'Ġ'));
    }

    #[test]
    fn vocabulary_layout_matches_simple_tokenizer() {
        let merges = read_merges().unwrap();
        assert_eq!(merges.len(), 48894);
        assert_eq!(merges[0], ("i".to_string(), "n".to_string()));
        let vocab = build_vocab(&merges).unwrap();
        assert_eq!(vocab.len(), 49408);
        assert_eq!(vocab[256], "!</w>");
        assert_eq!(vocab[512], "in");
        assert_eq!(vocab[SOT_ID as usize], SOT);
        assert_eq!(vocab[EOT_ID as usize], EOT);
    }

    #[test]
    fn json_is_deterministic_and_well_formed() {
        let a = clip_bpe_tokenizer_json().unwrap();
        assert_eq!(a, clip_bpe_tokenizer_json().unwrap());
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["model"]["type"], "BPE");
        assert_eq!(v["model"]["vocab"]["cat</w>"], 2368);
        assert_eq!(v["model"]["merges"].as_array().unwrap().len(), 48894);
        assert!(v["post_processor"].is_null());
    }
}
