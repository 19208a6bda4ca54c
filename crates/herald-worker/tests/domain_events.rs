//! Seed 001's domain events: the fast path counts exactly what a stalled receiver misses
//! while the durable path loses nothing, the poller publishes fast events on the bus (and
//! refuses a second start), and a bad event type is refused before anything is sent.

use std::sync::Arc;
use std::time::Duration;

use herald::queue::memory::MemoryQueue;
use herald::queue::Queue;
use herald::{sync_handler, Bus, Event};
use herald_sqlite::SqliteStore;
use herald_testkit::env::unique;
use herald_testkit::DeliveryCheck;
use herald_worker::events::{
    DeliveryMode, DomainEventPublisher, InProcessDomainEventPoller, PollerError,
    DOMAIN_EVENT_RECEIVED,
};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

fn payload(i: u64) -> Map<String, Value> {
    let Value::Object(m) = json!({ "n": i }) else {
        unreachable!()
    };
    m
}

fn fast_events() -> u64 {
    std::env::var("HERALD_FAST_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_misses_exactly_what_is_counted_and_the_durable_path_loses_nothing() {
    let dir = std::env::temp_dir().join(unique("events"));
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("herald.db").display()))
        .await
        .expect("open");
    let publisher = DomainEventPublisher::new(store.clone(), "orders", "test", 1024)
        .await
        .expect("publisher");
    let mut stalled = publisher.subscribe_fast();
    let total = fast_events();
    let mut durable_ids = Vec::new();
    for i in 0..total {
        publisher
            .publish("order.seen", payload(i), None, DeliveryMode::Fast)
            .await
            .expect("fast publish never fails");
        if i % 1000 == 0 {
            let p = publisher
                .publish("order.created", payload(i), None, DeliveryMode::Durable)
                .await
                .expect("durable publish");
            durable_ids.push(p.msg_id.expect("a msg_id"));
        }
    }
    // The stalled receiver wakes up: what it gets plus what it is told it missed is all.
    let before = publisher.dropped();
    let mut received = 0u64;
    while stalled.try_recv().is_some() {
        received += 1;
    }
    let missed = publisher.dropped() - before;
    assert_eq!(
        received + missed,
        total,
        "received {received} + missed {missed}"
    );
    assert!(missed > 0, "it lagged");
    // So does the publisher's own poll receiver.
    let before = publisher.dropped();
    let mut polled = 0u64;
    while publisher.poll_in_process_events().is_some() {
        polled += 1;
    }
    assert_eq!(polled + (publisher.dropped() - before), total);
    assert!(
        publisher.poll_in_process_events().is_none(),
        "empty: none, at once"
    );
    // The durable path: every acknowledged event is stored.
    let stored = store
        .read(publisher.queue(), Duration::from_secs(60), 100_000)
        .await
        .expect("read");
    let got: Vec<String> = stored.iter().map(|m| m.msg_id.to_string()).collect();
    let acked: Vec<String> = durable_ids.iter().map(ToString::to_string).collect();
    DeliveryCheck::compare(acked, got).assert_exactly_once();
    assert_eq!(publisher.published(), total + durable_ids.len() as u64);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_publishes_fast_events_on_the_bus_and_refuses_a_second_start() {
    let publisher = DomainEventPublisher::new(MemoryQueue::new(), "p", "test", 4096)
        .await
        .expect("publisher");
    let bus = Bus::new();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let s = seen.clone();
    let _sub = bus
        .subscribe(
            DOMAIN_EVENT_RECEIVED,
            sync_handler(move |e: &Event| {
                s.lock().push(e.data["payload"]["n"].to_string());
            }),
        )
        .expect("subscribe");
    let mut poller = InProcessDomainEventPoller::new(bus.clone(), publisher.poll_handle(), 5);
    poller.start().expect("start");
    assert_eq!(poller.start(), Err(PollerError::AlreadyRunning));
    let mut sent = Vec::new();
    for i in 0..500 {
        publisher
            .publish("order.seen", payload(i), None, DeliveryMode::Broadcast)
            .await
            .expect("publish");
        sent.push(i.to_string());
    }
    for _ in 0..500 {
        if seen.lock().len() >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    poller.stop(Duration::from_secs(5)).expect("joined in time");
    assert!(!poller.is_running());
    DeliveryCheck::compare(sent, seen.lock().clone()).assert_exactly_once();
    assert_eq!(poller.emitted(), 500);
    assert_eq!(publisher.dropped(), 0, "nothing lagged");
}

#[tokio::test]
async fn a_bad_event_type_is_refused_before_anything_is_sent() {
    let store = MemoryQueue::new();
    let publisher = DomainEventPublisher::new(store.clone(), "bad", "test", 16)
        .await
        .expect("publisher");
    let mut rx = publisher.subscribe_fast();
    let err = publisher
        .publish("order created", payload(1), None, DeliveryMode::Broadcast)
        .await
        .expect_err("a space is not a subject");
    assert!(err.to_string().contains("order created"), "{err}");
    assert!(rx.try_recv().is_none());
    assert_eq!(
        store
            .metrics(publisher.queue())
            .await
            .expect("m")
            .queue_length,
        0
    );
    assert_eq!(publisher.published(), 0);
}

mod declared {
    use super::*;
    use herald::Shutdown;
    use herald_worker::{
        enqueue_step, step_handler_fn, EventCondition, FfiStepEvent, HandlerRegistry, StepContext,
        StepHandlerResult, Worker, WorkerConfig,
    };

    fn tag(c: &StepContext) -> Map<String, Value> {
        let Value::Object(m) = json!({ "step": c.step_uuid.to_string() }) else {
            unreachable!()
        };
        m
    }

    /// Declared events go out after the result is committed, only when their condition
    /// holds; a failed publish is counted and never fails the step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn declared_events_follow_their_conditions_after_the_result_is_committed() {
        let store = MemoryQueue::new();
        let publisher = Arc::new(
            DomainEventPublisher::new(store.clone(), "decl", "worker", 1024)
                .await
                .expect("publisher"),
        );
        let registry = HandlerRegistry::new();
        registry.register_handler(step_handler_fn("ok", |c: StepContext| async move {
            StepHandlerResult::success(Map::new())
                .with_event(
                    "order.done",
                    tag(&c),
                    EventCondition::Success,
                    DeliveryMode::Broadcast,
                )
                .with_event(
                    "order.lost",
                    tag(&c),
                    EventCondition::Failure,
                    DeliveryMode::Broadcast,
                )
                .with_event(
                    "order.seen",
                    tag(&c),
                    EventCondition::Always,
                    DeliveryMode::Durable,
                )
                .with_event(
                    "not a subject",
                    tag(&c),
                    EventCondition::Always,
                    DeliveryMode::Fast,
                )
        }));
        registry.register_handler(step_handler_fn("final", |c: StepContext| async move {
            StepHandlerResult::failure("no")
                .retryable(false)
                .with_event(
                    "order.rejected",
                    tag(&c),
                    EventCondition::PermanentFailure,
                    DeliveryMode::Durable,
                )
                .with_event(
                    "order.done",
                    tag(&c),
                    EventCondition::Success,
                    DeliveryMode::Durable,
                )
        }));
        let config = WorkerConfig {
            namespace: "decl".into(),
            poll_wait: Duration::from_millis(50),
            domain_events: Some(publisher.clone()),
            ..WorkerConfig::default()
        };
        let mut worker = Worker::new(store.clone(), Bus::new(), Arc::new(registry), config)
            .await
            .expect("worker");
        let results = worker.queues().results.clone();
        // Each fast event must find its step's result already stored.
        let mut fast = publisher.subscribe_fast();
        let (s2, r2) = (store.clone(), results.clone());
        let checker = tokio::spawn(async move {
            let mut checked = 0;
            while let Some(e) = fast.recv().await {
                let step = e.payload["step"].as_str().unwrap_or("").to_owned();
                let stored = s2.read(&r2, Duration::ZERO, 1000).await.expect("read");
                assert!(
                    stored.iter().any(|m| m
                        .event()
                        .is_ok_and(|ev| ev.data["step_uuid"] == step.as_str())),
                    "the result of {step} is committed before its domain event"
                );
                checked += 1;
                if checked == 3 {
                    return checked;
                }
            }
            checked
        });
        for _ in 0..3 {
            enqueue_step(&store, "decl", &FfiStepEvent::new("ok", Map::new()))
                .await
                .expect("enqueue");
        }
        enqueue_step(&store, "decl", &FfiStepEvent::new("final", Map::new()))
            .await
            .expect("enqueue");
        let stop = Shutdown::new();
        let trigger = stop.clone();
        let progress = worker.progress();
        tokio::spawn(async move {
            while progress.report().domain_events_published < 7 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            trigger.trigger();
        });
        let report =
            tokio::time::timeout(Duration::from_secs(20), worker.run(stop.cancelled_owned()))
                .await
                .expect("in time");
        assert_eq!(checker.await.expect("checker"), 3);
        // ok x3: done (broadcast) + seen (durable) = 6 published, the bad type fails 3 times;
        // final: rejected (durable) = 1. Failure-only events of ok and success-only of final: none.
        assert_eq!(report.domain_events_published, 7, "{report:?}");
        assert_eq!(report.domain_events_failed, 3, "{report:?}");
        assert_eq!(
            report.succeeded, 3,
            "a failed domain publish never fails the step"
        );
        let durable = store
            .read(publisher.queue(), Duration::from_secs(60), 100)
            .await
            .expect("read");
        let mut types: Vec<String> = durable
            .iter()
            .map(|m| m.event().expect("e").event_type)
            .collect();
        types.sort();
        assert_eq!(
            types,
            [
                "order.done",
                "order.done",
                "order.done",
                "order.rejected",
                "order.seen",
                "order.seen",
                "order.seen"
            ]
        );
    }
}
