//! Seed 001's native functions: one process-wide core (a store, the domain event publisher on
//! it, the last worker's progress) behind `configure`, `publish_domain_event`,
//! `poll_in_process_events`, `get_health_check`, `get_metrics` and `get_config`. The core is
//! made on first use from `HERALD_STORE` (default `sqlite://.herald/herald.db`) unless
//! `configure` made it first.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use herald::observe::{roll_up, ComponentHealth, HealthCheck, HealthStatus};
use herald::queue::Queue;
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_worker::events::{DeliveryMode, DomainEventPublisher};
use herald_worker::observe::WorkerConfigModel;
use herald_worker::Progress;
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde_json::{json, Map, Value};

enum Publisher {
    Sqlite(DomainEventPublisher<SqliteStore>),
    Postgres(DomainEventPublisher<PgStore>),
}

pub(crate) struct Core {
    runtime: tokio::runtime::Runtime,
    publisher: Publisher,
    poll: herald_worker::events::PollHandle,
    store_kind: &'static str,
    started: Instant,
    config: WorkerConfigModel,
    progress: Option<(Progress, usize)>,
}

fn slot() -> &'static Mutex<Option<Arc<Mutex<Core>>>> {
    static CORE: OnceLock<Mutex<Option<Arc<Mutex<Core>>>>> = OnceLock::new();
    CORE.get_or_init(|| Mutex::new(None))
}

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

fn make(store_url: &str, namespace: &str, worker_id: &str) -> PyResult<Core> {
    let runtime = crate::runtime(1)?;
    let (publisher, store_kind) = runtime
        .block_on(async {
            if store_url.starts_with("sqlite:") {
                let s = SqliteStore::open(store_url)
                    .await
                    .map_err(|e| herald::report(&e))?;
                DomainEventPublisher::new(s, namespace, worker_id, 1024)
                    .await
                    .map(|p| (Publisher::Sqlite(p), "sqlite"))
                    .map_err(|e| herald::report(&e))
            } else if store_url.starts_with("postgres") {
                let s = PgStore::connect(store_url)
                    .await
                    .map_err(|e| herald::report(&e))?;
                DomainEventPublisher::new(s, namespace, worker_id, 1024)
                    .await
                    .map(|p| (Publisher::Postgres(p), "postgres"))
                    .map_err(|e| herald::report(&e))
            } else {
                Err(format!(
                    "store {store_url:?}: expected sqlite://PATH or postgres://..."
                ))
            }
        })
        .map_err(PyValueError::new_err)?;
    let poll = match &publisher {
        Publisher::Sqlite(p) => p.poll_handle(),
        Publisher::Postgres(p) => p.poll_handle(),
    };
    let defaults = herald_worker::WorkerConfig::default();
    Ok(Core {
        runtime,
        publisher,
        poll,
        store_kind,
        started: Instant::now(),
        config: WorkerConfigModel {
            worker_id: worker_id.to_owned(),
            namespace: namespace.to_owned(),
            environment: std::env::var("HERALD_ENV").unwrap_or_else(|_| "development".into()),
            polling_interval_ms: defaults.poll_wait.as_millis() as u64,
            starvation_threshold_ms: 30_000,
            max_concurrent_handlers: defaults.max_concurrent_handlers as u64,
            handler_timeout_ms: defaults.handler_timeout.as_millis() as u64,
            dispatch_buffer_size: defaults.batch_size as u64,
            completion_buffer_size: 512,
        },
        progress: None,
    })
}

/// The core, made from the environment on first use.
pub(crate) fn core() -> PyResult<Arc<Mutex<Core>>> {
    let mut slot = slot().lock();
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let url = std::env::var("HERALD_STORE").unwrap_or_else(|_| "sqlite://.herald/herald.db".into());
    let c = Arc::new(Mutex::new(make(
        &url,
        "default",
        &format!("python-{}", std::process::id()),
    )?));
    *slot = Some(c.clone());
    Ok(c)
}

/// Where a worker's progress is reported (the last `NativeWorker` run).
pub(crate) fn report_progress(progress: Progress, max_concurrent: usize) {
    if let Ok(c) = core() {
        c.lock().progress = Some((progress, max_concurrent));
    }
}

/// (Re)makes the core on `store_url` for `namespace` and `worker_id`.
#[pyfunction]
#[pyo3(signature = (store_url, namespace = "default", worker_id = None))]
pub(crate) fn configure(
    py: Python<'_>,
    store_url: &str,
    namespace: &str,
    worker_id: Option<&str>,
) -> PyResult<()> {
    herald_worker::StepQueues::of(namespace).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let id = worker_id.map_or_else(|| format!("python-{}", std::process::id()), str::to_owned);
    let made = py.allow_threads(|| make(store_url, namespace, &id))?;
    *slot().lock() = Some(Arc::new(Mutex::new(made)));
    Ok(())
}

