//! The YAML configuration parser and the routing table built from what it accepts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_config(data));
