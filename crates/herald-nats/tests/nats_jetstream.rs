//! JetStream against a real nats-server: streams from config, publish with ack, dedupe,
//! durable consumers resuming after a reconnect, nak and redelivery, term, the consume loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::{sync_handler, BoxError, Event, Subject};
use herald_nats::{ConsumeOptions, ConsumerSpec, JetStream, Nats, NatsError, StreamSpec};
use herald_testkit::env::{nats_url, unique};
use herald_testkit::fixtures::id_of;
use herald_testkit::DeliveryCheck;

struct Fixture {
    nats: Nats,
    js: JetStream,
    stream: String,
    prefix: String,
}

impl Fixture {
    async fn new(test: &str) -> Option<Fixture> {
        let url = nats_url(test)?;
        let nats = Nats::connect(&url).await.expect("connect");
        let js = nats.jetstream();
        let prefix = unique("js");
        let stream = prefix.to_uppercase();
        let spec = StreamSpec {
            memory: false,
            ..StreamSpec::new(&stream, [format!("{prefix}.>")])
        };
        js.ensure_stream(&spec).await.expect("create stream");
        Some(Fixture {
            nats,
            js,
            stream,
            prefix,
        })
    }

    fn event(&self, id: &str) -> Event {
        Event::new(Subject::new(&format!("{}.orders.created", self.prefix)).expect("subject"))
            .with_metadata("event_id", id)
    }

    async fn cleanup(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

#[tokio::test]
async fn streams_are_created_idempotently_and_publish_returns_the_stream_sequence() {
    let Some(f) = Fixture::new("js_publish").await else {
        return;
    };
    let spec = StreamSpec::new(&f.stream, [format!("{}.>", f.prefix)]);
    f.js.ensure_stream(&spec)
        .await
        .expect("ensure again is a no-op");
    let a = f.js.publish(&f.event("a")).await.expect("ack");
    let b = f.js.publish(&f.event("b")).await.expect("ack");
    assert_eq!(a.stream, f.stream);
    assert_eq!(b.sequence, a.sequence + 1);
    let info = f.js.stream_info(&f.stream).await.expect("info");
    assert_eq!(info.messages, 2);
    assert!(f
        .js
        .stream_names()
        .await
        .expect("names")
        .contains(&f.stream));
    f.cleanup().await;
}

#[tokio::test]
async fn a_repeated_message_id_is_stored_once() {
    let Some(f) = Fixture::new("js_dedupe").await else {
        return;
    };
    let event = f.event("same-id");
    let first = f.js.publish(&event).await.expect("first");
    let again = f.js.publish(&event).await.expect("retry");
    assert!(!first.duplicate);
    assert!(again.duplicate, "the server recognised the retry");
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(f.js.stream_info(&f.stream).await.expect("info").messages, 1);
    f.cleanup().await;
}

#[tokio::test]
async fn a_js_publish_that_no_stream_captures_is_a_typed_error() {
    let Some(f) = Fixture::new("js_no_stream").await else {
        return;
    };
    let stray = Event::new(Subject::new(&format!("{}.nowhere", unique("stray"))).expect("subject"));
    let err = f.js.publish(&stray).await.expect_err("no stream");
    assert!(matches!(err, NatsError::NoStream { .. }), "{err}");
    f.cleanup().await;
}

#[tokio::test]
async fn a_durable_consumer_resumes_where_it_left_off_after_the_client_reconnects() {
    let Some(f) = Fixture::new("js_resume").await else {
        return;
    };
    let ids: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    for id in &ids {
        f.js.publish(&f.event(id)).await.expect("ack");
    }
    let spec = ConsumerSpec::durable("resumer").ack_wait(Duration::from_secs(30));
    let consumer =
        f.js.durable_consumer(&f.stream, &spec)
            .await
            .expect("consumer");
    let mut got = Vec::new();
    while got.len() < 20 {
        for d in consumer
            .fetch(20 - got.len(), Duration::from_secs(2))
            .await
            .expect("fetch")
        {
            d.ack().await.expect("ack");
            got.push(id_of(&d.event));
        }
    }
    // Give the acks time to reach the server, then drop the connection and reconnect.
    f.nats.flush().await.expect("flush");
    f.nats
        .client()
        .force_reconnect()
        .await
        .expect("force reconnect");
    let mut state = f.nats.watch_state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == herald_nats::ConnectionState::Connected),
    )
    .await
    .expect("reconnected in time")
    .expect("state");
    // A fresh connection binding the same durable name sees only what was not acked.
    let url = nats_url("js_resume").expect("url");
    let other = Nats::connect(&url).await.expect("connect");
    let resumed = other
        .jetstream()
        .durable_consumer(&f.stream, &spec)
        .await
        .expect("bind durable");
    let mut rest = Vec::new();
    while rest.len() < 30 {
        let batch = resumed
            .fetch(30, Duration::from_secs(2))
            .await
            .expect("fetch");
        if batch.is_empty() {
            break;
        }
        for d in batch {
            assert_eq!(
                d.delivered, 1,
                "nothing acked before the reconnect comes back"
            );
            d.ack().await.expect("ack");
            rest.push(id_of(&d.event));
        }
    }
    got.extend(rest);
    DeliveryCheck::compare(ids, got).assert_exactly_once();
    f.cleanup().await;
}

