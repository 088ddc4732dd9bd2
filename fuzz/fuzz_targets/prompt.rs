//! libFuzzer target `prompt`: [`Target::Prompt`](python_free_tests::fuzz_targets::Target::Prompt).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Prompt.run(data));
