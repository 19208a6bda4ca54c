//! `herald bench worker`: steps per second end to end (queue -> no-op handler -> result
//! committed -> step archived) at 1, 16 and 64 handlers, each beside the strongest plain loop
//! doing the same work on the same store: read a batch of C steps, send the C results in one
//! batch and archive the C steps, one transaction per batch (the raw `pgmq` crate on
//! PostgreSQL, plain rusqlite with WAL and `synchronous = FULL` on SQLite); and the worker
//! under a keyed concurrency limit beside the same keyed steps without one.

use std::time::{Duration, Instant};

use herald::queue::flow::{FlowControl, Policy};
use herald::queue::{Queue, QueueName};
use herald::{Bus, Shutdown};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_worker::{step_event, FfiStepEvent, StepQueues, Worker, WorkerConfig};
use serde_json::Map;

use super::queue::{bench_queue, event, pg_url};
use super::{paired, rate, Figure, Report};
use crate::commands::worker::registry;
use crate::CliError;

/// The handler counts measured.
const LEVELS: [usize; 3] = [1, 16, 64];

/// The handlers of the observed-or-not figure.
const CONCURRENCY: usize = 10;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// Keys the keyed figures spread their steps over.
const KEYS: u64 = 100;

/// Enqueues `n` no-op steps; with `keyed`, each has a `customer_id` of [`KEYS`].
async fn enqueue<Q: Queue>(
    store: &Q,
    queue: &QueueName,
    n: u64,
    keyed: bool,
) -> Result<(), CliError> {
    let mut batch = Vec::new();
    for i in 0..n {
        let mut input = Map::new();
        if keyed {
            input.insert("customer_id".into(), format!("c{}", i % KEYS).into());
        }
        batch.push(step_event(&FfiStepEvent::new("demo.noop", input)));
        if batch.len() == 500 {
            store.send_batch(queue, &batch, Duration::ZERO).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.send_batch(queue, &batch, Duration::ZERO).await?;
    }
    Ok(())
}

/// A scraper reading what `/metrics.json` serves every 50 ms while the worker runs.
fn scrape(
    progress: herald_worker::Progress,
    stop: herald::Shutdown,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut scrapes = 0u64;
        while !stop.is_triggered() {
            let m = progress.metrics("bench", started, CONCURRENCY, None);
            scrapes += serde_json::to_vec(&m).map_or(0, |v| u64::from(!v.is_empty()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        scrapes
    })
}

pub(crate) async fn worker_run<Q: Queue + FlowControl>(
    store: &Q,
    n: u64,
    observed: bool,
) -> Result<f64, CliError> {
    worker_at(store, n, 0, observed, CONCURRENCY, Steps::Plain).await
}

/// What a worker run's steps are.
#[derive(Clone, Copy)]
enum Steps<'a> {
    /// No key, no policy.
    Plain,
    /// Keyed over [`KEYS`] customers, no policy.
    Keyed,
    /// Keyed, and the step queue has this policy.
    Limited(&'a Policy),
}

/// The worker at `concurrency` handlers over `n` steps, timed after `warm` steps more.
async fn worker_at<Q: Queue + FlowControl>(
    store: &Q,
    n: u64,
    warm: u64,
    observed: bool,
    concurrency: usize,
    steps: Steps<'_>,
) -> Result<f64, CliError> {
    let namespace = bench_queue("w")?.to_string();
    let queues = StepQueues::of(&namespace)?;
    store.create(&queues.steps).await?;
    enqueue(
        store,
        &queues.steps,
        warm + n,
        !matches!(steps, Steps::Plain),
    )
    .await?;
    if let Steps::Limited(policy) = steps {
        store.set_policy(&queues.steps, policy).await?;
    }
    let bus = Bus::new();
    let config = WorkerConfig {
        namespace: namespace.clone(),
        poll_wait: Duration::from_millis(50),
        max_concurrent_handlers: concurrency,
        batch_size: concurrency,
        ..WorkerConfig::default()
    };
    let mut worker = Worker::new(store.clone(), bus.clone(), registry(None), config).await?;
    let stop = Shutdown::new();
    let trigger = stop.clone();
    let progress = worker.progress();
    let scraper = observed.then(|| scrape(progress.clone(), stop.clone()));
    let start = Instant::now();
    let watcher = tokio::spawn(async move {
        let mut began = (warm == 0).then_some(start);
        loop {
            let done = progress.report().succeeded;
            if began.is_none() && done >= warm {
                began = Some(Instant::now());
            }
            if done >= warm + n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.trigger();
        began
    });
    let report = worker.run(stop.cancelled_owned()).await;
    let began = watcher.await.ok().flatten().unwrap_or(start);
    let r = rate(report.succeeded.saturating_sub(warm), began);
    if let Some(s) = scraper {
        let _ = s.await;
    }
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        store.drop_queue(q).await?;
    }
    Ok(r)
}

/// The raw `pgmq` crate: read a batch of `c` steps, send the `c` results in one batch and
/// archive the `c` steps, in one transaction per batch.
async fn raw_pgmq(url: &str, n: u64, c: usize) -> Result<f64, CliError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .map_err(other)?;
    let raw = pgmq::PGMQueueExt::new_with_pool(pool.clone()).await;
    let (steps, results) = (bench_queue("rs")?, bench_queue("rr")?);
    raw.create(steps.as_str()).await.map_err(other)?;
    raw.create(results.as_str()).await.map_err(other)?;
    let body: serde_json::Value =
        serde_json::from_slice(&step_event(&FfiStepEvent::new("demo.noop", Map::new())).to_json())
            .map_err(other)?;
    let bodies: Vec<serde_json::Value> = (0..500).map(|_| body.clone()).collect();
    let mut left = n;
    while left > 0 {
        let k = usize::try_from(left.min(500)).unwrap_or(500);
        raw.send_batch(steps.as_str(), &bodies[..k])
            .await
            .map_err(other)?;
        left -= k as u64;
    }
    let result: serde_json::Value = serde_json::from_slice(&event()?.to_json()).map_err(other)?;
    let c32 = i32::try_from(c).unwrap_or(i32::MAX);
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        let mut tx = pool.begin().await.map_err(other)?;
        let got = raw
            .read_batch_with_cxn::<_, serde_json::Value>(steps.as_str(), 60, c32, &mut *tx)
            .await
            .map_err(other)?;
        if got.is_empty() {
            tx.commit().await.map_err(other)?;
            break;
        }
        let outs: Vec<&serde_json::Value> = got.iter().map(|_| &result).collect();
        raw.send_batch_with_cxn(results.as_str(), &outs, &mut *tx)
            .await
            .map_err(other)?;
        let ids: Vec<i64> = got.iter().map(|m| m.msg_id).collect();
        done += raw
            .archive_batch_with_cxn(steps.as_str(), &ids, &mut *tx)
            .await
            .map_err(other)? as u64;
        tx.commit().await.map_err(other)?;
    }
    let r = rate(done, start);
    raw.drop_queue(steps.as_str()).await.map_err(other)?;
    raw.drop_queue(results.as_str()).await.map_err(other)?;
    Ok(r)
}

