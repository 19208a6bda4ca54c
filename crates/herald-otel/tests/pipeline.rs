//! One trace across every hop, seen by OpenTelemetry's in-memory exporter: a publish on the
//! bus whose handler publishes on NATS, whose subscriber sends a step to the durable queue
//! (PGMQ, or SQLite), whose worker handler appends to the event store, whose event a runtime
//! consumer processes. Every span of the piece of work has the root's trace id; each
//! `process X` is a child of its `publish X`, each publish a child of the process it runs
//! in. A retried step and a replayed dead letter start new traces linked to the original.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use herald::dlq::{DeadLetterStore, Operator, Selection};
use herald::queue::Queue;
use herald::store::{EventStore, StoredEvent, StreamName, WriteCondition};
use herald::{handler_fn, BoxError, Bus, Event, Shutdown, Subject};
use herald_nats::Nats;
use herald_postgres::PgStore;
use herald_runtime::{ConsumerSettings, EventSubscriptionConsumer};
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, nats_url, unique};
use herald_worker::{
    step_event, step_handler_fn, FfiStepEvent, HandlerRegistry, StepContext, StepHandlerResult,
    StepQueues, Worker, WorkerConfig,
};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use parking_lot::Mutex;
use serde_json::Map;
use tracing_subscriber::layer::SubscriberExt;

/// The process's exporter: one subscriber and one bridge per process.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, herald_otel::Telemetry)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let telemetry = herald_otel::Telemetry::with_exporter(exporter.clone(), "pipeline");
            let subscriber = tracing_subscriber::registry().with(telemetry.layer());
            tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
            (exporter, telemetry)
        })
        .0
}

fn spans() -> Vec<SpanData> {
    exporter().get_finished_spans().expect("spans")
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {names:?}");
    found[0]
}

fn system(span: &SpanData) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "messaging.system")
        .map(|kv| kv.value.as_str().into_owned())
        .unwrap_or_default()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not in time");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A worker on `store` with `registry`'s handlers, polling and retrying quickly.
async fn worker<S: Queue>(
    store: &S,
    bus: &Bus,
    registry: HandlerRegistry,
    namespace: &str,
) -> Worker<S> {
    let config = WorkerConfig {
        namespace: namespace.into(),
        poll_wait: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(10),
        ..WorkerConfig::default()
    };
    Worker::new(store.clone(), bus.clone(), Arc::new(registry), config)
        .await
        .expect("worker")
}

