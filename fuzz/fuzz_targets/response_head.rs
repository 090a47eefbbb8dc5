//! A pod response head (first byte: request/connection flags), rewritten for the client.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_response(data));
