//! Herald's observability over HTTP, on axum: `/health` (200 when healthy or degraded, 503
//! when unhealthy), `/livez`, `/readyz` (503 with a JSON reason: draining, or a threshold of
//! `[http.ready]` crossed), `/metrics`
//! (Prometheus text), `/metrics.json`, `/lag.json`, `/history.json`, `/schedules.json`,
//! `/config`, `/events.json` and `/`, a live page that
//! refreshes itself. GET and HEAD only (anything else is 405),
//! a small request body limit, a time limit per request, and 127.0.0.1:8081 by default: any
//! other address must be asked for and is logged with a warning.
//!
//! The router takes an [`ObserveSource`] (health checks and a metrics source), never a worker,
//! so any surface can serve it.

mod settings;

pub use settings::{HttpSettings, SettingsError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald::observe::{HealthCheck, HealthStatus};
use herald::{BoxFuture, Shutdown};
use serde_json::Value;

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8081";

/// How long one request may take before it is answered with 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server shows. Implemented by the surface that runs the service (the CLI's
/// worker), from real checks and counters.
pub trait ObserveSource: Send + Sync + 'static {
    /// Seed 001's `HealthCheck`, each component checked now.
    fn health(&self) -> BoxFuture<HealthCheck>;
    /// `Ok` when the service can take work; `Err` is a JSON object saying why not (draining,
    /// the store unreachable, or the threshold crossed: `threshold`, `subject`, `value`,
    /// `limit`, `reason`), served with 503.
    fn ready(&self) -> BoxFuture<Result<(), Value>>;
    /// Seed 001's `WorkerMetrics` as JSON.
    fn metrics_json(&self) -> Value;
    /// The same figures and more in Prometheus text format.
    fn prometheus(&self) -> BoxFuture<String>;
    /// The effective config as JSON, secrets redacted; `verbose` adds where each value came
    /// from (file, environment, flag, default).
    fn config_json(&self, verbose: bool) -> Value;
    /// The latest events, newest first (for the live page).
    fn events_json(&self) -> Value;
    /// Lag, not only depth (`herald::observe::lag::LagReport` as JSON): every queue's depth,
    /// visible, delayed, oldest age and dead letters; every consumer source's checkpoint lag,
    /// epoch and holder; every node's heartbeat age; the lease. `/metrics.json` stays seed
    /// 001's `WorkerMetrics`, exactly.
    fn lag_json(&self) -> BoxFuture<Value>;
    /// The last minutes of samples (time, steps processed, p95/p99, each queue's depth,
    /// oldest age and dead letters), oldest first, for the live page's charts.
    fn history_json(&self) -> Value;
    /// The schedules and their next fire times.
    fn schedules_json(&self) -> BoxFuture<Value>;
}

type Source = Arc<dyn ObserveSource>;

async fn within<T>(f: impl std::future::Future<Output = T>) -> Result<T, Response> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response())
}

async fn health(State(s): State<Source>) -> Response {
    match within(s.health()).await {
        Ok(h) => {
            let code = if h.status == HealthStatus::Unhealthy {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (code, Json(h)).into_response()
        }
        Err(r) => r,
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Source>) -> Response {
    match within(s.ready()).await {
        Ok(Ok(())) => Json(serde_json::json!({"ready": true})).into_response(),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, Json(why)).into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(s): State<Source>) -> Response {
    match within(s.prometheus()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn metrics_json(State(s): State<Source>) -> Json<Value> {
    Json(s.metrics_json())
}

async fn config(
    State(s): State<Source>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    Json(s.config_json(q.contains_key("verbose")))
}

async fn lag(State(s): State<Source>) -> Response {
    match within(s.lag_json()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn history(State(s): State<Source>) -> Json<Value> {
    Json(s.history_json())
}

async fn schedules(State(s): State<Source>) -> Response {
    match within(s.schedules_json()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn events(State(s): State<Source>) -> Json<Value> {
    Json(s.events_json())
}

/// The live page: one file inside the binary, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page/index.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// The routes, on `source`. Each answers GET and HEAD; other methods get 405.
pub fn router(source: Arc<dyn ObserveSource>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/metrics.json", get(metrics_json))
        .route("/lag.json", get(lag))
        .route("/history.json", get(history))
        .route("/schedules.json", get(schedules))
        .route("/config", get(config))
        .route("/events.json", get(events))
        .route("/", get(page))
        .layer(DefaultBodyLimit::max(1024))
        .with_state(source)
}

/// Why the server could not start.
#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// Binds `addr` and serves `source` through `shutdown` until it is triggered. Returns the
/// bound address (useful with port 0).
///
/// # Errors
///
/// [`ServeError`] naming the address when it cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    source: Arc<dyn ObserveSource>,
    shutdown: &Shutdown,
) -> Result<SocketAddr, ServeError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "serving observability on {addr}, beyond this machine (asked for explicitly)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServeError(format!("{addr}: {e}")))?;
    let app = router(source);
    let stop = shutdown.cancelled_owned();
    shutdown.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("observability server ended: {e}");
        }
    });
    Ok(bound)
}
