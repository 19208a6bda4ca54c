//! The W3C trace context through the durable hops, on SQLite and PostgreSQL: a traced step
//! is announced on the bus with its `traceparent` byte for byte, stored in the step queue
//! unchanged, run by the worker, and its result carries the same trace id with a parent of
//! its own (the next hop), as does an event its handler publishes; the result appended to
//! the event store reads back byte for byte.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::queue::Queue;
use herald::store::{EventStore, StreamName, WriteCondition};
use herald::{sync_handler, Bus, Event, Shutdown, TraceContext, TRACEPARENT};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
use herald_worker::{
    step_event, step_handler_fn, FfiStepEvent, HandlerRegistry, StepContext, StepHandlerResult,
    StepQueues, Worker, WorkerConfig,
};
use parking_lot::Mutex;
use serde_json::Map;

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn a_traced_step_keeps_its_trace<S: Queue + EventStore>(store: S, namespace: &str) {
    let registry = HandlerRegistry::new();
    let bus = Bus::new();
    bus.start();
    // The handler publishes a follow-up without a context of its own: it continues the trace.
    let inner = bus.clone();
    registry.register_handler(step_handler_fn("traced", move |_c: StepContext| {
        let bus = inner.clone();
        async move {
            let followup = Event::new(herald::Subject::new("traced.followup").expect("subject"));
            bus.publish(followup).await.expect("publish");
            StepHandlerResult::success(Map::new())
        }
    }));
    let followups: Arc<Mutex<Vec<TraceContext>>> = Arc::default();
    let f = followups.clone();
    let _followup_sub = bus
        .subscribe(
            "traced.followup",
            sync_handler(move |e: &Event| {
                if let Some(c) = e.trace_context() {
                    f.lock().push(c);
                }
            }),
        )
        .expect("subscribe");
    let announced: Arc<Mutex<Vec<String>>> = Arc::default();
    let a = announced.clone();
    let _sub = bus
        .subscribe(
            "step.execution.received",
            sync_handler(move |e: &Event| {
                if let Some(tp) = e.metadata.get(TRACEPARENT).and_then(|v| v.as_str()) {
                    a.lock().push(tp.to_owned());
                }
            }),
        )
        .expect("subscribe");
    let config = WorkerConfig {
        namespace: namespace.into(),
        poll_wait: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let mut worker = Worker::new(store.clone(), bus.clone(), Arc::new(registry), config)
        .await
        .expect("worker");
    let queues: StepQueues = worker.queues().clone();
    let ctx = TraceContext::parse(TP, Some("vendor=x")).expect("valid");
    let step = step_event(&FfiStepEvent::new("traced", Map::new())).with_trace_context(&ctx);
    store
        .send(&queues.steps, &step, Duration::ZERO)
        .await
        .expect("send");
    let stop = Shutdown::new();
    let s = stop.clone();
    let run = tokio::spawn(async move { worker.run(s.cancelled_owned()).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        let got = store
            .read(&queues.results, Duration::from_secs(60), 10)
            .await
            .expect("read results");
        if let Some(m) = got.into_iter().next() {
            break m.event().expect("an envelope");
        }
        assert!(Instant::now() < deadline, "no result in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.trigger();
    run.await.expect("worker");
    assert_eq!(*announced.lock(), [TP], "the bus hop: byte for byte");
    let rctx = result
        .trace_context()
        .expect("the result carries the trace");
    assert_eq!(rctx.trace_id(), ctx.trace_id(), "one trace");
    assert_ne!(
        rctx.parent_id(),
        ctx.parent_id(),
        "the result is the next hop"
    );
    assert_eq!(rctx.tracestate(), Some("vendor=x"));
    let followups = followups.lock().clone();
    assert_eq!(
        followups.len(),
        1,
        "the handler's follow-up carries a context"
    );
    assert_eq!(
        followups[0].trace_id(),
        ctx.trace_id(),
        "and continues the step's trace"
    );
    assert_ne!(followups[0].parent_id(), ctx.parent_id());
    // The event store keeps it byte for byte.
    let stream =
        StreamName::new(&format!("{}-1", unique("tr").replace(['-', '_'], ""))).expect("stream");
    store
        .append(&stream, std::slice::from_ref(&result), WriteCondition::Any)
        .await
        .expect("append");
    let back = store.read_stream(&stream, 0, 1).await.expect("read");
    let back = back[0].event().expect("an envelope");
    assert_eq!(back.metadata[TRACEPARENT], result.metadata[TRACEPARENT]);
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        let _ = store.drop_queue(q).await;
    }
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_traced_step_keeps_its_trace() {
    let dir = std::env::temp_dir().join(unique("trace"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    a_traced_step_keeps_its_trace(store, "tracelite").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_traced_step_keeps_its_trace() {
    let Some(url) = database_url("trace_pg") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let namespace = unique("tr").replace('-', "_");
    a_traced_step_keeps_its_trace(store, &namespace).await;
}
