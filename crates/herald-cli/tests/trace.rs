//! Tracing from the command line: `herald demo --trace` prints one step's span tree;
//! `herald pub` with `OTEL_EXPORTER_OTLP_ENDPOINT` exports its publish span by OTLP/HTTP to a
//! receiver the test starts, and `herald sub --trace` prints the same trace id; a
//! `[telemetry]` endpoint that is neither http:// nor https:// is one line naming the key,
//! exit 78, and an https:// one is taken.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use herald_testkit::env::{nats_url, unique};
use parking_lot::Mutex;

fn herald() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn demo_trace_prints_the_span_tree_of_one_step() {
    let out = herald()
        .args(["demo", "--trace"])
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tree: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("the span tree of one step"))
        .take_while(|l| l.starts_with("  ") || l.starts_with("trace ") || l.contains("span tree"))
        .collect();
    let text = tree.join("\n");
    for hop in [
        "publish demo_steps [producer, sqlite]",
        "process demo_steps [consumer, sqlite]",
        "publish demo_step_results [producer, sqlite]",
    ] {
        assert!(text.contains(hop), "{hop} in:\n{text}");
    }
    // The process is a child of the publish, the result a child of the process.
    let indent = |hop: &str| {
        tree.iter()
            .find(|l| l.contains(hop))
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or(0)
    };
    assert!(
        indent("process demo_steps") > indent("publish demo_steps"),
        "{text}"
    );
    assert!(
        indent("publish demo_step_results") > indent("process demo_steps"),
        "{text}"
    );
}

#[test]
fn a_bad_endpoint_is_one_line_naming_the_key_and_https_is_taken() {
    let dir = std::env::temp_dir().join(unique("telemetry"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("herald.toml");
    let config = |endpoint: &str| {
        std::fs::write(
            &file,
            format!("[telemetry]\nendpoint = \"{endpoint}\"\ncertificate = \"/etc/ssl/certs/ca-certificates.crt\"\n"),
        )
        .expect("write");
        herald()
            .args(["config", "--config"])
            .arg(&file)
            .output()
            .expect("run herald")
    };
    let out = config("ftp://collector:4318");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("telemetry.endpoint") && err.contains("ftp://"),
        "{err}"
    );
    let out = config("https://collector:4318");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pub_exports_its_span_and_sub_prints_its_trace_id() {
    let Some(url) = nats_url("cli_trace") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let b = bodies.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            b.lock().push(body);
            async { "" }
        }),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(async move { axum::serve(listener, app).await });

    let subject = format!("{}.traced", unique("clitrace"));
    let mut sub = herald()
        .args([
            "sub",
            &subject,
            "--count",
            "1",
            "--timeout",
            "10",
            "--trace",
            "--bus",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sub");
    std::thread::sleep(Duration::from_millis(500));
    let out = herald()
        .args(["pub", &subject, "{}", "--bus", &url])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "cli-trace-test")
        .output()
        .expect("run herald pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut line = String::new();
    BufReader::new(sub.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let _ = sub.wait();
    let (trace_id, json) = line.split_once(' ').expect("trace id, then the JSON");
    assert_eq!(trace_id.len(), 32, "{line}");
    assert!(
        json.contains(trace_id),
        "the envelope's traceparent: {line}"
    );
    // The exporter sent the publish span before `herald pub` exited: its protobuf holds the
    // span's name, the service name and the trace id's 16 bytes.
    let bodies = bodies.lock();
    assert!(!bodies.is_empty(), "no export reached the receiver");
    let raw: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
    let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(format!("publish {subject}").as_bytes()),
        "the span's name"
    );
    assert!(has(b"cli-trace-test"), "the service name");
    assert!(has(&raw), "the trace id");
}
