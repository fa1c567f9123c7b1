#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| caldera_fuzz::engine_commands(data));