async fn one_trace_across_every_hop<S: Queue + EventStore>(
    store: S,
    nats: Nats,
    namespace: &str,
    queue_system: &str,
) {
    exporter();
    let tag = unique("otel").replace(['-', '_'], "");
    let (placed, order) = (format!("{tag}.placed"), format!("{tag}.order"));
    let category = format!("pipe{tag}");
    let stream = StreamName::new(&format!("{category}-1")).expect("stream");
    let bus = Bus::new();
    bus.start();
    let registry = HandlerRegistry::new();
    let (s, st) = (store.clone(), stream.clone());
    registry.register_handler(step_handler_fn("otel", move |_c: StepContext| {
        let (store, stream) = (s.clone(), st.clone());
        async move {
            let shipped = Event::new(Subject::new("order.shipped").expect("subject"));
            match store.append(&stream, &[shipped], WriteCondition::Any).await {
                Ok(_) => StepHandlerResult::success(Map::new()),
                Err(e) => StepHandlerResult::failure(e.to_string()),
            }
        }
    }));
    let mut worker = worker(&store, &bus, registry, namespace).await;
    let queues: StepQueues = worker.queues().clone();
    // The NATS subscriber sends the step.
    let (s, steps) = (store.clone(), queues.steps.clone());
    let _sub = nats
        .subscribe_handler(
            order.as_str(),
            None,
            handler_fn(move |_e: Arc<Event>| {
                let (store, steps) = (s.clone(), steps.clone());
                async move {
                    let step = step_event(&FfiStepEvent::new("otel", Map::new()));
                    store
                        .send(&steps, &step, Duration::ZERO)
                        .await
                        .map(|_| ())
                        .map_err(|e| -> BoxError { Box::new(e) })
                }
            }),
        )
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");
    // The bus handler publishes on NATS.
    let (n, o) = (nats.clone(), order.clone());
    let _bus_sub = bus
        .subscribe(
            placed.as_str(),
            handler_fn(move |_e: Arc<Event>| {
                let (nats, order) = (n.clone(), o.clone());
                async move {
                    let e = Event::new(Subject::new(&order).expect("subject"));
                    nats.publish(&e)
                        .await
                        .map_err(|e| -> BoxError { Box::new(e) })
                }
            }),
        )
        .expect("subscribe");
    let stop = Shutdown::new();
    let st = stop.clone();
    let run = tokio::spawn(async move { worker.run(st.cancelled_owned()).await });
    // The piece of work: published outside any span, so its publish span is the root.
    bus.publish(Event::new(Subject::new(&placed).expect("subject")))
        .await
        .expect("publish");
    let processed: Arc<Mutex<Vec<i64>>> = Arc::default();
    let p = processed.clone();
    let consumer = EventSubscriptionConsumer::new(
        store.clone(),
        &format!("c{tag}"),
        &[&category],
        move |e: StoredEvent| {
            p.lock().push(e.position);
            std::future::ready(Ok::<(), BoxError>(()))
        },
        ConsumerSettings::default(),
    )
    .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while processed.lock().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the consumer saw nothing in time"
        );
        consumer.consume_all().await.expect("consume_all");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let results = queues.results.to_string();
    eventually("the result's publish span", || {
        !named(&spans(), &format!("publish {results}")).is_empty()
    })
    .await;
    stop.trigger();
    run.await.expect("worker");
    bus.stop().await;

    let all = spans();
    let root = one(&all, &format!("publish {placed}"));
    let trace = root.span_context.trace_id();
    let mine: Vec<SpanData> = all
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .cloned()
        .collect();
    let hops = [
        (placed.clone(), "herald"),
        (order.clone(), "nats"),
        (queues.steps.to_string(), queue_system),
        (stream.to_string(), "herald"),
    ];
    let ids: Vec<SpanId> = mine.iter().map(|s| s.span_context.span_id()).collect();
    for (destination, sys) in &hops {
        let publish = one(&mine, &format!("publish {destination}"));
        let process = one(&mine, &format!("process {destination}"));
        assert_eq!(publish.span_kind, SpanKind::Producer, "{destination}");
        assert_eq!(process.span_kind, SpanKind::Consumer, "{destination}");
        assert_eq!(
            (system(publish), system(process)),
            ((*sys).into(), (*sys).into())
        );
        assert_eq!(
            process.parent_span_id,
            publish.span_context.span_id(),
            "process {destination} is a child of its publish"
        );
    }
    // Each publish but the root runs inside a process span of the same trace.
    for s in mine.iter().filter(|s| s.span_kind == SpanKind::Producer) {
        if s.span_context.span_id() == root.span_context.span_id() {
            assert_eq!(s.parent_span_id, SpanId::INVALID, "the root has no parent");
            continue;
        }
        let parent = mine
            .iter()
            .find(|p| p.span_context.span_id() == s.parent_span_id)
            .unwrap_or_else(|| panic!("{}: its parent is in the trace", s.name));
        assert_eq!(parent.span_kind, SpanKind::Consumer, "{}", s.name);
    }
    // The worker's result is published from the step's process span.
    let result = one(&mine, &format!("publish {results}"));
    let step = one(&mine, &format!("process {}", queues.steps));
    assert_eq!(result.parent_span_id, step.span_context.span_id());
    assert!(ids.len() >= 9, "{} spans", ids.len());
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        let _ = store.drop_queue(q).await;
    }
}

/// A step that may be tried twice fails twice (retried, then dead-lettered) and is replayed: the retry
/// and the replay are processed in new traces, each linked to the step's original context.
async fn a_retry_and_a_replay_start_linked_traces<S: Queue + EventStore + DeadLetterStore>(
    store: S,
    namespace: &str,
) {
    exporter();
    let bus = Bus::new();
    bus.start();
    let registry = HandlerRegistry::new();
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    registry.register_handler(step_handler_fn("flaky", move |_c: StepContext| {
        let n = {
            let mut calls = c.lock();
            *calls += 1;
            *calls
        };
        async move {
            match n {
                1 | 2 => StepHandlerResult::failure("not yet").retryable(true),
                _ => StepHandlerResult::success(Map::new()),
            }
        }
    }));
    let mut worker = worker(&store, &bus, registry, namespace).await;
    let queues: StepQueues = worker.queues().clone();
    let stop = Shutdown::new();
    let st = stop.clone();
    let run = tokio::spawn(async move { worker.run(st.cancelled_owned()).await });
    // Sent inside a span of the test's own: the step's context is that span's child.
    let origin = tracing::info_span!("test origin");
    let mut ffi = FfiStepEvent::new("flaky", Map::new());
    ffi.execution_event.max_retries = 1;
    let step = step_event(&ffi);
    let steps = queues.steps.clone();
    let send = store.send(&steps, &step, Duration::ZERO);
    tracing::Instrument::instrument(send, origin)
        .await
        .expect("send");
    let process_name = format!("process {}", queues.steps);
    let processed = || named(&spans(), &process_name).len();
    eventually("the first two attempts", || processed() >= 2).await;
    eventually("the dead letter", || *calls.lock() >= 2).await;
    let place = queues.dead_letters.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let operator = Operator {
            who: "test".into(),
            why: None,
        };
        let report = herald::dlq::replay(&store, &place, Selection::All, 3, false, &operator)
            .await
            .expect("replay");
        if !report.done.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter to replay in time"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eventually("the replay's attempt", || processed() >= 3).await;
    stop.trigger();
    run.await.expect("worker");
    bus.stop().await;

    let all = spans();
    let sent = one(&all, &format!("publish {}", queues.steps));
    let original: TraceId = sent.span_context.trace_id();
    let mut attempts = named(&all, &process_name);
    attempts.sort_by_key(|s| s.start_time);
    assert_eq!(attempts.len(), 3, "first, retry, replay");
    assert_eq!(
        attempts[0].span_context.trace_id(),
        original,
        "first: a child"
    );
    assert_eq!(attempts[0].parent_span_id, sent.span_context.span_id());
    for (what, s) in [("the retry", attempts[1]), ("the replay", attempts[2])] {
        assert_ne!(s.span_context.trace_id(), original, "{what}: a new trace");
        assert_eq!(s.parent_span_id, SpanId::INVALID, "{what}: a root");
        let linked: Vec<TraceId> = s.links.iter().map(|l| l.span_context.trace_id()).collect();
        assert_eq!(linked, [original], "{what}: linked to the original");
    }
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        let _ = store.drop_queue(q).await;
    }
}

