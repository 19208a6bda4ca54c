//! Lag, not only depth, as an operator sees it on `herald serve`: a runtime consumer that
//! stops while events keep arriving turns `/readyz` into 503 with a JSON reason naming the
//! threshold (`[http.ready] max_lag`), `/metrics` carries the lag gauges with units and
//! labels, `/lag.json` the same figures; a queue nobody reads turns it red on its oldest
//! message's age; dead-letter places growing do too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::env::{free_port, unique};
use herald_testkit::http::request;
use serde_json::Value;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn herald(store: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run herald")
}

fn append(store: &str, n: usize) {
    for i in 0..n {
        let out = herald(
            store,
            &[
                "store",
                "append",
                &format!("order-{i}"),
                r#"{"total": 1}"#,
                "--type",
                "created",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `/readyz` until it answers `code`, or 20 s.
fn ready_until(addr: &str, code: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (c, body) = request(addr, "GET", "/readyz");
        if c == code {
            return serde_json::from_str(&body).expect("a JSON body");
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {code}: last {c} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_stalled_consumer_turns_readyz_red_naming_the_threshold() {
    let dir = std::env::temp_dir().join(unique("lag"));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = format!("sqlite://{}", dir.join("herald.db").display());
    // A consumer (the node's counts projection) on 5 events.
    append(&store, 5);
    let node = Proc(
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "--store",
                &store,
                "node",
                "--role",
                "full",
                "--sources",
                "order",
                "--id",
                "n1",
            ])
            .args([
                "--heartbeat-ms",
                "100",
                "--poll-ms",
                "50",
                "--checkpoint-every",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald node"),
    );
    let pid = node.0.id().to_string();
    let signal = |sig: &str| {
        let s = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(s.success(), "kill {sig} {pid}");
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{store}\"\n[http]\naddr = \"{addr}\"\n[http.ready]\nqueues = [\"jobs\"]\nmax_oldest_age_seconds = 2\nmax_lag = 3\nmax_dead_letter_growth = 1\n"
        ),
    )
    .expect("config");
    let _serve = Proc(
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "--config",
                config.to_str().expect("path"),
                "serve",
                "--quiet",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald serve"),
    );
    let ok = ready_until(&addr, 200);
    assert_eq!(ok["ready"], true);

    // Caught up, then stalled (SIGSTOP) while events keep arriving: 503, naming max_lag and
    // the source.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = request(&addr, "GET", "/lag.json");
        let lag: Value = serde_json::from_str(&body).expect("JSON");
        if lag["consumers"][0]["lag"] == 0 && lag["consumers"][0]["checkpoint"].is_i64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer never caught up: {lag}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stopped outside its write transactions: one stopped inside one (a heartbeat, a
    // checkpoint) holds the file's write lock, and every later write would time out. A write
    // of the test's own (a queue made) shows the lock free; until it is, the node finishes
    // the transaction it was in and is stopped again.
    signal("-STOP");
    for tries in 1.. {
        let out = herald(&store, &["queue", "create", "lagprobe"]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("database is locked") && tries < 5, "{err}");
        signal("-CONT");
        std::thread::sleep(Duration::from_millis(100));
        signal("-STOP");
    }
    append(&store, 6);
    let red = ready_until(&addr, 503);
    assert_eq!(red["ready"], false);
    assert_eq!(red["threshold"], "max_lag", "{red}");
    assert_eq!(red["subject"], "counts/order");
    assert_eq!(red["value"], 6);
    assert_eq!(red["limit"], 3);
    assert!(
        red["reason"]
            .as_str()
            .unwrap_or("")
            .contains("6 event(s) behind"),
        "{red}"
    );

    let (code, text) = request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    for series in [
        "herald_consumer_lag_events{group=\"counts\",source=\"order\",holder=\"n1\"} 6",
        "herald_consumer_allocation_epoch{group=\"counts\",source=\"order\",holder=\"n1\"}",
        "herald_node_heartbeat_age_seconds{node_id=\"n1\",role=\"full\"}",
        "herald_lease_held{holder=\"n1\"",
        "herald_queue_depth_messages{queue=\"default_steps\"} 0",
        "herald_queue_visible_messages{queue=\"default_steps\"}",
        "herald_queue_delayed_messages{queue=\"default_steps\"}",
        "herald_queue_oldest_age_seconds{queue=\"default_steps\"}",
        "# TYPE herald_consumer_lag_events gauge",
    ] {
        assert!(
            text.contains(series),
            "{series} missing from /metrics:\n{text}"
        );
    }
    let (code, body) = request(&addr, "GET", "/lag.json");
    assert_eq!(code, 200);
    let lag: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(lag["consumers"][0]["lag"], 6);
    assert_eq!(lag["consumers"][0]["holder"], "n1");
    assert!(lag["nodes"][0]["heartbeat_age_ms"].as_u64().expect("age") > 0);

    // The consumer goes on and catches up: ready again. Then a queue nobody reads grows old:
    // red, by age.
    signal("-CONT");
    ready_until(&addr, 200);
    assert!(herald(&store, &["queue", "create", "jobs"])
        .status
        .success());
    assert!(herald(
        &store,
        &["queue", "send", "jobs", "{}", "--subject", "jobs.x"]
    )
    .status
    .success());
    let old = ready_until(&addr, 503);
    assert_eq!(old["threshold"], "max_oldest_age_seconds", "{old}");
    assert_eq!(old["subject"], "jobs");
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
}
