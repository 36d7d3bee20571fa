#![no_main]

#[allow(dead_code)] // each target uses one function of the shared file
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::ws_stream(data));
