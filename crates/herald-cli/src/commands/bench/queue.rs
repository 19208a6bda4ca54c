//! `herald bench queue`: Herald's durable queues beside the raw library doing the same work in
//! the same run. PostgreSQL: single sends, 64 concurrent senders (Herald's group commit
//! beside the raw `pgmq` crate on a pool of the same size), send_batch(100), read(100) +
//! archive. SQLite: single sends and 64 concurrent senders beside the disk's fdatasync floor.

use std::io::Write;
use std::time::{Duration, Instant};

use herald::queue::{Queue, QueueName};
use herald::Event;
use herald_postgres::{PgOptions, PgStore};
use herald_sqlite::SqliteStore;
use pgmq::PGMQueueExt;
use serde_json::Value;

use super::{paired, rate, Figure, Report};
use crate::CliError;

/// Pool connections for both Herald and raw pgmq.
const POOL: u32 = 10;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

pub(crate) fn event() -> Result<Event, CliError> {
    Ok(Event::try_new(
        "orders.created",
        serde_json::json!({"order": 42, "item": "book", "qty": 1}),
    )?
    .with_source("bench"))
}

pub(crate) fn bench_queue(name: &str) -> Result<QueueName, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Ok(QueueName::new(&format!(
        "bench_{name}_{}x{nanos}",
        std::process::id()
    ))?)
}

