//! Hops the pipeline test does not cross, seen by OpenTelemetry's in-memory exporter: every
//! way of appending to the event store continues the trace it is called in (`append`,
//! `append_all`, `append_once` and `append_once_all`, on the memory store, SQLite and
//! PostgreSQL: each event stored with the caller's trace id in its `traceparent` and a
//! `publish {stream}` span that is a child of the caller's span), and NATS request/reply
//! (the request's publish, the responder's process, the response's publish, one trace), and a
//! task spawned with `herald::traced` (its append is in the spawner's trace; without it, not).

use std::sync::OnceLock;

use herald::store::memory::MemoryEventStore;
use herald::store::{EventStore, KeyedWrite, StreamName, StreamWrite, WriteCondition};
use herald::{Event, Subject};
use herald_nats::Nats;
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, nats_url, unique};
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The process's exporter and its one subscriber.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, herald_otel::Telemetry)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let telemetry = herald_otel::Telemetry::with_exporter(exporter.clone(), "appends");
            let subscriber = tracing_subscriber::registry().with(telemetry.layer());
            tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
            (exporter, telemetry)
        })
        .0
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn event() -> Event {
    Event::new(Subject::new("order.shipped").expect("subject"))
}

async fn every_append_continues_the_trace<S: EventStore>(store: S) {
    let exporter = exporter();
    let tag = unique("app").replace(['-', '_'], "");
    let streams: Vec<StreamName> = (0..4)
        .map(|i| StreamName::new(&format!("app{tag}-{i}")).expect("stream"))
        .collect();
    let root = tracing::info_span!("appending", tag = %tag);
    async {
        store
            .append(&streams[0], &[event()], WriteCondition::Any)
            .await
            .expect("append");
        store
            .append_all(&[StreamWrite {
                stream: streams[1].clone(),
                events: vec![event(), event()],
                condition: WriteCondition::Any,
            }])
            .await
            .expect("append_all");
        store
            .append_once(&streams[2], &event(), &format!("{tag}-a"))
            .await
            .expect("append_once");
        store
            .append_once_all(&[KeyedWrite {
                stream: streams[3].clone(),
                event: event(),
                key: format!("{tag}-b"),
            }])
            .await
            .expect("append_once_all");
    }
    .instrument(root.clone())
    .await;
    drop(root);
    let spans: Vec<SpanData> = exporter.get_finished_spans().expect("spans");
    let root = spans
        .iter()
        .find(|s| {
            s.name == "appending"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "tag" && kv.value.as_str() == tag.as_str())
        })
        .expect("the caller's span is exported");
    let trace = root.span_context.trace_id();
    for (stream, n) in streams.iter().zip([1usize, 2, 1, 1]) {
        let stored = store.read_stream(stream, 0, 10).await.expect("read");
        assert_eq!(stored.len(), n, "{stream}");
        for e in &stored {
            let e = Event::from_json(&e.body).expect("an envelope").event;
            let ctx = e.trace_context().expect("a traceparent is stored");
            assert_eq!(
                ctx.traceparent().split('-').nth(1),
                Some(trace.to_string().as_str()),
                "{stream}: stored with the caller's trace id"
            );
        }
        let publishes: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.name == format!("publish {stream}"))
            .collect();
        assert_eq!(publishes.len(), n, "{stream}: one publish span per event");
        for p in publishes {
            assert_eq!(p.span_kind, SpanKind::Producer);
            assert_eq!(p.span_context.trace_id(), trace);
            assert_eq!(p.parent_span_id, root.span_context.span_id());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_appends_continue_the_trace() {
    every_append_continues_the_trace(MemoryEventStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_appends_continue_the_trace() {
    let dir = std::env::temp_dir().join(unique("otel-appends"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    every_append_continues_the_trace(SqliteStore::open(&url).await.expect("open")).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_continue_the_trace() {
    let Some(url) = database_url("otel_appends_pg") else {
        return;
    };
    every_append_continues_the_trace(PgStore::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_request_and_its_response_are_one_trace() {
    let Some(url) = nats_url("otel_request_reply") else {
        return;
    };
    let exporter = exporter();
    let nats = Nats::connect(&url).await.expect("nats");
    let subject = format!("{}.ask", unique("req").replace(['-', '_'], ""));
    let _responder = nats
        .respond(subject.as_str(), None, |_e| async {
            Ok(herald::Object::new())
        })
        .await
        .expect("respond");
    nats.flush().await.expect("flush");
    let root = tracing::info_span!("asking", subject = %subject);
    let request = Event::new(Subject::new(&subject).expect("subject"));
    let response = nats
        .request(&request, std::time::Duration::from_secs(5))
        .instrument(root.clone())
        .await
        .expect("a response");
    drop(root);
    let process = format!("process {subject}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let spans = loop {
        let spans = exporter.get_finished_spans().expect("spans");
        if !named(&spans, &process).is_empty() && !named(&spans, "asking").is_empty() {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the responder's span in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    let root = named(&spans, "asking")
        .into_iter()
        .find(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.value.as_str() == subject.as_str())
        })
        .expect("the caller's span");
    let trace = root.span_context.trace_id();
    let process = named(&spans, &process);
    assert_eq!(process.len(), 1, "one process span");
    let process = process[0];
    let publishes = named(&spans, &format!("publish {subject}"));
    assert_eq!(
        publishes.len(),
        2,
        "the request's and the response's publish spans"
    );
    let sent = publishes
        .iter()
        .find(|p| p.parent_span_id == root.span_context.span_id())
        .expect("the request's publish is a child of the caller's span");
    let answered = publishes
        .iter()
        .find(|p| p.parent_span_id == process.span_context.span_id())
        .expect("the response's publish is a child of the responder's process span");
    assert_eq!(process.parent_span_id, sent.span_context.span_id());
    assert_eq!(process.span_kind, SpanKind::Consumer);
    for s in [sent, answered, &process] {
        assert_eq!(s.span_context.trace_id(), trace);
    }
    let ctx = response
        .trace_context()
        .expect("the response carries its context");
    assert_eq!(
        ctx.traceparent().split('-').nth(2),
        Some(answered.span_context.span_id().to_string().as_str()),
        "the response's traceparent is its publish span"
    );
    nats.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_with_traced_continues_the_trace() {
    let exporter = exporter();
    let store = MemoryEventStore::new();
    let tag = unique("spawn").replace(['-', '_'], "");
    let inside = StreamName::new(&format!("in{tag}-1")).expect("stream");
    let outside = StreamName::new(&format!("out{tag}-1")).expect("stream");
    let root = tracing::info_span!("spawning", tag = %tag);
    let (s, i, o) = (store.clone(), inside.clone(), outside.clone());
    async move {
        let s2 = s.clone();
        let with = tokio::spawn(herald::traced(async move {
            s.append(&i, &[event()], WriteCondition::Any).await
        }));
        let without =
            tokio::spawn(async move { s2.append(&o, &[event()], WriteCondition::Any).await });
        with.await.expect("joined").expect("append");
        without.await.expect("joined").expect("append");
    }
    .instrument(root.clone())
    .await;
    drop(root);
    let spans = exporter.get_finished_spans().expect("spans");
    let root = named(&spans, "spawning")
        .into_iter()
        .find(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.value.as_str() == tag.as_str())
        })
        .expect("the spawner's span");
    let traced = named(&spans, &format!("publish {inside}"));
    assert_eq!(traced.len(), 1);
    assert_eq!(traced[0].parent_span_id, root.span_context.span_id());
    assert_eq!(
        traced[0].span_context.trace_id(),
        root.span_context.trace_id()
    );
    let untraced = named(&spans, &format!("publish {outside}"));
    assert_eq!(untraced.len(), 1);
    assert_ne!(
        untraced[0].span_context.trace_id(),
        root.span_context.trace_id(),
        "a task spawned without `traced` starts a trace of its own"
    );
}
