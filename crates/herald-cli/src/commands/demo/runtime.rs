//! The demo's processing-runtime part, on the embedded SQLite store in a directory of its own
//! (no server, no network): events appended to two categories, one of them poisoned; an
//! `EventRuntime` on a one-node `DistributedEventBroker` runs two subscription consumers with
//! checkpoints; the poison event is skipped by the continue handler and dead-lettered.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::store::{
    BrokerStore, CountProjection, EventStore, StoredEvent, StreamName, WriteCondition,
};
use herald::{BoxError, Event, Subject};
use herald_runtime::{
    BrokerRole, ConsumerSettings, DistributedEventBroker, DistributedEventBrokerSettings,
    EventConsumerSettings, EventRuntime, EventSubscriptionConsumer, ServiceManager,
    DEAD_LETTER_CATEGORY,
};
use herald_sqlite::SqliteStore;
use serde_json::json;

use crate::commands::demo::worker::WorkerSummary;
use crate::CliError;

const ORDERS: i64 = 24;
const USERS: i64 = 6;

pub(crate) async fn run(
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<WorkerSummary, CliError> {
    let (dir, url) = super::scratch("runtime");
    let outcome = run_in(&url, say).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

async fn run_in(
    url: &str,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<WorkerSummary, CliError> {
    let store = SqliteStore::open(url).await?;
    append_events(&store, say).await?;

    let settings =
        DistributedEventBrokerSettings::fast(BrokerRole::Full, Duration::from_millis(50));
    let broker =
        Arc::new(DistributedEventBroker::new("demo-node", store.clone(), settings).map_err(other)?);
    let defaults = EventConsumerSettings {
        poll_interval: Duration::from_millis(20),
        ..EventConsumerSettings::default()
    };
    let mut runtime = EventRuntime::new(
        "demo-node",
        broker.clone(),
        ServiceManager::new(),
        Some(defaults),
    );

    let total = Arc::new(AtomicI64::new(0));
    let totals = totals_consumer(&store, total.clone())?;
    let audit = audit_consumer(&store)?;
    runtime
        .register_subscription_consumer(Arc::new(totals), None)
        .map_err(other)?;
    runtime
        .register_subscription_consumer(Arc::new(audit), None)
        .map_err(other)?;
    runtime.start().map_err(other)?;
    let done = caught_up(&store).await?;
    let report = runtime.stop(Duration::from_secs(5)).await;
    let letters = store.read_category(DEAD_LETTER_CATEGORY, 0, 100).await?;
    let reasons = reasons(&letters);
    let counts = store.counts("audit").await?;
    let snap = store.snapshot(Duration::from_secs(60)).await?;
    let expected_total: i64 = (0..ORDERS).filter(|i| *i != 7).map(|i| 10 + i).sum();
    let mut lines = vec![
        format!(
            "runtime: node demo-node (full) lease epoch {}, {} allocations; order-totals summed {} (expected {expected_total}); audit counted {}",
            snap.lease.as_ref().map_or(0, |l| l.epoch),
            snap.allocations.len(),
            total.load(Ordering::Relaxed),
            counts.iter().map(|(c, n, _)| format!("{c}={n}")).collect::<Vec<_>>().join(" "),
        ),
        format!(
            "runtime: checkpoints order-totals/order {}, audit/order {}, audit/user {}; dead letters {}: {}",
            store.checkpoint("order-totals", "order").await?.map_or(0, |c| c.0),
            store.checkpoint("audit", "order").await?.map_or(0, |c| c.0),
            store.checkpoint("audit", "user").await?.map_or(0, |c| c.0),
            letters.len(),
            reasons.join("; ")
        ),
    ];
    if !report.abandoned.is_empty() {
        lines.push(format!(
            "runtime: services abandoned at stop: {}",
            report.abandoned.join(", ")
        ));
    }
    let counted: i64 = counts.iter().map(|c| c.1).sum();
    let ok = done
        && letters.len() == 1
        && total.load(Ordering::Relaxed) == expected_total
        && counted == ORDERS + USERS
        && report.abandoned.is_empty();
    Ok(WorkerSummary {
        lines,
        detail: Vec::new(),
        ok,
    })
}

/// The demo's events: orders over four streams (one with a poisoned amount) and users.
async fn append_events(
    store: &SqliteStore,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<(), CliError> {
    for i in 0..ORDERS {
        let stream = StreamName::new(&format!("order-{}", i % 4))?;
        let mut e = Event::new(Subject::new("order.placed")?).with_data(
            json!({"amount": 10 + i})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        if i == 7 {
            e = Event::new(Subject::new("order.placed")?).with_data(
                json!({"amount": "lots"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        store.append(&stream, &[e], WriteCondition::Any).await?;
    }
    for i in 0..USERS {
        let stream = StreamName::new(&format!("user-{i}"))?;
        store
            .append(
                &stream,
                &[Event::new(Subject::new("user.joined")?)],
                WriteCondition::NoStream,
            )
            .await?;
    }
    say(format!(
        "runtime: appended {} events to order-* and user-* (one order carries a poisoned amount)",
        ORDERS + USERS
    ))?;
    Ok(())
}

/// Consumer 1: sums order amounts into `total`; a non-numeric amount is an error.
fn totals_consumer(
    store: &SqliteStore,
    total: Arc<AtomicI64>,
) -> Result<EventSubscriptionConsumer<SqliteStore>, CliError> {
    let t = total;
    EventSubscriptionConsumer::new(
        store.clone(),
        "order-totals",
        &["order"],
        move |e: StoredEvent| {
            let t = t.clone();
            async move {
                let ev = e.event()?;
                let amount = ev
                    .data
                    .get("amount")
                    .and_then(serde_json::Value::as_i64)
                    .ok_or_else(|| -> BoxError {
                        format!("amount is not a number in {}@{}", e.stream, e.position).into()
                    })?;
                t.fetch_add(amount, Ordering::Relaxed);
                Ok::<(), BoxError>(())
            }
        },
        ConsumerSettings {
            checkpoint_every: 5,
            ..ConsumerSettings::default()
        },
    )
    .map_err(other)
}

/// Consumer 2: the idempotent per-category counts projection over both categories.
fn audit_consumer(store: &SqliteStore) -> Result<EventSubscriptionConsumer<SqliteStore>, CliError> {
    let seen = Arc::new(AtomicU64::new(0));
    let (s2, c2) = (store.clone(), seen.clone());
    EventSubscriptionConsumer::new(
        store.clone(),
        "audit",
        &["order", "user"],
        move |e: StoredEvent| {
            let (s2, c2) = (s2.clone(), c2.clone());
            async move {
                s2.count_event("audit", e.category(), e.global_position)
                    .await?;
                c2.fetch_add(1, Ordering::Relaxed);
                Ok::<(), BoxError>(())
            }
        },
        ConsumerSettings::default(),
    )
    .map_err(other)
}

/// Waits (up to 20 s) until every consumer's checkpoint reaches the last event of its
/// source; whether they did.
async fn caught_up(store: &SqliteStore) -> Result<bool, CliError> {
    let last_order = store
        .read_category("order", 0, 1000)
        .await?
        .last()
        .map_or(0, |e| e.global_position);
    let last_user = store
        .read_category("user", 0, 1000)
        .await?
        .last()
        .map_or(0, |e| e.global_position);
    let started = Instant::now();
    let done = loop {
        let cp = |c: &str, s: &str| {
            let store = store.clone();
            let (c, s) = (c.to_owned(), s.to_owned());
            async move {
                store
                    .checkpoint(&c, &s)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |(p, _)| p)
            }
        };
        if cp("order-totals", "order").await >= last_order
            && cp("audit", "order").await >= last_order
            && cp("audit", "user").await >= last_user
        {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(done)
}

/// The reason of each dead letter.
fn reasons(letters: &[StoredEvent]) -> Vec<String> {
    letters
        .iter()
        .filter_map(|l| l.event().ok())
        .filter_map(|e| {
            e.metadata
                .get("dead_letter")
                .and_then(|d| d["reason"].as_str())
                .map(str::to_owned)
        })
        .collect()
}
