//! The demo's worker part, on the embedded SQLite store in a directory of its own (no server,
//! no network): steps enqueued, run by the demo handlers (one that fails then succeeds on
//! retry, one unknown, one that panics until its retries run out), one result per step, and
//! dead letters with their reasons; the summing steps declare a domain event that goes out
//! on both paths once their result is stored, and the poller echoes the fast copies.

use std::sync::Arc;
use std::time::Duration;

use herald::queue::Queue;
use herald::{sync_handler, Bus, Event, Shutdown};
use herald_sqlite::SqliteStore;
use herald_worker::events::{
    DomainEventPublisher, InProcessDomainEventPoller, DOMAIN_EVENT_RECEIVED,
};
use herald_worker::{
    enqueue_step, FfiStepEvent, StepExecutionResult, StepQueues, Worker, WorkerConfig,
    WorkerSettings,
};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::commands::worker::{progress_line, registry};
use crate::CliError;

/// What the worker part did, for the summary.
pub(crate) struct WorkerSummary {
    /// The summary's lines.
    pub(crate) lines: Vec<String>,
    /// Lines shown without `--quiet` only (the health and metrics JSON).
    pub(crate) detail: Vec<String>,
    pub(crate) ok: bool,
}

fn numbers(ns: &[i64]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("numbers".into(), json!(ns));
    m
}