async fn sqlite() -> (SqliteStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique("otel"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    (SqliteStore::open(&url).await.expect("open"), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_one_trace_across_every_hop() {
    let Some(url) = nats_url("otel_pipeline_sqlite") else {
        return;
    };
    let nats = Nats::connect(&url).await.expect("nats");
    let (store, dir) = sqlite().await;
    one_trace_across_every_hop(store, nats, "otellite", "sqlite").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_trace_across_every_hop() {
    let (Some(url), Some(nats)) = (
        database_url("otel_pipeline_pg"),
        nats_url("otel_pipeline_pg"),
    ) else {
        return;
    };
    let nats = Nats::connect(&nats).await.expect("nats");
    let store = PgStore::connect(&url).await.expect("connect");
    let namespace = unique("otel").replace('-', "_");
    one_trace_across_every_hop(store, nats, &namespace, "pgmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_retry_and_a_replay_start_linked_traces() {
    let (store, dir) = sqlite().await;
    a_retry_and_a_replay_start_linked_traces(store, "otelretry").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_retry_and_a_replay_start_linked_traces() {
    let Some(url) = database_url("otel_retry_pg") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let namespace = unique("otelr").replace('-', "_");
    a_retry_and_a_replay_start_linked_traces(store, &namespace).await;
}

/// A plain nats-py publisher's `traceparent` (as a NATS header, or in the envelope) is the
/// parent of the Herald subscriber's `process` span; a malformed one gives a new trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_py_publishers_context_is_the_parent_of_the_subscribers_span() {
    const TP: &str = "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01";
    let test = "otel_nats_py";
    let Some(url) = nats_url(test) else { return };
    let has = std::process::Command::new("python3")
        .args(["-c", "import nats"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            !herald_testkit::env::services_required(),
            "{test}: python3 with nats-py is missing and HERALD_REQUIRE_SERVICES=1; run scripts/test.sh, which installs it"
        );
        eprintln!("SKIPPED {test}: python3 with nats-py is not installed");
        return;
    }
    exporter();
    let nats = Nats::connect(&url).await.expect("connect");
    let subject = format!("{}.py", unique("otelpy"));
    let seen = Arc::new(Mutex::new(0usize));
    let s = seen.clone();
    let _sub = nats
        .subscribe_handler(
            subject.as_str(),
            None,
            handler_fn(move |_e: Arc<Event>| {
                *s.lock() += 1;
                async { Ok::<(), BoxError>(()) }
            }),
        )
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../herald-nats/tests/interop/trace_publisher.py"
    );
    let status = tokio::process::Command::new("python3")
        .args([script, &url, &subject, TP])
        .status()
        .await
        .expect("python3");
    assert!(status.success());
    eventually("three deliveries", || *seen.lock() >= 3).await;
    let all = spans();
    let processed = named(&all, &format!("process {subject}"));
    assert_eq!(processed.len(), 3);
    let parented: Vec<_> = processed
        .iter()
        .filter(|s| {
            format!("{:032x}", s.span_context.trace_id()) == TP[3..35]
                && format!("{:016x}", s.parent_span_id) == TP[36..52]
        })
        .collect();
    assert_eq!(parented.len(), 2, "the header's and the envelope's context");
    let others: Vec<_> = processed
        .iter()
        .filter(|s| format!("{:032x}", s.span_context.trace_id()) != TP[3..35])
        .collect();
    assert_eq!(others.len(), 1, "the malformed one: a new trace");
}
