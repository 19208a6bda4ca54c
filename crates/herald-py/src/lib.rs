//! Herald's native Python module (`herald._native`): Herald's in-process bus for the Python
//! layer (`herald.event_bus`, `herald.bridge`) and its step worker (`herald.subscriber`). Python handlers are called with the GIL held
//! only while they run: a publish releases the GIL while Herald routes and dispatches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald::{
    sync_handler, BoxError, Bus, Event, Priority, Subject, SubscribeOptions, SubscriptionId,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

mod core;
mod nats;
mod worker;

/// A Python exception raised by a handler, kept as the handler's error: its type, message and
/// traceback.
#[derive(Debug)]
pub(crate) struct PythonError {
    pub(crate) kind: String,
    pub(crate) message: String,
    pub(crate) traceback: String,
}

impl std::fmt::Display for PythonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PythonError {}

pub(crate) fn python_error(py: Python<'_>, e: &PyErr) -> PythonError {
    let traceback = e
        .traceback(py)
        .and_then(|t| t.format().ok())
        .unwrap_or_default();
    PythonError {
        kind: e
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".to_owned()),
        message: e.value(py).to_string(),
        traceback,
    }
}

/// A failed handler as Python sees it: `(owner, type, message, traceback)`.
type FailureRow = (String, String, String, String);

/// An event as Python sees it: `(subject, data_json, source, priority, timestamp, event_id)`.
type EventRow = (String, String, String, String, String, String);

/// A Tokio runtime of `workers` threads for one native object.
pub(crate) fn runtime(workers: usize) -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start Herald's runtime: {e}")))
}

/// A dict of named counters, as the natives hand their figures to Python.
pub(crate) fn counters<'py>(
    py: Python<'py>,
    items: &[(&str, u64)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(k, v)?;
    }
    Ok(d)
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Herald's bus for Python: subscribe a callable under a pattern, an owner and a priority;
/// publish an event (subject, JSON data, source, priority) and get back how many handlers ran
/// and which failed.
#[pyclass(module = "herald._native")]
struct NativeBus {
    bus: Bus,
    runtime: tokio::runtime::Runtime,
    subscriptions: Mutex<HashMap<u64, SubscriptionId>>,
    next: AtomicU64,
    /// A handler's Python error, by event id, for the failure report (type, message,
    /// traceback).
    errors: Arc<Mutex<Vec<FailureRow>>>,
}

#[pymethods]
impl NativeBus {
    #[new]
    #[pyo3(signature = (history = 100))]
    fn new(history: usize) -> PyResult<Self> {
        let runtime = crate::runtime(1)?;
        let bus = {
            let _guard = runtime.enter();
            Bus::builder().history(history).build()
        };
        Ok(NativeBus {
            bus,
            runtime,
            subscriptions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            errors: Arc::default(),
        })
    }

    /// Subscribes `callback(subject, data_json, source, priority, timestamp, event_id)`;
    /// returns a handle for `remove`. `glob` takes seed 002's fnmatch patterns as they are.
    #[pyo3(signature = (pattern, owner, callback, priority = "normal", glob = false))]
    fn subscribe(
        &self,
        pattern: &str,
        owner: &str,
        callback: PyObject,
        priority: &str,
        glob: bool,
    ) -> PyResult<u64> {
        let priority: Priority = priority.parse().map_err(value_error)?;
        let errors = self.errors.clone();
        let owner_name = owner.to_owned();
        let handler = sync_handler(move |e: &Event| -> Result<(), BoxError> {
            Python::with_gil(|py| {
                let data = serde_json::Value::Object(e.data.clone()).to_string();
                let args = (
                    e.subject.as_str(),
                    data,
                    e.source.as_str(),
                    e.priority.as_str(),
                    e.timestamp.to_string(),
                    e.event_id().unwrap_or_default(),
                );
                match callback.call1(py, args) {
                    Ok(_) => Ok(()),
                    Err(err) => {
                        let pe = python_error(py, &err);
                        errors.lock().push((
                            owner_name.clone(),
                            pe.kind.clone(),
                            pe.message.clone(),
                            pe.traceback.clone(),
                        ));
                        Err(Box::new(pe) as BoxError)
                    }
                }
            })
        });
        let options = SubscribeOptions::owner(owner).priority(priority);
        let sub = if glob {
            self.bus.subscribe_with(
                herald::Pattern::glob(pattern).map_err(value_error)?,
                options,
                handler,
            )
        } else {
            self.bus.subscribe_with(pattern, options, handler)
        }
        .map_err(value_error)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.subscriptions.lock().insert(id, sub.detach());
        Ok(id)
    }

    /// Removes one subscription by its handle; whether it was there.
    fn remove(&self, handle: u64) -> bool {
        match self.subscriptions.lock().remove(&handle) {
            Some(id) => self.bus.unsubscribe_id(id),
            None => false,
        }
    }

    /// Removes `owner`'s subscriptions made with exactly `pattern`; how many.
    fn unsubscribe(&self, pattern: &str, owner: &str) -> usize {
        self.bus.unsubscribe(pattern, owner)
    }

