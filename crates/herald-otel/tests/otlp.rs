//! The exporter's wire format: spans go by OTLP/HTTP (protobuf) to a receiver this test
//! starts on loopback, which decodes them with OpenTelemetry's own protobuf types; the
//! resource's service name, the span names and kinds, the messaging attributes, and the
//! parent of the process span are read back from the bytes.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

mod support;
use support::{publish_one_exported, receiver, spans_of, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_otlp_receiver_as_protobuf() {
    let (endpoint, received) = receiver().await;
    let settings = herald_otel::TelemetrySettings {
        enabled: true,
        endpoint,
        service_name: "otlp-test".into(),
        ..Default::default()
    };
    publish_one_exported(&settings, "otlp.checked").await;

    let spans = spans_of(&received.lock(), "otlp-test");
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
