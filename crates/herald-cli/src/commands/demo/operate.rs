//! The demo's operating part, on an embedded SQLite store of its own: a schedule fires its
//! ticks through a scheduler (each tick once), an order that its handler rejects lands on the
//! queue's dead-letter place, and the operator's replay sends it back with its audit event.

use std::time::Duration;

use herald::dlq::{self, DeadLetterStore, Operator, Selection, AUDIT_STREAM};
use herald::queue::consume::dead_letter;
use herald::queue::{Queue, QueueName};
use herald::schedule::{Missed, ScheduleSpec, ScheduleStore};
use herald::store::{EventStore, StreamName};
use herald::Event;
use herald_schedule::{Cadence, Scheduler, SchedulerConfig};
use herald_sqlite::SqliteStore;
use serde_json::{json, Map};

use super::worker::WorkerSummary;
use crate::CliError;

pub(crate) async fn run(
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<WorkerSummary, CliError> {
    let (dir, url) = super::scratch("operate");
    let outcome = run_in(&url, say).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

fn at(ms: i64) -> String {
    herald::Timestamp::from_unix_ms(ms).map_or_else(String::new, |t| t.to_string())
}

async fn run_in(
    url: &str,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<WorkerSummary, CliError> {
    let store = SqliteStore::open(url).await?;
    let (ticks, next) = schedule(&store, say).await?;
    let (replayed, audits) = replay(&store, say).await?;
    let lines = vec![
        format!(
            "schedule demo-heartbeat (every 500ms): {} tick(s) enqueued on demo_pings, each once; next fire {next}",
            ticks
        ),
        format!(
            "dead letter on demo_orders_dlq (customer 42 not found) replayed to demo_orders: {}; audit events on {AUDIT_STREAM}: {audits}",
            if replayed { "back, body unchanged" } else { "NOT back" }
        ),
    ];
    Ok(WorkerSummary {
        lines,
        detail: Vec::new(),
        ok: ticks >= 1 && replayed && audits == 1,
    })
}

/// A 500 ms schedule and a scheduler run until two ticks are in (or 5 s).
async fn schedule(
    store: &SqliteStore,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<(usize, String), CliError> {
    let spec = ScheduleSpec {
        name: "demo-heartbeat".into(),
        cron: None,
        every_ms: Some(500),
        tz: "UTC".into(),
        queue: "demo_pings".into(),
        subject: "demo.heartbeat".into(),
        data: Map::new(),
        missed: Missed::Skip,
    };
    store
        .add_schedule(&spec, now_ms())
        .await
        .map_err(|e| CliError::Other(herald::report(&e)))?;
    say("schedule demo-heartbeat added: every 500ms to demo_pings".into())?;
    let pings = QueueName::new("demo_pings")?;
    let scheduler = Scheduler::new(store.clone(), SchedulerConfig::default());
    let watched = store.clone();
    let two_ticks = async move {
        for _ in 0..100 {
            if watched.metrics(&pings).await.map_or(0, |m| m.queue_length) >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let report = scheduler.run(two_ticks).await;
    say(format!(
        "  scheduler: {} tick(s) fired, {} taken elsewhere",
        report.fired, report.taken_elsewhere
    ))?;
    let pings = QueueName::new("demo_pings")?;
    let ticks = store.read(&pings, Duration::ZERO, 100).await?;
    let mut seen = std::collections::BTreeSet::new();
    for m in &ticks {
        let tick = m.event()?.metadata["schedule"]["tick"].to_string();
        say(format!("  tick {tick} enqueued as message {}", m.msg_id))?;
        seen.insert(tick);
    }
    let next = Cadence::of(&spec)
        .ok()
        .and_then(|c| c.next_after(now_ms()))
        .map_or_else(String::new, at);
    // Each tick once: as many distinct tick times as messages.
    let once = if seen.len() == ticks.len() {
        ticks.len()
    } else {
        0
    };
    Ok((once, next))
}

/// An order rejected by its handler goes to the dead-letter place; the replay sends the
/// original back and records who did it.
async fn replay(
    store: &SqliteStore,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<(bool, usize), CliError> {
    let orders = QueueName::new("demo_orders")?;
    let place = dlq::place("demo_orders_dlq").map_err(|e| CliError::Other(e.to_string()))?;
    for q in [&orders, &place] {
        store.create(q).await?;
    }
    let order = Event::try_new("demo.order.placed", json!({"order": 7, "customer": 42}))?
        .with_source("demo");
    store.send(&orders, &order, Duration::ZERO).await?;
    let read = store.read(&orders, Duration::from_secs(30), 1).await?;
    let message = read
        .first()
        .ok_or_else(|| CliError::Other("the demo's order was not read back".into()))?;
    // The handler's Reject: the dead letter and the archive of the original, as the
    // consume loop's settle does.
    store
        .send(
            &place,
            &dead_letter(&orders, message, "customer 42 not found"),
            Duration::ZERO,
        )
        .await?;
    store.archive(&orders, &[message.msg_id]).await?;
    let letters = store
        .letters(&place, 0, 10)
        .await
        .map_err(|e| CliError::Other(herald::report(&e)))?;
    for l in &letters {
        say(format!(
            "  dead letter {} on {place}: {} (attempts {})",
            l.id, l.reason, l.attempts
        ))?;
    }
    let operator = Operator {
        who: "demo".into(),
        why: Some("customer 42 created".into()),
    };
    let report = dlq::replay(store, &place, Selection::All, 3, false, &operator)
        .await
        .map_err(|e| CliError::Other(herald::report(&e)))?;
    say(format!(
        "  replayed {} letter(s) to {orders}",
        report.done.len()
    ))?;
    let back = store.read(&orders, Duration::ZERO, 10).await?;
    let replayed = match back.as_slice() {
        [one] => {
            let e = one.event()?;
            e.correlation_id == order.correlation_id && e.data == order.data
        }
        _ => false,
    };
    let audit = store
        .read_stream(&StreamName::new(AUDIT_STREAM)?, 0, 10)
        .await?;
    for e in &audit {
        let event = Event::from_json(&e.body)?.event;
        say(format!(
            "  audit: {} of letter {} by {} ({})",
            event.subject, event.data["id"], event.data["who"], event.data["why"]
        ))?;
    }
    Ok((replayed, audit.len()))
}
