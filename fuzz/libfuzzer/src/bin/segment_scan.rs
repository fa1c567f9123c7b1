#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| caldera_fuzz::segment_scan(data));
