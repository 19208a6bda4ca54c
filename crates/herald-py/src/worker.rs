//! `NativeWorker`: Herald's Rust step worker (`herald-worker`) on a durable queue, running
//! Python step handlers. The worker reads each step, calls the Python dispatcher of its
//! handler on a blocking thread (the GIL held only while Python runs), and stores exactly one
//! result per step in the results queue (seed 000's `complete_step_event`, done by the core).

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::queue::Queue;
use herald::{Bus, Shutdown};
use herald_worker::{
    HandlerRegistry, StepContext, StepFuture, StepHandler, StepHandlerResult, Worker, WorkerConfig,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{json, Map, Value};

use crate::python_error;

/// A Rust step handler that calls a Python dispatcher with the step's JSON and reads back a
/// `StepHandlerResult` as JSON.
#[derive(Clone)]
struct PythonStep {
    name: String,
    dispatch: Arc<Py<PyAny>>,
}

fn failure(kind: &str, message: String, metadata: Map<String, Value>) -> StepHandlerResult {
    StepHandlerResult {
        success: false,
        result: None,
        error_message: Some(message),
        error_type: Some(kind.to_owned()),
        retryable: true,
        metadata,
        domain_events: Vec::new(),
    }
}

impl StepHandler for PythonStep {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, ctx: StepContext) -> StepFuture<'_> {
        let dispatch = self.dispatch.clone();
        let input = json!({
            "event": ctx.event,
            "retry_count": ctx.retry_count,
            "max_retries": ctx.max_retries,
        })
        .to_string();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || {
                Python::with_gil(|py| {
                    dispatch
                        .call1(py, (input,))
                        .and_then(|r| r.extract::<String>(py))
                        .map_err(|e| python_error(py, &e))
                })
            })
            .await;
            match answer {
                Ok(Ok(text)) => {
                    serde_json::from_str::<StepHandlerResult>(&text).unwrap_or_else(|e| {
                        failure(
                            "handler_error",
                            format!("the Python handler's result is not a StepHandlerResult: {e}"),
                            Map::new(),
                        )
                    })
                }
                Ok(Err(pe)) => {
                    let mut metadata = Map::new();
                    metadata.insert("traceback".into(), pe.traceback.clone().into());
                    metadata.insert("exception_type".into(), pe.kind.clone().into());
                    failure("handler_error", pe.to_string(), metadata)
                }
                Err(join) => failure(
                    "handler_error",
                    format!("the Python call did not finish: {join}"),
                    Map::new(),
                ),
            }
        })
    }
}

/// Herald's step worker for Python handlers.
#[pyclass(module = "herald._native")]
pub(crate) struct NativeWorker {
    runtime: tokio::runtime::Runtime,
    store_url: String,
    namespace: String,
    worker_id: String,
    handlers: Mutex<Vec<PythonStep>>,
}

async fn run_on<Q: Queue>(
    store: Q,
    registry: Arc<HandlerRegistry>,
    config: WorkerConfig,
    until_empty: bool,
    max: Option<Duration>,
    interrupted: Arc<Mutex<bool>>,
) -> Result<herald_worker::WorkerReport, String> {
    let bus = Bus::new();
    let max_concurrent = config.max_concurrent_handlers;
    let mut worker = Worker::new(store.clone(), bus, registry, config)
        .await
        .map_err(|e| herald::report(&e))?;
    let steps = worker.queues().steps.clone();
    crate::core::report_progress(worker.progress(), max_concurrent);
    let stop = Shutdown::new();
    let trigger = stop.clone();
    let started = Instant::now();
    let watcher = async move {
        let mut empty_for = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // SIGINT reaches Python's handler only on the main thread: this one.
            let signalled = Python::with_gil(|py| py.check_signals().is_err());
            if signalled {
                *interrupted.lock() = true;
                break;
            }
            if max.is_some_and(|m| started.elapsed() >= m) {
                break;
            }
            if until_empty {
                let len = store.metrics(&steps).await.map_or(1, |m| m.queue_length);
                empty_for = if len == 0 { empty_for + 1 } else { 0 };
                if empty_for >= 5 {
                    break;
                }
            }
        }
        trigger.trigger();
    };
    let run = worker.run(stop.cancelled_owned());
    let (report, ()) = tokio::join!(run, watcher);
    Ok(report)
}

#[pymethods]
impl NativeWorker {
    #[new]
    #[pyo3(signature = (store_url, namespace = "default", worker_id = "python-worker"))]
    fn new(store_url: &str, namespace: &str, worker_id: &str) -> PyResult<Self> {
        herald_worker::StepQueues::of(namespace)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if !(store_url.starts_with("sqlite:") || store_url.starts_with("postgres")) {
            return Err(PyValueError::new_err(format!(
                "store {store_url:?}: expected sqlite://PATH or postgres://..."
            )));
        }
        let runtime = crate::runtime(2)?;
        Ok(NativeWorker {
            runtime,
            store_url: store_url.to_owned(),
            namespace: namespace.to_owned(),
            worker_id: worker_id.to_owned(),
            handlers: Mutex::new(Vec::new()),
        })
    }

    /// Runs steps for `name` through `dispatch(step_json) -> result_json`.
    fn register(&self, name: &str, dispatch: Py<PyAny>) {
        self.handlers.lock().push(PythonStep {
            name: name.to_owned(),
            dispatch: Arc::new(dispatch),
        });
    }

    /// Runs the worker until the steps queue stays empty (`until_empty`), `max_seconds`
    /// pass, or Ctrl-C (raised as `KeyboardInterrupt` once the worker has drained). The GIL
    /// is released meanwhile. Returns the worker's report.
    #[pyo3(signature = (until_empty = true, max_seconds = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        until_empty: bool,
        max_seconds: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let registry = Arc::new(HandlerRegistry::new());
        for h in self.handlers.lock().iter() {
            let h = h.clone();
            registry.register(&h.name.clone(), move || {
                Ok(Box::new(h.clone()) as Box<dyn StepHandler>)
            });
        }
        let config = WorkerConfig {
            namespace: self.namespace.clone(),
            worker_id: self.worker_id.clone(),
            poll_wait: Duration::from_millis(200),
            retry_backoff: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(10),
            ..WorkerConfig::default()
        };
        let max = max_seconds.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let interrupted = Arc::new(Mutex::new(false));
        let url = self.store_url.clone();
        let flag = interrupted.clone();
        let runtime = &self.runtime;
        let report = py.allow_threads(move || {
            runtime.block_on(async move {
                if url.starts_with("sqlite:") {
                    let store = herald_sqlite::SqliteStore::open(&url)
                        .await
                        .map_err(|e| herald::report(&e))?;
                    run_on(store, registry, config, until_empty, max, flag).await
                } else {
                    let store = herald_postgres::PgStore::connect(&url)
                        .await
                        .map_err(|e| herald::report(&e))?;
                    run_on(store, registry, config, until_empty, max, flag).await
                }
            })
        });
        let report = report.map_err(PyRuntimeError::new_err)?;
        if *interrupted.lock() {
            return Err(PyKeyboardInterrupt::new_err("the worker stopped on Ctrl-C"));
        }
        crate::counters(
            py,
            &[
                ("read", report.read),
                ("succeeded", report.succeeded),
                ("failed", report.failed),
                ("retried", report.retried),
                ("bad_input", report.bad_input),
                ("exhausted", report.exhausted),
                ("handler_errors", report.handler_errors),
            ],
        )
    }
}
