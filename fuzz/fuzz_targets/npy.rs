//! libFuzzer target `npy`: [`Target::Npy`](python_free_tests::fuzz_targets::Target::Npy).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Npy.run(data));
