//! The CLIP text tokenizer for a bundle (`clip_tokenizer.json`, Hugging Face `tokenizers`
//! format): the model directory's `tokenizer.json` as is, else one built from `vocab.json` +
//! `merges.txt` with the layout `CLIPTokenizerFast` writes (transformers 5.24.0
//! `models/clip/tokenization_clip.py`): NFC + whitespace collapse + lowercase normalizer, the
//! CLIP split regex then byte-level pre-tokenizer, BPE with the `</w>` suffix, and a
//! `RobertaProcessing` post-processor adding `<|startoftext|>` … `<|endoftext|>`.
//!
//! The runtime encodes without the post-processor and adds start/end, truncation and padding
//! itself from the manifest's `clip` entry, so either file gives the same ids.

use crate::error::{ExportError, Result};
use serde_json::{Value, json};
use std::path::Path;

/// The file name inside the bundle.
pub const CLIP_TOKENIZER_FILE: &str = "clip_tokenizer.json";
pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";

/// Special token ids of a CLIP tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u64,
    pub eos: u64,
    pub pad: u64,
}

fn read_json(path: &Path) -> Result<Value> {
    crate::checkpoint::open_regular(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| ExportError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| ExportError::Weights(format!("{}: invalid JSON: {e}", path.display())))
}

/// The pad token named by `tokenizer_config.json` / `special_tokens_map.json`, else
/// `<|endoftext|>` (the `CLIPTokenizer` default).
fn pad_token(dir: &Path) -> Result<String> {
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let p = dir.join(file);
        if p.is_file() {
            let v = read_json(&p)?;
            match v.get("pad_token") {
                Some(Value::String(s)) => return Ok(s.clone()),
                Some(Value::Object(o)) => {
                    if let Some(Value::String(s)) = o.get("content") {
                        return Ok(s.clone());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(EOS.to_string())
}

/// The tokenizer file bytes and its special ids, from a Hugging Face CLIP directory.
pub fn tokenizer_for_dir(dir: &Path) -> Result<(Vec<u8>, SpecialIds)> {
    let pad = pad_token(dir)?;
    let tj = dir.join("tokenizer.json");
    let json = if tj.is_file() {
        read_json(&tj)?
    } else {
        let (vj, mt) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !vj.is_file() || !mt.is_file() {
            return Err(ExportError::Weights(format!(
                "{}: no tokenizer: expected tokenizer.json, or vocab.json and merges.txt",
                dir.display()
            )));
        }
        let vocab = read_json(&vj)?;
        crate::checkpoint::open_regular(&mt)?;
        let merges = std::fs::read_to_string(&mt).map_err(|e| ExportError::io(&mt, e))?;
        build(vocab, &merges, &pad)?
    };
    let id_of = |token: &str| -> Option<u64> {
        let from_added = json
            .get("added_tokens")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|t| t.get("content").and_then(Value::as_str) == Some(token))
            })
            .and_then(|t| t.get("id"))
            .and_then(Value::as_u64);
        from_added.or_else(|| {
            json.get("model")
                .and_then(|m| m.get("vocab"))
                .and_then(|v| v.get(token))
                .and_then(Value::as_u64)
        })
    };
    let need = |token: &str| {
        id_of(token).ok_or_else(|| {
            ExportError::Weights(format!(
                "{}: the tokenizer has no `{token}` token",
                dir.display()
            ))
        })
    };
    let ids = SpecialIds {
        bos: need(BOS)?,
        eos: need(EOS)?,
        pad: need(&pad)?,
    };
    let bytes = serde_json::to_vec(&json).map_err(crate::tokenizer::TokenizerFileError::Json)?;
    Ok((bytes, ids))
}

/// A `CLIPTokenizerFast`-equivalent `tokenizer.json` from `vocab.json` and `merges.txt`.
fn build(vocab: Value, merges: &str, pad: &str) -> Result<Value> {
    let vocab_map = vocab
        .as_object()
        .ok_or_else(|| ExportError::Weights("vocab.json is not a JSON object".into()))?;
    let merges: Vec<Value> = merges
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok(json!([a, b])),
                _ => Err(ExportError::Weights(format!(
                    "merges.txt: line `{l}` is not two space-separated tokens"
                ))),
            }
        })
        .collect::<Result<_>>()?;
    let mut added = vec![];
    let mut specials: Vec<&str> = vec![BOS, EOS];
    if pad != BOS && pad != EOS {
        specials.push(pad);
    }
    for token in specials {
        let id = vocab_map
            .get(token)
            .and_then(Value::as_u64)
            .ok_or_else(|| ExportError::Weights(format!("vocab.json has no `{token}` token")))?;
        added.push(
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}),
        );
    }
    added.sort_by_key(|t| t.get("id").and_then(Value::as_u64));
    let bos_id = vocab_map.get(BOS).cloned().unwrap_or(Value::Null);
    let eos_id = vocab_map.get(EOS).cloned().unwrap_or(Value::Null);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": crate::tokenizer::clip::CLIP_SPLIT_REGEX.trim_start_matches("(?i)")},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOS, eos_id], "cls": [BOS, bos_id],
            "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOS,
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
    }))
}
