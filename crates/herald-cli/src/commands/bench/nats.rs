//! `herald bench nats`: Herald over NATS beside raw async-nats doing the same work (encode or
//! decode the same envelope) in the same run: core publish, subscribe, request/reply latency,
//! JetStream publish with a window of 256 acks, JetStream publish-and-ack from 64 tasks on one
//! connection (beside raw with the same message-id header, and beside raw one at a time), and
//! encoding the envelope alone (beside a derived struct with the same fields).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use herald::Event;
use herald_nats::{Nats, StreamSpec};

use super::{paired, rate, Figure, Report};
use crate::connect::connect_nats as connect;
use crate::CliError;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn event(subject: &str) -> Result<Event, CliError> {
    Ok(Event::try_new(
        subject,
        serde_json::json!({"order": 42, "item": "book", "qty": 1}),
    )?
    .with_source("bench"))
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench{name}{}x{nanos}", std::process::id())
}

async fn herald_publish(nats: &Nats, n: u64) -> Result<f64, CliError> {
    let e = event(&format!("{}.core", unique("p")))?;
    let start = Instant::now();
    for _ in 0..n {
        nats.publish(&e).await?;
    }
    nats.flush().await?;
    Ok(rate(n, start))
}

async fn raw_publish(client: &async_nats::Client, n: u64) -> Result<f64, CliError> {
    let e = event(&format!("{}.core", unique("p")))?;
    let subject = e.subject.to_string();
    let start = Instant::now();
    for _ in 0..n {
        let payload = Bytes::from(serde_json::to_vec(&e).map_err(other)?);
        client
            .publish(subject.clone(), payload)
            .await
            .map_err(other)?;
    }
    client.flush().await.map_err(other)?;
    Ok(rate(n, start))
}

/// Sends `n` envelopes from `publisher` after `ready`; the caller's receiver counts them.
async fn blast(publisher: &async_nats::Client, subject: &str, n: u64) -> Result<(), CliError> {
    let payload = Bytes::from(event(subject)?.to_json());
    for _ in 0..n {
        publisher
            .publish(subject.to_owned(), payload.clone())
            .await
            .map_err(other)?;
    }
    publisher.flush().await.map_err(other)?;
    Ok(())
}

/// What a user of raw async-nats would decode into: a derived struct, no validation.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawEnvelope {
    subject: String,
    event_type: String,
    source: String,
    data: serde_json::Map<String, serde_json::Value>,
    timestamp: String,
    correlation_id: String,
    priority: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// Messages per second from the first publish until `stream` has yielded `n` decoded items.
async fn receive<S, T>(
    mut stream: S,
    publisher: &async_nats::Client,
    subject: String,
    n: u64,
    decode: impl Fn(S::Item) -> Result<T, CliError>,
) -> Result<f64, CliError>
where
    S: futures_util::Stream + Unpin,
{
    let start = Instant::now();
    let sender = {
        let p = publisher.clone();
        tokio::spawn(async move { blast(&p, &subject, n).await })
    };
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(item)) => {
                std::hint::black_box(decode(item)?);
                got += 1;
            }
            _ => {
                return Err(CliError::Other(format!(
                    "bench subscribe: {got} of {n} arrived"
                )))
            }
        }
    }
    sender.await.map_err(other)??;
    Ok(rate(n, start))
}

async fn herald_subscribe(
    nats: &Nats,
    publisher: &async_nats::Client,
    n: u64,
) -> Result<f64, CliError> {
    let subject = format!("{}.sub", unique("s"));
    // Herald's stream decodes and validates the envelope itself.
    let stream = nats.subscribe(subject.as_str(), None).await?;
    receive(stream, publisher, subject, n, Ok).await
}

async fn raw_subscribe(
    client: &async_nats::Client,
    publisher: &async_nats::Client,
    n: u64,
) -> Result<f64, CliError> {
    let subject = format!("{}.sub", unique("s"));
    let sub = client.subscribe(subject.clone()).await.map_err(other)?;
    // A round trip, so the SUB is live at the server (the same wait Herald's subscribe does).
    let _ = client.request(client.new_inbox(), Bytes::new()).await;
    receive(sub, publisher, subject, n, |msg: async_nats::Message| {
        serde_json::from_slice::<RawEnvelope>(&msg.payload).map_err(other)
    })
    .await
}

