//! `herald worker`: runs the registered step handlers (the demo's, registered at link time)
//! on `{namespace}_steps` of `--store` until SIGINT/SIGTERM (then drains) or, with
//! `--until-empty`, until the queue stays empty; a progress line every two seconds.

use std::sync::Arc;
use std::time::Duration;

use herald::queue::Queue;
use herald::{BoxError, Bus, Shutdown};
use herald_worker::events::DeliveryMode;
use herald_worker::{
    enqueue_step, step_handler_fn, submit_step_handler, EventCondition, FfiStepEvent,
    HandlerRegistry, StepContext, StepHandler, StepHandlerResult, Worker, WorkerConfig,
    WorkerReport,
};
use serde_json::{Map, Value};

use crate::cli::WorkerArgs;
use crate::config::HeraldConfig;
use crate::connect::{open_store, with_store};
use crate::CliError;

fn noop() -> Result<Box<dyn StepHandler>, BoxError> {
    Ok(Box::new(step_handler_fn(
        "demo.noop",
        |_c: StepContext| async { StepHandlerResult::success(Map::new()) },
    )))
}

fn sum() -> Result<Box<dyn StepHandler>, BoxError> {
    Ok(Box::new(step_handler_fn(
        "demo.sum",
        |c: StepContext| async move {
            let total: f64 = c
                .input_data
                .get("numbers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).fold(0.0, |s, n| s + n))
                .unwrap_or(0.0);
            let mut out = Map::new();
            out.insert("sum".into(), total.into());
            // A domain event on both paths once the result is stored.
            StepHandlerResult::success(out.clone()).with_event(
                "sum.computed",
                out,
                EventCondition::Success,
                DeliveryMode::Broadcast,
            )
        },
    )))
}

/// Fails its first attempt (retryable), succeeds on the retry.
fn flaky() -> Result<Box<dyn StepHandler>, BoxError> {
    Ok(Box::new(step_handler_fn(
        "demo.flaky",
        |c: StepContext| async move {
            if c.retry_count == 0 {
                StepHandlerResult::failure("the first attempt always fails")
            } else {
                StepHandlerResult::success(Map::new())
            }
        },
    )))
}

fn panics() -> Result<Box<dyn StepHandler>, BoxError> {
    Ok(Box::new(step_handler_fn(
        "demo.panic",
        |_c: StepContext| async {
            panic!(
                "demo.panic always panics (deliberately: the step is retried, then dead-lettered)"
            )
        },
    )))
}

/// Microseconds since the Unix epoch (the clock every process on the machine shares).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Appends `line` to the file `HERALD_PROBE_LOG` names, if it names one (one `write` of the
/// whole line, opened for appending: lines of several processes never interleave).
fn probe_log(line: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("HERALD_PROBE_LOG") else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        tracing::warn!("demo.probe cannot write {}: {e}", path.to_string_lossy());
    }
}

/// For tests of flow control across processes: logs its start, sleeps `input.sleep_ms`
/// (default 0), fails when `input.fail` is true, logs its end; the start and end (in µs since
/// the epoch), its pid and `input.id` are also in its output. Log lines are
/// `start|end ID PID MICROS` in the file `HERALD_PROBE_LOG` names, when set.
fn probe() -> Result<Box<dyn StepHandler>, BoxError> {
    Ok(Box::new(step_handler_fn(
        "demo.probe",
        |c: StepContext| async move {
            let id = c
                .input_data
                .get("id")
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default();
            let pid = std::process::id();
            let started = now_us();
            probe_log(&format!("start {id} {pid} {started}"));
            let sleep = c
                .input_data
                .get("sleep_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if sleep > 0 {
                tokio::time::sleep(Duration::from_millis(sleep)).await;
            }
            let fail = c.input_data.get("fail").and_then(Value::as_bool) == Some(true);
            let ended = now_us();
            probe_log(&format!("end {id} {pid} {ended}"));
            if fail {
                return StepHandlerResult::failure(format!("demo.probe {id}: asked to fail"));
            }
            let mut out = Map::new();
            out.insert("id".into(), id.into());
            out.insert("pid".into(), pid.into());
            out.insert("started_us".into(), started.into());
            out.insert("ended_us".into(), ended.into());
            StepHandlerResult::success(out)
        },
    )))
}

