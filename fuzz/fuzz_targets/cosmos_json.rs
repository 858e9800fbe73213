//! libFuzzer target: see [`flowcraft_fuzz::cosmos_json`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::cosmos_json(data));
