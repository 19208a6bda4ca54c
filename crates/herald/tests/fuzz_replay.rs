//! Every input the fuzz targets keep (their corpus under `fuzz/corpus/`, and any crash under
//! `fuzz/artifacts/`) replayed against the same properties as an ordinary test.

use herald_testkit::fuzz_corpus::replay;

#[test]
fn the_fuzz_corpora_and_crashes_replay_cleanly() {
    let counts = [
        ("envelope", replay("envelope", herald::fuzz::envelope)),
        ("subject", replay("subject", herald::fuzz::subject)),
        ("pattern", replay("pattern", herald::fuzz::pattern)),
    ];
    for (target, n) in counts {
        assert!(n > 0, "no corpus checked in for {target}");
    }
}