#[tokio::test]
async fn a_nakked_message_is_redelivered_and_a_termed_one_is_not() {
    let Some(f) = Fixture::new("js_nak").await else {
        return;
    };
    for id in ["keep", "retry", "poison"] {
        f.js.publish(&f.event(id)).await.expect("ack");
    }
    let consumer =
        f.js.durable_consumer(
            &f.stream,
            &ConsumerSpec::durable("nakker").ack_wait(Duration::from_secs(30)),
        )
        .await
        .expect("consumer");
    let mut deliveries: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && deliveries.get("retry").map_or(0, Vec::len) < 2 {
        for d in consumer
            .fetch(10, Duration::from_millis(500))
            .await
            .expect("fetch")
        {
            let id = id_of(&d.event);
            deliveries.entry(id.clone()).or_default().push(d.delivered);
            match (id.as_str(), d.delivered) {
                ("retry", 1) => d.nak(Some(Duration::from_millis(200))).await.expect("nak"),
                ("poison", _) => d.term().await.expect("term"),
                _ => {
                    d.in_progress().await.expect("in progress");
                    d.ack().await.expect("ack");
                }
            }
        }
    }
    // Nothing else may come: the poison message was termed, the rest acked.
    let late = consumer
        .fetch(10, Duration::from_millis(700))
        .await
        .expect("fetch");
    assert!(
        late.is_empty(),
        "unexpected redelivery: {:?}",
        late.iter().map(|d| id_of(&d.event)).collect::<Vec<_>>()
    );
    assert_eq!(deliveries.get("retry"), Some(&vec![1, 2]));
    assert_eq!(deliveries.get("keep"), Some(&vec![1]));
    assert_eq!(deliveries.get("poison"), Some(&vec![1]));
    f.cleanup().await;
}

#[tokio::test]
async fn the_consume_loop_acks_successes_naks_failures_and_ends_with_every_message_handled() {
    let Some(f) = Fixture::new("js_consume").await else {
        return;
    };
    let ids: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    for id in &ids {
        f.js.publish(&f.event(id)).await.expect("ack");
    }
    let consumer =
        f.js.durable_consumer(&f.stream, &ConsumerSpec::durable("looper"))
            .await
            .expect("consumer");
    let handled: Arc<Mutex<Vec<String>>> = Default::default();
    let failed_once: Arc<Mutex<Vec<String>>> = Default::default();
    let (h, fo) = (handled.clone(), failed_once.clone());
    let handler = sync_handler(move |e: &Event| -> Result<(), BoxError> {
        let id = id_of(e);
        let mut fo = fo.lock().expect("lock");
        if id.ends_with('7') && !fo.contains(&id) {
            fo.push(id);
            return Err("planned failure".into());
        }
        h.lock().expect("lock").push(id);
        Ok(())
    });
    let h2 = handled.clone();
    let done = async move {
        while h2.lock().expect("lock").len() < 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let options = ConsumeOptions {
        max_in_flight: 8,
        retry: herald::RetryPolicy::fixed(Duration::from_millis(100)),
        ..ConsumeOptions::default()
    };
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.consume(handler, options, done),
    )
    .await
    .expect("finished in time")
    .expect("consume");
    DeliveryCheck::compare(ids, handled.lock().expect("lock").clone()).assert_exactly_once();
    assert_eq!(report.retried, 10);
    assert_eq!(report.acked, 100);
    assert_eq!(f.nats.stats().handler_errors, 10);
    f.cleanup().await;
}