    /// Removes all of `owner`'s subscriptions; how many.
    fn unsubscribe_all(&self, owner: &str) -> usize {
        self.bus.unsubscribe_all(owner)
    }

    /// Publishes and waits for every handler (the GIL is released meanwhile). Returns
    /// `(handlers_run, [(owner, type, message, traceback), ...])`.
    #[pyo3(signature = (subject, data_json = "{}", source = "python", priority = "normal", event_id = None))]
    fn publish(
        &self,
        py: Python<'_>,
        subject: &str,
        data_json: &str,
        source: &str,
        priority: &str,
        event_id: Option<&str>,
    ) -> PyResult<(usize, Vec<FailureRow>)> {
        let subject = Subject::new(subject).map_err(value_error)?;
        let data: serde_json::Value = serde_json::from_str(data_json).map_err(value_error)?;
        let serde_json::Value::Object(data) = data else {
            return Err(PyValueError::new_err("data must be a JSON object"));
        };
        let mut event = Event::new(subject)
            .with_data(data)
            .with_source(source)
            .with_priority(priority.parse().map_err(value_error)?);
        if let Some(id) = event_id {
            event = event.with_metadata(herald::EVENT_ID, id);
        }
        self.errors.lock().clear();
        let (bus, runtime) = (&self.bus, &self.runtime);
        let report = py
            .allow_threads(|| {
                // Every handler of this bus is a synchronous Python callback, so the publish
                // is done at its first poll: polled here, in place, it skips entering the
                // runtime (most of a publish's cost from Python). Should it ever wait, the
                // runtime drives the same future to the end.
                let mut publish = std::pin::pin!(bus.publish(event));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match publish.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(report) => report,
                    std::task::Poll::Pending => runtime.block_on(publish),
                }
            })
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let mut python_errors = std::mem::take(&mut *self.errors.lock());
        // A Rust-side failure (a panic) has no Python error: report it from Herald's record.
        if python_errors.len() < report.failures.len() {
            for f in report.failures.iter().skip(python_errors.len()) {
                python_errors.push((
                    f.owner.to_string(),
                    "HeraldError".to_owned(),
                    f.failure.to_string(),
                    String::new(),
                ));
            }
        }
        Ok((report.handlers_run, python_errors))
    }

    /// Starts accepting publishes (a new bus is running).
    fn start(&self) {
        self.bus.start();
    }

    /// Stops accepting publishes: a publish is refused (an error) and counted in
    /// `refused_stopped`.
    fn stop(&self, py: Python<'_>) {
        let (bus, runtime) = (&self.bus, &self.runtime);
        py.allow_threads(|| runtime.block_on(bus.stop()));
    }

    /// Whether publishes are accepted.
    fn is_running(&self) -> bool {
        self.bus.is_running()
    }

    /// Herald's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.bus.stats();
        counters(
            py,
            &[
                ("events_published", s.events_published),
                ("events_dispatched", s.events_dispatched),
                ("handler_errors", s.handler_errors),
                ("handler_panics", s.handler_panics),
                ("refused_stopped", s.refused_stopped),
                ("refused_depth", s.refused_depth),
                ("subscriptions", s.subscriptions),
            ],
        )
    }

    /// The last `count` events (all when `None`), newest first, as
    /// `(subject, data_json, source, priority, timestamp, event_id)`.
    #[pyo3(signature = (count = None))]
    fn history<'py>(&self, py: Python<'py>, count: Option<usize>) -> PyResult<Bound<'py, PyList>> {
        let rows: Vec<EventRow> = self
            .bus
            .history(count)
            .iter()
            .map(|e| {
                (
                    e.subject.to_string(),
                    serde_json::Value::Object(e.data.clone()).to_string(),
                    e.source.clone(),
                    e.priority.as_str().to_owned(),
                    e.timestamp.to_string(),
                    e.event_id().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        PyList::new(py, rows)
    }

    /// `{pattern: [owner, ...]}` for `owner` (all when `None`).
    #[pyo3(signature = (owner = None))]
    fn subscriptions(&self, owner: Option<&str>) -> HashMap<String, Vec<String>> {
        self.bus
            .subscriptions_by_pattern(owner)
            .into_iter()
            .map(|(p, owners)| (p, owners.iter().map(|o| o.to_string()).collect()))
            .collect()
    }
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<NativeBus>()?;
    m.add_class::<worker::NativeWorker>()?;
    m.add_class::<nats::NativeNats>()?;
    m.add_function(wrap_pyfunction!(core::configure, m)?)?;
    m.add_function(wrap_pyfunction!(core::publish_domain_event, m)?)?;
    m.add_function(wrap_pyfunction!(core::poll_in_process_events, m)?)?;
    m.add_function(wrap_pyfunction!(core::get_health_check, m)?)?;
    m.add_function(wrap_pyfunction!(core::get_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(core::get_config, m)?)?;
    Ok(())
}