/// Plain rusqlite, WAL and `synchronous = FULL` as Herald's SQLite store: the same work on
/// three tables (live steps, their archive, results), one transaction per batch of `c`.
async fn raw_sqlite(dir: &std::path::Path, n: u64, c: usize) -> Result<f64, CliError> {
    std::fs::create_dir_all(dir).map_err(other)?;
    let path = dir.join(format!("raw-{}.db", bench_queue("f")?));
    let body =
        String::from_utf8_lossy(&step_event(&FfiStepEvent::new("demo.noop", Map::new())).to_json())
            .into_owned();
    let result = String::from_utf8_lossy(&event()?.to_json()).into_owned();
    tokio::task::spawn_blocking(move || -> Result<f64, CliError> {
        let mut db = rusqlite::Connection::open(&path).map_err(other)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE q (msg_id INTEGER PRIMARY KEY, read_ct INTEGER NOT NULL, vt INTEGER NOT NULL, message TEXT NOT NULL);
             CREATE INDEX q_vt ON q (vt);
             CREATE TABLE a (msg_id INTEGER PRIMARY KEY, read_ct INTEGER NOT NULL, vt INTEGER NOT NULL, message TEXT NOT NULL);
             CREATE TABLE r (msg_id INTEGER PRIMARY KEY, message TEXT NOT NULL);",
        )
        .map_err(other)?;
        {
            let tx = db.transaction().map_err(other)?;
            {
                let mut put = tx
                    .prepare("INSERT INTO q (read_ct, vt, message) VALUES (0, 0, ?1)")
                    .map_err(other)?;
                for _ in 0..n {
                    put.execute([&body]).map_err(other)?;
                }
            }
            tx.commit().map_err(other)?;
        }
        let start = Instant::now();
        let mut done = 0u64;
        loop {
            let tx = db.transaction().map_err(other)?;
            let now = i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX);
            let ids: Vec<i64> = {
                let mut read = tx
                    .prepare_cached(
                        "UPDATE q SET read_ct = read_ct + 1, vt = ?1 + 60000
                         WHERE msg_id IN (SELECT msg_id FROM q WHERE vt <= ?1 ORDER BY msg_id LIMIT ?2)
                         RETURNING msg_id",
                    )
                    .map_err(other)?;
                let rows = read
                    .query_map(
                        rusqlite::params![now, i64::try_from(c).unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )
                    .map_err(other)?;
                rows.collect::<Result<_, _>>().map_err(other)?
            };
            if ids.is_empty() {
                tx.commit().map_err(other)?;
                break;
            }
            {
                let mut res = tx
                    .prepare_cached("INSERT INTO r (message) VALUES (?1)")
                    .map_err(other)?;
                let mut arch = tx
                    .prepare_cached("INSERT INTO a SELECT * FROM q WHERE msg_id = ?1")
                    .map_err(other)?;
                let mut del = tx
                    .prepare_cached("DELETE FROM q WHERE msg_id = ?1")
                    .map_err(other)?;
                for id in &ids {
                    res.execute([&result]).map_err(other)?;
                    arch.execute([id]).map_err(other)?;
                    del.execute([id]).map_err(other)?;
                }
            }
            tx.commit().map_err(other)?;
            done += ids.len() as u64;
        }
        let r = rate(done, start);
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        Ok(r)
    })
    .await
    .map_err(other)?
}