submit_step_handler!("demo.probe", probe);
submit_step_handler!("demo.noop", noop);
submit_step_handler!("demo.sum", sum);
submit_step_handler!("demo.flaky", flaky);
submit_step_handler!("demo.panic", panics);

/// A registry with every handler linked into this binary.
pub(crate) fn registry(bus: Option<Bus>) -> Arc<HandlerRegistry> {
    let registry = match bus {
        Some(bus) => HandlerRegistry::with_bus(bus),
        None => HandlerRegistry::new(),
    };
    registry.discover();
    Arc::new(registry)
}

pub(crate) fn progress_line(r: &WorkerReport) -> String {
    format!(
        "worker: read {}, succeeded {}, failed {}, retried {}, stale {}, dead-lettered {} (bad input {}), re-reads {}",
        r.read, r.succeeded, r.failed, r.retried, r.stale, r.exhausted + r.bad_input, r.bad_input, r.rereads
    )
}

pub(crate) async fn run(args: WorkerArgs, mut config: HeraldConfig) -> Result<(), CliError> {
    // Flags win over HERALD_* variables, which win over the file, which wins over defaults;
    // all of them pass the one validation.
    if let Some(ns) = &args.namespace {
        config.set("worker.namespace", "flag --namespace", |c| {
            c.worker.namespace = ns.clone();
        });
    }
    if let Some(n) = args.concurrency {
        config.set(
            "worker.max_concurrent_handlers",
            "flag --concurrency",
            |c| c.worker.max_concurrent_handlers = n as u64,
        );
    }
    if let Some(addr) = &args.http {
        config.set("http.addr", "flag --http", |c| c.http.addr = addr.clone());
    }
    config.validate()?;
    let store_url = config.store.clone();
    let store = open_store(&store_url).await?;
    let kind = match &store {
        crate::connect::Store::Sqlite(_) => "sqlite",
        crate::connect::Store::Postgres(_) => "postgres",
    };
    with_store!(store, s => run_on(s, args, kind, &config).await)
}

