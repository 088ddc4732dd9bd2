//! libFuzzer target `manifest`: [`Target::Manifest`](python_free_tests::fuzz_targets::Target::Manifest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Manifest.run(data));
