//! The worker on each backend (memory, SQLite, PostgreSQL): every step ends with exactly one
//! stored result (set comparison of step ids), retries come back and dead-letter after
//! `max_retries`, unknown handlers fail at once, panics and timeouts are retryable failures,
//! bad input is dead-lettered with its reason while the worker lives on, and a step whose vt
//! runs out under a slow handler and is taken by a second worker ends with one result, and a
//! stopping worker gives back the steps it read and did not start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::consume::layer::Observe;
use herald::dead_letter::DeadLetter;
use herald::queue::memory::MemoryQueue;
use herald::queue::{Queue, QueueName};
use herald::{Bus, Event, RetryPolicy, Shutdown};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
use herald_testkit::DeliveryCheck;
use herald_worker::{
    enqueue_step, step_event, step_handler_fn, FfiStepEvent, HandlerRegistry, StepContext,
    StepExecutionResult, StepHandlerResult, StepQueues, Worker, WorkerConfig,
};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

fn input(id: &str) -> Map<String, Value> {
    let Value::Object(m) = json!({ "id": id }) else {
        unreachable!()
    };
    m
}

fn registry() -> Arc<HandlerRegistry> {
    let registry = HandlerRegistry::new();
    registry.register_handler(step_handler_fn("ok", |_c: StepContext| async {
        StepHandlerResult::success(input("done"))
    }));
    let flaky_seen: Arc<Mutex<HashMap<String, u32>>> = Default::default();
    registry.register_handler(step_handler_fn("flaky", move |c: StepContext| {
        let seen = flaky_seen.clone();
        async move {
            let id = c.input_data["id"].as_str().unwrap_or("?").to_owned();
            let n = {
                let mut seen = seen.lock();
                let n = seen.entry(id).or_insert(0);
                *n += 1;
                *n
            };
            if n == 1 {
                StepHandlerResult::failure("first attempt fails")
            } else {
                StepHandlerResult::success(input("second time lucky"))
            }
        }
    }));
    registry.register_handler(step_handler_fn("panics", |_c: StepContext| async {
        panic!("handler blew up")
    }));
    registry.register_handler(step_handler_fn("final", |_c: StepContext| async {
        StepHandlerResult::failure("bad data")
            .error_type("validation")
            .retryable(false)
    }));
    registry.register_handler(step_handler_fn("slow", |_c: StepContext| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        StepHandlerResult::success(Map::new())
    }));
    Arc::new(registry)
}

fn config(namespace: &str) -> WorkerConfig {
    WorkerConfig {
        namespace: namespace.into(),
        visibility_timeout: Duration::from_secs(30),
        poll_wait: Duration::from_millis(200),
        retry_backoff: Duration::from_millis(50),
        handler_timeout: Duration::from_millis(500),
        ..WorkerConfig::default()
    }
}

async fn results<Q: Queue>(store: &Q, q: &QueueName) -> Vec<StepExecutionResult> {
    let got = store
        .read(q, Duration::from_secs(300), 100_000)
        .await
        .expect("read results");
    got.iter()
        .map(|m| {
            let e = m.event().expect("envelope");
            serde_json::from_value(Value::Object(e.data)).expect("a StepExecutionResult")
        })
        .collect()
}

fn id_of(r: &StepExecutionResult, steps: &HashMap<String, String>) -> String {
    steps
        .get(&r.step_uuid.to_string())
        .cloned()
        .unwrap_or_else(|| "?".into())
}

