//! `herald bench relay`: the relays on PostgreSQL and the NATS server at `--bus`, beside raw
//! loops doing the same work in the same run. The log relay (lease, expected sequences,
//! fenced checkpoint) beside a raw sqlx read of the same rows published with async-nats, 256
//! acks in flight, the same bytes and message ids; the inbox (one `append_once` per message,
//! then its ack) beside a raw async-nats fetch + sqlx INSERT + ack loop; and the end-to-end
//! lag from an append's return to a subscriber of the stream's subjects, beside a JetStream
//! publish's own lag to the same subscriber.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::StreamExt;
use herald::store::{EventStore, StreamName, WriteCondition};
use herald_nats::{Inbox, JetStream, Nats, Relay, RelaySettings, StreamSpec};
use herald_postgres::PgStore;
use sqlx::PgPool;

use super::queue::{event, pg_url};
use super::{paired, rate, Figure, Report};
use crate::CliError;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}x{nanos}", std::process::id())
}

/// Appends `n` events rounded up to whole batches of 100 (over 16 streams) of a fresh
/// category: the category, the global position just before the first, and how many.
async fn fill(store: &PgStore, n: u64) -> Result<(String, i64, u64), CliError> {
    let category = format!("benchrelay{}", tag());
    let batch: Vec<herald::Event> = (0..100).map(|_| event()).collect::<Result<_, _>>()?;
    let batches = n.div_ceil(100);
    let mut before = None;
    for i in 0..batches {
        let stream = StreamName::new(&format!("{category}-{}", i % 16))?;
        let r = store.append(&stream, &batch, WriteCondition::Any).await?;
        before.get_or_insert(r.global_position - 100);
    }
    Ok((category, before.unwrap_or(0), batches * 100))
}

/// The relay over `n` events after `from`, to a fresh stream: events per second.
async fn herald_relay(
    store: &PgStore,
    js: &JetStream,
    category: &str,
    from: i64,
    n: u64,
) -> Result<f64, CliError> {
    let t = tag();
    let mut settings = RelaySettings::new(format!("bench{t}"));
    settings.stream = format!("BENCH_RELAY_{t}");
    settings.prefix = format!("benchrelay{t}");
    settings.categories = vec![category.to_owned()];
    store
        .save_checkpoint(&settings.checkpoint_name(), "log", from, 0)
        .await?;
    let stream = settings.stream.clone();
    let relay = Relay::new(store.clone(), js.clone(), settings)
        .await
        .map_err(|e| other(herald::report(&e)))?;
    // Timed from here, as the raw loop is timed after its stream exists.
    let start = Instant::now();
    loop {
        match relay
            .pass(4096)
            .await
            .map_err(|e| other(herald::report(&e)))?
        {
            Some(0) => break,
            Some(_) => {}
            None => return Err(other("relay bench: another relay holds the lease")),
        }
    }
    if relay.report().published != n {
        return Err(other(format!(
            "relay bench: {} of {n} events published",
            relay.report().published
        )));
    }
    let r = rate(relay.report().published, start);
    relay.release().await;
    let _ = js.context().delete_stream(&stream).await;
    Ok(r)
}

/// Raw: the same rows read with sqlx in pages of 4096 and published with async-nats, 256
/// acks in flight, with the same message ids: events per second.
async fn raw_relay(
    pool: &PgPool,
    js: &JetStream,
    category: &str,
    from: i64,
    n: u64,
) -> Result<f64, CliError> {
    let t = tag();
    let (stream, prefix) = (format!("BENCH_RAW_{t}"), format!("benchraw{t}"));
    js.ensure_stream(&StreamSpec::new(&stream, [format!("{prefix}.>")]))
        .await
        .map_err(other)?;
    let ctx = js.context();
    let (start, mut after, mut sent) = (Instant::now(), from, 0u64);
    let mut acks = VecDeque::new();
    while sent < n {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT global_position, stream, body::text FROM herald.events
             WHERE global_position > $1 AND category = $2 ORDER BY global_position LIMIT 4096",
        )
        .bind(after)
        .bind(category)
        .fetch_all(pool)
        .await
        .map_err(other)?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        after = last;
        for (position, s, body) in rows {
            let (cat, id) = s.split_once('-').unwrap_or((&s, "_"));
            let msg = PublishMessage::build()
                .payload(Bytes::from(body))
                .message_id(format!("raw:{position}"));
            let ack = ctx
                .send_publish(format!("{prefix}.{cat}.{id}"), msg)
                .await
                .map_err(other)?;
            acks.push_back(ack);
            if acks.len() >= 256 {
                if let Some(a) = acks.pop_front() {
                    a.await.map_err(other)?;
                }
            }
            sent += 1;
        }
    }
    while let Some(a) = acks.pop_front() {
        a.await.map_err(other)?;
    }
    let r = rate(sent, start);
    let _ = ctx.delete_stream(&stream).await;
    Ok(r)
}

