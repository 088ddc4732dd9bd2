//! Prompts, as HTTP clients and the command line send them, through the two kinds of tokenizer
//! a bundle carries: the shipped shape-world word-level file and the exporter's CLIP BPE
//! (with `SimpleTokenizer`'s cleanup).

use super::scratch;
use dalle::TextTokenizer;
use std::sync::OnceLock;

/// The shipped model's tokenizer (`models/shapes/tokenizer.json`), word-level.
const SHAPES_TOKENIZER: &[u8] = include_bytes!("../../../models/shapes/tokenizer.json");

fn tokenizers() -> &'static [TextTokenizer; 2] {
    static TOKENIZERS: OnceLock<[TextTokenizer; 2]> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let shapes = TextTokenizer::open(&scratch::file("shapes.json", SHAPES_TOKENIZER))
            .expect("the shipped tokenizer loads");
        let clip_json = dalle_export::tokenizer::clip_bpe_tokenizer_json()
            .expect("the exporter builds its CLIP tokenizer");
        let clip = TextTokenizer::open(&scratch::file("clip.json", &clip_json))
            .expect("the exporter's CLIP tokenizer loads");
        [shapes, clip]
    })
}

pub(super) fn run(data: &[u8]) {
    let prompt = String::from_utf8_lossy(data);
    let _ = dalle::tokenizer::cleanup(&prompt);
    for tokenizer in tokenizers() {
        super::tokenizer::check_encode(tokenizer, &prompt);
    }
}