/// The PostgreSQL URL to measure: `--store` when it is one, else the local test database.
pub(crate) fn pg_url(store: &str) -> String {
    if store.starts_with("postgres") {
        store.to_owned()
    } else {
        std::env::var("HERALD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }
}

async fn herald_single<Q: Queue>(q: &Q, name: &QueueName, n: u64) -> Result<f64, CliError> {
    let e = event()?;
    let start = Instant::now();
    for _ in 0..n {
        q.send(name, &e, Duration::ZERO).await?;
    }
    Ok(rate(n, start))
}

async fn herald_concurrent<Q: Queue>(
    q: &Q,
    name: &QueueName,
    tasks: u64,
    each: u64,
) -> Result<f64, CliError> {
    let e = event()?;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (q, name, e) = (q.clone(), name.clone(), e.clone());
        set.spawn(async move {
            for _ in 0..each {
                q.send(&name, &e, Duration::ZERO).await?;
            }
            Ok::<(), herald::queue::QueueError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(other)??;
    }
    Ok(rate(tasks * each, start))
}

async fn raw_single(raw: &PGMQueueExt, name: &str, body: &Value, n: u64) -> Result<f64, CliError> {
    let start = Instant::now();
    for _ in 0..n {
        raw.send(name, body).await.map_err(other)?;
    }
    Ok(rate(n, start))
}

async fn raw_concurrent(
    raw: &PGMQueueExt,
    name: &str,
    body: &Value,
    tasks: u64,
    each: u64,
) -> Result<f64, CliError> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (raw, name, body) = (raw.clone(), name.to_owned(), body.clone());
        set.spawn(async move {
            for _ in 0..each {
                raw.send(&name, &body).await?;
            }
            Ok::<(), pgmq::PgmqError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(other)?.map_err(other)?;
    }
    Ok(rate(tasks * each, start))
}

async fn herald_batch(q: &PgStore, name: &QueueName, batches: u64) -> Result<f64, CliError> {
    let events: Vec<Event> = (0..100).map(|_| event()).collect::<Result<_, _>>()?;
    let start = Instant::now();
    for _ in 0..batches {
        q.send_batch(name, &events, Duration::ZERO).await?;
    }
    Ok(rate(batches * 100, start))
}

async fn raw_batch(
    raw: &PGMQueueExt,
    name: &str,
    body: &Value,
    batches: u64,
) -> Result<f64, CliError> {
    let bodies: Vec<Value> = (0..100).map(|_| body.clone()).collect();
    let start = Instant::now();
    for _ in 0..batches {
        raw.send_batch(name, &bodies).await.map_err(other)?;
    }
    Ok(rate(batches * 100, start))
}

async fn herald_read_archive(q: &PgStore, name: &QueueName, batches: u64) -> Result<f64, CliError> {
    let events: Vec<Event> = (0..100).map(|_| event()).collect::<Result<_, _>>()?;
    for _ in 0..batches {
        q.send_batch(name, &events, Duration::ZERO).await?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    for _ in 0..batches {
        let got = q.read(name, Duration::from_secs(60), 100).await?;
        let ids: Vec<i64> = got.iter().map(|m| m.msg_id).collect();
        done += q.archive(name, &ids).await?.len() as u64;
    }
    Ok(rate(done, start))
}

async fn raw_read_archive(
    raw: &PGMQueueExt,
    name: &str,
    body: &Value,
    batches: u64,
) -> Result<f64, CliError> {
    let bodies: Vec<Value> = (0..100).map(|_| body.clone()).collect();
    for _ in 0..batches {
        raw.send_batch(name, &bodies).await.map_err(other)?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    for _ in 0..batches {
        let got = raw
            .read_batch::<Value>(name, 60, 100)
            .await
            .map_err(other)?;
        let ids: Vec<i64> = got.iter().map(|m| m.msg_id).collect();
        done += raw.archive_batch(name, &ids).await.map_err(other)? as u64;
    }
    Ok(rate(done, start))
}

async fn postgres(report: &mut Report, scale: f64, url: &str) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(10);
    let store = PgStore::connect_with(PgOptions {
        max_connections: POOL,
        ..PgOptions::new(url)
    })
    .await?;
    let raw_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(POOL)
        .connect(url)
        .await
        .map_err(other)?;
    let raw = PGMQueueExt::new_with_pool(raw_pool).await;
    let (hq, rq) = (bench_queue("h")?, bench_queue("r")?);
    store.create(&hq).await?;
    raw.create(rq.as_str()).await.map_err(other)?;
    let body: Value = serde_json::from_slice(&event()?.to_json()).map_err(other)?;

    let (h, r) = paired(
        3,
        || herald_single(&store, &hq, n(1_000.0)),
        || raw_single(&raw, rq.as_str(), &body, n(1_000.0)),
    )
    .await?;
    report.add(Figure::higher(
        "pg_send_single",
        "msgs/s",
        h,
        r,
        "raw pgmq send, one by one",
    ))?;

    let (h, r) = paired(
        3,
        || herald_concurrent(&store, &hq, 64, n(50.0)),
        || raw_concurrent(&raw, rq.as_str(), &body, 64, n(50.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "pg_send_64_tasks",
            "msgs/s",
            h,
            r,
            "raw pgmq send from 64 tasks, same pool size",
        )
        .target(3.0),
    )?;

    let (h, r) = paired(
        3,
        || herald_batch(&store, &hq, n(50.0)),
        || raw_batch(&raw, rq.as_str(), &body, n(50.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "pg_send_batch_100",
            "msgs/s",
            h,
            r,
            "raw pgmq send_batch(100)",
        )
        .target(0.95),
    )?;

    store.purge(&hq).await?;
    raw.purge_queue(rq.as_str()).await.map_err(other)?;
    let (h, r) = paired(
        3,
        || herald_read_archive(&store, &hq, n(30.0)),
        || raw_read_archive(&raw, rq.as_str(), &body, n(30.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "pg_read_100_archive",
            "msgs/s",
            h,
            r,
            "raw pgmq read_batch(100) + archive_batch",
        )
        .target(0.95),
    )?;
    store.drop_queue(&hq).await?;
    raw.drop_queue(rq.as_str()).await.map_err(other)?;
    Ok(())
}

/// The disk's floor: small writes each followed by fdatasync, in the store's directory.
fn fdatasync_floor(dir: &std::path::Path, n: u64) -> Result<f64, CliError> {
    let path = dir.join("fsync-floor.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(other)?;
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&[0u8; 128]).map_err(other)?;
        f.sync_data().map_err(other)?;
    }
    let r = rate(n, start);
    let _ = std::fs::remove_file(&path);
    Ok(r)
}

async fn sqlite(report: &mut Report, scale: f64) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(10);
    let dir = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(other)?;
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
    let q = bench_queue("lite")?;
    store.create(&q).await?;

    let (h, floor) = paired(
        3,
        || herald_single(&store, &q, n(500.0)),
        || async { fdatasync_floor(&dir, n(500.0)) },
    )
    .await?;
    report.add(
        Figure::higher(
            "sqlite_send_single",
            "msgs/s",
            h,
            floor,
            "fdatasync floor (128 B write + fdatasync)",
        )
        .target(0.5),
    )?;

    let (h, floor) = paired(
        3,
        || herald_concurrent(&store, &q, 64, n(40.0)),
        || async { fdatasync_floor(&dir, n(500.0)) },
    )
    .await?;
    report.add(Figure::higher(
        "sqlite_send_64_tasks",
        "msgs/s",
        h,
        floor,
        "fdatasync floor (one commit per message)",
    ))?;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub(crate) async fn run(report: &mut Report, scale: f64, store: &str) -> Result<(), CliError> {
    let url = pg_url(store);
    match postgres(report, scale, &url).await {
        Ok(()) => {}
        Err(e) => {
            crate::output::warn_line!("queue bench: PostgreSQL figures skipped: {e}");
        }
    }
    sqlite(report, scale).await
}