/// Publishes `n` envelopes (ids set) to a fresh stream; its name and subjects' prefix.
async fn inbox_stream(js: &JetStream, n: u64) -> Result<(String, String), CliError> {
    let t = tag();
    let (stream, prefix) = (format!("BENCH_INBOX_{t}"), format!("benchinbox{t}"));
    js.ensure_stream(&StreamSpec::new(&stream, [format!("{prefix}.>")]))
        .await
        .map_err(other)?;
    let mut acks = VecDeque::new();
    for i in 0..n {
        let subject = herald::Subject::new(&format!("{prefix}.inb{t}.{}", i % 16))?;
        let e = herald::Event::new(subject).ensure_event_id();
        acks.push_back(js.publish_async(&e).await.map_err(other)?);
        if acks.len() >= 256 {
            if let Some(a) = acks.pop_front() {
                a.ack().await.map_err(other)?;
            }
        }
    }
    while let Some(a) = acks.pop_front() {
        a.ack().await.map_err(other)?;
    }
    Ok((stream, prefix))
}

/// The inbox taking `n` messages into the store: messages per second.
async fn herald_inbox(store: &PgStore, js: &JetStream, n: u64) -> Result<f64, CliError> {
    let (stream, _) = inbox_stream(js, n).await?;
    let inbox = Inbox::new(store.clone(), js, &stream, "bench", Duration::from_secs(30))
        .await
        .map_err(other)?;
    let start = Instant::now();
    while inbox.report().appended < n {
        inbox
            .pass(256, Duration::from_millis(200))
            .await
            .map_err(|e| other(herald::report(&e)))?;
    }
    let r = rate(inbox.report().appended, start);
    let _ = js.context().delete_stream(&stream).await;
    Ok(r)
}

/// Raw: async-nats fetch of 256, one sqlx INSERT per message, then its ack: messages per
/// second.
async fn raw_inbox(pool: &PgPool, js: &JetStream, n: u64) -> Result<f64, CliError> {
    let (stream, _) = inbox_stream(js, n).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS herald_bench_raw_inbox (key TEXT PRIMARY KEY, subject TEXT NOT NULL, body JSONB NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(other)?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .context()
        .get_stream(&stream)
        .await
        .map_err(other)?
        .get_or_create_consumer(
            "raw",
            pull::Config {
                durable_name: Some("raw".into()),
                ..Default::default()
            },
        )
        .await
        .map_err(other)?;
    let (start, mut taken) = (Instant::now(), 0u64);
    while taken < n {
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .expires(Duration::from_millis(200))
            .messages()
            .await
            .map_err(other)?;
        while let Some(m) = batch.next().await {
            let m = m.map_err(other)?;
            let key = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            sqlx::query(
                "INSERT INTO herald_bench_raw_inbox (key, subject, body) VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(m.subject.as_str())
            .bind(String::from_utf8_lossy(&m.payload).as_ref())
            .execute(pool)
            .await
            .map_err(other)?;
            m.ack().await.map_err(other)?;
            taken += 1;
        }
    }
    let r = rate(taken, start);
    let _ = js.context().delete_stream(&stream).await;
    sqlx::query("TRUNCATE herald_bench_raw_inbox")
        .execute(pool)
        .await
        .map_err(other)?;
    Ok(r)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Milliseconds from each append's return to a core subscriber of the stream's subjects
/// seeing it, with a relay running, `n` appends 2 ms apart.
async fn relay_lag(store: &PgStore, nats: &Nats, n: u64) -> Result<Vec<f64>, CliError> {
    let t = tag();
    let mut settings = RelaySettings::new(format!("lag{t}"));
    settings.stream = format!("BENCH_LAG_{t}");
    settings.prefix = format!("benchlag{t}");
    let category = format!("lag{t}");
    settings.categories = vec![category.clone()];
    settings.poll = Duration::from_millis(10);
    let (stream, prefix) = (settings.stream.clone(), settings.prefix.clone());
    let head = store
        .append(
            &StreamName::new(&format!("{category}-warm"))?,
            &[event()?],
            WriteCondition::Any,
        )
        .await?;
    store
        .save_checkpoint(&settings.checkpoint_name(), "log", head.global_position, 0)
        .await?;
    let relay = Relay::new(store.clone(), nats.jetstream(), settings)
        .await
        .map_err(|e| other(herald::report(&e)))?;
    let mut sub = nats
        .client()
        .subscribe(format!("{prefix}.>"))
        .await
        .map_err(other)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let relay = relay.clone();
        tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await
        })
    };
    let stream_name = StreamName::new(&format!("{category}-1"))?;
    let mut appended = Vec::with_capacity(n as usize);
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut at = Vec::with_capacity(n as usize);
            for i in 0..n {
                let e = event()?.with_metadata(herald::EVENT_ID, format!("lag{i}"));
                store
                    .append(&stream_name, &[e], WriteCondition::Any)
                    .await?;
                at.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, CliError>(at)
        })
    };
    let mut seen = Vec::with_capacity(n as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen.len() as u64) < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(m)) => {
                let id = herald::Event::from_json(&m.payload)
                    .ok()
                    .and_then(|d| d.event.event_id().map(str::to_owned));
                if let Some(i) = id.and_then(|id| id.strip_prefix("lag")?.parse::<usize>().ok()) {
                    seen.push((i, Instant::now()));
                }
            }
            _ => break,
        }
    }
    appended.extend(appender.await.map_err(other)??);
    let _ = stop_tx.send(());
    let _ = runner.await;
    let _ = nats.jetstream().context().delete_stream(&stream).await;
    Ok(seen
        .into_iter()
        .filter_map(|(i, at)| {
            appended
                .get(i)
                .map(|a| at.saturating_duration_since(*a).as_secs_f64() * 1000.0)
        })
        .collect())
}

