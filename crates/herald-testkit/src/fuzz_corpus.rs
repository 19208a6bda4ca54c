//! Replays what a cargo-fuzz target kept (`fuzz/corpus/<target>`, `fuzz/artifacts/<target>`)
//! through the target's property, so every input it ever found runs as an ordinary test.

use std::path::Path;

/// Runs `check` on every file of `target`'s corpus and crash artifacts under the workspace's
/// `fuzz/` folder; returns how many it ran.
pub fn replay(target: &str, check: fn(&[u8])) -> usize {
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
            let data = match std::fs::read(entry.path()) {
                Ok(data) => data,
                // A fuzzer running on the same folder may have just replaced it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("read {}: {e}", entry.path().display()),
            };
            check(&data);
            n += 1;
        }
    }
    n
}
