//! The crates' module graphs have no cycle: `scripts/module-cycles.py` (a module importing one
//! that imports it back, re-exports included) finds none.

use std::path::Path;
use std::process::Command;

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/module-cycles.py");
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 runs scripts/module-cycles.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "module cycles:\n{text}");
    assert!(text.contains("module-cycles: 0 cycle(s)"), "{text}");
}
