//! Seed 000's `EventBridge`, native: `publish(event, *args, **kwargs)` routes on Herald's
//! bus and calls each handler with the publish's own Python arguments, with no Python frame
//! of its own. `herald.EventBridge` subclasses it for `instance()` and the seed's schema.

use std::collections::HashMap;
use std::sync::Arc;

use herald::{Bus, Event, PublishError, SubscribeOptions, SubscriptionId};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::frame;

/// The bridge: one Herald bus, stopped until `start`. The arguments of a publish are its
/// payload and travel beside the event Herald routes, so that event carries only the name:
/// one carrier event per name, made at its first publish and published again each time
/// (Herald routes, orders, isolates, checks the depth and counts every publish of it). No
/// one sees a carrier: the bus keeps no history and handlers get the arguments.
#[pyclass(module = "herald._native", subclass)]
pub(crate) struct NativeBridge {
    bus: Bus,
    runtime: tokio::runtime::Runtime,
    /// The carrier event of each name.
    carriers: frame::ByName<Arc<Event>>,
    /// `(event, id(handler))` to its subscriptions, for `unsubscribe`.
    handles: Mutex<HashMap<(String, usize), Vec<SubscriptionId>>>,
    /// `logging.getLogger("herald.bridge")`: refusals and handler failures are logged.
    logger: PyObject,
    owner: Py<PyString>,
}

#[pymethods]
impl NativeBridge {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let runtime = crate::runtime(1)?;
        let bus = {
            let _guard = runtime.enter();
            Bus::builder().history(0).build()
        };
        py.allow_threads(|| runtime.block_on(bus.stop()));
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("herald.bridge",))?
            .unbind();
        Ok(NativeBridge {
            bus,
            runtime,
            carriers: frame::ByName::default(),
            handles: Mutex::new(HashMap::new()),
            logger,
            owner: PyString::new(py, "bridge").unbind(),
        })
    }

    /// Activates the bridge.
    fn start(&self) {
        self.bus.start();
    }

    /// Deactivates the bridge and removes every handler.
    fn stop(&self, py: Python<'_>) {
        let (bus, runtime) = (&self.bus, &self.runtime);
        py.allow_threads(|| runtime.block_on(bus.stop()));
        for (_, ids) in self.handles.lock().drain() {
            for id in ids {
                self.bus.unsubscribe_id(id);
            }
        }
    }

    /// Whether the bridge is active.
    #[getter]
    fn is_active(&self) -> bool {
        self.bus.is_running()
    }

    /// Calls `handler(*args, **kwargs)` for each publish of `event`.
    fn subscribe(&self, py: Python<'_>, event: &str, handler: Bound<'_, PyAny>) -> PyResult<()> {
        let key = (event.to_owned(), handler.as_ptr() as usize);
        let callback = crate::python_handler(self.owner.clone_ref(py), handler.unbind(), true);
        let sub = self
            .bus
            .subscribe_with(event, SubscribeOptions::owner("bridge"), callback)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        self.handles
            .lock()
            .entry(key)
            .or_default()
            .push(sub.detach());
        Ok(())
    }

    /// Removes `handler` from `event`.
    fn unsubscribe(&self, event: &str, handler: Bound<'_, PyAny>) {
        let key = (event.to_owned(), handler.as_ptr() as usize);
        for id in self.handles.lock().remove(&key).unwrap_or_default() {
            self.bus.unsubscribe_id(id);
        }
    }

    /// Publishes `event` with these arguments: `True` once every handler ran, `False` when
    /// the bridge is stopped (refused, logged, and counted in `stats()['refused_stopped']`).
    #[pyo3(signature = (event, *args, **kwargs))]
    fn publish(
        &self,
        py: Python<'_>,
        event: &str,
        args: Bound<'_, PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        let carrier = self
            .carriers
            .get(event, |s| Arc::new(Event::new(s)))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let frame = frame::push(args.unbind(), kwargs.map(Bound::unbind));
        let report = match frame::publish_now(py, &self.bus, &self.runtime, carrier) {
            Ok(report) => report,
            Err(PublishError::Stopped { .. }) => {
                self.logger.call_method1(
                    py,
                    "warning",
                    ("EventBridge not active, publish of %s refused", event),
                )?;
                return Ok(false);
            }
            Err(e) => return Err(PyRuntimeError::new_err(e.to_string())),
        };
        if let Some(interrupt) = frame.take_interrupt(py) {
            return Err(interrupt);
        }
        for (_owner, kind, message, _traceback) in frame.take_failures(&report) {
            self.logger.call_method1(
                py,
                "error",
                (
                    "EventBridge handler failed on %s: %s: %s",
                    event,
                    kind,
                    message,
                ),
            )?;
        }
        Ok(true)
    }

    /// Herald's counters for this bridge.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::bus_counters(py, &self.bus)
    }
}
