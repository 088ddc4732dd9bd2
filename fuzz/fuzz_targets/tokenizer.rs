//! libFuzzer target `tokenizer`: [`Target::Tokenizer`](python_free_tests::fuzz_targets::Target::Tokenizer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Tokenizer.run(data));
