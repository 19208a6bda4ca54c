//! Both directions with a Python service that uses seed 004's own `Event` class over nats-py:
//! Python reads what Herald writes, and Herald reads what Python writes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald::{Event, Priority, Subject};
use herald_nats::Nats;
use herald_testkit::env::{nats_url, services_required, unique};

fn python_with_nats() -> bool {
    Command::new("python3")
        .args(["-c", "import nats"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// Multi-threaded: the test reads the peer's stdout with blocking calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_seed_004_service_and_herald_read_each_others_events() {
    let test = "python_interop";
    let Some(url) = nats_url(test) else { return };
    if !python_with_nats() {
        if services_required() {
            panic!("{test}: python3 with nats-py is missing and HERALD_REQUIRE_SERVICES=1; run scripts/test.sh, which installs it");
        }
        eprintln!("SKIPPED {test}: python3 with nats-py is not installed (pip install nats-py)");
        return;
    }
    let prefix = unique("interop");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/seed004_peer.py");
    let mut peer = Command::new("python3")
        .args([script, &url, &prefix])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Python peer");
    let mut lines = BufReader::new(peer.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("a line").expect("read"), "ready");

    let nats = Nats::connect(&url).await.expect("connect");
    let mut from_python = nats
        .subscribe(format!("{prefix}.from_python").as_str(), None)
        .await
        .expect("subscribe");
    let sent = Event::try_new(
        &format!("{prefix}.from_rust"),
        serde_json::json!({"order": 42, "items": ["a", "b"]}),
    )
    .expect("event")
    .with_source("herald-test")
    .with_priority(Priority::High)
    .with_metadata("event_id", "e-1");
    nats.publish(&sent).await.expect("publish");

    // Python understood Herald's envelope field for field.
    let understood: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read"))
            .expect("Python printed JSON");
    assert_eq!(understood["subject"], sent.subject.as_str());
    assert_eq!(understood["event_type"], "from_rust");
    assert_eq!(understood["source"], "herald-test");
    assert_eq!(understood["data"]["items"][1], "b");
    assert_eq!(understood["priority"], "high");
    assert_eq!(understood["correlation_id"], sent.correlation_id.as_str());
    assert_eq!(understood["timestamp"], sent.timestamp.to_string());
    assert_eq!(understood["metadata"]["event_id"], "e-1");

    // Herald reads Python's envelope (offset-less timestamp, enum priority value).
    let got = tokio::time::timeout(Duration::from_secs(10), from_python.next())
        .await
        .expect("in time")
        .expect("an event");
    let e = got.event;
    assert_eq!(
        e.subject,
        Subject::new(&format!("{prefix}.from_python")).expect("subject")
    );
    assert_eq!(e.event_type, "python.answer");
    assert_eq!(e.source, "seed004-python");
    assert_eq!(e.priority, Priority::Critical);
    assert_eq!(e.correlation_id, sent.correlation_id);
    assert_eq!(e.data["n"], 7);
    assert_eq!(e.data["echo"]["order"], 42);
    assert_eq!(e.metadata["lang"], "python");
    assert_eq!(nats.stats().malformed, 0);
    assert!(peer.wait().expect("peer exits").success());
}