/// Mean request/reply round trip in microseconds.
async fn herald_request(requester: &Nats, responder: &Nats, n: u64) -> Result<f64, CliError> {
    let subject = format!("{}.rr", unique("r"));
    let _resp = responder
        .respond(subject.as_str(), None, |req: Arc<Event>| async move {
            Ok(req.data.clone())
        })
        .await?;
    let e = event(&subject)?.with_type("request");
    requester.request(&e, Duration::from_secs(5)).await?;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(requester.request(&e, Duration::from_secs(5)).await?);
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

async fn raw_request(
    requester: &async_nats::Client,
    responder: &async_nats::Client,
    n: u64,
) -> Result<f64, CliError> {
    let subject = format!("{}.rr", unique("r"));
    let mut sub = responder.subscribe(subject.clone()).await.map_err(other)?;
    // A round trip on the responder's connection, so its SUB is live at the server (the
    // same wait Herald's subscribe does).
    let _ = responder.request(responder.new_inbox(), Bytes::new()).await;
    let r = responder.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            // The same work as Herald's responder: decode, build the response, encode.
            let Ok(req) = serde_json::from_slice::<Event>(&msg.payload) else {
                continue;
            };
            let resp = Event::new(req.subject.clone())
                .with_type("response")
                .with_correlation_id(req.correlation_id.clone())
                .with_data(req.data.clone());
            if let Some(reply) = msg.reply {
                let _ = r.publish(reply, Bytes::from(resp.to_json())).await;
            }
        }
    });
    let e = event(&subject)?.with_type("request");
    let payload = Bytes::from(e.to_json());
    requester
        .request(subject.clone(), payload.clone())
        .await
        .map_err(other)?;
    let start = Instant::now();
    for _ in 0..n {
        let payload = Bytes::from(serde_json::to_vec(&e).map_err(other)?);
        let msg = requester
            .request(subject.clone(), payload)
            .await
            .map_err(other)?;
        let decoded: Event = serde_json::from_slice(&msg.payload).map_err(other)?;
        std::hint::black_box(decoded);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    task.abort();
    Ok(us)
}

const WINDOW: usize = 256;

async fn herald_js(nats: &Nats, subject: &str, n: u64) -> Result<f64, CliError> {
    let js = nats.jetstream();
    let e = event(subject)?;
    let mut window = VecDeque::with_capacity(WINDOW);
    let start = Instant::now();
    for _ in 0..n {
        if window.len() == WINDOW {
            if let Some(p) = window.pop_front() {
                herald_nats::PendingAck::ack(p).await?;
            }
        }
        window.push_back(js.publish_async(&e).await?);
    }
    for p in window {
        p.ack().await?;
    }
    Ok(rate(n, start))
}

async fn raw_js(client: &async_nats::Client, subject: &str, n: u64) -> Result<f64, CliError> {
    let ctx = async_nats::jetstream::new(client.clone());
    let e = event(subject)?;
    let mut window = VecDeque::with_capacity(WINDOW);
    let start = Instant::now();
    for _ in 0..n {
        if window.len() == WINDOW {
            if let Some(p) = window.pop_front() {
                let ack: async_nats::jetstream::context::PublishAckFuture = p;
                ack.await.map_err(other)?;
            }
        }
        let payload = Bytes::from(serde_json::to_vec(&e).map_err(other)?);
        // The same work as Herald's publish: a dedupe id on every message, so that a retry
        // is stored once (the server then tracks ids in its duplicate window).
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(raw_id());
        window.push_back(
            ctx.send_publish(subject.to_owned(), msg)
                .await
                .map_err(other)?,
        );
    }
    for p in window {
        p.await.map_err(other)?;
    }
    Ok(rate(n, start))
}

/// Tasks publishing at once in the `*_64_tasks` figures.
const TASKS: u64 = 64;

/// Herald: `TASKS` tasks, each publishing and awaiting its ack, `n` in all.
async fn herald_js_tasks(nats: &Nats, subject: &str, n: u64) -> Result<f64, CliError> {
    let js = nats.jetstream();
    let e = event(subject)?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (js, e) = (js.clone(), e.clone());
        tasks.spawn(async move {
            for _ in 0..n / TASKS {
                js.publish(&e).await?;
            }
            Ok::<_, CliError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(other)??;
    }
    Ok(rate(n / TASKS * TASKS, start))
}

/// A raw message id, unique across calls and runs: a process-wide counter under the pid.
fn raw_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("raw-{}-{id}", std::process::id())
}

/// Raw async-nats doing the same work as Herald's publish: encode, a `Nats-Msg-Id`, await
/// the ack; `tasks` tasks at once (1: one publish at a time).
async fn raw_js_tasks(
    client: &async_nats::Client,
    subject: &str,
    n: u64,
    tasks: u64,
) -> Result<f64, CliError> {
    let ctx = async_nats::jetstream::new(client.clone());
    let e = event(subject)?;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (ctx, e, subject) = (ctx.clone(), e.clone(), subject.to_owned());
        set.spawn(async move {
            for _ in 0..n / tasks {
                let payload = Bytes::from(serde_json::to_vec(&e).map_err(other)?);
                let msg = async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .message_id(raw_id());
                ctx.send_publish(subject.clone(), msg)
                    .await
                    .map_err(other)?
                    .await
                    .map_err(other)?;
            }
            Ok::<_, CliError>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done.map_err(other)??;
    }
    Ok(rate(n / tasks * tasks, start))
}

/// The same eight fields as the envelope, as a plain derived struct: what encoding costs
/// without Herald's types.
#[derive(serde::Serialize)]
struct PlainEnvelope {
    subject: String,
    event_type: String,
    source: String,
    data: serde_json::Value,
    timestamp: String,
    correlation_id: String,
    priority: &'static str,
    metadata: serde_json::Map<String, serde_json::Value>,
}

fn herald_encode(n: u64) -> Result<f64, CliError> {
    let e = event("bench.encode")?;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(std::hint::black_box(&e).to_json());
    }
    Ok(rate(n, start))
}

