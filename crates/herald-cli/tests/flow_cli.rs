//! Flow policies as a newcomer meets them on the CLI: each bad value (a key path that does not
//! parse, a rate of 0, a concurrency of 0, a priority out of range, a policy on a queue that
//! does not exist) is refused in one line naming it, and nothing is stored; a good policy is
//! shown back, holds messages back, and `herald serve` reports them on `/metrics` and
//! `/lag.json` by reason.

use std::process::{Child, Command, Output, Stdio};
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

fn herald(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["queue", "--store", store])
        .args(args)
        .output()
        .expect("run herald")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bad_policies_are_refused_by_name_and_a_good_one_holds_messages_back_on_metrics() {
    let dir = std::env::temp_dir().join(unique("flowcli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = format!("sqlite://{}", dir.join("herald.db").display());
    ok(&herald(&store, &["create", "orders"]));
    for (args, named) in [
        (
            vec!["--key", "customer_id", "--concurrency", "2"],
            "\"customer_id\"",
        ),
        (vec!["--key", "$.a[x]", "--concurrency", "2"], "\"$.a[x]\""),
        (vec!["--rate", "0/s"], "\"0/s\""),
        (vec!["--concurrency", "0"], "concurrency must be at least 1"),
        (
            vec!["--rate", "10/min", "--burst", "0"],
            "burst must be at least 1",
        ),
        (vec!["--weight", "vip=0"], "weight of key \"vip\""),
    ] {
        let mut all = vec!["policy", "set", "orders"];
        all.extend(args.iter());
        let out = herald(&store, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    let out = herald(&store, &["policy", "set", "nope", "--concurrency", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no queue named nope"));
    let out = herald(&store, &["send", "orders", "{}", "--priority", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("priority 10 is out of range"));
    // Nothing was stored by any of them.
    assert_eq!(ok(&herald(&store, &["policy", "show", "orders"])), "");
    assert_eq!(ok(&herald(&store, &["ls"])), "orders\n");

    ok(&herald(
        &store,
        &[
            "policy",
            "set",
            "orders",
            "--key",
            "$.customer_id",
            "--concurrency",
            "1",
        ],
    ));
    let shown: Value =
        serde_json::from_str(&ok(&herald(&store, &["policy", "show", "orders"]))).expect("JSON");
    assert_eq!(shown["key"], "$.customer_id");
    assert_eq!(shown["concurrency"], 1);
    for (data, key) in [
        (r#"{"customer_id": "a"}"#, None),
        (r#"{"customer_id": "a"}"#, None),
        (r#"{"customer_id": "b"}"#, None),
        (r#"{}"#, Some("a")),
    ] {
        let mut args = vec!["send", "orders", data];
        if let Some(k) = key {
            args.extend(["--key", k]);
        }
        ok(&herald(&store, &args));
    }
    // One of a, one of b; the other two of a wait on a's slot.
    let read = ok(&herald(&store, &["read", "orders", "--qty", "10"]));
    assert_eq!(read.lines().count(), 2, "{read}");
    let status: Value =
        serde_json::from_str(&ok(&herald(&store, &["policy", "status", "orders"]))).expect("JSON");
    assert_eq!(status["waiting"]["concurrency"], 2, "{status}");

    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!("store = \"{store}\"\n[http]\naddr = \"{addr}\"\n"),
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = "herald_queue_waiting_messages{queue=\"orders\",reason=\"concurrency\"} 2";
    loop {
        let (code, body) = request(&addr, "GET", "/metrics");
        if code == 200 && body.contains(line) {
            break;
        }
        assert!(Instant::now() < deadline, "no {line} in /metrics: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, body) = request(&addr, "GET", "/lag.json");
    let lag: Value = serde_json::from_str(&body).expect("JSON");
    let orders = lag["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["queue"] == "orders"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(orders["waiting"]["concurrency"], 2, "{orders}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flow_section_is_checked_by_key_and_set_by_the_worker_as_it_starts() {
    let dir = std::env::temp_dir().join(unique("flowconf"));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = format!("sqlite://{}", dir.join("herald.db").display());
    let run = |section: &str| {
        let config = dir.join("herald.toml");
        std::fs::write(&config, format!("store = \"{store}\"\n{section}")).expect("config");
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "--config",
                config.to_str().expect("path"),
                "worker",
                "--until-empty",
                "--quiet",
            ])
            .output()
            .expect("run herald worker")
    };
    for (section, named) in [
        (
            "[flow.jobs]\nkey = \"jobs\"\nconcurrency = 1\n",
            "flow.jobs.key",
        ),
        ("[flow.jobs]\nconcurrency = 0\n", "flow.jobs"),
        ("[flow.jobs]\nrate = \"0/min\"\n", "\"0/min\""),
        ("[flow.Jobs]\nconcurrency = 1\n", "flow.Jobs"),
    ] {
        let out = run(section);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{section}: {err}");
        assert!(err.contains(named), "{section}: {err}");
    }
    let out = run("[flow.jobs]\nkey = \"$.customer_id\"\nconcurrency = 3\nrate = \"10/min\"\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value =
        serde_json::from_str(&ok(&herald(&store, &["policy", "show", "jobs"]))).expect("JSON");
    assert_eq!(shown["concurrency"], 3);
    assert_eq!(shown["rate"]["per_secs"], 60);
    let _ = std::fs::remove_dir_all(&dir);
}
