//! Observability: the worker's `ObserveSource` (real checks of the store, the bus and the
//! worker; seed 001's metrics and config; Prometheus text), and `herald health|metrics`, which
//! read a running server over HTTP/1.1 on loopback.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::observe::lag::{self, LagReport, Thresholds};
use herald::observe::{roll_up, ComponentHealth, HealthCheck, HealthStatus};
use herald::{BoxFuture, Bus};
use herald_http::ObserveSource;
use herald_worker::events::DomainEventCounters;
use herald_worker::observe::{WorkerConfigModel, WorkerMetrics};
use herald_worker::{Progress, StepQueues};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use clap::Args;

use crate::opts::ConfigOpt;
use crate::CliError;

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// The server: HOST:PORT or http://HOST:PORT (default: the config's `http.addr`,
    /// $HERALD_HTTP_ADDR, else 127.0.0.1:8081, where `herald serve` listens).
    #[arg(long)]
    pub(crate) http: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// The server: HOST:PORT or http://HOST:PORT (default: the config's `http.addr`,
    /// $HERALD_HTTP_ADDR, else 127.0.0.1:8081, where `herald serve` listens).
    #[arg(long)]
    pub(crate) http: Option<String>,
    /// The Prometheus text (/metrics) instead of JSON (/metrics.json).
    #[arg(long)]
    pub(crate) prometheus: bool,
}

/// What a running worker shows over HTTP.
pub(crate) struct WorkerObserver<Q> {
    pub(crate) store: Q,
    pub(crate) store_kind: &'static str,
    pub(crate) queues: StepQueues,
    pub(crate) bus: Bus,
    pub(crate) progress: Progress,
    pub(crate) events: Arc<DomainEventCounters>,
    pub(crate) config: WorkerConfigModel,
    pub(crate) started: Instant,
    pub(crate) draining: Arc<AtomicBool>,
    /// When `/readyz` turns 503 (`[http.ready]`; the step queue is judged when it names no
    /// queue).
    pub(crate) thresholds: Thresholds,
    /// The last lag report (the dead-letter growth of the next readiness check is measured
    /// from it).
    pub(crate) lag: Arc<parking_lot::Mutex<Option<LagReport>>>,
    /// The last minutes of samples, for the live page's charts (`/history.json`).
    pub(crate) history: Arc<parking_lot::Mutex<std::collections::VecDeque<Value>>>,
    /// The NATS connection, when configured.
    pub(crate) nats: Option<herald_nats::Nats>,
    /// The loaded config with the source of each value (for `/config?verbose`).
    pub(crate) file: Option<crate::config::HeraldConfig>,
}

/// Samples kept for the live page's charts: 5 minutes at one every 2 s.
pub(crate) const HISTORY: usize = 150;

/// How long a node may stay silent before the lag report calls it dead, when it did not say.
const NODE_TTL: Duration = Duration::from_secs(60);

impl<Q: crate::connect::CliStore> WorkerObserver<Q> {
    /// A fresh lag report (within 2 s), kept; the one before it comes back too (for the
    /// dead-letter growth).
    pub(crate) async fn lag_report(&self) -> Result<(LagReport, Option<LagReport>), String> {
        let report =
            tokio::time::timeout(Duration::from_secs(2), lag::collect(&self.store, NODE_TTL))
                .await
                .map_err(|_| format!("{} store: no answer within 2 s", self.store_kind))??;
        let before = self.lag.lock().replace(report.clone());
        Ok((report, before))
    }

    /// Adds one sample (now) to the history the live page charts: steps processed, p95 and
    /// p99, and each queue's depth and oldest age; keeps the last [`HISTORY`].
    pub(crate) async fn sample(&self) {
        let m = self.metrics();
        let mut queues = Map::new();
        if let Ok((lag, _)) = self.lag_report().await {
            for q in lag.queues {
                queues.insert(
                    q.queue,
                    serde_json::json!([q.depth, q.oldest_age_seconds.unwrap_or(0), q.dead_letters]),
                );
            }
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let sample = serde_json::json!({
            "t": t,
            "steps_processed": m.steps_processed,
            "p95_ms": m.p95_execution_time_ms,
            "p99_ms": m.p99_execution_time_ms,
            "queues": queues,
        });
        let mut h = self.history.lock();
        h.push_back(sample);
        while h.len() > HISTORY {
            h.pop_front();
        }
    }

    /// Every schedule with its next fire time.
    async fn schedules(&self) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        match self.store.schedules().await {
            Ok(list) => Value::Array(
                list.into_iter()
                    .map(|s| {
                        let next = herald_schedule::Cadence::of(&s.spec)
                            .ok()
                            .and_then(|c| c.next_after(now.max(s.last_tick_ms)))
                            .and_then(herald::Timestamp::from_unix_ms)
                            .map(|t| t.to_string());
                        let cadence = s.spec.cron.clone().unwrap_or_else(|| {
                            format!("every {} ms", s.spec.every_ms.unwrap_or(0))
                        });
                        serde_json::json!({
                            "name": s.spec.name, "cadence": cadence, "tz": s.spec.tz,
                            "queue": s.spec.queue, "paused": s.paused, "next": next,
                        })
                    })
                    .collect(),
            ),
            Err(e) => serde_json::json!({"error": herald::report(&e)}),
        }
    }

