//! Herald's native Python module (`herald._native`): Herald's in-process bus for the Python
//! layer (`herald.event_bus`, `herald.bridge`) and its step worker (`herald.subscriber`). A
//! publish is polled in place with the GIL held and releases it only if it must wait
//! (`frame::publish_now`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald::{
    sync_handler, BoxError, Bus, Event, Handler, Priority, SubscribeOptions, SubscriptionId,
};
use parking_lot::Mutex;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

mod bridge;
mod core;
mod frame;
mod nats;
mod ops;
mod telemetry;
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
pub(crate) type FailureRow = (String, String, String, String);

/// What `dispatch` hands back: the awaitables to await and the failures, each `None` when
/// there are none.
type Dispatched<'py> = (Option<Bound<'py, PyList>>, Option<Vec<FailureRow>>);

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

/// A bus's counters as a dict, under the names the seeds' `get_stats` use.
pub(crate) fn bus_counters<'py>(py: Python<'py>, bus: &Bus) -> PyResult<Bound<'py, PyDict>> {
    let s = bus.stats();
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

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A Rust handler of a Python callback, isolated like a Rust one: an exception is the
/// handler's error, its type, message and traceback kept in the publish's frame. The
/// callback gets `(subject, data_json, source, priority, timestamp, event_id)`, or with
/// `objects` the publish's own arguments (`frame::call_in_frame`).
pub(crate) fn python_handler(owner: Py<PyString>, callback: PyObject, objects: bool) -> Handler {
    sync_handler(move |e: &Event| -> Result<(), BoxError> {
        Python::with_gil(|py| {
            if frame::interrupted() {
                return Err("skipped: an earlier handler of this publish was interrupted".into());
            }
            let called = if objects {
                frame::call_in_frame(py, &owner, &callback)
            } else {
                let data = serde_json::Value::Object(e.data.clone()).to_string();
                let args = (
                    e.subject.as_str(),
                    data,
                    e.source.as_str(),
                    e.priority.as_str(),
                    e.timestamp.to_string(),
                    e.event_id().unwrap_or_default(),
                );
                callback.call1(py, args).map(drop)
            };
            called.map_err(|err| {
                let pe = python_error(py, &err);
                if !err.is_instance_of::<PyException>(py) {
                    frame::record_interrupt(err);
                }
                frame::record_failure((
                    owner.to_string(),
                    pe.kind.clone(),
                    pe.message.clone(),
                    pe.traceback.clone(),
                ));
                Box::new(pe) as BoxError
            })
        })
    })
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
    /// Subjects parsed once, by name.
    subjects: frame::ByName<herald::Subject>,
    /// With `objects`: the last `history` objects passed to `dispatch`, newest last.
    kept: Option<Mutex<VecDeque<PyObject>>>,
    history: usize,
}

#[pymethods]
impl NativeBus {
    /// A bus keeping the last `history` events. With `objects`, the history is of the
    /// Python objects given to `dispatch`, kept as they are (Herald's own ring is then
    /// off: its events would carry no data).
    #[new]
    #[pyo3(signature = (history = 100, objects = false))]
    fn new(history: usize, objects: bool) -> PyResult<Self> {
        let runtime = crate::runtime(1)?;
        let bus = {
            let _guard = runtime.enter();
            Bus::builder()
                .history(if objects { 0 } else { history })
                .build()
        };
        Ok(NativeBus {
            bus,
            runtime,
            subscriptions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            subjects: frame::ByName::default(),
            kept: objects.then(|| Mutex::new(VecDeque::with_capacity(history))),
            history,
        })
    }

