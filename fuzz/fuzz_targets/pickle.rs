//! libFuzzer target `pickle`: [`Target::Pickle`](python_free_tests::fuzz_targets::Target::Pickle).
#![no_main]

use libfuzzer_sys::fuzz_target;
use python_free_tests::fuzz_targets::Target;

fuzz_target!(|data: &[u8]| Target::Pickle.run(data));
