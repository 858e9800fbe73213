//! libFuzzer target: see [`flowcraft_fuzz::blueprint`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::blueprint(data));
