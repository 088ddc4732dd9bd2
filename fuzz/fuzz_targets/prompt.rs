//! libFuzzer target `prompt`: [`Target::Prompt`](python_free_tests::fuzz_targets::Target::Prompt).
//!
//! The first call builds the two tokenizers (the CLIP BPE takes seconds under ASan); `init` does
//! it before libFuzzer's per-input timeout starts counting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(
    init: Target::Prompt.run(b"a red circle"),
    |data: &[u8]| Target::Prompt.run(data)
);