/// Milliseconds from a JetStream publish's start to a core subscriber seeing it, `n`
/// publishes 2 ms apart (what the relay's lag compares with).
async fn publish_lag(nats: &Nats, n: u64) -> Result<Vec<f64>, CliError> {
    let t = tag();
    let (stream, prefix) = (format!("BENCH_PUBLAG_{t}"), format!("benchpublag{t}"));
    let js = nats.jetstream();
    js.ensure_stream(&StreamSpec::new(&stream, [format!("{prefix}.>")]))
        .await
        .map_err(other)?;
    let mut sub = nats
        .client()
        .subscribe(format!("{prefix}.>"))
        .await
        .map_err(other)?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        let msg = PublishMessage::build()
            .payload(Bytes::from(event()?.to_json()))
            .message_id(format!("p{i}"));
        let ack = js
            .context()
            .send_publish(format!("{prefix}.x.{i}"), msg)
            .await
            .map_err(other)?;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            out.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        ack.await.map_err(other)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = js.context().delete_stream(&stream).await;
    Ok(out)
}

pub(crate) async fn run(
    report: &mut Report,
    scale: f64,
    store: &str,
    bus: &str,
) -> Result<(), CliError> {
    let url = pg_url(store);
    let pg = PgStore::connect(&url).await?;
    let pool = PgPool::connect(&url).await.map_err(other)?;
    let nats = Nats::connect(bus)
        .await
        .map_err(|e| other(herald::report(&e)))?;
    let js = nats.jetstream();
    let n = ((20_000.0 * scale) as u64).max(500);
    let (category, from, n) = fill(&pg, n).await?;
    let (h, b) = paired(
        3,
        || herald_relay(&pg, &js, &category, from, n),
        || raw_relay(&pool, &js, &category, from, n),
    )
    .await?;
    report.add(
        Figure::higher(
            "relay_pg_to_jetstream",
            "events/s",
            h,
            b,
            "sqlx read + async-nats publish, 256 in flight",
        )
        .target(0.8),
    )?;
    let m = ((5_000.0 * scale) as u64).max(200);
    let (h, b) = paired(3, || herald_inbox(&pg, &js, m), || raw_inbox(&pool, &js, m)).await?;
    report.add(
        Figure::higher(
            "inbox_jetstream_to_pg",
            "msgs/s",
            h,
            b,
            "async-nats fetch + sqlx INSERT + ack",
        )
        .target(0.8),
    )?;
    let k = ((1_000.0 * scale) as u64).max(100);
    let mut lag = relay_lag(&pg, &nats, k).await?;
    let mut base = publish_lag(&nats, k).await?;
    for (name, q) in [("relay_lag_p50", 0.5), ("relay_lag_p99", 0.99)] {
        report.add(Figure::lower(
            name,
            "ms",
            percentile(&mut lag, q),
            percentile(&mut base, q),
            "async-nats JetStream publish to a subscriber",
        ))?;
    }
    Ok(())
}
