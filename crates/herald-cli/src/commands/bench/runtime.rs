//! `herald bench runtime`: events/s processed end to end (poll, read, the idempotent counts
//! projection, checkpoints) by 1, 2 and 3 nodes on one PostgreSQL, each node a runtime with a
//! pool of its own in this process, beside one raw sqlx loop doing the same reads, upserts and
//! checkpoint writes, in a database made for the run and dropped after. The scaling is
//! reported, not asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::store::{CountProjection, EventStore, StoredEvent, StreamName, WriteCondition};
use herald::BoxError;
use herald_postgres::PgStore;
use herald_runtime::{
    BrokerRole, ConsumerSettings, DistributedEventBroker, DistributedEventBrokerSettings,
    EventConsumerSettings, EventRuntime, EventSubscriptionConsumer, ServiceManager,
};
use sqlx::PgPool;

use super::queue::{event, pg_url};
use super::{rate, Figure, Report};
use crate::CliError;

const SOURCES: usize = 12;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn sources() -> Vec<String> {
    (0..SOURCES).map(|i| format!("rt{i}")).collect()
}

/// A database of the run's own on the server `url` names, and its URL.
async fn fresh_database(url: &str) -> Result<(PgPool, String, String), CliError> {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(other)?;
    let name = format!(
        "herald_bench_rt_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .map_err(other)?;
    let base = url.split('?').next().unwrap_or(url);
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    Ok((admin, name.clone(), format!("{server}/{name}")))
}

/// Until every source's checkpoint under `group` is at `last`.
async fn caught_up(store: &PgStore, group: &str, last: &[(String, i64)]) -> Result<bool, CliError> {
    for (s, end) in last {
        let at = store.checkpoint(group, s).await?.map_or(0, |c| c.0);
        if at < *end {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn nodes(url: &str, n: usize, last: &[(String, i64)], events: u64) -> Result<f64, CliError> {
    let group = format!("bench{n}");
    let names = sources();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut runtimes = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let store = PgStore::connect(url).await?;
        let settings =
            DistributedEventBrokerSettings::fast(BrokerRole::Full, Duration::from_millis(50));
        let id = format!("bench-node-{n}-{i}");
        let broker =
            Arc::new(DistributedEventBroker::new(&id, store.clone(), settings).map_err(other)?);
        let mut rt = EventRuntime::new(
            &id,
            broker,
            ServiceManager::new(),
            Some(EventConsumerSettings {
                poll_interval: Duration::from_millis(10),
                ..EventConsumerSettings::default()
            }),
        );
        let (s, g) = (store.clone(), group.clone());
        let consumer = EventSubscriptionConsumer::new(
            store.clone(),
            &group,
            &refs,
            move |e: StoredEvent| {
                let (s, g) = (s.clone(), g.clone());
                async move {
                    s.count_event(&g, e.category(), e.global_position).await?;
                    Ok::<(), BoxError>(())
                }
            },
            ConsumerSettings::default(),
        )
        .map_err(other)?;
        rt.register_subscription_consumer(Arc::new(consumer), None)
            .map_err(other)?;
        rt.start().map_err(other)?;
        runtimes.push((rt, store));
    }
    let watcher = PgStore::connect(url).await?;
    while !caught_up(&watcher, &group, last).await? {
        if start.elapsed() > Duration::from_secs(300) {
            return Err(CliError::Other(format!(
                "bench runtime: {n} node(s) did not catch up in 300 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = rate(events, start);
    for (mut rt, _) in runtimes {
        rt.stop(Duration::from_secs(10)).await;
    }
    Ok(r)
}

/// The same work with sqlx alone, one process: page through each category, upsert the count
/// per event, write the checkpoint per page.
async fn raw(pool: &PgPool, events: u64) -> Result<f64, CliError> {
    let start = Instant::now();
    for s in sources() {
        let mut from = 0i64;
        loop {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT global_position, body::text FROM herald.events WHERE category = $1 AND global_position >= $2 ORDER BY global_position LIMIT 100",
            )
            .bind(&s)
            .bind(from)
            .fetch_all(pool)
            .await
            .map_err(other)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            for (pos, _) in &rows {
                sqlx::query(
                    "INSERT INTO herald.counts AS c (projection, category, count, last_position) VALUES ('raw', $1, 1, $2)
                     ON CONFLICT (projection, category) DO UPDATE SET count = c.count + 1, last_position = EXCLUDED.last_position
                     WHERE c.last_position < EXCLUDED.last_position",
                )
                .bind(&s)
                .bind(pos)
                .execute(pool)
                .await
                .map_err(other)?;
            }
            sqlx::query(
                "INSERT INTO herald.checkpoints (consumer, source, position, epoch) VALUES ('raw', $1, $2, 1)
                 ON CONFLICT (consumer, source) DO UPDATE SET position = EXCLUDED.position",
            )
            .bind(&s)
            .bind(last)
            .execute(pool)
            .await
            .map_err(other)?;
            from = last + 1;
        }
    }
    Ok(rate(events, start))
}

pub(crate) async fn run(report: &mut Report, scale: f64, store: &str) -> Result<(), CliError> {
    let url = pg_url(store);
    let (admin, name, db) = fresh_database(&url).await?;
    let outcome = measure(report, scale, &db).await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    outcome?;
    dropped.map_err(other)?;
    Ok(())
}

async fn measure(report: &mut Report, scale: f64, db: &str) -> Result<(), CliError> {
    let store = PgStore::connect(db).await?;
    let per_source = ((500.0 * scale) as usize).max(20);
    let batch: Vec<herald::Event> = (0..100).map(|_| event()).collect::<Result<_, _>>()?;
    let mut last = Vec::new();
    for s in sources() {
        let mut left = per_source;
        let mut end = 0;
        let mut i = 0;
        while left > 0 {
            let take = left.min(batch.len());
            let stream = StreamName::new(&format!("{s}-{}", i % 4))?;
            end = store
                .append(&stream, &batch[..take], WriteCondition::Any)
                .await?
                .global_position;
            left -= take;
            i += 1;
        }
        last.push((s, end));
    }
    let events = (per_source * SOURCES) as u64;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(db)
        .await
        .map_err(other)?;
    let baseline = raw(&pool, events).await?;
    let mut one = 0.0;
    for n in 1..=3 {
        let r = nodes(db, n, &last, events).await?;
        if n == 1 {
            one = r;
        }
        report.add(Figure::higher(
            &format!("runtime_pg_{n}_node{}", if n == 1 { "" } else { "s" }),
            "events/s",
            r,
            baseline,
            &format!(
                "raw sqlx read+upsert+checkpoint loop, 1 process (scaling vs 1 node: {:.2}x)",
                r / one.max(1e-9)
            ),
        ))?;
    }
    Ok(())
}
