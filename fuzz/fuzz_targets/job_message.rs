//! libFuzzer target: see [`flowcraft_fuzz::job_message`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowcraft_fuzz::job_message(data));
