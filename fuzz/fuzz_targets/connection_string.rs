//! libFuzzer target: see [`flowcraft_fuzz::connection_string`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::connection_string(data));
