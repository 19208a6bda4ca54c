//! `NativeNats`: herald-nats for seed 004's Python `EventBus`. Envelopes cross as JSON bytes
//! (Herald's envelope is seed 004's `Event`); subscriptions deliver each message to a Python
//! callback on Herald's runtime thread (the Python layer hands it to its event loop).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald::Event;
use herald_nats::{Incoming, Nats};
use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A connection to NATS through Herald.
#[pyclass(module = "herald._native")]
pub(crate) struct NativeNats {
    runtime: tokio::runtime::Runtime,
    nats: Mutex<Option<Nats>>,
    tasks: Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>,
    /// Subscription tasks are started through it (and aborted one by one on unsubscribe).
    shutdown: herald::Shutdown,
    next: AtomicU64,
}

fn envelope(bytes: &[u8]) -> PyResult<Event> {
    Event::from_json(bytes)
        .map(|d| d.event)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

fn nats_error(e: herald_nats::NatsError) -> PyErr {
    let text = herald::report(&e);
    match e {
        herald_nats::NatsError::Timeout { .. } => PyTimeoutError::new_err(text),
        _ => PyRuntimeError::new_err(text),
    }
}

impl NativeNats {
    fn connection(&self) -> PyResult<Nats> {
        self.nats
            .lock()
            .clone()
            .ok_or_else(|| PyConnectionError::new_err("not connected to NATS"))
    }
}

#[pymethods]
impl NativeNats {
    #[new]
    fn new() -> PyResult<Self> {
        let runtime = crate::runtime(1)?;
        Ok(NativeNats {
            runtime,
            nats: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            shutdown: herald::Shutdown::new(),
            next: AtomicU64::new(1),
        })
    }

    /// Connects (reconnecting for ever after a first success unless `max_reconnects`).
    #[pyo3(signature = (servers, name, token = None, max_reconnects = None))]
    fn connect(
        &self,
        py: Python<'_>,
        servers: Vec<String>,
        name: &str,
        token: Option<String>,
        max_reconnects: Option<usize>,
    ) -> PyResult<()> {
        let mut builder = Nats::builder()
            .servers(servers)
            .name(name)
            .max_reconnects(max_reconnects)
            .connect_timeout(Duration::from_secs(5));
        if let Some(t) = token {
            builder = builder.token(t);
        }
        let nats = py
            .allow_threads(|| self.runtime.block_on(builder.connect()))
            .map_err(|e| PyConnectionError::new_err(herald::report(&e)))?;
        *self.nats.lock() = Some(nats);
        Ok(())
    }

    /// Whether a connection is open.
    fn connected(&self) -> bool {
        self.nats
            .lock()
            .as_ref()
            .is_some_and(|n| n.state() == herald_nats::ConnectionState::Connected)
    }

    /// Drains and closes the connection; subscriptions end.
    fn disconnect(&self, py: Python<'_>) -> PyResult<()> {
        let Some(nats) = self.nats.lock().take() else {
            return Ok(());
        };
        for (_, t) in self.tasks.lock().drain() {
            t.abort();
        }
        py.allow_threads(|| self.runtime.block_on(nats.drain()))
            .map_err(nats_error)
    }

    /// Publishes an envelope (JSON bytes) on its subject.
    fn publish(&self, py: Python<'_>, envelope_json: &[u8]) -> PyResult<()> {
        let event = envelope(envelope_json)?;
        let nats = self.connection()?;
        py.allow_threads(|| {
            self.runtime.block_on(async {
                nats.publish(&event).await?;
                nats.flush().await
            })
        })
        .map_err(nats_error)
    }

    /// Publishes to JetStream and waits for the ack: `(stream, sequence, duplicate)`.
    fn publish_js(&self, py: Python<'_>, envelope_json: &[u8]) -> PyResult<(String, u64, bool)> {
        let event = envelope(envelope_json)?;
        let nats = self.connection()?;
        let ack = py
            .allow_threads(|| {
                self.runtime
                    .block_on(async { nats.jetstream().publish(&event).await })
            })
            .map_err(nats_error)?;
        Ok((ack.stream, ack.sequence, ack.duplicate))
    }

    /// Calls `callback(envelope_json: bytes, reply: str | None)` for each message on
    /// `subject` (in a `queue` group if given); returns a handle for `unsubscribe`.
    #[pyo3(signature = (subject, callback, queue = None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        subject: &str,
        callback: Py<PyAny>,
        queue: Option<&str>,
    ) -> PyResult<u64> {
        let nats = self.connection()?;
        let mut stream = py
            .allow_threads(|| {
                self.runtime
                    .block_on(async { nats.subscribe(subject, queue).await })
            })
            .map_err(|e| PyValueError::new_err(herald::report(&e)))?;
        let task = self.shutdown.spawn_on(
            async move {
                while let Some(Incoming { event, reply }) = stream.next().await {
                    let bytes = event.to_json();
                    Python::with_gil(|py| {
                        if let Err(e) = callback.call1(py, (PyBytes::new(py, &bytes), reply)) {
                            e.print(py);
                        }
                    });
                }
            },
            self.runtime.handle(),
        );
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.tasks.lock().insert(id, task);
        Ok(id)
    }

    /// Ends a subscription.
    fn unsubscribe(&self, handle: u64) -> bool {
        self.tasks
            .lock()
            .remove(&handle)
            .map(|t| t.abort())
            .is_some()
    }

    /// Sends a request envelope and waits up to `timeout` seconds for the response envelope.
    fn request<'py>(
        &self,
        py: Python<'py>,
        envelope_json: &[u8],
        timeout: f64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let event = envelope(envelope_json)?;
        let nats = self.connection()?;
        let response = py
            .allow_threads(|| {
                self.runtime
                    .block_on(nats.request(&event, Duration::from_secs_f64(timeout.max(0.001))))
            })
            .map_err(nats_error)?;
        Ok(PyBytes::new(py, &response.to_json()))
    }

    /// Answers the request `request_json` received with reply subject `reply`: the response
    /// has its subject and correlation id and `data_json` as data.
    fn reply(
        &self,
        py: Python<'_>,
        reply: String,
        request_json: &[u8],
        data_json: &str,
    ) -> PyResult<()> {
        let event = envelope(request_json)?;
        let data: serde_json::Value =
            serde_json::from_str(data_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let serde_json::Value::Object(data) = data else {
            return Err(PyValueError::new_err("data must be a JSON object"));
        };
        let nats = self.connection()?;
        let incoming = Incoming {
            event,
            reply: Some(reply),
        };
        py.allow_threads(|| self.runtime.block_on(nats.respond_to(&incoming, data)))
            .map(drop)
            .map_err(nats_error)
    }
}
