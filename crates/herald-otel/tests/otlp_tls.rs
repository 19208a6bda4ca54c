//! The exporter over `https://`: spans go by OTLP/HTTP through TLS to a receiver this test
//! starts on loopback with a certificate of a test CA, which the settings name as the one to
//! trust (`telemetry.certificate`, as `OTEL_EXPORTER_OTLP_CERTIFICATE` would); the same
//! receiver gets nothing from an exporter that trusts only the system's roots (the
//! certificate is checked), and a certificate file that holds no certificate stops the start
//! with an error naming the file.

use tracing_subscriber::layer::SubscriberExt;

mod support;
use support::{publish_one_exported, spans_of, text, tls_dir, tls_receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_https_receiver_that_the_named_ca_signed() {
    // A file with no certificate in it: refused at start, naming the file.
    let empty = tls_dir().join("server.key");
    let bad = herald_otel::TelemetrySettings {
        enabled: true,
        endpoint: "https://127.0.0.1:9".into(),
        certificate: empty.display().to_string(),
        ..Default::default()
    };
    let e = herald_otel::Telemetry::start(&bad).expect_err("no certificate in the file");
    assert!(e.to_string().contains("server.key"), "{e}");

    let (endpoint, received) = tls_receiver().await;
    let settings = herald_otel::TelemetrySettings {
        enabled: true,
        endpoint,
        service_name: "otlp-tls-test".into(),
        certificate: tls_dir().join("ca.pem").display().to_string(),
    };
    publish_one_exported(&settings, "otlp.tls").await;

    let spans = spans_of(&received.lock(), "otlp-tls-test");
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"publish otlp.tls"), "{names:?}");
    assert!(names.contains(&"process otlp.tls"), "{names:?}");
    for s in &spans {
        assert_eq!(text(s, "messaging.system").as_deref(), Some("herald"));
    }

    // The same kind of receiver, but the exporter trusts the system's roots only: the test
    // CA is not among them, so the handshake fails and nothing arrives.
    let (endpoint, untrusted) = tls_receiver().await;
    let system_roots = herald_otel::TelemetrySettings {
        enabled: true,
        endpoint,
        service_name: "otlp-tls-untrusted".into(),
        ..Default::default()
    };
    let telemetry = herald_otel::Telemetry::start(&system_roots)
        .expect("settings")
        .expect("on");
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("a span for an untrusted collector").in_scope(|| ());
    });
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("shutdown");
    assert!(
        untrusted.lock().requests.is_empty(),
        "a collector whose certificate is not trusted got spans"
    );
}
