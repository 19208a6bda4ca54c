//! Durable domain events across a crash: a PostgreSQL server of the test's own is restarted
//! with `pg_ctl restart -m immediate` during 10,000 publishes; no acknowledged event is lost
//! (set comparison) and publishes in flight get an error, never a false acknowledgement.
//! Scale with HERALD_PG_RESTART_EVENTS.

use std::sync::Arc;
use std::time::Duration;

use herald::queue::Queue;
use herald_postgres::{PgOptions, PgStore};
use herald_testkit::postgres_server::OwnPostgres;
use herald_testkit::DeliveryCheck;
use herald_worker::events::{DeliveryMode, DomainEventPublisher};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_domain_event_is_lost_across_an_immediate_restart() {
    let Some(server) = OwnPostgres::start("pg_restart_domain_events") else {
        return;
    };
    let total: u64 = std::env::var("HERALD_PG_RESTART_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let store = PgStore::connect_with(PgOptions {
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::new(server.url())
    })
    .await
    .expect("connect to the test's own server");
    let publisher = Arc::new(
        DomainEventPublisher::new(store.clone(), "crash", "test", 16)
            .await
            .expect("publisher"),
    );
    // Four publishers, each numbering its events; the server crashes part-way.
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (publisher, progress) = (publisher.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0u64);
            for i in 0..total / 4 {
                let id = format!("{t}-{i}");
                let Value::Object(payload) = json!({ "id": id }) else {
                    unreachable!()
                };
                match publisher
                    .publish("order.created", payload, None, DeliveryMode::Durable)
                    .await
                {
                    Ok(_) => {
                        acked.push(id);
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed += 1;
                        // The server is restarting: do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, failed)
        }));
    }
    // Crash it once a fifth of the events are acknowledged: mid-flow, whatever the speed.
    while progress.load(std::sync::atomic::Ordering::Relaxed) < total / 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_crash = progress.load(std::sync::atomic::Ordering::Relaxed);
    let restart = tokio::task::spawn_blocking(move || {
        server.restart_immediate();
        server
    });
    let server = restart.await.expect("restart");
    let (mut acked, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (a, f) = t.await.expect("publisher task");
        acked.extend(a);
        failed += f;
    }
    let stored = store
        .read(publisher.queue(), Duration::from_secs(600), 100_000)
        .await
        .expect("read after the restart");
    let got: Vec<String> = stored
        .iter()
        .map(|m| {
            let e = m.event().expect("an envelope");
            e.data
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    let check = DeliveryCheck::compare(acked.clone(), got.clone());
    eprintln!(
        "pg restart: crashed at {at_crash} acknowledged; {} acknowledged, {} refused with an error, {} stored",
        acked.len(),
        failed,
        got.len()
    );
    // The crash came mid-flow and publishing went on across it. A publish in flight at the
    // crash gets an error (when one was in flight: the committer sends one statement at a
    // time, and the pool waits for the server to come back); none is falsely acknowledged.
    assert!(
        at_crash < total,
        "crashed before the end ({at_crash} of {total})"
    );
    assert!(
        acked.len() as u64 > at_crash,
        "publishing went on after the restart"
    );
    // Every acknowledged event is stored, once; events that got an error may or may not be.
    check.assert_no_acknowledged_lost();
    drop(server);
}
