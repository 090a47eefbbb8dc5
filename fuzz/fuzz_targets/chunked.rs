//! The chunk scanner fed in fuzzer-chosen pieces against one feed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_chunked(data));
