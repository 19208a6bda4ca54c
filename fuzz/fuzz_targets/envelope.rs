//! Fuzzes the envelope decoder: any bytes are read leniently and strictly without a panic,
//! and what is accepted writes back to an envelope that reads again to the same event.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald::fuzz::envelope(data);
});
