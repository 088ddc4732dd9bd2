//! libFuzzer target `safetensors`: [`Target::Safetensors`](python_free_tests::fuzz_targets::Target::Safetensors).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Safetensors.run(data));
