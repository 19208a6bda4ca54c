//! The log relay against a real nats-server, on the memory store: one active relay per
//! stream under the lease (a second waits, then takes over with a new epoch once the first
//! gives it up); a relay whose checkpoint fell behind resumes from where the stream ends and
//! sends nothing twice; a stream that ends with another publisher's message makes the relay
//! resume from its checkpoint, and a checkpoint older than the duplicate window is counted.

use std::time::Duration;

use herald::store::memory::MemoryEventStore;
use herald::store::{EventStore, StreamName, WriteCondition};
use herald_nats::{Nats, Relay, RelaySettings};
use herald_testkit::env::{nats_url, unique};
use herald_testkit::fixtures::{id_of, tagged};
use herald_testkit::DeliveryCheck;

fn settings(tag: &str, holder: &str) -> RelaySettings {
    let mut s = RelaySettings::new("leasetest");
    s.stream = tag.to_uppercase();
    s.prefix = tag.to_owned();
    s.holder = holder.to_owned();
    s.lease_ttl = Duration::from_secs(30);
    s
}

async fn append(store: &MemoryEventStore, from: usize, to: usize) {
    for i in from..to {
        let s = StreamName::new(&format!("ord-{}", i % 3)).expect("stream");
        store
            .append(
                &s,
                &[tagged("relay.lease", &format!("e{i}"))],
                WriteCondition::Any,
            )
            .await
            .expect("append");
    }
}

async fn stream_ids(nats: &Nats, stream: &str) -> Vec<String> {
    nats.jetstream()
        .read_stream(stream, Duration::from_secs(10))
        .await
        .expect("read the stream")
        .iter()
        .map(|m| m.event().map(|e| id_of(&e)).unwrap_or_default())
        .collect()
}

/// The machine's NATS, a fresh stream tag and an empty store; `None` (skipped) without NATS.
async fn fixture(test: &str, tag: &str) -> Option<(Nats, String, MemoryEventStore)> {
    let url = nats_url(test)?;
    let nats = Nats::connect(&url).await.expect("connect");
    let tag = unique(tag).replace(['-', '_'], "").to_lowercase();
    Some((nats, tag, MemoryEventStore::new()))
}

async fn drop_stream(nats: &Nats, tag: &str) {
    let _ = nats
        .jetstream()
        .context()
        .delete_stream(tag.to_uppercase())
        .await;
}

async fn drain<S: EventStore + herald::store::BrokerStore>(relay: &Relay<S>) {
    while relay.pass(100).await.expect("pass") != Some(0) {}
}

#[tokio::test]
async fn one_relay_is_active_and_a_standby_takes_over_with_a_new_epoch() {
    let Some((nats, tag, store)) = fixture("relay_lease", "rl").await else {
        return;
    };
    append(&store, 0, 10).await;
    let first = Relay::new(store.clone(), nats.jetstream(), settings(&tag, "first"))
        .await
        .expect("relay");
    let second = Relay::new(store.clone(), nats.jetstream(), settings(&tag, "second"))
        .await
        .expect("relay");
    drain(&first).await;
    assert_eq!(first.epoch(), Some(1));
    assert_eq!(
        second.pass(100).await.expect("pass"),
        None,
        "the lease is held"
    );
    append(&store, 10, 20).await;
    first.release().await;
    drain(&second).await;
    assert_eq!(second.epoch(), Some(2), "a new term");
    let (a, b) = (first.report(), second.report());
    assert_eq!(
        (a.published, b.published, a.duplicates + b.duplicates),
        (10, 10, 0)
    );
    let ids = stream_ids(&nats, &tag.to_uppercase()).await;
    DeliveryCheck::compare((0..20).map(|i| format!("e{i}")), ids.clone()).assert_exactly_once();
    let expected: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected, "in log order");
    drop_stream(&nats, &tag).await;
}

#[tokio::test]
async fn a_relay_behind_its_stream_resumes_from_the_stream_and_sends_nothing_twice() {
    let Some((nats, tag, store)) = fixture("relay_resume", "rr").await else {
        return;
    };
    append(&store, 0, 12).await;
    let s = settings(&tag, "one");
    let relay = Relay::new(store.clone(), nats.jetstream(), s.clone())
        .await
        .expect("relay");
    drain(&relay).await;
    // As if killed between the acks and the checkpoint: the checkpoint is back at 4.
    let epoch = relay.epoch().expect("held");
    store
        .save_checkpoint(&s.checkpoint_name(), "log", 4, epoch)
        .await
        .expect("checkpoint");
    relay.release().await;
    append(&store, 12, 15).await;
    let again = Relay::new(store.clone(), nats.jetstream(), settings(&tag, "two"))
        .await
        .expect("relay");
    drain(&again).await;
    let r = again.report();
    assert_eq!(
        (r.published, r.duplicates, r.skipped_ahead),
        (3, 0, 1),
        "only the 3 new events are sent: {r:?}"
    );
    let ids = stream_ids(&nats, &tag.to_uppercase()).await;
    let expected: Vec<String> = (0..15).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected);
    drop_stream(&nats, &tag).await;
}

#[tokio::test]
async fn a_stream_ending_with_a_foreign_message_resumes_from_the_checkpoint() {
    let Some((nats, tag, store)) = fixture("relay_foreign", "rf").await else {
        return;
    };
    append(&store, 0, 5).await;
    let mut s = settings(&tag, "one");
    s.duplicate_window = Duration::from_secs(1);
    let relay = Relay::new(store.clone(), nats.jetstream(), s.clone())
        .await
        .expect("relay");
    drain(&relay).await;
    relay.release().await;
    // Another publisher on the relay's subjects, then events that wait past the window.
    nats.jetstream()
        .publish(&tagged(&format!("{tag}.other.x"), "foreign"))
        .await
        .expect("foreign publish");
    append(&store, 5, 8).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = Relay::new(store.clone(), nats.jetstream(), s)
        .await
        .expect("relay");
    drain(&again).await;
    let r = again.report();
    assert_eq!((r.published, r.stale_resumes), (3, 1), "{r:?}");
    let ids = stream_ids(&nats, &tag.to_uppercase()).await;
    assert_eq!(ids.len(), 9, "5 + the foreign one + 3: {ids:?}");
    drop_stream(&nats, &tag).await;
}

#[tokio::test]
async fn a_relayed_event_s_trace_context_also_goes_as_headers() {
    let Some((nats, tag, store)) = fixture("relay_trace", "rt").await else {
        return;
    };
    let ctx = herald::TraceContext::new_root();
    let s = StreamName::new("ord-1").expect("stream");
    store
        .append(
            &s,
            &[
                tagged("relay.trace", "t").with_trace_context(&ctx),
                tagged("relay.trace", "u"),
            ],
            WriteCondition::Any,
        )
        .await
        .expect("append");
    let relay = Relay::new(store.clone(), nats.jetstream(), settings(&tag, "one"))
        .await
        .expect("relay");
    drain(&relay).await;
    let stream = nats
        .jetstream()
        .context()
        .get_stream(tag.to_uppercase())
        .await
        .expect("stream");
    let first = stream.get_raw_message(1).await.expect("first");
    assert_eq!(
        first.headers.get("traceparent").map(|v| v.as_str()),
        Some(ctx.traceparent())
    );
    let second = stream.get_raw_message(2).await.expect("second");
    assert!(
        second.headers.get("traceparent").is_none(),
        "none without a context"
    );
    drop_stream(&nats, &tag).await;
}
