//! libFuzzer target `pytorch`: [`Target::Pytorch`](python_free_tests::fuzz_targets::Target::Pytorch).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Pytorch.run(data));
