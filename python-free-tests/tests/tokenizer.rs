//! Text tokenizer parity with DALLE-pytorch's `SimpleTokenizer` (fixture
//! `fixtures/tokenizer/`, from `tools/fixtures/dalle_pytorch_fixtures.py --only tokenizer`):
//! the exporter's CLIP BPE `tokenizer.json` run by the runtime's `TextTokenizer` must give the
//! same cleaned text, ids (context 256, truncation reported) and untruncated token counts.

use dalle::tokenizer::{TextCleanup, TextTokenizer, cleanup};
use python_free_tests::fixture;
use serde_json::Value;
use std::path::Path;

const CONTEXT: usize = 256;

fn clip_tokenizer(dir: &Path) -> TextTokenizer {
    let path = dir.join(dalle_export::tokenizer::TOKENIZER_FILE);
    let json = dalle_export::tokenizer::clip_bpe_tokenizer_json().unwrap();
    std::fs::write(&path, json).unwrap();
    TextTokenizer::open(&path).unwrap()
}

fn expected() -> (Vec<String>, Vec<Value>) {
    let dir = fixture("tokenizer");
    let prompts: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.join("prompts.json")).unwrap()).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected["context_length"], CONTEXT);
    let entries = expected["entries"].as_array().unwrap().clone();
    assert_eq!(prompts.len(), entries.len());
    (prompts, entries)
}

#[test]
fn clip_bpe_matches_simple_tokenizer_on_every_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let tok = clip_tokenizer(dir.path());
    assert_eq!(tok.cleanup(), TextCleanup::Clip);
    let (prompts, entries) = expected();
    let mut failures = Vec::new();
    for (prompt, want) in prompts.iter().zip(&entries) {
        assert_eq!(want["prompt"].as_str().unwrap(), prompt);
        let cleaned = cleanup(prompt);
        if cleaned != want["cleaned"].as_str().unwrap() {
            failures.push(format!(
                "{prompt:?}: cleaned {cleaned:?}, want {}",
                want["cleaned"]
            ));
            continue;
        }
        let encoded = tok.encode(prompt, CONTEXT).unwrap();
        let mut want_ids: Vec<u32> = want["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
            .collect();
        want_ids.resize(CONTEXT, 0);
        if encoded.ids != want_ids {
            failures.push(format!(
                "{prompt:?}: ids {:?}, want {want_ids:?}",
                encoded.ids
            ));
        }
        let n = usize::try_from(want["n_encoded"].as_u64().unwrap()).unwrap();
        if encoded.token_count != n || encoded.truncated != want["truncated"].as_bool().unwrap() {
            failures.push(format!(
                "{prompt:?}: {} tokens (truncated {}), want {n} ({})",
                encoded.token_count, encoded.truncated, want["truncated"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} prompts differ:\n{}",
        failures.len(),
        prompts.len(),
        failures.join("\n")
    );
}

#[test]
fn over_long_prompts_are_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let tok = clip_tokenizer(dir.path());
    let (prompts, entries) = expected();
    let long: Vec<_> = prompts
        .iter()
        .zip(&entries)
        .filter(|(_, e)| e["truncated"].as_bool().unwrap())
        .collect();
    assert!(!long.is_empty(), "the fixture has no over-long prompt");
    for (prompt, _) in long {
        let encoded = tok.encode(prompt, CONTEXT).unwrap();
        assert!(encoded.truncated && encoded.token_count > CONTEXT);
        assert_eq!(encoded.ids.len(), CONTEXT);
        let err = encoded.ensure_fits().unwrap_err().to_string();
        assert!(err.contains(&encoded.token_count.to_string()), "{err}");
    }
}

/// A user-supplied Hugging Face file (DALLE-pytorch `HugTokenizer`): no CLIP cleanup, no
/// special tokens from its post-processor, 0-padding.
#[test]
fn hf_tokenizer_files_get_the_prompt_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[BOS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[BOS]": {"id": "[BOS]", "ids": [1], "tokens": ["[BOS]"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[BOS]": 1, "[UNK]": 2, "Cat": 3, "cat": 4, "&amp;": 5}, "unk_token": "[UNK]"}
    });
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let bytes = dalle_export::tokenizer::load_tokenizer_json(&path).unwrap();
    assert!(!bytes.is_empty());
    let tok = TextTokenizer::open(&path).unwrap();
    assert_eq!(tok.cleanup(), TextCleanup::None);
    let encoded = tok.encode("Cat cat &amp; dog", 6).unwrap();
    assert_eq!(encoded.ids, vec![3, 4, 5, 2, 0, 0]);
    assert!(!encoded.truncated);
}
