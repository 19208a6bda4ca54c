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
                retry_after: Duration::from_millis(50),
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
    assert_eq!(
        counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}
