//! The live page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/browser-deps.sh) loads `/` from a running `herald serve`, its script fetches the
//! figures, and they match `/metrics.json`; a screenshot is saved as `target/live-page.png`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::env::{free_port, services_required, unique};
use herald_testkit::http::get;
use serde_json::Value;

fn chromium(args: &[&str]) -> Option<std::process::Output> {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--virtual-time-budget=5000"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

#[test]
fn the_live_page_shows_the_same_figures_as_metrics_json() {
    if Command::new("chromium").arg("--version").output().is_err() {
        if services_required() {
            panic!("chromium is not installed and HERALD_REQUIRE_SERVICES=1; run scripts/browser-deps.sh");
        }
        eprintln!("SKIPPED the_live_page_shows_the_same_figures_as_metrics_json: no chromium (scripts/browser-deps.sh)");
        return;
    }
    let dir = std::env::temp_dir().join(unique("page"));
    let store = format!("sqlite://{}", dir.join("herald.db").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--store",
            &store,
            "serve",
            "--http",
            &addr,
            "--enqueue",
            "30",
            "--handler",
            "demo.sum",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald serve");
    // Wait until every step is processed, so the figures stand still.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics: Value = loop {
        let m: Value = serde_json::from_str(&get(&addr, "/metrics.json")).expect("metrics JSON");
        if m["steps_processed"] == 30 {
            break m;
        }
        assert!(Instant::now() < deadline, "steps not processed: {m}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let url = format!("http://{addr}/");
    let out = chromium(&["--dump-dom", &url]).expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page's script ran: {dom}"
    );
    for figure in [
        "steps_processed",
        "steps_succeeded",
        "steps_failed",
        "domain_events_published",
        "handler_errors",
    ] {
        let want = metrics[figure].to_string();
        let shown = format!("id=\"m-{figure}\">{want}<");
        assert!(dom.contains(&shown), "{figure} shown as {want}: {dom}");
    }
    assert!(
        dom.contains("class=\"status healthy\">healthy<"),
        "overall status shown"
    );
    assert!(dom.contains("step.completion.sent"), "latest events shown");
    let target =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/live-page.png");
    let shot = format!("--screenshot={}", target.display());
    let out = chromium(&[&shot, "--window-size=1000,1100", &url]).expect("chromium screenshot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&target)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "screenshot saved"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}