async fn run_on<Q: crate::connect::CliStore>(
    store: Q,
    args: WorkerArgs,
    store_kind: &'static str,
    file: &HeraldConfig,
) -> Result<(), CliError> {
    enqueue_asked(&store, &args, &file.worker.namespace).await?;
    for (queue, policy) in &file.flow {
        let q = herald::queue::QueueName::new(queue)?;
        store.create(&q).await?;
        herald::queue::flow::FlowControl::set_policy(&store, &q, policy).await?;
        crate::output::warn_line!("flow policy of {queue} (from the config): {policy}");
    }
    let bus = Bus::new();
    // Declared domain events: durable on {namespace}_domain_events of the same store.
    let events = herald_worker::events::DomainEventPublisher::new(
        store.clone(),
        &file.worker.namespace,
        "herald-worker",
        1024,
    )
    .await?;
    let events = Arc::new(events);
    let event_counters = events.counters().clone();
    let config = worker_config(file, &args, events);
    let model = file.worker.running(&config);
    let mut worker = Worker::new(
        store.clone(),
        bus.clone(),
        registry(Some(bus.clone())),
        config,
    )
    .await?;
    let stop = Shutdown::new();
    let stopper = stop_on_signal(&store, &worker, args.until_empty, stop.clone());
    let progress = worker.progress();
    let http = Shutdown::new();
    if let Some(addr) = &args.http {
        let nats = if args.nats {
            Some(crate::connect::connect_nats_degraded(&file.bus).await?)
        } else {
            None
        };
        let observer = super::observe::WorkerObserver {
            store: store.clone(),
            store_kind,
            queues: worker.queues().clone(),
            bus: bus.clone(),
            progress: progress.clone(),
            events: event_counters,
            config: model,
            started: std::time::Instant::now(),
            draining: draining_flag(&stop),
            thresholds: file.http.ready.clone(),
            lag: Default::default(),
            history: Default::default(),
            nats,
            file: Some(file.clone()),
        };
        serve_observer(addr, observer, &http).await?;
    }
    if args.scheduler {
        crate::commands::schedule::spawn_scheduler(store.clone(), &stop);
    }
    let started = std::time::Instant::now();
    let report = run_with_progress(&mut worker, &stop, args.quiet).await;
    stopper.abort();
    let _ = http.shutdown(Duration::from_secs(5)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let settled = report.succeeded + report.failed;
    let line = format!(
        "herald worker: stopped after {elapsed:.1} s; {settled} step(s) settled, {:.0} steps/s; {}",
        settled as f64 / elapsed.max(1e-9),
        progress_line(&report)
    );
    if args.quiet {
        tracing::info!("{line}");
    } else {
        crate::output::warn_line!("{line}");
    }
    Ok(())
}

/// `--enqueue N --handler H`: N steps for a handler this binary has.
async fn enqueue_asked<Q: Queue>(
    store: &Q,
    args: &WorkerArgs,
    namespace: &str,
) -> Result<(), CliError> {
    if args.enqueue > 0 && !registry(None).is_registered(&args.handler) {
        return Err(CliError::Usage(format!(
            "--handler {:?}: no such handler; this binary has {}",
            args.handler,
            registry(None).list().join(", ")
        )));
    }
    for _ in 0..args.enqueue {
        let step = FfiStepEvent::new(args.handler.as_str(), Map::new());
        enqueue_step(store, namespace, &step).await?;
    }
    Ok(())
}

/// The worker's settings from the config's `[worker]` section and the flags.
fn worker_config(
    file: &HeraldConfig,
    args: &WorkerArgs,
    events: Arc<dyn herald_worker::events::DomainEventSink>,
) -> WorkerConfig {
    WorkerConfig {
        domain_events: Some(events),
        visibility_timeout: Duration::from_secs(args.vt.max(1)),
        ..file.worker.to_config()
    }
}

/// Triggers `stop` on SIGINT/SIGTERM, or (with `until_empty`) once the step queue has stayed
/// empty for a second.
fn stop_on_signal<Q: Queue>(
    store: &Q,
    worker: &Worker<Q>,
    until_empty: bool,
    stop: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let (store, steps) = (store.clone(), worker.queues().steps.clone());
    let signalled = crate::signal::terminated();
    tokio::spawn(async move {
        tokio::pin!(signalled);
        let mut empty_for = 0u32;
        loop {
            tokio::select! {
                _ = &mut signalled => break,
                _ = tokio::time::sleep(Duration::from_millis(250)), if until_empty => {
                    let len = store.metrics(&steps).await.map_or(1, |m| m.queue_length);
                    empty_for = if len == 0 { empty_for + 1 } else { 0 };
                    if empty_for >= 4 {
                        break;
                    }
                }
            }
        }
        stop.trigger();
    })
}

/// A flag that turns true once `stop` is triggered (readiness reports draining).
fn draining_flag(stop: &Shutdown) -> Arc<std::sync::atomic::AtomicBool> {
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d, stop) = (draining.clone(), stop.clone());
    tokio::spawn(async move {
        stop.cancelled().await;
        d.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    draining
}

/// Serves health, metrics and config on `addr` until `http` shuts down.
async fn serve_observer<Q: crate::connect::CliStore>(
    addr: &str,
    observer: super::observe::WorkerObserver<Q>,
    http: &Shutdown,
) -> Result<(), CliError> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| CliError::Usage(format!("--http {addr:?}: expected HOST:PORT ({e})")))?;
    let observer = Arc::new(observer);
    // The live page's charts: one sample every 2 s, kept for 5 minutes.
    let (sampler, until) = (observer.clone(), http.cancelled_owned());
    http.spawn(async move {
        tokio::pin!(until);
        loop {
            sampler.sample().await;
            tokio::select! {
                () = &mut until => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
    let bound = herald_http::serve(addr, observer, http)
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    crate::output::warn_line!(
        "observability on http://{bound}/ (health, livez, readyz, metrics, metrics.json, config)"
    );
    Ok(())
}

/// Runs the worker until `stop`, printing a progress line when something changed.
async fn run_with_progress<Q: Queue>(
    worker: &mut Worker<Q>,
    stop: &Shutdown,
    quiet: bool,
) -> WorkerReport {
    let progress = worker.progress();
    let run = worker.run(stop.cancelled_owned());
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let mut last = String::new();
    loop {
        tokio::select! {
            r = &mut run => return r,
            // A progress line when something changed, not every tick of an idle worker.
            _ = tick.tick() => if !quiet {
                let line = progress_line(&progress.report());
                if line != last {
                    crate::output::warn_line!("{line}");
                    last = line;
                }
            },
        }
    }
}