/// Every kind of step, on one store. The worker takes the core's `RetryPolicy` (here with
/// jitter), runs the consume path's middleware (an observer hears every step's outcome), and
/// its dead letters come from the core's builder (origin, attempts, the body byte for byte).
async fn every_step_gets_exactly_one_result<Q: Queue>(store: Q, namespace: &str) {
    let bus = Bus::new();
    let heard: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let h = heard.clone();
    let mut worker = Worker::new(store.clone(), bus.clone(), registry(), config(namespace))
        .await
        .expect("worker")
        .with_retry(
            RetryPolicy::exponential(Duration::from_millis(50), Duration::from_secs(60))
                .jitter(0.5),
        )
        .layer(Observe::new(move |_ctx, outcome, _| {
            h.lock().push(outcome.name());
        }));
    let queues = worker.queues().clone();
    let mut bodies = HashMap::new();
    let mut steps = HashMap::new();
    let mut expected = Vec::new();
    for (handler, n) in [
        ("ok", 20),
        ("flaky", 5),
        ("missing", 2),
        ("panics", 2),
        ("final", 2),
        ("slow", 1),
    ] {
        for i in 0..n {
            let id = format!("{handler}-{i}");
            let mut step = FfiStepEvent::new(handler, input(&id));
            step.execution_event.max_retries = 2;
            steps.insert(step.step_uuid.to_string(), id.clone());
            let event = step_event(&step);
            bodies.insert(step.step_uuid.to_string(), event.to_json());
            expected.push(id);
            store
                .send(&queues.steps, &event, Duration::ZERO)
                .await
                .expect("enqueue");
        }
    }
    let stop = Shutdown::new();
    let trigger = stop.clone();
    let (s2, q2, total) = (store.clone(), queues.clone(), expected.len());
    let watcher = tokio::spawn(async move {
        loop {
            let m = s2.metrics(&q2.results).await.expect("metrics");
            if m.queue_length as usize >= total
                && s2.metrics(&q2.steps).await.expect("m").queue_length == 0
            {
                trigger.trigger();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let report = tokio::time::timeout(Duration::from_secs(60), worker.run(stop.cancelled_owned()))
        .await
        .expect("the worker finishes every step in time");
    watcher.await.expect("watcher");
    let stored = results(&store, &queues.results).await;
    let got: Vec<String> = stored.iter().map(|r| id_of(r, &steps)).collect();
    DeliveryCheck::compare(expected, got).assert_exactly_once();
    for r in &stored {
        let id = id_of(r, &steps);
        let error = r
            .error
            .as_ref()
            .map(|e| (e.error_type.as_str(), e.retryable));
        match id.split('-').next().unwrap_or("") {
            "ok" | "flaky" => assert!(r.success, "{id}: {r:?}"),
            "missing" => assert_eq!(error, Some(("handler_not_found", false)), "{id}"),
            "panics" => assert_eq!(error, Some(("handler_error", true)), "{id}"),
            "final" => assert_eq!(error, Some(("validation", false)), "{id}"),
            "slow" => assert_eq!(error, Some(("timeout", true)), "{id}"),
            other => panic!("unexpected step {other}"),
        }
    }
    // Panicking and timed-out steps ran 3 times (max_retries 2) and were dead-lettered with
    // their last error.
    let dead = store
        .read(&queues.dead_letters, Duration::from_secs(300), 100)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 3, "the two panicking steps and the slow one");
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            m.event().expect("env").metadata["dead_letter"]["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("retries exhausted after 3")),
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("handler blew up"))
            .count(),
        2
    );
    assert_eq!(reasons.iter().filter(|r| r.contains("timeout")).count(), 1);
    let archived = store
        .archived(&queues.steps, 100_000)
        .await
        .expect("archived steps");
    for m in &dead {
        let letter = m.event().expect("env");
        let record = &letter.metadata["dead_letter"];
        assert_eq!(record["origin"], "queue");
        assert_eq!(record["queue"], queues.steps.as_str());
        assert_eq!(record["attempts"], 3);
        // The body as the store holds it (PostgreSQL keeps JSONB, so its text, not the bytes
        // sent), which is the archived step's body, byte for byte.
        let msg_id = record["msg_id"].as_i64().expect("msg_id");
        let step = archived
            .iter()
            .find(|m| m.msg_id == msg_id)
            .expect("the dead step is archived");
        assert_eq!(DeadLetter::original_body(&letter), step.body, "{msg_id}");
        assert_eq!(
            step.event().expect("env"),
            Event::from_json(&bodies[&letter.data["step_uuid"].as_str().unwrap_or("").to_owned()])
                .expect("env")
                .event
        );
    }
    assert_eq!(report.succeeded, 25);
    assert_eq!(report.failed, 7);
    assert_eq!(report.retried, 5 + 2 * 2 + 2);
    assert_eq!(report.exhausted, 3);
    let heard = heard.lock().clone();
    let count = |name: &str| heard.iter().filter(|o| **o == name).count() as u64;
    assert_eq!(
        (count("ack"), count("retry"), count("reject")),
        (
            report.succeeded + report.failed - report.exhausted,
            report.retried,
            report.exhausted
        ),
        "the observer heard every step's outcome once"
    );
    assert_eq!(report.stale, 0);
}

/// Bad input is dead-lettered with its reason; good steps after it still run.
async fn bad_input_is_dead_lettered_and_the_worker_lives<Q: Queue>(
    store: Q,
    namespace: &str,
    send_raw: impl AsyncFn(&QueueName, &str) -> i64,
) {
    let bus = Bus::new();
    let mut worker = Worker::new(store.clone(), bus, registry(), config(namespace))
        .await
        .expect("worker");
    let queues = worker.queues().clone();
    let bad = [
        ("not json", "this is not JSON {"),
        ("not an envelope", r#"{"hello": "world"}"#),
        (
            "no handler_name",
            r#"{"subject":"step.execution.received","event_type":"x","source":"t","data":{"execution_event":{"input_data":{}}},"timestamp":"2026-11-23T10:00:00Z","correlation_id":"7d3c6bb5-6c1b-4d5e-9a3e-1f2a3b4c5d6e","priority":"normal","metadata":{}}"#,
        ),
    ];
    for (_, body) in bad {
        send_raw(&queues.steps, body).await;
    }
    let good = FfiStepEvent::new("ok", input("after-bad"));
    enqueue_step(&store, namespace, &good)
        .await
        .expect("enqueue");
    let stop = Shutdown::new();
    let trigger = stop.clone();
    let (s2, q2) = (store.clone(), queues.clone());
    tokio::spawn(async move {
        loop {
            let done = s2.metrics(&q2.results).await.map_or(0, |m| m.queue_length);
            let dead = s2
                .metrics(&q2.dead_letters)
                .await
                .map_or(0, |m| m.queue_length);
            if done >= 1 && dead >= 3 {
                trigger.trigger();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let report = tokio::time::timeout(Duration::from_secs(30), worker.run(stop.cancelled_owned()))
        .await
        .expect("in time");
    assert_eq!(report.bad_input, 3);
    assert_eq!(report.succeeded, 1, "the good step after the bad ones ran");
    let dead = store
        .read(&queues.dead_letters, Duration::from_secs(300), 10)
        .await
        .expect("dlq");
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            m.event().expect("dead letters are envelopes").metadata["dead_letter"]["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not a JSON object")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("missing")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("execution_event.handler_name")),
        "{reasons:?}"
    );
}

/// A slow handler outlives its vt; a second worker takes the step; one result is stored and
/// the first worker's late result is refused as stale.
async fn a_step_taken_over_after_its_vt_gets_one_result<Q: Queue>(store: Q, namespace: &str) {
    let slow_then_fast = Arc::new(AtomicU32::new(0));
    let make = |n: Arc<AtomicU32>| {
        let registry = HandlerRegistry::new();
        registry.register_handler(step_handler_fn("takeover", move |_c: StepContext| {
            let n = n.clone();
            async move {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(3500)).await;
                }
                StepHandlerResult::success(Map::new())
            }
        }));
        Arc::new(registry)
    };
    let cfg = WorkerConfig {
        visibility_timeout: Duration::from_secs(1),
        handler_timeout: Duration::from_secs(30),
        ..config(namespace)
    };
    let mut first = Worker::new(
        store.clone(),
        Bus::new(),
        make(slow_then_fast.clone()),
        cfg.clone(),
    )
    .await
    .expect("worker 1");
    let mut second = Worker::new(store.clone(), Bus::new(), make(slow_then_fast.clone()), cfg)
        .await
        .expect("worker 2");
    let queues = first.queues().clone();
    let step = FfiStepEvent::new("takeover", input("t"));
    enqueue_step(&store, namespace, &step)
        .await
        .expect("enqueue");
    let stop = Shutdown::new();
    let (s1, s2) = (stop.clone(), stop.clone());
    let a = tokio::spawn(async move { first.run(s1.cancelled_owned()).await });
    // The second worker starts once the first holds the step.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(async move { second.run(s2.cancelled_owned()).await });
    tokio::time::sleep(Duration::from_millis(5000)).await;
    stop.trigger();
    let (ra, rb) = (a.await.expect("a"), b.await.expect("b"));
    let stored = results(&store, &queues.results).await;
    assert_eq!(stored.len(), 1, "one result, not two: {stored:?}");
    assert_eq!(
        ra.stale + rb.stale,
        1,
        "the late attempt was refused: {ra:?} {rb:?}"
    );
    assert_eq!(ra.succeeded + rb.succeeded, 1);
    assert_eq!(
        slow_then_fast.load(Ordering::SeqCst),
        2,
        "it ran twice (at-least-once)"
    );
}

/// A worker that stops with steps read and not started (its slots held by handlers that block)
/// gives them back: visible at once to another reader, not after their visibility timeout;
/// and it stops within its drain bound although its slots never free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_gives_back_the_steps_it_has_not_started() {
    let store = SqliteStore::open(&temp_sqlite()).await.expect("open");
    let registry = HandlerRegistry::new();
    registry.register_handler(step_handler_fn("quick", |_c: StepContext| async {
        StepHandlerResult::success(Map::new())
    }));
    let blocked = Arc::new(AtomicU32::new(0));
    let b = blocked.clone();
    registry.register_handler(step_handler_fn("block", move |_c: StepContext| {
        b.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StepHandlerResult::success(Map::new())
        }
    }));
    let cfg = WorkerConfig {
        max_concurrent_handlers: 4,
        batch_size: 4,
        drain_timeout: Duration::from_millis(200),
        handler_timeout: Duration::from_secs(120),
        ..config("giveback")
    };
    let mut worker = Worker::new(store.clone(), Bus::new(), Arc::new(registry), cfg)
        .await
        .expect("worker");
    let queues = worker.queues().clone();
    let progress = worker.progress();
    // Quick steps first, so that the worker learns that its handlers are quick; then four
    // that hold every slot, then four more that it reads and cannot start.
    for i in 0..100 {
        let step = FfiStepEvent::new("quick", input(&format!("q{i}")));
        enqueue_step(&store, "giveback", &step)
            .await
            .expect("enqueue");
    }
    let stop = Shutdown::new();
    let s = stop.clone();
    let run = tokio::spawn(async move { worker.run(s.cancelled_owned()).await });
    while progress.report().succeeded < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..4 {
        let step = FfiStepEvent::new("block", input(&format!("b{i}")));
        enqueue_step(&store, "giveback", &step)
            .await
            .expect("enqueue");
    }
    let tail: std::collections::HashSet<String> = (0..4).map(|i| format!("t{i}")).collect();
    for id in &tail {
        let step = FfiStepEvent::new("quick", input(id));
        enqueue_step(&store, "giveback", &step)
            .await
            .expect("enqueue");
    }
    // The blocking steps start and the loop reads at least one step of the tail.
    while blocked.load(Ordering::SeqCst) < 4 || progress.pending() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.trigger();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the worker stops although no slot frees")
        .expect("run");
    assert_eq!(report.succeeded, 100, "{report:?}");
    let visible: std::collections::HashSet<String> = store
        .read(&queues.steps, Duration::from_secs(30), 100)
        .await
        .expect("read")
        .iter()
        .map(|m| {
            let e = m.event().expect("envelope");
            let step = FfiStepEvent::from_data(&e.data).expect("a step");
            step.execution_event.input_data["id"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert_eq!(
        visible, tail,
        "the blocked steps stay leased, the tail is back"
    );
}

fn temp_sqlite() -> String {
    let dir = std::env::temp_dir().join(unique("worker"));
    format!("sqlite://{}", dir.join("herald.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_every_step_gets_exactly_one_result() {
    every_step_gets_exactly_one_result(MemoryQueue::new(), "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_step_gets_exactly_one_result() {
    let store = SqliteStore::open(&temp_sqlite()).await.expect("open");
    every_step_gets_exactly_one_result(store, "lite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_step_gets_exactly_one_result() {
    let Some(url) = database_url("worker_pg_exactly_once") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let namespace = unique("w");
    every_step_gets_exactly_one_result(store.clone(), &namespace).await;
    drop_namespace(&store, &namespace).await;
}

/// Leaves the shared database as it was.
async fn drop_namespace<Q: Queue>(store: &Q, namespace: &str) {
    let q = StepQueues::of(namespace).expect("queues");
    for name in [&q.steps, &q.results, &q.dead_letters] {
        let _ = store.drop_queue(name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bad_input_is_dead_lettered_and_the_worker_lives() {
    let store = SqliteStore::open(&temp_sqlite()).await.expect("open");
    let raw = store.clone();
    bad_input_is_dead_lettered_and_the_worker_lives(
        store,
        "bad",
        async move |q: &QueueName, body: &str| raw.send_raw(q, body).await.expect("raw send"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_step_taken_over_after_its_vt_gets_one_result() {
    let store = SqliteStore::open(&temp_sqlite()).await.expect("open");
    a_step_taken_over_after_its_vt_gets_one_result(store, "takeover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_step_taken_over_after_its_vt_gets_one_result() {
    let Some(url) = database_url("worker_pg_takeover") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let namespace = unique("t");
    a_step_taken_over_after_its_vt_gets_one_result(store.clone(), &namespace).await;
    drop_namespace(&store, &namespace).await;
}

#[test]
fn step_queues_follow_the_namespace_and_a_bad_namespace_is_named() {
    let q = StepQueues::of("billing").expect("valid");
    assert_eq!(q.steps.as_str(), "billing_steps");
    assert_eq!(q.results.as_str(), "billing_step_results");
    let err = StepQueues::of("Bad-Name; drop table x").expect_err("invalid");
    assert!(err.to_string().contains("Bad-Name; drop table x"), "{err}");
}
