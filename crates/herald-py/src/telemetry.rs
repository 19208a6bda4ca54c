//! Span export from Python: `herald.start_telemetry()` exports Herald's hop spans by
//! OTLP/HTTP (protobuf) through herald-otel, configured by its arguments or the standard
//! `OTEL_*` variables; `herald.shutdown_telemetry()` sends what is buffered.

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static TELEMETRY: Mutex<Option<herald_otel::Telemetry>> = Mutex::new(None);

/// Starts exporting spans (`enabled`, or an `OTEL_EXPORTER_OTLP_ENDPOINT` in the
/// environment); `endpoint` is the collector's base URL, `service_name` the resource's name.
/// Returns whether spans are now exported. Once per process: a second call returns whether
/// the first one started.
#[pyfunction]
#[pyo3(signature = (endpoint = None, service_name = None, enabled = true))]
pub(crate) fn start_telemetry(
    endpoint: Option<String>,
    service_name: Option<String>,
    enabled: bool,
) -> PyResult<bool> {
    let mut slot = TELEMETRY.lock();
    if slot.is_some() {
        return Ok(true);
    }
    let settings = herald_otel::TelemetrySettings {
        enabled,
        endpoint: endpoint.unwrap_or_default(),
        service_name: service_name.unwrap_or_default(),
        ..Default::default()
    };
    let telemetry = herald_otel::Telemetry::start(&settings)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let Some(telemetry) = telemetry else {
        return Ok(false);
    };
    // The process's subscriber: the spans' layer only (Python does its own logging).
    if tracing_subscriber::registry()
        .with(telemetry.layer())
        .try_init()
        .is_err()
    {
        return Err(PyValueError::new_err(
            "a tracing subscriber is already set in this process",
        ));
    }
    *slot = Some(telemetry);
    Ok(true)
}

/// Sends the spans still buffered and stops exporting (no-op when not started).
#[pyfunction]
pub(crate) fn shutdown_telemetry(py: Python<'_>) {
    let telemetry = TELEMETRY.lock().take();
    if let Some(t) = telemetry {
        py.allow_threads(move || t.shutdown());
    }
}
