//! `herald serve` as a user runs it: /health, /metrics.json and /config carry exactly the
//! fields and JSON types of seed 001's `HealthCheck`, `WorkerMetrics` and `WorkerConfig`;
//! non-GET requests get 405; it listens on loopback only by default; `herald health` reads it.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};

use herald_testkit::env::{free_port, unique};
use herald_testkit::http::request;
use serde_json::Value;

struct Server(Child, std::path::PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start(http: Option<&str>) -> Server {
    let dir = std::env::temp_dir().join(unique("serve"));
    let store = format!("sqlite://{}", dir.join("herald.db").display());
    let mut args = vec![
        "--store",
        store.as_str(),
        "serve",
        "--quiet",
        "--enqueue",
        "20",
    ];
    if let Some(h) = http {
        args.extend(["--http", h]);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald serve");
    Server(child, dir)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_endpoints_carry_exactly_the_seed_models_fields_and_types() {
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = start(Some(&addr));
    let (code, _) = request(&addr, "GET", "/livez");
    assert_eq!(code, 200);

    let (code, body) = request(&addr, "GET", "/health");
    assert_eq!(code, 200, "{body}");
    let h: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        keys(&h),
        set(&[
            "status",
            "worker_id",
            "uptime_seconds",
            "components",
            "rust",
            "python"
        ])
    );
    assert!(h["status"].is_string() && h["worker_id"].is_string() && h["uptime_seconds"].is_f64());
    for (_, c) in h["components"].as_object().expect("components") {
        // Seed fields, plus Herald's `required`.
        assert_eq!(
            keys(c),
            set(&["name", "status", "message", "last_check", "required"])
        );
        assert!(["healthy", "degraded", "unhealthy"].contains(&c["status"].as_str().unwrap_or("")));
    }
    for component in ["store", "bus", "worker"] {
        assert!(
            h["components"].get(component).is_some(),
            "{component} is checked"
        );
    }

    let (code, body) = request(&addr, "GET", "/metrics.json");
    assert_eq!(code, 200);
    let m: Value = serde_json::from_str(&body).expect("JSON");
    let ints = [
        "steps_processed",
        "steps_succeeded",
        "steps_failed",
        "steps_in_progress",
        "dispatch_channel_pending",
        "completion_channel_pending",
        "domain_events_published",
        "domain_events_dropped",
        "handler_errors",
        "timeout_errors",
        "ffi_errors",
    ];
    let floats = [
        "uptime_seconds",
        "avg_execution_time_ms",
        "max_execution_time_ms",
        "p95_execution_time_ms",
        "p99_execution_time_ms",
        "dispatch_channel_saturation",
        "completion_channel_saturation",
    ];
    let mut all: Vec<&str> = ints.iter().chain(floats.iter()).copied().collect();
    all.push("worker_id");
    assert_eq!(keys(&m), set(&all), "exactly the 19 fields");
    for f in ints {
        assert!(m[f].is_u64(), "{f} is an int: {}", m[f]);
    }
    for f in floats {
        assert!(m[f].is_f64(), "{f} is a float: {}", m[f]);
    }

    let (code, body) = request(&addr, "GET", "/config");
    assert_eq!(code, 200);
    let c: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        keys(&c),
        set(&[
            "worker_id",
            "namespace",
            "environment",
            "polling_interval_ms",
            "starvation_threshold_ms",
            "max_concurrent_handlers",
            "handler_timeout_ms",
            "dispatch_buffer_size",
            "completion_buffer_size",
        ])
    );

    let (code, body) = request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE herald_steps_processed_total counter"),
        "{body}"
    );
    assert!(
        body.contains("herald_queue_depth_messages{queue=\"default_steps\"}"),
        "{body}"
    );

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        assert_eq!(request(&addr, method, "/health").0, 405, "{method}");
    }

    let out: Output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["health", "--http", &addr])
        .output()
        .expect("herald health");
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("health JSON");
    assert_eq!(printed["status"], "healthy");
}

#[test]
fn it_listens_on_loopback_only_by_default() {
    assert_eq!(herald_http::DEFAULT_ADDR, "127.0.0.1:8081");
    if TcpStream::connect("127.0.0.1:8081").is_ok() {
        eprintln!("SKIPPED it_listens_on_loopback_only_by_default: port 8081 is taken here");
        return;
    }
    let _server = start(None);
    let (code, _) = request("127.0.0.1:8081", "GET", "/livez");
    assert_eq!(code, 200);
    // The kernel's table of listening sockets: 8081 is bound to 127.0.0.1, nothing else.
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let listeners: Vec<&str> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A") && f.get(1).is_some_and(|a| a.ends_with(":1F91")))
                .then(|| f[1])
        })
        .collect();
    assert_eq!(listeners, ["0100007F:1F91"], "bound to 127.0.0.1:8081 only");
}

#[test]
fn herald_health_against_nothing_is_one_line_and_a_failure() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["health", "--http", &addr])
        .output()
        .expect("herald health");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&addr), "{err}");
}
