//! A gob `StatMessage` frame: decode, then encode and decode again.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_gob(data));
