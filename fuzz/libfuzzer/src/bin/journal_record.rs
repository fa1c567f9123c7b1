#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| caldera_fuzz::journal_record(data));
