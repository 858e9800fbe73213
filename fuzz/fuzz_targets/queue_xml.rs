//! libFuzzer target: see [`flowcraft_fuzz::queue_xml`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::queue_xml(data));
