//! Fuzzes the subject parser: any string is accepted or refused without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald::fuzz::subject(data);
});
