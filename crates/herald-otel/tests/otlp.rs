//! The exporter's wire format: spans go by OTLP/HTTP (protobuf) to a receiver this test
//! starts on loopback, which decodes them with OpenTelemetry's own protobuf types; the
//! resource's service name, the span names and kinds, the messaging attributes, and the
//! parent of the process span are read back from the bytes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use herald::{handler_fn, BoxError, Bus, Event, Subject};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Default)]
struct Received {
    requests: Vec<ExportTraceServiceRequest>,
    content_types: Vec<String>,
}

async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let received: Arc<Mutex<Received>> = Arc::default();
    let r = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut r = r.lock();
                r.requests.push(request);
                r.content_types.push(
                    headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                );
                (
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn text(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_otlp_receiver_as_protobuf() {
    let (endpoint, received) = receiver().await;
    let settings = herald_otel::TelemetrySettings {
        enabled: true,
        endpoint,
        service_name: "otlp-test".into(),
    };
    let telemetry = herald_otel::Telemetry::start(&settings)
        .expect("settings")
        .expect("on");
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");

    let bus = Bus::new();
    bus.start();
    let _sub = bus
        .subscribe(
            "otlp.checked",
            handler_fn(|_e: Arc<Event>| async { Ok::<(), BoxError>(()) }),
        )
        .expect("subscribe");
    bus.publish(Event::new(Subject::new("otlp.checked").expect("subject")))
        .await
        .expect("publish");
    bus.stop().await;
    // Flushes the batch and stops: the receiver has everything when this returns.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("shutdown");

    let received = received.lock();
    assert!(!received.requests.is_empty(), "the receiver got a request");
    assert!(
        received
            .content_types
            .iter()
            .all(|c| c == "application/x-protobuf"),
        "{:?}",
        received.content_types
    );
    let mut spans = Vec::new();
    for request in &received.requests {
        for rs in &request.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(
                service,
                Some(Value::StringValue("otlp-test".into())),
                "the service name"
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "{name} in {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
            .clone()
    };
    let publish = find("publish otlp.checked");
    let process = find("process otlp.checked");
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(process.kind, SpanKind::Consumer as i32);
    assert_eq!(publish.trace_id.len(), 16);
    assert_eq!(process.trace_id, publish.trace_id, "one trace");
    assert_eq!(
        process.parent_span_id, publish.span_id,
        "a child of its publish"
    );
    for s in [&publish, &process] {
        assert_eq!(text(s, "messaging.system").as_deref(), Some("herald"));
        assert_eq!(
            text(s, "messaging.destination.name").as_deref(),
            Some("otlp.checked")
        );
    }
    assert!(process.end_time_unix_nano >= process.start_time_unix_nano);
}