/// Publishes a domain event: `mode` is `durable` (the `{namespace}_domain_events` queue,
/// acknowledged after commit), `fast` (in-process, best effort, misses counted) or
/// `broadcast` (both; the default). Returns `True` once published.
#[pyfunction]
#[pyo3(signature = (event_type, payload_json = "{}", correlation_id = None, mode = "broadcast"))]
pub(crate) fn publish_domain_event(
    py: Python<'_>,
    event_type: &str,
    payload_json: &str,
    correlation_id: Option<&str>,
    mode: &str,
) -> PyResult<bool> {
    let payload: Value =
        serde_json::from_str(payload_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let Value::Object(payload) = payload else {
        return Err(PyValueError::new_err("payload must be a JSON object"));
    };
    let correlation = correlation_id
        .map(|c| {
            c.parse::<uuid::Uuid>()
                .map_err(|e| PyValueError::new_err(format!("correlation_id {c:?}: {e}")))
        })
        .transpose()?;
    let mode = match mode {
        "durable" => DeliveryMode::Durable,
        "fast" => DeliveryMode::Fast,
        "broadcast" => DeliveryMode::Broadcast,
        other => {
            return Err(PyValueError::new_err(format!(
                "mode {other:?}: expected durable, fast or broadcast"
            )))
        }
    };
    let core = core()?;
    py.allow_threads(|| {
        let c = core.lock();
        let done = match &c.publisher {
            Publisher::Sqlite(p) => {
                c.runtime
                    .block_on(p.publish(event_type, payload, correlation, mode))
            }
            Publisher::Postgres(p) => {
                c.runtime
                    .block_on(p.publish(event_type, payload, correlation, mode))
            }
        };
        done.map(|_| true)
            .map_err(|e| PyRuntimeError::new_err(herald::report(&e)))
    })
}

/// The next fast-path domain event as JSON, or `None`.
#[pyfunction]
pub(crate) fn poll_in_process_events() -> PyResult<Option<String>> {
    let core = core()?;
    let c = core.lock();
    Ok(c.poll
        .poll_in_process_events()
        .and_then(|e| serde_json::to_string(&e).ok()))
}

/// Seed 001's `HealthCheck` as JSON: the store (reachable: its domain events queue answers)
/// and the domain events path.
#[pyfunction]
pub(crate) fn get_health_check(py: Python<'_>) -> PyResult<String> {
    let core = core()?;
    let text = py.allow_threads(|| {
        let c = core.lock();
        let store = match &c.publisher {
            Publisher::Sqlite(p) => c
                .runtime
                .block_on(async { p.store().metrics(p.queue()).await.map(drop) }),
            Publisher::Postgres(p) => c
                .runtime
                .block_on(async { p.store().metrics(p.queue()).await.map(drop) }),
        };
        let (published, dropped) = match &c.publisher {
            Publisher::Sqlite(p) => (p.published(), p.dropped()),
            Publisher::Postgres(p) => (p.published(), p.dropped()),
        };
        let mut components = BTreeMap::new();
        components.insert(
            "store".to_owned(),
            match store {
                Ok(()) => ComponentHealth::new(
                    "store",
                    HealthStatus::Healthy,
                    Some(format!("{} reachable", c.store_kind)),
                    true,
                ),
                Err(e) => ComponentHealth::new(
                    "store",
                    HealthStatus::Unhealthy,
                    Some(herald::report(&e)),
                    true,
                ),
            },
        );
        components.insert(
            "domain_events".to_owned(),
            ComponentHealth::new(
                "domain_events",
                if dropped == 0 {
                    HealthStatus::Healthy
                } else {
                    HealthStatus::Degraded
                },
                Some(format!(
                    "{published} published, {dropped} dropped on the fast path"
                )),
                false,
            ),
        );
        let mut rust = Map::new();
        rust.insert("store".into(), json!(c.store_kind));
        rust.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        let health = HealthCheck {
            status: roll_up(components.values()),
            worker_id: c.config.worker_id.clone(),
            uptime_seconds: c.started.elapsed().as_secs_f64(),
            components,
            rust,
            python: Map::new(),
        };
        serde_json::to_string(&health)
    });
    text.map_err(runtime_error)
}

/// Seed 001's `WorkerMetrics` as JSON: the last `NativeWorker`'s counters and the domain
/// events', zero before any worker ran.
#[pyfunction]
pub(crate) fn get_metrics() -> PyResult<String> {
    let core = core()?;
    let c = core.lock();
    let counters = match &c.publisher {
        Publisher::Sqlite(p) => p.counters().clone(),
        Publisher::Postgres(p) => p.counters().clone(),
    };
    let metrics = match &c.progress {
        Some((p, slots)) => p.metrics(&c.config.worker_id, c.started, *slots, Some(&counters)),
        None => {
            let mut v = json!({
                "worker_id": c.config.worker_id, "uptime_seconds": c.started.elapsed().as_secs_f64(),
                "steps_processed": 0, "steps_succeeded": 0, "steps_failed": 0, "steps_in_progress": 0,
                "avg_execution_time_ms": 0.0, "max_execution_time_ms": 0.0, "p95_execution_time_ms": 0.0,
                "p99_execution_time_ms": 0.0, "dispatch_channel_pending": 0, "completion_channel_pending": 0,
                "dispatch_channel_saturation": 0.0, "completion_channel_saturation": 0.0,
                "handler_errors": 0, "timeout_errors": 0, "ffi_errors": 0,
            });
            let counts = counters.snapshot();
            v["domain_events_published"] = json!(counts.published);
            v["domain_events_dropped"] = json!(counts.dropped);
            return Ok(v.to_string());
        }
    };
    serde_json::to_string(&metrics).map_err(runtime_error)
}

/// Seed 001's `WorkerConfig` as JSON.
#[pyfunction]
pub(crate) fn get_config() -> PyResult<String> {
    let core = core()?;
    let c = core.lock();
    serde_json::to_string(&c.config).map_err(runtime_error)
}
