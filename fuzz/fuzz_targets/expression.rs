//! libFuzzer target: see [`flowcraft_fuzz::expression`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::expression(data));
