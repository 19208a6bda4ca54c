//! JetStream on a 3-node cluster of the test's own with an R3 stream: a publisher keeps
//! publishing events with ids (retrying with the same id) while one node at a time is
//! SIGKILLed and restarted, never two. Acked-but-lost 0 and duplicates 0 (the stream holds
//! exactly the acknowledged ids, compared as sets); the longest publisher pause is reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::{Event, Subject};
use herald_nats::{Nats, StreamSpec};
use herald_testkit::nats_cluster::NatsCluster;
use parking_lot::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_publishes_survive_killing_one_node_at_a_time() {
    let Some(mut cluster) = NatsCluster::start("nats_cluster_r3", 3) else {
        return;
    };
    let nats = Nats::builder()
        .servers(cluster.urls())
        .name("cluster-test")
        .max_reconnects(None)
        .connect()
        .await
        .expect("connect to the cluster");
    let js = nats.jetstream();
    let spec = StreamSpec::new("CLUSTER", ["cluster.>"]).with_replicas(3);
    // The cluster elects its JetStream leader first.
    let start = Instant::now();
    while let Err(e) = js.ensure_stream(&spec).await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no R3 stream: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let highest = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gaps: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (js, acked, gaps, stop, highest) = (
            js.clone(),
            acked.clone(),
            gaps.clone(),
            stop.clone(),
            highest.clone(),
        );
        tokio::spawn(async move {
            let subject = Subject::new("cluster.events").expect("subject");
            let mut last = Instant::now();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e =
                    Event::new(subject.clone()).with_metadata(herald::EVENT_ID, format!("c-{i}"));
                let (ack, _) = js
                    .publish_retrying(&e, Duration::from_secs(60))
                    .await
                    .expect("acknowledged within 60 s");
                highest.fetch_max(ack.sequence, std::sync::atomic::Ordering::Relaxed);
                gaps.lock().push(last.elapsed());
                last = Instant::now();
                acked.lock().push(format!("c-{i}"));
                i += 1;
            }
        })
    };
    for victim in [0, 1, 2] {
        tokio::time::sleep(Duration::from_millis(600)).await;
        cluster.kill9(victim);
        tokio::time::sleep(Duration::from_millis(800)).await;
        cluster.restart(victim);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.expect("publisher");
    let acked: BTreeSet<String> = acked.lock().iter().cloned().collect();
    // Read the stream back to the leader's last sequence, and at least to the highest one
    // acknowledged: every stored id, once.
    let highest = highest.load(std::sync::atomic::Ordering::Relaxed);
    let stored: Vec<String> = js
        .read_stream_to("CLUSTER", highest, Duration::from_secs(30))
        .await
        .expect("read the stream back")
        .iter()
        .map(|m| {
            let e = m.event().expect("envelope");
            e.event_id().unwrap_or_default().to_owned()
        })
        .collect();
    let distinct: BTreeSet<String> = stored.iter().cloned().collect();
    let lost: Vec<&String> = acked.difference(&distinct).collect();
    let max_gap = gaps.lock().iter().max().copied().unwrap_or_default();
    eprintln!(
        "jetstream-cluster (R3, 3 kills): acked {}, stored {}, acked-but-lost {}, duplicates {}, longest publisher pause {max_gap:?}",
        acked.len(),
        stored.len(),
        lost.len(),
        stored.len() - distinct.len()
    );
    assert!(lost.is_empty(), "acked but lost: {lost:?}");
    assert_eq!(stored.len(), distinct.len(), "duplicates in the stream");
    assert!(acked.len() > 10, "the publisher made progress");
}
