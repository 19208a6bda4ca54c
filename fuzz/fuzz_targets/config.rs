//! Fuzzes the config parser: any file text gives a config or one typed line naming its key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_cli::fuzz::config(data);
});
