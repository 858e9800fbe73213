//! libFuzzer target: see [`flowcraft_fuzz::replay_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::replay_file(data));