/// The consume loop takes the core's `RetryPolicy` (attempts run out into a reject) and,
/// with a dead-letter subject, publishes the core's dead letter there before it terms: every
/// event that failed is a dead letter once, with its origin, its reason, its attempts, and
/// its original body byte for byte.
#[tokio::test]
async fn rejected_messages_become_the_cores_dead_letters_under_the_retry_policy() {
    use herald::dead_letter::DeadLetter;
    let Some(f) = Fixture::new("js_dead_letters").await else {
        return;
    };
    let ids: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    let mut bodies = BTreeMap::new();
    for id in &ids {
        let event = f.event(id);
        bodies.insert(id.clone(), event.to_json());
        f.js.publish(&event).await.expect("ack");
    }
    let dlq = format!("{}.dlq.orders", f.prefix);
    let spec = ConsumerSpec::durable("dead")
        .filter(format!("{}.orders.>", f.prefix))
        .dead_letters(dlq.clone());
    let consumer =
        f.js.durable_consumer(&f.stream, &spec)
            .await
            .expect("consumer");
    // d0 is rejected at once; the others fail every time.
    let handler = sync_handler(|e: &Event| -> Result<(), BoxError> {
        if id_of(e) == "d0" {
            return Err(herald::Reject::new("bad order").into());
        }
        Err("nope".into())
    });
    let options = ConsumeOptions {
        retry: herald::RetryPolicy::fixed(Duration::from_millis(50)).max_attempts(2),
        ..ConsumeOptions::default()
    };
    let (js, stream, subject) = (f.js.clone(), f.stream.clone(), dlq.clone());
    let all_dead = async move {
        loop {
            let held = js.read_stream(&stream, Duration::from_secs(5)).await;
            let dead = held.map_or(0, |m| m.iter().filter(|m| m.subject == subject).count());
            if dead >= 6 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.consume(handler, options, all_dead),
    )
    .await
    .expect("finished in time")
    .expect("consume");
    assert_eq!((report.rejected, report.retried, report.acked), (6, 5, 0));
    let held =
        f.js.read_stream(&f.stream, Duration::from_secs(5))
            .await
            .expect("read");
    let letters: Vec<Event> = held
        .iter()
        .filter(|m| m.subject == dlq)
        .map(|m| m.event().expect("an envelope"))
        .collect();
    let dead_ids: Vec<String> = letters.iter().map(id_of).collect();
    DeliveryCheck::compare(ids.clone(), dead_ids).assert_exactly_once();
    for letter in &letters {
        let id = id_of(letter);
        let record = &letter.metadata["dead_letter"];
        assert_eq!(record["origin"], "jetstream");
        assert_eq!(record["stream"], f.stream.as_str());
        assert_eq!(record["consumer"], "dead");
        assert_eq!(DeadLetter::original_body(letter), bodies[&id], "{id}");
        if id == "d0" {
            assert_eq!(
                (record["reason"].as_str(), record["attempts"].as_u64()),
                (Some("bad order"), Some(1))
            );
        } else {
            assert_eq!(record["attempts"], 2, "{id}");
            assert_eq!(
                record["reason"],
                "retries exhausted after 2 attempt(s); last error: nope"
            );
        }
    }
    f.cleanup().await;
}
