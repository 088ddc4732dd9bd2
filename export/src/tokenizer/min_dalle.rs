//! min-dalle's `TextTokenizer` (`min_dalle/text_tokenizer.py`) as a Hugging Face
//! `tokenizer.json`, from the model's `vocab.json` and `merges.txt`.
//!
//! min-dalle tokenizes as follows; each step is one piece of the file:
//!
//! | min-dalle | `tokenizer.json` |
//! |---|---|
//! | `emoji.demojize(text, delimiters=['', ''])` | `Replace` normalizers, emoji → English name, longest emoji first (table: `emoji_en.tsv`, `tools/emoji_table.py`) |
//! | `.lower()` | `Lowercase` |
//! | `.encode("ascii", errors="ignore")` | `Replace` of `[^\x00-\x7F]` by nothing |
//! | `split(" ")`, empty words dropped | runs of spaces collapsed, leading/trailing space removed |
//! | each word BPE'd over `['Ġ'] + list(word)` | `Prepend(" ")`, every space → `Ġ`, `Split` on `Ġ` merged with the next piece |
//! | greedy lowest-rank merges, unknown subwords → `<unk>` | `BPE` with `unk_token` `<unk>` (no byte fallback: a control character such as `\t` is `<unk>`, as in min-dalle) |
//! | `[<s>] + ids + [</s>]`, then `[:64]` | added by the runtime around the ids, which it cuts itself (the file has no post-processor, no added tokens: a literal `<s>` in a prompt is BPE'd as text, as in min-dalle) |
//!
//! `merges.txt` is read as min-dalle reads it: `split("\n")[1:-1]` (the header line and the
//! piece after the last newline are dropped).
//!
//! Known difference: `demojize` walks a trie and handles non-RGI ZWJ sequences specially; the
//! replacement here is longest-first over the same table. The two agree on every emoji of the
//! table and on sequences of them; they can differ on malformed sequences (a ZWJ joining emoji
//! that form no listed sequence), where min-dalle names the parts.

use super::TokenizerFileError;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The emoji table: `hex code points<TAB>name` per line, `#` comments.
const EMOJI_TABLE: &str = include_str!("emoji_en.tsv");

/// min-dalle's special tokens, looked up in `vocab.json`.
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
pub const UNK: &str = "<unk>";
/// min-dalle pads with id 1 (`numpy.ones`, `text_tokens.not_equal(1)`), whatever its name.
pub const PAD_ID: u64 = 1;

/// The ids min-dalle's tokenizer wraps every prompt in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: u64,
    pub eos: u64,
    pub unk: u64,
}

/// A parsed `vocab.json` + `merges.txt` pair.
#[derive(Debug)]
pub struct Vocabulary {
    pub vocab: BTreeMap<String, u64>,
    pub merges: Vec<String>,
    pub special: SpecialIds,
}

impl Vocabulary {
    /// Parses the two files (bytes as read), with min-dalle's merges reading.
    pub fn parse(vocab_json: &[u8], merges_txt: &str) -> Result<Vocabulary, String> {
        let raw: BTreeMap<String, Value> =
            serde_json::from_slice(vocab_json).map_err(|e| format!("vocab.json: {e}"))?;
        let mut vocab = BTreeMap::new();
        for (token, id) in raw {
            let id = id
                .as_u64()
                .filter(|&i| i <= u64::from(u32::MAX))
                .ok_or_else(|| format!("vocab.json: `{token}` has id {id}, not a u32"))?;
            vocab.insert(token, id);
        }
        let lines: Vec<&str> = merges_txt.split('\n').collect();
        let merges: Vec<String> = match lines.len() {
            0..=2 => vec![],
            n => lines[1..n - 1]
                .iter()
                .map(|l| {
                    let parts: Vec<&str> = l.split_whitespace().collect();
                    match parts.as_slice() {
                        [a, b] => Ok(format!("{a} {b}")),
                        _ => Err(format!("merges.txt: line {l:?} is not two tokens")),
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| format!("vocab.json has no `{t}` (min-dalle needs it)"))
        };
        let special = SpecialIds {
            bos: id(BOS)?,
            eos: id(EOS)?,
            unk: id(UNK)?,
        };
        Ok(Vocabulary {
            vocab,
            merges,
            special,
        })
    }

    /// The largest id.
    pub fn max_id(&self) -> u64 {
        self.vocab.values().copied().max().unwrap_or(0)
    }
}

/// `(emoji, name)` from the table, longest emoji first (then by code points).
fn emoji_replacements() -> Result<Vec<(String, String)>, TokenizerFileError> {
    let mut out = vec![];
    for line in EMOJI_TABLE.lines().filter(|l| !l.starts_with('#')) {
        let (cps, name) = line
            .split_once('\t')
            .ok_or_else(|| TokenizerFileError::Asset(format!("emoji table line {line:?}")))?;
        let emoji: String = cps
            .split(' ')
            .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
            .collect::<Option<String>>()
            .ok_or_else(|| TokenizerFileError::Asset(format!("emoji table code points {cps:?}")))?;
        out.push((emoji, name.to_string()));
    }
    out.sort_by(|a, b| {
        b.0.chars()
            .count()
            .cmp(&a.0.chars().count())
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(out)
}

fn replace_string(pattern: &str, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"String": pattern}, "content": content})
}

fn replace_regex(pattern: &str, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"Regex": pattern}, "content": content})
}

/// The `tokenizer.json` bytes (see the module docs).
pub fn tokenizer_json(v: &Vocabulary) -> Result<Vec<u8>, TokenizerFileError> {
    let mut normalizers: Vec<Value> = emoji_replacements()?
        .iter()
        .map(|(e, name)| replace_string(e, name))
        .collect();
    normalizers.extend([
        json!({"type": "Lowercase"}),
        replace_regex(r"[^\x00-\x7F]", ""),
        replace_regex(" {2,}", " "),
        replace_regex("^ | $", ""),
        json!({"type": "Prepend", "prepend": " "}),
        replace_string(" ", "\u{120}"),
    ]);
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"String": "\u{120}"},
            "behavior": "MergedWithNext",
            "invert": false
        },
        "post_processor": null,
        "decoder": null,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": UNK,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": v.vocab,
            "merges": v.merges,
        }
    });
    Ok(serde_json::to_vec(&doc)?)
}