fn plain_encode(n: u64) -> Result<f64, CliError> {
    let e = event("bench.encode")?;
    let plain = PlainEnvelope {
        subject: e.subject.to_string(),
        event_type: e.event_type.clone(),
        source: e.source.clone(),
        data: serde_json::Value::Object(e.data.clone()),
        timestamp: e.timestamp.to_string(),
        correlation_id: e.correlation_id.clone(),
        priority: "normal",
        metadata: e.metadata.clone(),
    };
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_vec(std::hint::black_box(&plain)).map_err(other)?);
    }
    Ok(rate(n, start))
}

pub(crate) async fn run(report: &mut Report, scale: f64, url: &str) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(100);
    let nats = connect(url).await?;
    let other_conn = connect(url).await?;
    let raw = nats.client().clone();
    let raw_other = other_conn.client().clone();

    let (h, r) = paired(
        5,
        || herald_publish(&nats, n(200_000.0)),
        || raw_publish(&raw, n(200_000.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "nats_core_publish",
            "msgs/s",
            h,
            r,
            "raw async-nats publish + serde_json",
        )
        .target(0.8),
    )?;

    let (h, r) = paired(
        5,
        || herald_subscribe(&nats, &raw_other, n(50_000.0)),
        || raw_subscribe(&raw, &raw_other, n(50_000.0)),
    )
    .await?;
    report.add(Figure::higher(
        "nats_subscribe",
        "msgs/s",
        h,
        r,
        "raw async-nats subscriber + serde derive struct",
    ))?;

    let (h, r) = paired(
        7,
        || herald_request(&nats, &other_conn, n(3_000.0)),
        || raw_request(&raw, &raw_other, n(3_000.0)),
    )
    .await?;
    report.add(
        Figure::lower(
            "nats_request_reply_latency",
            "us",
            h,
            r,
            "raw async-nats request + responder",
        )
        .target(0.9),
    )?;

    jetstream_figures(report, scale, &nats, &raw).await?;

    let (h, r) = paired(
        5,
        || async { herald_encode(n(500_000.0)) },
        || async { plain_encode(n(500_000.0)) },
    )
    .await?;
    report.add(Figure::higher(
        "envelope_encode",
        "events/s",
        h,
        r,
        "serde_json::to_vec of a derived struct, same 8 fields",
    ))?;
    Ok(())
}

/// JetStream beside raw async-nats: a window of 256 publishes, and 64 tasks (also against one
/// publish at a time), each on a memory stream of its own, deleted after.
async fn jetstream_figures(
    report: &mut Report,
    scale: f64,
    nats: &herald_nats::Nats,
    raw: &async_nats::Client,
) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(100);
    let stream = unique("JS").to_uppercase();
    let subject = format!("{}.x", stream.to_lowercase());
    let js = nats.jetstream();
    js.ensure_stream(&StreamSpec {
        memory: true,
        ..StreamSpec::new(&stream, [format!("{}.>", stream.to_lowercase())])
    })
    .await?;
    let result = async {
        paired(
            5,
            || herald_js(nats, &subject, n(20_000.0)),
            || raw_js(raw, &subject, n(20_000.0)),
        )
        .await
    }
    .await;
    js.delete_stream(&stream).await?;
    let (h, r) = result?;
    report.add(
        Figure::higher(
            "nats_js_publish_window_256",
            "msgs/s",
            h,
            r,
            "raw async-nats JetStream publish with a Nats-Msg-Id, same window",
        )
        .target(0.8),
    )?;

    let stream = unique("JT").to_uppercase();
    let subject = format!("{}.x", stream.to_lowercase());
    js.ensure_stream(&StreamSpec {
        memory: true,
        ..StreamSpec::new(&stream, [format!("{}.>", stream.to_lowercase())])
    })
    .await?;
    let result = async {
        let tasks = paired(
            5,
            || herald_js_tasks(nats, &subject, n(20_000.0)),
            || raw_js_tasks(raw, &subject, n(20_000.0), TASKS),
        )
        .await?;
        let sequential = raw_js_tasks(raw, &subject, n(5_000.0), 1).await?;
        Ok::<_, CliError>((tasks, sequential))
    }
    .await;
    js.delete_stream(&stream).await?;
    let ((h, r), sequential) = result?;
    report.add(
        Figure::higher(
            "nats_js_publish_64_tasks",
            "msgs/s",
            h,
            r,
            "raw async-nats, 64 tasks, same Nats-Msg-Id header",
        )
        .target(0.95),
    )?;
    report.add(
        Figure::higher(
            "nats_js_64_tasks_vs_sequential",
            "msgs/s",
            h,
            sequential,
            "raw async-nats publish-and-ack, one at a time",
        )
        .target(10.0),
    )?;
    Ok(())
}
