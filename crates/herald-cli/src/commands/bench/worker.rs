//! `herald bench worker`: steps per second end to end (queue -> no-op handler -> result
//! committed -> step archived) beside the bare queue doing the same work by hand (read, send
//! the result, archive the step; two commits, no guard, no bus), same concurrency, same store.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

const CONCURRENCY: usize = 10;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

async fn enqueue<Q: Queue>(store: &Q, queue: &QueueName, n: u64) -> Result<(), CliError> {
    let mut batch = Vec::new();
    for _ in 0..n {
        batch.push(step_event(&FfiStepEvent::new("demo.noop", Map::new())));
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

async fn herald_worker<Q: Queue>(store: &Q, n: u64) -> Result<f64, CliError> {
    worker_run(store, n, false).await
}

async fn worker_run<Q: Queue>(store: &Q, n: u64, observed: bool) -> Result<f64, CliError> {
    let namespace = bench_queue("w")?.to_string();
    let queues = StepQueues::of(&namespace)?;
    store.create(&queues.steps).await?;
    enqueue(store, &queues.steps, n).await?;
    let bus = Bus::new();
    let config = WorkerConfig {
        namespace: namespace.clone(),
        poll_wait: Duration::from_millis(50),
        max_concurrent_handlers: CONCURRENCY,
        batch_size: CONCURRENCY,
        ..WorkerConfig::default()
    };
    let mut worker = Worker::new(store.clone(), bus.clone(), registry(None), config).await?;
    let stop = Shutdown::new();
    let trigger = stop.clone();
    let progress = worker.progress();
    let scraper = observed.then(|| scrape(progress.clone(), stop.clone()));
    let start = Instant::now();
    let watcher = tokio::spawn(async move {
        while progress.report().succeeded < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.trigger();
    });
    let report = worker.run(stop.cancelled_owned()).await;
    let r = rate(report.succeeded, start);
    watcher.abort();
    if let Some(s) = scraper {
        let _ = s.await;
    }
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        store.drop_queue(q).await?;
    }
    Ok(r)
}

async fn bare_queue<Q: Queue>(store: &Q, n: u64) -> Result<f64, CliError> {
    let (steps, results) = (bench_queue("bs")?, bench_queue("br")?);
    store.create(&steps).await?;
    store.create(&results).await?;
    enqueue(store, &steps, n).await?;
    let result = Arc::new(event()?);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (store, steps, results, result) = (
            store.clone(),
            steps.clone(),
            results.clone(),
            result.clone(),
        );
        tasks.spawn(async move {
            let mut done = 0u64;
            loop {
                let got = store
                    .read(&steps, Duration::from_secs(60), CONCURRENCY)
                    .await?;
                if got.is_empty() {
                    return Ok::<u64, herald::queue::QueueError>(done);
                }
                for m in got {
                    store.send(&results, &result, Duration::ZERO).await?;
                    store.archive(&steps, &[m.msg_id]).await?;
                    done += 1;
                }
            }
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        done += r.map_err(other)??;
    }
    let r = rate(done, start);
    store.drop_queue(&steps).await?;
    store.drop_queue(&results).await?;
    Ok(r)
}

async fn figure<Q: Queue>(
    report: &mut Report,
    store: &Q,
    n: u64,
    name: &str,
) -> Result<(), CliError> {
    let (h, b) = paired(3, || herald_worker(store, n), || bare_queue(store, n)).await?;
    report.add(Figure::higher(
        name,
        "steps/s",
        h,
        b,
        "bare queue: read + send result + archive (2 commits, no guard)",
    ))
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
    figure(report, &lite, n, "worker_steps_sqlite").await?;
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
    let _ = std::fs::remove_dir_all(&dir);
    match PgStore::connect(&pg_url(store)).await {
        Ok(pg) => figure(report, &pg, n, "worker_steps_postgres").await?,
        Err(e) => crate::output::warn_line!("worker bench: PostgreSQL figure skipped: {e}"),
    }
    Ok(())
}
