//! Every way of appending to the event store continues the trace it is called in: `append`,
//! `append_all`, `append_once` and `append_once_all`, on the memory store, SQLite and
//! PostgreSQL, each event stored with the caller's trace id in its `traceparent` and a
//! `publish {stream}` span that is a child of the caller's span.

use std::sync::OnceLock;

use herald::store::memory::MemoryEventStore;
use herald::store::{EventStore, KeyedWrite, StreamName, StreamWrite, WriteCondition};
use herald::{Event, Subject};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
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