/// Herald's worker at 1, 16 and 64 handlers beside `baseline` at the same batch size, and
/// 64 handlers beside 16 (no anti-scaling).
async fn levels<Q, B, BFut>(
    report: &mut Report,
    store: &Q,
    n: u64,
    backend: &str,
    what: &str,
    baseline: B,
) -> Result<(), CliError>
where
    Q: Queue + FlowControl,
    B: Fn(usize) -> BFut,
    BFut: std::future::Future<Output = Result<f64, CliError>>,
{
    let mut at = Vec::new();
    for c in LEVELS {
        let (h, b) = paired(
            3,
            || worker_at(store, n, 0, false, c, Steps::Plain),
            || baseline(c),
        )
        .await?;
        report.add(
            Figure::higher(
                &format!("worker_steps_{backend}_c{c}"),
                "steps/s",
                h,
                b,
                &format!("{what}, batches of {c}, one transaction each"),
            )
            .target(if c == 1 { 1.0 } else { 0.9 }),
        )?;
        at.push(h);
    }
    report.add(
        Figure::higher(
            &format!("worker_scaling_{backend}_c64_vs_c16"),
            "steps/s",
            at[2],
            at[1],
            "the same worker at 16 handlers",
        )
        .target(0.95),
    )?;
    // Flow control: a keyed concurrency limit (2 per key over 100 keys) beside the same keyed
    // steps with no policy, at 16 handlers.
    let policy = Policy {
        key: Some("$.customer_id".parse()?),
        concurrency: Some(2),
        ..Policy::default()
    };
    // Five pairs of three times the steps, not three pairs: on two shared cores a run of
    // 2,000 steps (0.2 s) swings by 10-15%. Both sides time their steps after a warm-up of a
    // tenth as many more: the figure compares steady states, and the first call of a queue's
    // flow read function on a connection plans it (5-10 ms, once per connection for the
    // queue's life; a bench queue lives a second).
    let (n, warm) = (3 * n, 3 * n / 10);
    let (limited, free) = paired(
        5,
        || worker_at(store, n, warm, false, 16, Steps::Limited(&policy)),
        || worker_at(store, n, warm, false, 16, Steps::Keyed),
    )
    .await?;
    report.add(
        Figure::higher(
            &format!("worker_keyed_limit_{backend}_vs_unlimited"),
            "steps/s",
            limited,
            free,
            "the same keyed steps (100 keys) with no policy, 16 handlers",
        )
        .target(0.8),
    )?;
    Ok(())
}

