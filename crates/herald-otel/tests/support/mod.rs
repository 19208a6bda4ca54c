//! An OTLP/HTTP receiver for the exporter's tests: a real listener on loopback, plain or TLS
//! (the test certificates in `tests/tls`), that decodes each request with OpenTelemetry's own
//! protobuf types.
#![allow(dead_code)]

use std::sync::Arc;

use herald::{handler_fn, BoxError, Bus, Event, Subject};
use tracing_subscriber::layer::SubscriberExt;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;

/// What the receiver got.
#[derive(Default)]
pub(crate) struct Received {
    pub(crate) requests: Vec<ExportTraceServiceRequest>,
    pub(crate) content_types: Vec<String>,
}

fn app(received: Arc<Mutex<Received>>) -> Router {
    Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let r = received.clone();
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
    )
}

/// A plain HTTP receiver: its base URL and what it gets.
pub(crate) async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let received: Arc<Mutex<Received>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = app(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// The directory of the test certificates: `ca.pem` signs `server.pem` (127.0.0.1 and
/// localhost; `server.key` is its key).
pub(crate) fn tls_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
}

/// An HTTPS receiver (TLS 1.3, the server certificate of [`tls_dir`]): its base URL and what
/// it gets.
pub(crate) async fn tls_receiver() -> (String, Arc<Mutex<Received>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = tls_dir();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("server.pem parses");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let received: Arc<Mutex<Received>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = hyper_util::service::TowerToHyperService::new(app(received.clone()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, service) = (acceptor.clone(), service.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate fails here: nothing served.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (format!("https://{addr}"), received)
}

/// A span attribute's text value.
pub(crate) fn text(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// Every span received, after checking each request's content type (protobuf) and resource
/// (`service.name` = `service`).
pub(crate) fn spans_of(received: &Received, service: &str) -> Vec<Span> {
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
            let name = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(
                name,
                Some(Value::StringValue(service.into())),
                "the service name"
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    spans
}

/// Starts exporting with `settings` as the process's subscriber, publishes one event on
/// `subject` to a handler on a bus, stops the bus, then shuts the exporter down (flushing its
/// batch: the receiver has every span when this returns).
pub(crate) async fn publish_one_exported(settings: &herald_otel::TelemetrySettings, subject: &str) {
    let telemetry = herald_otel::Telemetry::start(settings)
        .expect("settings")
        .expect("on");
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");

    let bus = Bus::new();
    bus.start();
    let _sub = bus
        .subscribe(
            subject,
            handler_fn(|_e: Arc<Event>| async { Ok::<(), BoxError>(()) }),
        )
        .expect("subscribe");
    bus.publish(Event::new(Subject::new(subject).expect("subject")))
        .await
        .expect("publish");
    bus.stop().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("shutdown");
}
