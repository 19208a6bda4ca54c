//! Reliability: a nats-server of the test's own is stopped and restarted while events are
//! published. Core NATS reports how many were lost; JetStream loses none that it acknowledged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{sync_handler, Event, Subject};
use herald_nats::{ConnectionState, ConsumerSpec, JetStream, Nats, StreamSpec};
use herald_testkit::nats_server::OwnNatsServer;
use herald_testkit::DeliveryCheck;

async fn connect(url: &str) -> Nats {
    connect_watching(url, Arc::default()).await
}

/// Connects and records every state change (the callback sees each one; a `watch` receiver
/// may only see the latest).
async fn connect_watching(url: &str, states: Arc<Mutex<Vec<ConnectionState>>>) -> Nats {
    Nats::builder()
        .server(url)
        .reconnect_delay(Duration::from_millis(250))
        .reconnect_buffer(256)
        .on_state_change(move |s| states.lock().expect("lock").push(s))
        .connect()
        .await
        .expect("connect to our own server")
}

const RUN: Duration = Duration::from_secs(5);

/// Publishes core events for `RUN`; returns (accepted ids, refused count).
async fn publish_core(nats: Nats) -> (Vec<String>, usize) {
    let subject = Subject::new("rel.core.tick").expect("subject");
    let (mut ok, mut refused) = (Vec::new(), 0);
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < RUN {
        let id = format!("core-{i}");
        match nats
            .publish(&Event::new(subject.clone()).with_metadata("event_id", id.as_str()))
            .await
        {
            Ok(()) => ok.push(id),
            Err(_) => refused += 1,
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (ok, refused)
}

/// Publishes JetStream events for `RUN`, each awaiting its ack; returns (acked ids, failed count).
async fn publish_js(js: JetStream) -> (Vec<String>, usize) {
    let subject = Subject::new("rel.js.tick").expect("subject");
    let (mut acked, mut failed) = (Vec::new(), 0);
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < RUN {
        let id = format!("js-{i}");
        let event = Event::new(subject.clone()).with_metadata("event_id", id.as_str());
        match tokio::time::timeout(Duration::from_secs(1), js.publish(&event)).await {
            Ok(Ok(_)) => acked.push(id),
            _ => failed += 1,
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_server_restart_core_loss_is_reported_and_jetstream_keeps_every_acked_message() {
    let Some(mut server) = OwnNatsServer::start("reliability") else {
        return;
    };
    let url = server.url();
    let states: Arc<Mutex<Vec<ConnectionState>>> = Default::default();
    let core_pub = connect_watching(&url, states.clone()).await;
    let js_pub = connect(&url).await;
    let listener = connect(&url).await;
    let js = js_pub.jetstream();
    js.ensure_stream(&StreamSpec::new("REL", ["rel.js.>"]))
        .await
        .expect("stream");

    let received: Arc<Mutex<Vec<String>>> = Default::default();
    let r = received.clone();
    let _sub = listener
        .subscribe_handler(
            "rel.core.>",
            None,
            sync_handler(move |e: &Event| {
                r.lock()
                    .expect("lock")
                    .push(e.event_id().unwrap_or("?").to_owned());
            }),
        )
        .await
        .expect("subscribe");

    let core_task = tokio::spawn(publish_core(core_pub.clone()));
    let js_task = tokio::spawn(publish_js(js.clone()));
    // One second in, stop our own server (by its pid), keep it down 1.5 s, start it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server = tokio::task::spawn_blocking(move || {
        server.stop();
        std::thread::sleep(Duration::from_millis(1500));
        server.restart();
        server
    })
    .await
    .expect("restart");
    let (core_ok, core_refused) = core_task.await.expect("core publisher");
    let (js_acked, js_failed) = js_task.await.expect("js publisher");
    core_pub.flush().await.expect("flush after the restart");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Core NATS: at most once. Count what was lost; nothing may be duplicated or invented.
    let core = DeliveryCheck::compare(core_ok.clone(), received.lock().expect("lock").clone());
    eprintln!(
        "reliability: core NATS: {} publishes accepted, {} refused (reconnect buffer full), {} delivered, {} accepted but LOST",
        core_ok.len(),
        core_refused,
        core.received,
        core.missing.len()
    );
    assert!(
        core.duplicated.is_empty() && core.unexpected.is_empty(),
        "{core}"
    );
    assert!(
        core.missing.len() + core_refused > 0,
        "1.5 s of downtime at 500 publishes/s with a 256-message buffer cannot deliver everything"
    );

    // JetStream: every acknowledged event is in the stream after the restart.
    let reader = connect(&url).await;
    let consumer = reader
        .jetstream()
        .durable_consumer("REL", &ConsumerSpec::durable("audit"))
        .await
        .expect("consumer");
    let mut stored = Vec::new();
    loop {
        let batch = consumer
            .fetch(500, Duration::from_secs(1))
            .await
            .expect("fetch");
        if batch.is_empty() {
            break;
        }
        for d in batch {
            stored.push(d.event.event_id().unwrap_or("?").to_owned());
            d.ack().await.expect("ack");
        }
    }
    let js_check = DeliveryCheck::compare(js_acked.clone(), stored.clone());
    eprintln!(
        "reliability: JetStream: {} acknowledged, {} failed or timed out, {} stored, {} acknowledged but missing",
        js_acked.len(),
        js_failed,
        stored.len(),
        js_check.missing.len()
    );
    assert!(
        js_check.missing.is_empty(),
        "acknowledged JetStream messages were lost: {js_check}"
    );
    assert!(js_check.duplicated.is_empty(), "{js_check}");
    assert!(!js_acked.is_empty());

    let seen = states.lock().expect("lock").clone();
    assert!(
        seen.contains(&ConnectionState::Disconnected),
        "state changes seen: {seen:?}"
    );
    assert_eq!(core_pub.state(), ConnectionState::Connected);
    assert!(core_pub.stats().reconnects >= 1);
    drop(server);
}
