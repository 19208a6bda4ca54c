//! `relay-kill` at small scale, on both stores: events are appended while `herald relay`
//! processes of the test's own are SIGKILLed and restarted; afterwards the JetStream stream
//! holds each appended event exactly once (id sets: missing 0, duplicated 0), in order per
//! store stream, each body byte for byte as stored, with `Nats-Msg-Id` = STORE_ID:POSITION.
//! `inbox-kill` the other way: `herald inbox` SIGKILLed while it takes a stream in; the store
//! holds each message once. Scale with HERALD_RELAY_EVENTS, HERALD_RELAY_KILLS,
//! HERALD_INBOX_EVENTS and HERALD_INBOX_KILLS.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::store::{EventStore, StreamName, WriteCondition};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, nats_url, unique};
use herald_testkit::fixtures::{id_of, tagged};
use herald_testkit::DeliveryCheck;

fn scale(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn relay(store: &str, nats: &str, stream: &str, prefix: &str, until_caught_up: bool) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args(["relay", "--store", store, "--to", nats, "--stream", stream])
        .args(["--subject-prefix", prefix, "--store-id", "teststore"])
        .args(["--lease", "0.5"]);
    if until_caught_up {
        c.arg("--until-caught-up");
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald relay")
}

async fn relay_kill<S: EventStore>(store: S, url: &str, nats: &str, tag: &str) {
    let total = scale("HERALD_RELAY_EVENTS", 3000);
    let kills = scale("HERALD_RELAY_KILLS", 10);
    let (stream, prefix) = (
        format!("RELAY_{}", tag.to_uppercase()),
        format!("relay{tag}"),
    );
    let category = format!("ord{tag}");
    // Appends go on in the background, 8 streams, while the relay is killed and restarted.
    let appender = {
        let (store, category) = (store.clone(), category.clone());
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(total);
            for i in 0..total {
                let id = format!("{category}-{i}");
                let s = StreamName::new(&format!("{category}-{}", i % 8)).expect("stream");
                store
                    .append(&s, &[tagged("relay.test", &id)], WriteCondition::Any)
                    .await
                    .expect("append");
                ids.push(id);
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            ids
        })
    };
    let begun = Instant::now();
    let mut mid_way = 0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..kills {
        let mut child = relay(url, nats, &stream, &prefix, false);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Longer than the lease a killed relay leaves behind (0.5 s), so each relay relays.
        std::thread::sleep(Duration::from_millis(700 + x % 400));
        if child.try_wait().expect("poll").is_none() {
            mid_way += 1;
        }
        child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
        child.wait().expect("reap");
    }
    let ids = appender.await.expect("appender");
    let status = relay(url, nats, &stream, &prefix, true)
        .wait()
        .expect("last relay");
    assert!(status.success(), "the last relay catches up and exits 0");

    let client = herald_nats::Nats::connect(nats).await.expect("connect");
    let messages = client
        .jetstream()
        .read_stream(&stream, Duration::from_secs(30))
        .await
        .expect("read the stream");
    let mut got = Vec::with_capacity(messages.len());
    let mut last_in_stream: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        let event = m.event().expect("the stored envelope");
        let id = id_of(&event);
        // In order per store stream: ids of one stream grow.
        let (stream_of, n) = id.rsplit_once('-').expect("an id");
        let n: usize = n.parse().expect("a number");
        let key = format!("{stream_of}/{}", n % 8);
        if let Some(prev) = last_in_stream.insert(key, n) {
            assert!(prev < n, "out of order within a stream: {prev} then {n}");
        }
        assert!(
            m.subject.starts_with(&format!("{prefix}.{category}.")),
            "{}",
            m.subject
        );
        got.push(id);
    }
    eprintln!(
        "relay-kill ({}): {total} appends, {kills} SIGKILLs ({mid_way} while relaying), {} in the stream, {:.1} s",
        url.split(':').next().unwrap_or("?"),
        got.len(),
        begun.elapsed().as_secs_f64()
    );
    DeliveryCheck::compare(ids, got).assert_exactly_once();
    assert!(mid_way > 0, "no kill landed while the relay ran");
    let _ = client.jetstream().context().delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_kill_leaves_each_event_once_in_the_stream() {
    let Some(nats) = nats_url("relay_kill_sqlite") else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("relay"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    let tag = unique("s").replace(['-', '_'], "").to_lowercase();
    relay_kill(store, &url, &nats, &tag).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_kill_leaves_each_event_once_in_the_stream() {
    let (Some(nats), Some(url)) = (nats_url("relay_kill_pg"), database_url("relay_kill_pg")) else {
        return;
    };
    let db = herald_testkit::env::FreshDatabase::create(&url);
    let store = PgStore::connect(&db.url()).await.expect("connect");
    let tag = unique("p").replace(['-', '_'], "").to_lowercase();
    relay_kill(store.clone(), &db.url(), &nats, &tag).await;
    store.pool().close().await;
}

fn inbox(store: &str, nats: &str, stream: &str, until_idle: bool) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args([
        "inbox",
        "--store",
        store,
        "--bus",
        nats,
        "--from",
        stream,
        "--consumer",
        "test-inbox",
    ]);
    if until_idle {
        c.arg("--until-idle");
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald inbox")
}

/// `inbox-kill` at small scale: messages published to a stream are taken into the store by
/// `herald inbox` processes SIGKILLed 10 times; the store holds each event once (id sets),
/// on the stream its subject names.
async fn inbox_kill<S: EventStore>(store: S, url: &str, nats: &str, tag: &str) {
    let total = scale("HERALD_INBOX_EVENTS", 3000);
    let kills = scale("HERALD_INBOX_KILLS", 10);
    let (stream, prefix, category) = (
        format!("INBOX_{}", tag.to_uppercase()),
        format!("inbox{tag}"),
        format!("in{tag}"),
    );
    let client = herald_nats::Nats::connect(nats).await.expect("connect");
    let js = client.jetstream();
    js.ensure_stream(&herald_nats::StreamSpec::new(
        &stream,
        [format!("{prefix}.>")],
    ))
    .await
    .expect("stream");
    let mut ids = Vec::with_capacity(total);
    let mut pending = std::collections::VecDeque::new();
    for i in 0..total {
        let id = format!("{category}-{i}");
        let subject = format!("{prefix}.{category}.{}", i % 8);
        let event = tagged(&subject, &id).ensure_event_id();
        pending.push_back(js.publish_async(&event).await.expect("publish"));
        if pending.len() >= 256 {
            pending.pop_front().expect("one").ack().await.expect("ack");
        }
        ids.push(id);
    }
    while let Some(p) = pending.pop_front() {
        p.ack().await.expect("ack");
    }
    let mut mid_way = 0;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..kills {
        let mut child = inbox(url, nats, &stream, false);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(100 + x % 250));
        if child.try_wait().expect("poll").is_none() {
            mid_way += 1;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let status = inbox(url, nats, &stream, true).wait().expect("last inbox");
    assert!(status.success(), "the last inbox drains and exits 0");
    let mut got = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .read_category(&category, from, 1000)
            .await
            .expect("read");
        let Some(last) = page.last() else { break };
        from = last.global_position + 1;
        for e in &page {
            let event = e.event().expect("an envelope");
            assert_eq!(
                e.stream,
                format!(
                    "{category}-{}",
                    id_of(&event)
                        .rsplit('-')
                        .next()
                        .unwrap_or("")
                        .parse::<usize>()
                        .unwrap_or(0)
                        % 8
                )
            );
            got.push(id_of(&event));
        }
    }
    eprintln!(
        "inbox-kill ({}): {total} messages, {kills} SIGKILLs ({mid_way} while taking in), {} in the store",
        url.split(':').next().unwrap_or("?"),
        got.len()
    );
    DeliveryCheck::compare(ids, got).assert_exactly_once();
    assert!(mid_way > 0, "no kill landed while the inbox ran");
    let _ = js.context().delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inbox_kill_appends_each_message_once() {
    let Some(nats) = nats_url("inbox_kill_sqlite") else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("inbox"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    let tag = unique("s").replace(['-', '_'], "").to_lowercase();
    inbox_kill(store, &url, &nats, &tag).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_inbox_kill_appends_each_message_once() {
    let (Some(nats), Some(url)) = (nats_url("inbox_kill_pg"), database_url("inbox_kill_pg")) else {
        return;
    };
    let db = herald_testkit::env::FreshDatabase::create(&url);
    let store = PgStore::connect(&db.url()).await.expect("connect");
    let tag = unique("p").replace(['-', '_'], "").to_lowercase();
    inbox_kill(store.clone(), &db.url(), &nats, &tag).await;
    store.pool().close().await;
}

/// A plain nats-py reader gets the relayed events with their envelope unchanged (the stored
/// body byte for byte) and `Nats-Msg-Id` = `STORE_ID:GLOBAL_POSITION`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_py_reader_sees_the_stored_envelope_and_the_message_id() {
    let Some(nats) = nats_url("relay_nats_py") else {
        return;
    };
    let has_nats_py = Command::new("python3")
        .args(["-c", "import nats"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_nats_py {
        if herald_testkit::env::services_required() {
            panic!("python3 with nats-py is missing and HERALD_REQUIRE_SERVICES=1; run scripts/test.sh, which installs it");
        }
        eprintln!(
            "SKIPPED a_nats_py_reader_sees_the_stored_envelope_and_the_message_id: no nats-py"
        );
        return;
    }
    let dir = std::env::temp_dir().join(unique("relaypy"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    let tag = unique("y").replace(['-', '_'], "").to_lowercase();
    let (stream, prefix) = (
        format!("RELAYPY_{}", tag.to_uppercase()),
        format!("relaypy{tag}"),
    );
    let names = ["order-1", "order-2", "user-ada.lovelace"];
    for (i, name) in names.iter().enumerate() {
        let s = StreamName::new(name).expect("stream");
        store
            .append(
                &s,
                &[tagged("relay.py", &format!("e{i}"))],
                WriteCondition::Any,
            )
            .await
            .expect("append");
    }
    let status = relay(&url, &nats, &stream, &prefix, true)
        .wait()
        .expect("relay");
    assert!(status.success());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/relay_reader.py");
    let out = Command::new("python3")
        .args([script, &nats, &stream, "3"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = store.read_all(0, 10).await.expect("the log");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, e) in lines.iter().zip(&stored) {
        assert_eq!(
            line["payload"].as_str().expect("payload").as_bytes(),
            e.body.as_slice(),
            "the envelope unchanged"
        );
        assert_eq!(line["msg_id"], format!("teststore:{}", e.global_position));
    }
    assert_eq!(lines[0]["subject"], format!("{prefix}.order.1"));
    assert_eq!(
        lines[2]["subject"],
        format!("{prefix}.user.ada_lovelace"),
        "a '.' in the id becomes '_'"
    );
    let client = herald_nats::Nats::connect(&nats).await.expect("connect");
    let _ = client.jetstream().context().delete_stream(&stream).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `herald relay --from-queue`: the worker's domain events queue to JetStream, the relay
/// SIGKILLed 5 times: each message once in the stream (by event id), the queue emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_relayed_under_kills_lands_once_in_the_stream() {
    use herald::queue::{Queue, QueueName};
    let Some(nats) = nats_url("relay_queue") else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("relayq"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    let queue = QueueName::new("default_domain_events").expect("queue");
    store.create(&queue).await.expect("create");
    let total = scale("HERALD_RELAY_EVENTS", 3000);
    let ids: Vec<String> = (0..total).map(|i| format!("d-{i}")).collect();
    for chunk in ids.chunks(500) {
        let events: Vec<herald::Event> = chunk
            .iter()
            .map(|id| tagged("domain.order.created", id))
            .collect();
        store
            .send_batch(&queue, &events, Duration::ZERO)
            .await
            .expect("send");
    }
    let tag = unique("q").replace(['-', '_'], "").to_lowercase();
    let (stream, prefix) = (
        format!("RELAYQ_{}", tag.to_uppercase()),
        format!("relayq{tag}"),
    );
    let run = |until: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
        c.args([
            "relay",
            "--store",
            &url,
            "--to",
            &nats,
            "--stream",
            &stream,
            "--subject-prefix",
            &prefix,
        ])
        .args([
            "--from-queue",
            "default_domain_events",
            "--vt",
            "2",
            "--store-id",
            "teststore",
        ]);
        if until {
            c.arg("--until-caught-up");
        }
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald relay")
    };
    let mut mid_way = 0;
    for delay in [150u64, 250, 120, 300, 200] {
        let mut child = run(false);
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("poll").is_none() {
            mid_way += 1;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    assert!(run(true).wait().expect("last relay").success());
    let client = herald_nats::Nats::connect(&nats).await.expect("connect");
    let messages = client
        .jetstream()
        .read_stream(&stream, Duration::from_secs(30))
        .await
        .expect("read the stream");
    let got: Vec<String> = messages
        .iter()
        .map(|m| id_of(&m.event().expect("envelope")))
        .collect();
    assert!(messages
        .iter()
        .all(|m| m.subject == format!("{prefix}.domain.order.created")));
    eprintln!("relay --from-queue: {total} messages, 5 SIGKILLs ({mid_way} while relaying), {} in the stream", got.len());
    DeliveryCheck::compare(ids, got).assert_exactly_once();
    assert_eq!(
        store.metrics(&queue).await.expect("metrics").queue_length,
        0,
        "all archived"
    );
    assert!(mid_way > 0);
    let _ = client.jetstream().context().delete_stream(&stream).await;
    let _ = std::fs::remove_dir_all(dir);
}
