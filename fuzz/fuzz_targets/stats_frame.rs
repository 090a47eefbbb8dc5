//! A stats websocket frame of either encoding (gob, protobuf).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kactivator::fuzzing::check_stats_frame(data));