    pub(crate) fn metrics(&self) -> WorkerMetrics {
        self.progress.metrics(
            &self.config.worker_id,
            self.started,
            self.config.max_concurrent_handlers as usize,
            Some(&self.events),
        )
    }

    pub(crate) async fn check(&self) -> HealthCheck {
        let mut components = std::collections::BTreeMap::new();
        let (store_health, depth) = self.store_health().await;
        components.insert("store".to_owned(), store_health);
        components.insert("bus".to_owned(), self.bus_health());
        let waiting = depth.as_ref().map_or(0, |d| d.queue_length);
        components.insert("worker".to_owned(), self.worker_health(waiting));
        if let Some(nats) = &self.nats {
            components.insert("nats".to_owned(), nats_health(nats).await);
        }
        let mut rust = Map::new();
        rust.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        rust.insert("store".into(), self.store_kind.into());
        HealthCheck {
            status: roll_up(components.values()),
            worker_id: self.config.worker_id.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            components,
            rust,
            python: Map::new(),
        }
    }

    /// The store: reachable within 2 s, and the step queue's depth when it is.
    async fn store_health(&self) -> (ComponentHealth, Option<herald::queue::QueueMetrics>) {
        let store = tokio::time::timeout(
            Duration::from_secs(2),
            self.store.metrics(&self.queues.steps),
        )
        .await;
        match store {
            Ok(Ok(m)) => (
                ComponentHealth::new(
                    "store",
                    HealthStatus::Healthy,
                    Some(format!("{} reachable", self.store_kind)),
                    true,
                ),
                Some(m),
            ),
            Ok(Err(e)) => (
                ComponentHealth::new(
                    "store",
                    HealthStatus::Unhealthy,
                    Some(format!(
                        "{} store: {}",
                        self.store_kind,
                        crate::error::report(&e)
                    )),
                    true,
                ),
                None,
            ),
            Err(_) => (
                ComponentHealth::new(
                    "store",
                    HealthStatus::Unhealthy,
                    Some(format!("{} store: no answer within 2 s", self.store_kind)),
                    true,
                ),
                None,
            ),
        }
    }

    /// The bus: running, and its emit queue below 90%.
    fn bus_health(&self) -> ComponentHealth {
        let stats = self.bus.stats();
        let saturation = stats.queued as f64 / self.bus.queue_capacity().max(1) as f64;
        if !self.bus.is_running() {
            ComponentHealth::new(
                "bus",
                HealthStatus::Unhealthy,
                Some("the bus is stopped".into()),
                true,
            )
        } else if saturation >= 0.9 {
            ComponentHealth::new(
                "bus",
                HealthStatus::Degraded,
                Some(format!("emit queue {:.0}% full", saturation * 100.0)),
                true,
            )
        } else {
            ComponentHealth::new(
                "bus",
                HealthStatus::Healthy,
                Some(format!("{} queued", stats.queued)),
                true,
            )
        }
    }

    /// The worker: starved (steps waiting, nothing read past the threshold), saturated, or
    /// healthy.
    fn worker_health(&self, waiting: i64) -> ComponentHealth {
        let m = self.metrics();
        let idle_ms = {
            let last = self.progress.last_read_ms();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
            if last == 0 {
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
            } else {
                now.saturating_sub(last)
            }
        };
        if waiting > 0 && m.steps_in_progress == 0 && idle_ms > self.config.starvation_threshold_ms
        {
            ComponentHealth::new(
                "worker",
                HealthStatus::Degraded,
                Some(format!(
                    "starved: {waiting} step(s) waiting, nothing read for {idle_ms} ms"
                )),
                true,
            )
        } else if m.dispatch_channel_saturation >= 1.0 {
            ComponentHealth::new(
                "worker",
                HealthStatus::Degraded,
                Some("saturated: every handler slot in use".into()),
                true,
            )
        } else {
            ComponentHealth::new(
                "worker",
                HealthStatus::Healthy,
                Some(format!("{} in progress", m.steps_in_progress)),
                true,
            )
        }
    }