pub(crate) async fn run(
    bus: &Bus,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<WorkerSummary, CliError> {
    let (dir, url) = super::scratch("worker");
    let outcome = run_in(bus, &url, say).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn run_in(
    bus: &Bus,
    url: &str,
    say: &dyn Fn(String) -> Result<(), CliError>,
) -> Result<WorkerSummary, CliError> {
    let store = SqliteStore::open(url).await?;
    // Domain events: durable on the store, fast in-process, echoed on the bus by the poller.
    let events =
        Arc::new(DomainEventPublisher::new(store.clone(), "demo", "demo-worker", 1024).await?);
    let mut poller = InProcessDomainEventPoller::new(bus.clone(), events.poll_handle(), 10);
    let echoed: Arc<Mutex<Vec<String>>> = Default::default();
    let echo = echoed.clone();
    let _echo = bus.subscribe(
        DOMAIN_EVENT_RECEIVED,
        sync_handler(move |e: &Event| {
            echo.lock().push(format!(
                "  domain event (fast, via the poller): {} {}",
                e.data["event_type"].as_str().unwrap_or("?"),
                e.data["payload"]
            ))
        }),
    )?;
    poller.start().map_err(|e| CliError::Other(e.to_string()))?;
    let config = WorkerConfig {
        domain_events: Some(events.clone()),
        retry_backoff: Duration::from_millis(100),
        ..settings().to_config()
    };
    let completed: Arc<Mutex<Vec<String>>> = Default::default();
    let _watch = watch_completions(bus, completed.clone())?;
    let mut worker = Worker::new(
        store.clone(),
        bus.clone(),
        registry(Some(bus.clone())),
        config,
    )
    .await?;
    let queues = worker.queues().clone();
    enqueue_plan(&store, &queues).await?;
    let steps = 8;
    say(format!(
        "worker: {steps} steps and 1 malformed message enqueued on {url}"
    ))?;
    let stop = Shutdown::new();
    let watcher = stop_when_settled(&store, &queues, stop.clone());
    let progress = worker.progress();
    let started = std::time::Instant::now();
    let report = worker.run(stop.cancelled_owned()).await;
    let _ = watcher.await;
    // The fast path is best effort: give the poller a moment to echo what is waiting.
    for _ in 0..100 {
        if echoed.lock().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    poller
        .stop(Duration::from_secs(5))
        .map_err(|e| CliError::Other(e.to_string()))?;
    for line in echoed.lock().drain(..) {
        say(line)?;
    }
    for line in completed.lock().drain(..) {
        say(line)?;
    }
    let results = store
        .read(&queues.results, Duration::from_secs(60), 100)
        .await?;
    let dead = store
        .read(&queues.dead_letters, Duration::from_secs(60), 100)
        .await?;
    let reasons = reasons(&dead);
    let mut lines = vec![
        format!(
            "worker (embedded SQLite): {} steps, {} results stored (one per step), {}",
            steps,
            results.len(),
            progress_line(&report)
        ),
        format!("dead letters {}: {}", dead.len(), reasons.join(" | ")),
        format!(
            "domain events: published {} (durable on {}: {}), dropped on the fast path {}, echoed by the poller {}",
            events.published(),
            events.queue(),
            store.metrics(events.queue()).await?.queue_length,
            events.dropped(),
            poller.emitted()
        ),
    ];
    // `--trace`: one step's hops as OpenTelemetry saw them.
    if let Some(tree) = crate::telemetry::collector()
        .and_then(|c| c.busiest_tree(&format!("process {}", queues.steps)))
    {
        say(format!(
            "the span tree of one step (herald demo --trace):\n{}",
            tree.trim_end()
        ))?;
    } else if crate::telemetry::collector().is_some() && !herald::hop::TRACED {
        say("no span tree: this herald was built with its trace hooks compiled out (--cfg herald_untraced)".into())?;
    }
    let detail = observe_lines(&store, &queues, bus, progress, &events, started, &mut lines).await;
    let ok = results.len() == steps
        && dead.len() == 2
        && report.succeeded == 6
        && report.domain_events_published == 3;
    Ok(WorkerSummary { lines, detail, ok })
}

/// Collects the bus's `step.completion.sent` announcements as lines.
fn watch_completions(
    bus: &Bus,
    completed: Arc<Mutex<Vec<String>>>,
) -> Result<herald::Subscription, CliError> {
    Ok(bus.subscribe(
        "step.completion.sent",
        sync_handler(move |e: &Event| {
            let r: Result<StepExecutionResult, _> =
                serde_json::from_value(Value::Object(e.data.clone()));
            if let Ok(r) = r {
                let how = match &r.error {
                    None => format!("success {}", Value::Object(r.output.clone())),
                    Some(err) => format!("failure {}: {}", err.error_type, err.message),
                };
                let id = r.step_uuid.simple().to_string();
                completed
                    .lock()
                    .push(format!("  step …{} -> {how}", &id[id.len() - 8..]));
            }
        }),
    )?)
}

/// The demo's eight steps (sums, a no-op, two flaky ones, an unknown handler, one that
/// panics) and one message that is not a step.
async fn enqueue_plan(store: &SqliteStore, queues: &StepQueues) -> Result<(), CliError> {
    let mut plan: Vec<(&str, Map<String, Value>, u32)> = vec![
        ("demo.sum", numbers(&[1, 2, 3]), 3),
        ("demo.sum", numbers(&[40, 2]), 3),
        ("demo.sum", numbers(&[]), 3),
        ("demo.noop", Map::new(), 3),
        ("demo.flaky", Map::new(), 3),
        ("demo.flaky", Map::new(), 3),
        ("demo.unknown", Map::new(), 3),
        ("demo.panic", Map::new(), 1),
    ];
    for (handler, input, max_retries) in plan.drain(..) {
        let mut step = FfiStepEvent::new(handler, input);
        step.execution_event.max_retries = max_retries;
        enqueue_step(store, "demo", &step).await?;
    }
    store.send_raw(&queues.steps, "this is not a step").await?;
    Ok(())
}

/// Triggers `stop` once every step has its result and both dead letters are in (or after
/// 30 s).
fn stop_when_settled(
    store: &SqliteStore,
    queues: &StepQueues,
    trigger: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let (s, q) = (store.clone(), queues.clone());
    tokio::spawn(async move {
        for _ in 0..600 {
            let results = s.metrics(&q.results).await.map_or(0, |m| m.queue_length);
            let dead = s
                .metrics(&q.dead_letters)
                .await
                .map_or(0, |m| m.queue_length);
            if results >= 8 && dead >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        trigger.trigger();
    })
}

/// The reason of each dead letter.
fn reasons(dead: &[herald::queue::Message]) -> Vec<String> {
    dead.iter()
        .filter_map(|m| m.event().ok())
        .map(|e| {
            e.metadata["dead_letter"]["reason"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

/// Health and metrics: the same JSON `herald serve` answers on /health and /metrics.json; a
/// summary line goes to `lines`, the JSON is returned.
async fn observe_lines(
    store: &SqliteStore,
    queues: &StepQueues,
    bus: &Bus,
    progress: herald_worker::Progress,
    events: &DomainEventPublisher<SqliteStore>,
    started: std::time::Instant,
    lines: &mut Vec<String>,
) -> Vec<String> {
    let observer = crate::commands::observe::WorkerObserver {
        store: store.clone(),
        store_kind: "sqlite",
        queues: queues.clone(),
        bus: bus.clone(),
        progress,
        events: events.counters().clone(),
        config: settings().running(&settings().to_config()),
        started,
        draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        thresholds: herald::observe::lag::Thresholds::default(),
        lag: Default::default(),
        history: Default::default(),
        nats: None,
        file: None,
    };
    let health = serde_json::to_value(observer.check().await).unwrap_or_default();
    let metrics = serde_json::to_value(observer.metrics()).unwrap_or_default();
    lines.push(format!(
        "health: {}; metrics: steps processed {}, succeeded {}, failed {} (the JSON of /health and /metrics.json follows without --quiet)",
        health["status"].as_str().unwrap_or("unknown"),
        metrics["steps_processed"],
        metrics["steps_succeeded"],
        metrics["steps_failed"]
    ));
    vec![format!("health: {health}"), format!("metrics: {metrics}")]
}

/// The demo worker's settings (seed 001's section): quick polls and a 5 s handler limit.
fn settings() -> WorkerSettings {
    WorkerSettings {
        worker_id: "demo-worker".into(),
        namespace: "demo".into(),
        environment: "demo".into(),
        polling_interval_ms: 100,
        handler_timeout_ms: 5_000,
        ..WorkerSettings::default()
    }
}
