//! `herald bench trace`: what tracing costs each hop. Each side runs in a child process of
//! its own (`herald bench trace --tracing on|off`: the bridge and the subscriber are set once
//! per process), alternately, three times; the figure is the median on beside the median off.
//! On, spans are exported in batches to an exporter that drops them: the cost is the spans'
//! and the SDK's, not the wire's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::queue::Queue;
use herald::{handler_fn, Bus, Event};
use herald_nats::Nats;
use herald_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

use super::{rate, Figure, Report};
use crate::cli::Tracing;
use crate::output::print_line;
use crate::CliError;

/// One hop's rate on one side.
#[derive(Debug, Serialize, Deserialize)]
struct HopRate {
    hop: String,
    rate: f64,
}

/// The hops, in the order they are printed.
const HOPS: [&str; 4] = [
    "trace: bus publish + handler",
    "trace: nats publish + handler",
    "trace: sqlite queue send",
    "trace: sqlite worker step",
];

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn event(subject: &str) -> Result<Event, CliError> {
    Ok(Event::try_new(subject, serde_json::json!({"n": 1}))?.with_source("bench"))
}

/// Publishes `n` events on the bus, one async handler each (`publish`: the publish span and
/// the process span when tracing is on).
async fn bus_hop(n: u64) -> Result<f64, CliError> {
    let bus = Bus::new();
    let c = Arc::new(AtomicU64::new(0));
    let counted = c.clone();
    bus.subscribe(
        "bench.traced",
        handler_fn(move |_e: Arc<Event>| {
            let c = counted.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }),
    )?
    .detach();
    let e = event("bench.traced")?;
    let start = Instant::now();
    for _ in 0..n {
        bus.publish(e.clone()).await?;
    }
    let r = rate(n, start);
    if c.load(Ordering::Relaxed) != n {
        return Err(other("bench trace: the bus handler missed events"));
    }
    Ok(r)
}

/// Publishes `n` events on core NATS to a handler subscription and waits for all of them.
async fn nats_hop(nats: &Nats, n: u64) -> Result<f64, CliError> {
    let subject = format!("bench.traced.{}", std::process::id());
    let c = Arc::new(AtomicU64::new(0));
    let counted = c.clone();
    let _sub = nats
        .subscribe_handler(
            subject.as_str(),
            None,
            handler_fn(move |_e: Arc<Event>| {
                let c = counted.clone();
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }),
        )
        .await?;
    nats.flush().await?;
    let e = event(&subject)?;
    let start = Instant::now();
    for _ in 0..n {
        nats.publish(&e).await?;
    }
    nats.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err(other("bench trace: NATS deliveries missing after 30 s"));
        }
        tokio::task::yield_now().await;
    }
    Ok(rate(n, start))
}

/// Sends `n` events one by one to a SQLite queue.
async fn queue_hop(store: &SqliteStore, n: u64) -> Result<f64, CliError> {
    let name = super::queue::bench_queue("t")?;
    store.create(&name).await?;
    let e = event("bench.traced")?;
    let start = Instant::now();
    for _ in 0..n {
        store.send(&name, &e, Duration::ZERO).await?;
    }
    let r = rate(n, start);
    store.drop_queue(&name).await?;
    Ok(r)
}

/// The child: runs each hop once on its side and prints one JSON line per hop.
pub(crate) async fn side(_side: Tracing, scale: f64, bus: &str) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(100);
    let dir = std::env::temp_dir().join(format!("herald-bench-trace-{}", std::process::id()));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await?;
    let mut rates = vec![
        (HOPS[0], bus_hop(n(100_000.0)).await?),
        (
            HOPS[1],
            // No server: the hop is skipped (0), the others still measured.
            match Nats::connect(bus).await {
                Ok(nats) => nats_hop(&nats, n(50_000.0)).await?,
                Err(_) => 0.0,
            },
        ),
    ];
    rates.push((HOPS[2], queue_hop(&store, n(5_000.0)).await?));
    rates.push((
        HOPS[3],
        super::worker::worker_run(&store, n(5_000.0), false).await?,
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (hop, rate) in rates {
        let line = serde_json::to_string(&HopRate {
            hop: hop.into(),
            rate,
        })
        .map_err(other)?;
        print_line(&line)?;
    }
    Ok(())
}

/// One child run of `side`: its rates by hop.
async fn child(side: &str, scale: f64, bus: &str) -> Result<Vec<HopRate>, CliError> {
    let exe = std::env::current_exe().map_err(other)?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["bench", "trace", "--tracing", side, "--bus", bus])
        .arg("--scale")
        .arg(scale.to_string())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(other)?
        .map_err(other)?;
    if !out.status.success() {
        return Err(other(format!("bench trace: the {side} side failed")));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<HopRate>(l).map_err(other))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The parent: off and on alternately, three runs each; a figure per hop, on beside off.
pub(crate) async fn run(report: &mut Report, scale: f64, bus: &str) -> Result<(), CliError> {
    const RUNS: usize = 3;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let order = if i % 2 == 0 {
            ["off", "on"]
        } else {
            ["on", "off"]
        };
        for side in order {
            let rates = child(side, scale, bus).await?;
            if side == "on" {
                on.push(rates);
            } else {
                off.push(rates);
            }
        }
    }
    let of = |runs: &[Vec<HopRate>], hop: &str| {
        median(
            runs.iter()
                .filter_map(|r| r.iter().find(|h| h.hop == hop).map(|h| h.rate))
                .collect(),
        )
    };
    for hop in HOPS {
        let (on, off) = (of(&on, hop), of(&off, hop));
        if on == 0.0 && off == 0.0 {
            print_line(&format!("{hop}: skipped (no NATS server at {bus})"))?;
            continue;
        }
        report.add(Figure::higher(hop, "msg/s", on, off, "tracing off"))?;
    }
    Ok(())
}
