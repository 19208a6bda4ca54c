//! The durable queue contract in memory: the conformance suite, and the queue as a source for
//! the one consume loop (ack archives, retry comes back, reject and malformed bodies are
//! dead-lettered with their reason).

use std::time::Duration;

use herald::queue::consume::QueueSource;
use herald::queue::memory::MemoryQueue;
use herald::queue::{Queue, QueueName};
use herald::{sync_handler, BoxError, Consume, ConsumeOptions, Event, Reject, Shutdown};
use herald_testkit::fixtures::{id_of, tagged};
use herald_testkit::DeliveryCheck;

#[tokio::test]
async fn the_memory_queue_passes_the_queue_conformance_suite() {
    herald_testkit::queue_conformance::run_all(&MemoryQueue::new(), "confmem").await;
}

#[tokio::test]
async fn a_queue_source_acks_retries_and_dead_letters_through_the_consume_loop() {
    let store = MemoryQueue::new();
    let q = QueueName::new("jobs").expect("name");
    let source = QueueSource::new(store.clone(), q.clone(), Duration::from_secs(30))
        .await
        .expect("source");
    let dlq = source.dlq().clone();
    let counters = source.counters_handle();
    let ids: Vec<String> = (0..30).map(|i| format!("j{i}")).collect();
    for id in &ids {
        store
            .send(&q, &tagged("jobs.run", id), Duration::ZERO)
            .await
            .expect("send");
    }
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = sync_handler(move |e: &Event| -> Result<(), BoxError> {
        let id = id_of(e);
        let first = {
            let mut seen = s.lock();
            let first = !seen.contains(&id);
            seen.push(id.clone());
            first
        };
        if id.ends_with('5') {
            return Err(Reject::new("five is poison").into());
        }
        if id.ends_with('2') && first {
            return Err("try again".into());
        }
        Ok(())
    });
    let stop = Shutdown::new();
    let (st, q2, dlq2) = (stop.clone(), q.clone(), dlq.clone());
    let store2 = store.clone();
    tokio::spawn(async move {
        // Stop once every message is archived or dead-lettered.
        loop {
            let archived = store2.archived(&q2, 1000).await.map_or(0, |a| a.len());
            let dead = store2.metrics(&dlq2).await.map_or(0, |m| m.queue_length);
            if archived >= 30 && dead >= 3 {
                st.trigger();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        Consume::new(source, handler)
            .options(ConsumeOptions {
                retry: herald::RetryPolicy::fixed(Duration::from_millis(50)),
                ..ConsumeOptions::default()
            })
            .run(stop.cancelled_owned()),
    )
    .await
    .expect("finished");
    assert_eq!((report.acked, report.retried, report.rejected), (27, 3, 3));
    let archived: Vec<String> = store
        .archived(&q, 1000)
        .await
        .expect("archived")
        .iter()
        .map(|m| id_of(&m.event().expect("env")))
        .collect();
    DeliveryCheck::compare(ids.clone(), archived).assert_exactly_once();
    let dead = store
        .read(&dlq, Duration::from_secs(60), 100)
        .await
        .expect("dlq");
    let dead_ids: Vec<String> = dead
        .iter()
        .map(|m| id_of(&m.event().expect("env")))
        .collect();
    let poison: Vec<String> = ids.iter().filter(|i| i.ends_with('5')).cloned().collect();
    DeliveryCheck::compare(poison, dead_ids).assert_exactly_once();
    let reason = dead[0].event().expect("env").metadata["dead_letter"]["reason"].clone();
    assert_eq!(reason, "five is poison");
    assert_eq!(counters.snapshot().dead_lettered, 3);
}

/// The queue source takes the core's `RetryPolicy` (attempts run out into a dead letter) and
/// its dead letters come from the core's builder: origin, reason, attempts, the original body
/// byte for byte. The middleware stack runs around each delivery: a timeout fails a slow
/// handler, and an observer hears every outcome once.
#[tokio::test]
async fn a_queue_source_dead_letters_under_the_retry_policy_with_the_cores_builder() {
    use herald::consume::layer::{Observe, Timeout};
    use herald::dead_letter::DeadLetter;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let store = MemoryQueue::new();
    let q = QueueName::new("policy").expect("name");
    let source = QueueSource::new(store.clone(), q.clone(), Duration::from_secs(30))
        .await
        .expect("source");
    let dlq = source.dlq().clone();
    let ids: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let mut bodies = BTreeMap::new();
    for id in &ids {
        let event = tagged("jobs.run", id);
        bodies.insert(id.clone(), event.to_json());
        store.send(&q, &event, Duration::ZERO).await.expect("send");
    }
    // Even ids fail every time; p1 sleeps past the timeout every time; the rest succeed.
    let handler = herald::handler_fn(|e: Arc<Event>| async move {
        let id = id_of(&e);
        if id == "p1" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let n: u32 = id[1..].parse().unwrap_or(0);
        if n.is_multiple_of(2) {
            return Err::<(), BoxError>("always fails".into());
        }
        Ok(())
    });
    let heard: Arc<parking_lot::Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let h = heard.clone();
    let stop = Shutdown::new();
    let (st, store2, dlq2) = (stop.clone(), store.clone(), dlq.clone());
    tokio::spawn(async move {
        loop {
            let dead = store2.metrics(&dlq2).await.map_or(0, |m| m.queue_length);
            if dead >= 5 {
                st.trigger();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        Consume::new(source, handler)
            .options(ConsumeOptions {
                retry: herald::RetryPolicy::exponential(
                    Duration::from_millis(10),
                    Duration::from_millis(40),
                )
                .max_attempts(3)
                .jitter(0.5),
                ..ConsumeOptions::default()
            })
            .layer(Observe::new(move |ctx, outcome, _| {
                h.lock().push((id_of(&ctx.event), outcome.name()));
            }))
            .layer(Timeout(Duration::from_millis(100)))
            .run(stop.cancelled_owned()),
    )
    .await
    .expect("finished");
    // p0 p2 p4 p6 fail 3 times, p1 times out 3 times: 5 dead letters after 10 retries.
    assert_eq!((report.acked, report.retried, report.rejected), (3, 10, 5));
    let dead = store
        .read(&dlq, Duration::from_secs(60), 100)
        .await
        .expect("dlq");
    let letters: Vec<Event> = dead.iter().map(|m| m.event().expect("env")).collect();
    let dead_ids: Vec<String> = letters.iter().map(id_of).collect();
    let expected: Vec<String> = ["p0", "p1", "p2", "p4", "p6"].map(String::from).to_vec();
    DeliveryCheck::compare(expected, dead_ids).assert_exactly_once();
    for letter in &letters {
        let id = id_of(letter);
        let record = &letter.metadata["dead_letter"];
        assert_eq!(record["origin"], "queue");
        assert_eq!(record["queue"], "policy");
        assert_eq!(record["attempts"], 3, "{id}");
        let last = if id == "p1" {
            "timed out after 100ms"
        } else {
            "always fails"
        };
        assert_eq!(
            record["reason"],
            format!("retries exhausted after 3 attempt(s); last error: {last}")
        );
        assert_eq!(DeadLetter::original_body(letter), bodies[&id], "{id}");
    }
    let heard = heard.lock().clone();
    assert_eq!(heard.len(), 18, "one outcome per delivery: {heard:?}");
    for id in &ids {
        let mine: Vec<&str> = heard
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, o)| *o)
            .collect();
        let n: u32 = id[1..].parse().unwrap_or(0);
        let expected: &[&str] = if id == "p1" || n.is_multiple_of(2) {
            &["retry", "retry", "reject"]
        } else {
            &["ack"]
        };
        assert_eq!(mine, expected, "{id}");
    }
}
