//! The live page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/browser-deps.sh) loads `/` from a running `herald serve`, its script fetches the
//! figures, and they match `/metrics.json` and `/lag.json`: the step figures, each queue's
//! row, the runtime consumer's checkpoint lag, the schedule and its next fire, and charts
//! drawn from `/history.json`; a screenshot is saved as `target/live-page.png`.

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
    // A schedule, and a runtime consumer with a checkpoint, for the page to show.
    let herald = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .expect("herald");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    herald(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--queue",
        "reports",
    ]);
    for i in 0..4 {
        herald(&[
            "store",
            "append",
            &format!("order-{i}"),
            "{}",
            "--type",
            "created",
        ]);
    }
    herald(&[
        "node",
        "--role",
        "full",
        "--sources",
        "order",
        "--id",
        "n1",
        "--heartbeat-ms",
        "100",
        "--poll-ms",
        "50",
        "--checkpoint-every",
        "1",
        "--for",
        "2",
    ]);
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
    // Samples for the charts (one every 2 s).
    while serde_json::from_str::<Value>(&get(&addr, "/history.json"))
        .expect("history JSON")
        .as_array()
        .map_or(0, Vec::len)
        < 3
    {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "no history"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lag: Value = serde_json::from_str(&get(&addr, "/lag.json")).expect("lag JSON");
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
    let depth = lag["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == "default_steps")
        .expect("the step queue")["depth"]
        .to_string();
    assert!(
        dom.contains(&format!("id=\"q-default_steps-depth\">{depth}<")),
        "the step queue's depth shown as {depth}: {dom}"
    );
    assert!(
        dom.contains("id=\"q-default_steps_dlq\""),
        "dead-letter places listed"
    );
    let consumer = &lag["consumers"][0];
    assert_eq!(consumer["lag"], 0, "{lag}");
    let shown = format!(
        "<tr id=\"c-counts-order\"><td>counts</td><td>order</td><td>n1</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">0</td></tr>",
        consumer["epoch"], consumer["checkpoint"]
    );
    assert!(dom.contains(&shown), "the consumer's row {shown}: {dom}");
    assert!(
        dom.contains("<tr id=\"s-nightly\"><td>nightly</td><td>0 3 * * * (UTC)</td><td>reports</td><td>active</td><td>20"),
        "the schedule and its next fire shown: {dom}"
    );
    for chart in ["chart-throughput", "chart-latency"] {
        let at = dom.find(&format!("id=\"{chart}\"")).expect("the chart");
        let svg = &dom[at..at + dom[at..].find("</svg>").expect("its end")];
        assert!(svg.contains("<polyline"), "{chart} drawn: {svg}");
    }
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