    async fn prometheus_text(&self) -> String {
        let m = self.metrics();
        let b = self.bus.stats();
        let id = &m.worker_id;
        let mut out = String::new();
        let series: [(&str, &str, &str, f64); 14] = [
            (
                "herald_steps_processed_total",
                "counter",
                "Step results stored.",
                m.steps_processed as f64,
            ),
            (
                "herald_steps_succeeded_total",
                "counter",
                "Step results stored that say success.",
                m.steps_succeeded as f64,
            ),
            (
                "herald_steps_failed_total",
                "counter",
                "Step results stored that say failure.",
                m.steps_failed as f64,
            ),
            (
                "herald_steps_in_progress",
                "gauge",
                "Handlers running now.",
                m.steps_in_progress as f64,
            ),
            (
                "herald_step_execution_time_ms_avg",
                "gauge",
                "Mean handler run time.",
                m.avg_execution_time_ms,
            ),
            (
                "herald_step_execution_time_ms_p95",
                "gauge",
                "95th percentile handler run time.",
                m.p95_execution_time_ms,
            ),
            (
                "herald_step_execution_time_ms_p99",
                "gauge",
                "99th percentile handler run time.",
                m.p99_execution_time_ms,
            ),
            (
                "herald_dispatch_saturation",
                "gauge",
                "Handler slots in use, 0..1.",
                m.dispatch_channel_saturation,
            ),
            (
                "herald_handler_errors_total",
                "counter",
                "Handler errors, panics and timeouts.",
                m.handler_errors as f64,
            ),
            (
                "herald_timeout_errors_total",
                "counter",
                "Handler timeouts.",
                m.timeout_errors as f64,
            ),
            (
                "herald_domain_events_published_total",
                "counter",
                "Domain events published.",
                m.domain_events_published as f64,
            ),
            (
                "herald_domain_events_dropped_total",
                "counter",
                "Fast-path domain events lagging receivers missed.",
                m.domain_events_dropped as f64,
            ),
            (
                "herald_bus_events_published_total",
                "counter",
                "Events published on the in-process bus.",
                b.events_published as f64,
            ),
            (
                "herald_bus_handler_errors_total",
                "counter",
                "Bus handler failures.",
                b.handler_errors as f64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{worker_id=\"{id}\"}} {value}"
            );
        }
        let by_poll = self.events.snapshot().dropped_by_poll;
        let _ = writeln!(
            out,
            "# HELP herald_domain_events_dropped_by_receiver_total What each fast-path receiver missed.\n# TYPE herald_domain_events_dropped_by_receiver_total counter\nherald_domain_events_dropped_by_receiver_total{{worker_id=\"{id}\",receiver=\"poll\"}} {by_poll}"
        );
        self.queue_series(&mut out).await;
        out
    }

    /// Lag, not only depth: every queue, consumer source, node and the lease.
    async fn queue_series(&self, out: &mut String) {
        match self.lag_report().await {
            Ok((report, _)) => lag::prometheus(&report, out),
            Err(e) => tracing::warn!("lag figures left out of /metrics: {e}"),
        }
    }
}

impl<Q: crate::connect::CliStore> ObserveSource for WorkerObserver<Q> {
    fn health(&self) -> BoxFuture<HealthCheck> {
        let this = self.clone_handle();
        Box::pin(async move { this.check().await })
    }

    fn ready(&self) -> BoxFuture<Result<(), Value>> {
        let this = self.clone_handle();
        Box::pin(async move {
            if this.draining.load(Ordering::SeqCst) {
                return Err(
                    serde_json::json!({"ready": false, "reason": "draining", "threshold": "draining"}),
                );
            }
            let (now, before) = this.lag_report().await.map_err(|reason| {
                serde_json::json!({"ready": false, "reason": reason, "threshold": "store"})
            })?;
            let mut t = this.thresholds.clone();
            if t.queues.is_empty() {
                t.queues.push(this.queues.steps.to_string());
            }
            lag::judge(&now, before.as_ref(), &t).map_err(|why| {
                let mut v = serde_json::to_value(&why).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("ready".into(), false.into());
                }
                v
            })
        })
    }

    fn metrics_json(&self) -> Value {
        serde_json::to_value(self.metrics()).unwrap_or(Value::Null)
    }

    fn history_json(&self) -> Value {
        Value::Array(self.history.lock().iter().cloned().collect())
    }

    fn schedules_json(&self) -> BoxFuture<Value> {
        let this = self.clone_handle();
        Box::pin(async move { this.schedules().await })
    }