    /// Subscribes `callback(subject, data_json, source, priority, timestamp, event_id)`;
    /// returns a handle for `remove`. `glob` takes seed 002's fnmatch patterns as they are.
    /// With `objects`, the callback is called with the arguments given to `dispatch`
    /// instead, and an awaitable it returns is handed back to `dispatch`'s caller.
    #[pyo3(signature = (pattern, owner, callback, priority = "normal", glob = false, objects = false))]
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &self,
        py: Python<'_>,
        pattern: &str,
        owner: &str,
        callback: PyObject,
        priority: &str,
        glob: bool,
        objects: bool,
    ) -> PyResult<u64> {
        let priority: Priority = priority.parse().map_err(value_error)?;
        let handler = python_handler(PyString::new(py, owner).unbind(), callback, objects);
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

    /// Publishes and waits for every handler (`frame::publish_now`). Returns
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
        let subject = self.subjects.get(subject, |s| s).map_err(value_error)?;
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
        let frame = frame::push(PyTuple::empty(py).unbind(), None);
        let report = frame::publish_now(py, &self.bus, &self.runtime, Arc::new(event))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        if let Some(interrupt) = frame.take_interrupt(py) {
            return Err(interrupt);
        }
        let python_errors = frame.take_failures(&report);
        Ok((report.handlers_run, python_errors))
    }

    /// Publishes `event`, any Python object, under `subject`: Herald routes, orders,
    /// isolates and counts it, and each `objects` handler is called with `event` itself (no
    /// JSON on the way). `priority` is 0 (low) to 3 (critical). Returns `(awaitables,
    /// failures)`: the `(owner, awaitable)` pairs that handlers returned, for the caller to
    /// await on its own loop, and the `(owner, type, message, traceback)` of the handlers
    /// that raised; each `None` when there are none.
    #[pyo3(signature = (subject, event, source = "python", priority = 1))]
    fn dispatch<'py>(
        &self,
        py: Python<'py>,
        subject: &str,
        event: Bound<'py, PyAny>,
        source: &str,
        priority: u8,
    ) -> PyResult<Dispatched<'py>> {
        let priority = match priority {
            0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            3 => Priority::Critical,
            other => {
                return Err(PyValueError::new_err(format!(
                    "priority {other}: expected 0 (low) to 3 (critical)"
                )))
            }
        };
        let herald_event = Event::new(self.subjects.get(subject, |s| s).map_err(value_error)?)
            .with_source(source)
            .with_priority(priority);
        // Kept before the handlers run, as Herald's own ring records an event, and taken
        // back out if Herald refuses the publish.
        let ring = self.kept.as_ref().filter(|_| self.history > 0);
        if let Some(ring) = ring {
            let mut ring = ring.lock();
            if ring.len() == self.history {
                ring.pop_front();
            }
            ring.push_back(event.clone().unbind());
        }
        let ptr = event.as_ptr();
        let frame = frame::push(PyTuple::new(py, [event])?.unbind(), None);
        let report = match frame::publish_now(py, &self.bus, &self.runtime, Arc::new(herald_event))
        {
            Ok(report) => report,
            Err(e) => {
                if let Some(ring) = ring {
                    let mut ring = ring.lock();
                    if let Some(i) = ring.iter().rposition(|o| o.as_ptr() == ptr) {
                        ring.remove(i);
                    }
                }
                return Err(PyRuntimeError::new_err(e.to_string()));
            }
        };
        if let Some(interrupt) = frame.take_interrupt(py) {
            return Err(interrupt);
        }
        let failures = frame.take_failures(&report);
        Ok((
            frame.take_pending(py)?,
            (!failures.is_empty()).then_some(failures),
        ))
    }

    /// With `objects`: the last `count` objects given to `dispatch` (all when `None`),
    /// newest first.
    #[pyo3(signature = (count = None))]
    fn objects<'py>(&self, py: Python<'py>, count: Option<usize>) -> PyResult<Bound<'py, PyList>> {
        let Some(kept) = &self.kept else {
            return Err(PyValueError::new_err(
                "this bus keeps Herald's events, not objects: use history()",
            ));
        };
        let kept = kept.lock();
        let n = count.unwrap_or(kept.len()).min(kept.len());
        PyList::new(py, kept.iter().rev().take(n).map(|o| o.clone_ref(py)))
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
        bus_counters(py, &self.bus)
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
    m.add_class::<bridge::NativeBridge>()?;
    m.add_class::<worker::NativeWorker>()?;
    m.add_class::<nats::NativeNats>()?;
    m.add_class::<ops::NativeOperations>()?;
    m.add_function(wrap_pyfunction!(core::configure, m)?)?;
    m.add_function(wrap_pyfunction!(core::publish_domain_event, m)?)?;
    m.add_function(wrap_pyfunction!(core::poll_in_process_events, m)?)?;
    m.add_function(wrap_pyfunction!(core::get_health_check, m)?)?;
    m.add_function(wrap_pyfunction!(core::get_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(core::get_config, m)?)?;
    m.add_function(wrap_pyfunction!(telemetry::start_telemetry, m)?)?;
    m.add_function(wrap_pyfunction!(telemetry::shutdown_telemetry, m)?)?;
    Ok(())
}
