//! `tokenizer.json` files: the exporter's check ([`load_tokenizer_json`]) and the runtime's load
//! ([`TextTokenizer::open`]) followed by what `generate` and `info` do with a tokenizer.

use super::scratch;
use dalle::{TextCleanup, TextTokenizer};
use dalle_export::tokenizer::load_tokenizer_json;

/// Prompts every accepted tokenizer must handle without panicking.
const PROMPTS: [&str; 5] = [
    "a large red circle on the left",
    "",
    "Caf\u{e9} &amp; na\u{ef}ve \u{1f600} \t\u{7}  x",
    "[UNK] <|endoftext|> <s> </s> <pad>",
    "a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a",
];

/// The context length prompts are encoded to (shorter than the longest prompt: truncation).
const CONTEXT_LENGTH: usize = 16;

pub(super) fn run(data: &[u8]) {
    let path = scratch::file("tokenizer.json", data);
    let _ = load_tokenizer_json(&path);
    let Ok(tokenizer) = TextTokenizer::open(&path) else {
        return;
    };
    let _ = tokenizer.vocab_size();
    let _ = tokenizer.vocabulary();
    let _ = tokenizer.is_word_level();
    for prompt in PROMPTS {
        check_encode(&tokenizer, prompt);
    }
    // The CLIP cleanup on any file (what a bundle that marks its tokenizer as CLIP gets).
    let clip = tokenizer.with_cleanup(TextCleanup::Clip);
    for prompt in PROMPTS {
        check_encode(&clip, prompt);
    }
}

/// Encodes `prompt` to [`CONTEXT_LENGTH`] ids and decodes them back.
pub(super) fn check_encode(tokenizer: &TextTokenizer, prompt: &str) {
    if let Ok(encoded) = tokenizer.encode(prompt, CONTEXT_LENGTH) {
        assert_eq!(encoded.ids.len(), CONTEXT_LENGTH);
        assert_eq!(encoded.truncated, encoded.token_count > CONTEXT_LENGTH);
        let _ = tokenizer.decode(&encoded.ids);
    }
}