    fn lag_json(&self) -> BoxFuture<Value> {
        let this = self.clone_handle();
        Box::pin(async move {
            match this.lag_report().await {
                Ok((report, _)) => serde_json::to_value(report).unwrap_or(Value::Null),
                Err(e) => serde_json::json!({"error": e}),
            }
        })
    }

    fn prometheus(&self) -> BoxFuture<String> {
        let this = self.clone_handle();
        Box::pin(async move { this.prometheus_text().await })
    }

    fn config_json(&self, verbose: bool) -> Value {
        match (&self.file, verbose) {
            (Some(file), true) => file.verbose(),
            _ => serde_json::to_value(&self.config).unwrap_or(Value::Null),
        }
    }

    fn events_json(&self) -> Value {
        let latest: Vec<Value> = self
            .bus
            .history(Some(20))
            .iter()
            .map(|e| {
                serde_json::json!({
                    "timestamp": e.timestamp.to_string(),
                    "subject": e.subject.as_str(),
                    "source": e.source,
                })
            })
            .collect();
        Value::Array(latest)
    }
}

impl<Q: crate::connect::CliStore> WorkerObserver<Q> {
    fn clone_handle(&self) -> Arc<WorkerObserver<Q>> {
        Arc::new(WorkerObserver {
            store: self.store.clone(),
            store_kind: self.store_kind,
            queues: self.queues.clone(),
            bus: self.bus.clone(),
            progress: self.progress.clone(),
            events: self.events.clone(),
            config: self.config.clone(),
            started: self.started,
            draining: self.draining.clone(),
            thresholds: self.thresholds.clone(),
            lag: self.lag.clone(),
            history: self.history.clone(),
            nats: self.nats.clone(),
            file: self.file.clone(),
        })
    }
}

/// GET `path` from a server on loopback; returns (status, body).
async fn get(addr: &str, path: &str) -> Result<(u16, String), CliError> {
    let fail = |e: std::io::Error| CliError::Other(format!("cannot reach {addr}: {e}"));
    let mut stream =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| CliError::Other(format!("cannot reach {addr}: no answer within 3 s")))?
            .map_err(fail)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(fail)?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| CliError::Other(format!("{addr}{path}: no answer within 10 s")))?
        .map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CliError::Other(format!("{addr}{path}: not an HTTP answer")))?;
    Ok((status, body.to_owned()))
}

/// The server to ask: `--http` (`HOST:PORT` or `http://HOST:PORT`), else the config's
/// `http.addr` (the file or `HERALD_HTTP_ADDR`), where `herald serve` listens.
fn server(flag: Option<&str>, configured: &str) -> Result<String, CliError> {
    let Some(given) = flag else {
        return Ok(configured.to_owned());
    };
    let bare = given.strip_prefix("http://").unwrap_or(given);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    if given.starts_with("https://") || bare.contains('/') || !bare.contains(':') {
        return Err(CliError::Usage(format!(
            "--http {given:?}: expected HOST:PORT or http://HOST:PORT (the server's address, no path)"
        )));
    }
    Ok(bare.to_owned())
}

pub(crate) async fn health(args: HealthArgs, configured: &str) -> Result<(), CliError> {
    let addr = server(args.http.as_deref(), configured)?;
    let (status, body) = get(&addr, "/health").await?;
    let _ = crate::output::print_line(body.trim_end())?;
    if status == 200 {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "unhealthy (HTTP {status} from {addr})"
        )))
    }
}

pub(crate) async fn metrics(args: MetricsArgs, configured: &str) -> Result<(), CliError> {
    let addr = server(args.http.as_deref(), configured)?;
    let path = if args.prometheus {
        "/metrics"
    } else {
        "/metrics.json"
    };
    let (status, body) = get(&addr, path).await?;
    let _ = crate::output::print_line(body.trim_end())?;
    if status == 200 {
        Ok(())
    } else {
        Err(CliError::Other(format!("{addr}{path}: HTTP {status}")))
    }
}

/// NATS: a round trip, not only the client's state (a stopped server keeps the TCP
/// connection open and the state `Connected` until the client's pings give up).
async fn nats_health(nats: &herald_nats::Nats) -> ComponentHealth {
    let state = nats.state();
    match nats.ping(Duration::from_secs(1)).await {
        Ok(rtt) => ComponentHealth::new(
            "nats",
            HealthStatus::Healthy,
            Some(format!("{state:?}, round trip {} us", rtt.as_micros())),
            false,
        ),
        Err(e) => ComponentHealth::new(
            "nats",
            HealthStatus::Unhealthy,
            Some(format!("nats: {state:?}: {}", herald::report(&e))),
            false,
        ),
    }
}
