//! The W3C trace context across NATS: a traced event's `traceparent` travels in its envelope
//! and as a NATS header (core publish, JetStream, request/reply), byte for byte; a plain
//! client's header is picked up by a Herald subscriber when the envelope has none; a
//! malformed one is dropped and counted, never an error; a plain nats-py publisher's context
//! (as a header, or in the envelope) reaches a Herald subscriber.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use herald::{Event, TraceContext, TRACEPARENT};
use herald_nats::{ConsumerSpec, Nats, StreamSpec};
use herald_testkit::env::{nats_url, services_required, unique};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced(subject: &str) -> Event {
    let ctx = TraceContext::parse(TP, Some("herald=1")).expect("valid");
    Event::try_new(subject, serde_json::json!({"n": 1}))
        .expect("event")
        .ensure_event_id()
        .with_trace_context(&ctx)
}

async fn next(sub: &mut herald_nats::EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("in time")
        .expect("an event")
        .event
}

#[tokio::test]
async fn core_publish_carries_the_context_in_the_envelope_and_as_headers() {
    let Some(url) = nats_url("trace_core") else {
        return;
    };
    let nats = Nats::connect(&url).await.expect("connect");
    let prefix = unique("trace");
    let subject = format!("{prefix}.a");
    let mut raw = nats.client().subscribe(subject.clone()).await.expect("raw");
    let mut herald_sub = nats.subscribe(subject.as_str(), None).await.expect("sub");
    nats.flush().await.expect("flush");
    let sent = traced(&subject);
    nats.publish(&sent).await.expect("publish");
    let got = next(&mut herald_sub).await;
    assert_eq!(got.metadata[TRACEPARENT], TP, "byte for byte");
    assert_eq!(got.metadata["tracestate"], "herald=1");
    let m = tokio::time::timeout(Duration::from_secs(5), raw.next())
        .await
        .expect("in time")
        .expect("a message");
    let h = m
        .headers
        .expect("headers for clients that do not read the envelope");
    assert_eq!(h.get("traceparent").map(|v| v.as_str()), Some(TP));
    assert_eq!(h.get("tracestate").map(|v| v.as_str()), Some("herald=1"));

    // A plain client's header, no context in the envelope: picked up.
    let plain = Event::try_new(&subject, serde_json::json!({})).expect("event");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", TP);
    nats.client()
        .publish_with_headers(subject.clone(), headers, plain.to_json().into())
        .await
        .expect("raw publish");
    let got = next(&mut herald_sub).await;
    assert_eq!(
        got.trace_context()
            .map(|c| c.traceparent().to_owned())
            .as_deref(),
        Some(TP)
    );

    // A malformed header: dropped and counted, the event still arrives.
    let before = herald::trace_contexts_dropped();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", "00-zzzz-01");
    nats.client()
        .publish_with_headers(subject.clone(), headers, plain.to_json().into())
        .await
        .expect("raw publish");
    let got = next(&mut herald_sub).await;
    assert!(got.trace_context().is_none() && !got.metadata.contains_key(TRACEPARENT));
    assert!(herald::trace_contexts_dropped() > before);
}

#[tokio::test]
async fn jetstream_and_request_reply_keep_the_trace() {
    let Some(url) = nats_url("trace_js") else {
        return;
    };
    let nats = Nats::connect(&url).await.expect("connect");
    let prefix = unique("tracejs");
    let stream = prefix.to_uppercase();
    let js = nats.jetstream();
    js.ensure_stream(&StreamSpec::new(&stream, [format!("{prefix}.>")]))
        .await
        .expect("stream");
    js.publish(&traced(&format!("{prefix}.a")))
        .await
        .expect("publish");
    let consumer = js
        .durable_consumer(&stream, &ConsumerSpec::durable("trace"))
        .await
        .expect("consumer");
    let got = consumer
        .fetch(1, Duration::from_secs(5))
        .await
        .expect("fetch")
        .pop()
        .expect("one");
    assert_eq!(got.event.metadata[TRACEPARENT], TP);
    got.ack().await.expect("ack");
    let raw = js
        .context()
        .get_stream(&stream)
        .await
        .expect("stream")
        .get_raw_message(1)
        .await
        .expect("message");
    assert_eq!(raw.headers.get("traceparent").map(|v| v.as_str()), Some(TP));
    let _ = js.context().delete_stream(&stream).await;

    // Request/reply: the response continues the request's trace, one hop on.
    let responder = nats
        .respond(
            format!("{prefix}.svc").as_str(),
            None,
            |e: std::sync::Arc<Event>| async move { Ok(e.data.clone()) },
        )
        .await
        .expect("respond");
    let response = nats
        .request(&traced(&format!("{prefix}.svc")), Duration::from_secs(5))
        .await
        .expect("a response");
    let ctx = response
        .trace_context()
        .expect("a trace context on the response");
    assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(ctx.parent_id(), "00f067aa0ba902b7", "its own span");
    drop(responder);
}

#[tokio::test]
async fn a_handler_s_follow_up_continues_the_trace_over_nats() {
    let Some(url) = nats_url("trace_followup") else {
        return;
    };
    let nats = Nats::connect(&url).await.expect("connect");
    let prefix = unique("tracef");
    let mut followups = nats
        .subscribe(format!("{prefix}.b").as_str(), None)
        .await
        .expect("sub");
    let (inner, b) = (nats.clone(), format!("{prefix}.b"));
    let _h = nats
        .subscribe_handler(
            format!("{prefix}.a").as_str(),
            None,
            herald::handler_fn(move |_e: std::sync::Arc<Event>| {
                let (nats, b) = (inner.clone(), b.clone());
                async move {
                    let followup = Event::try_new(&b, serde_json::json!({})).expect("event");
                    nats.publish(&followup).await.expect("publish");
                }
            }),
        )
        .await
        .expect("handler");
    nats.flush().await.expect("flush");
    nats.publish(&traced(&format!("{prefix}.a")))
        .await
        .expect("publish");
    let got = next(&mut followups).await;
    let ctx = got
        .trace_context()
        .expect("the follow-up continues the trace");
    assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(ctx.parent_id(), "00f067aa0ba902b7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_nats_py_publishers_context_reaches_a_herald_subscriber() {
    let test = "trace_nats_py";
    let Some(url) = nats_url(test) else { return };
    let has = Command::new("python3")
        .args(["-c", "import nats"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        if services_required() {
            panic!("{test}: python3 with nats-py is missing and HERALD_REQUIRE_SERVICES=1; run scripts/test.sh, which installs it");
        }
        eprintln!("SKIPPED {test}: python3 with nats-py is not installed");
        return;
    }
    let nats = Nats::connect(&url).await.expect("connect");
    let subject = format!("{}.py", unique("tracepy"));
    let mut sub = nats.subscribe(subject.as_str(), None).await.expect("sub");
    nats.flush().await.expect("flush");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/trace_publisher.py"
    );
    let status = Command::new("python3")
        .args([script, &url, &subject, TP])
        .status()
        .expect("python3");
    assert!(status.success());
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let e = next(&mut sub).await;
        seen.insert(
            e.event_id().unwrap_or("?").to_owned(),
            e.trace_context().map(|c| c.traceparent().to_owned()),
        );
    }
    assert_eq!(seen["header"].as_deref(), Some(TP), "from the NATS header");
    assert_eq!(seen["metadata"].as_deref(), Some(TP), "from the envelope");
    assert_eq!(seen["malformed"], None, "dropped, the event kept");
}