/// Publish-and-wait on the bus, with or without a scraper reading its statistics and
/// history every 10 ms (what the observability endpoints do).
async fn bus_publish(n: u64, observed: bool) -> Result<f64, CliError> {
    let bus = Bus::new();
    let _a = bus.subscribe("bench.>", herald::sync_handler(|_: &herald::Event| {}))?;
    let _b = bus.subscribe(
        "bench.*",
        herald::handler_fn(|_: std::sync::Arc<herald::Event>| async {}),
    )?;
    let stop = herald::Shutdown::new();
    let scraper = observed.then(|| {
        let (bus, stop) = (bus.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_triggered() {
                let s = bus.stats();
                let h = bus.history(Some(20));
                std::hint::black_box((s, h));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    let e = event()?;
    let start = Instant::now();
    for _ in 0..n {
        bus.publish(e.clone()).await?;
    }
    let r = rate(n, start);
    stop.trigger();
    if let Some(s) = scraper {
        let _ = s.await;
    }
    Ok(r)
}

pub(crate) async fn run(report: &mut Report, scale: f64, store: &str) -> Result<(), CliError> {
    let n = ((2_000.0 * scale) as u64).max(50);
    let dir = std::env::temp_dir().join(format!("herald-bench-w-{}", std::process::id()));
    let lite = SqliteStore::open(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
    levels(
        report,
        &lite,
        n,
        "sqlite",
        "plain rusqlite (WAL, FULL): read, send results, archive",
        |c| raw_sqlite(&dir, n, c),
    )
    .await?;
    let (on, off) = paired(
        3,
        || worker_run(&lite, n, true),
        || worker_run(&lite, n, false),
    )
    .await?;
    report.add(
        Figure::higher(
            "worker_steps_observed_vs_not",
            "steps/s",
            on,
            off,
            "the same worker with nothing reading its metrics",
        )
        .target(0.95),
    )?;
    let m = ((200_000.0 * scale) as u64).max(1000);
    let (on, off) = paired(5, || bus_publish(m, true), || bus_publish(m, false)).await?;
    report.add(
        Figure::higher(
            "publish_wait_observed_vs_not",
            "events/s",
            on,
            off,
            "the same bus with nothing reading its stats and history",
        )
        .target(0.95),
    )?;
    drop(lite);
    let url = pg_url(store);
    match PgStore::connect(&url).await {
        Ok(pg) => {
            levels(
                report,
                &pg,
                n,
                "postgres",
                "the raw pgmq crate: read_batch, send_batch, archive_batch",
                |c| raw_pgmq(&url, n, c),
            )
            .await?;
        }
        Err(e) => crate::output::warn_line!("worker bench: PostgreSQL figure skipped: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
