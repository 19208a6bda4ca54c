//! The config fuzz target's corpus and crashes (`fuzz/corpus/config`, `fuzz/artifacts/config`)
//! replayed against its property as an ordinary test.

use herald_testkit::fuzz_corpus::replay;

#[test]
fn the_config_fuzz_corpus_replays_cleanly() {
    let n = replay("config", herald_cli::fuzz::config);
    assert!(n > 0, "no corpus checked in for config");
}
