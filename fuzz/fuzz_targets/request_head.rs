//! A client request head: routed, rewritten for a pod, re-read as the pod reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_request(data));
