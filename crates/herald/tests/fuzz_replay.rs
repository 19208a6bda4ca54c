//! Every input the fuzz targets keep (their corpus under `fuzz/corpus/`, and any crash under
//! `fuzz/artifacts/`) replayed against the same properties as an ordinary test.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("artifacts").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("read a corpus file");
            check(&data);
            n += 1;
        }
    }
    n
}

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
