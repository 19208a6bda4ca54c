//! Fuzzes the pattern parsers (NATS tokens and globs) and matching against a subject.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald::fuzz::pattern(data);
});
