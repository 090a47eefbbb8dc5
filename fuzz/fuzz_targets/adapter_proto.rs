//! The adapter's protobuf requests (first byte picks the message) and the keys derived from them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_adapter_proto(data));
