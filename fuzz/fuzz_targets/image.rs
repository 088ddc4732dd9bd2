//! libFuzzer target `image`: [`Target::Image`](python_free_tests::fuzz_targets::Target::Image).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Image.run(data));
