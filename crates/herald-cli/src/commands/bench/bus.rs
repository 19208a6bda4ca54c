//! `herald bench bus`: the in-process bus beside hand-written tokio channels and a plain
//! `Vec<Box<dyn Fn>>`, plus routing and memory figures and the seed 002 Python bus.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use herald::{handler_fn, sync_handler, Bus, Event, Subject};
use tokio::sync::{broadcast, mpsc};

use super::{paired, rate, Figure, Report};
use crate::alloc::live_bytes;
use crate::CliError;

fn tick() -> Result<Event, CliError> {
    Ok(Event::try_new("bench.tick", serde_json::json!({"n": 1}))?.with_source("bench"))
}

fn counting_async(bus: &Bus, pattern: &str, c: &Arc<AtomicU64>) -> Result<(), CliError> {
    let c = c.clone();
    bus.subscribe(
        pattern,
        handler_fn(move |_e: Arc<Event>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }),
    )?
    .detach();
    Ok(())
}

fn counting_sync(bus: &Bus, pattern: &str, c: &Arc<AtomicU64>) -> Result<(), CliError> {
    let c = c.clone();
    bus.subscribe(
        pattern,
        sync_handler(move |_e: &Event| {
            c.fetch_add(1, Ordering::Relaxed);
        }),
    )?
    .detach();
    Ok(())
}

fn check(name: &str, got: u64, want: u64) -> Result<(), CliError> {
    if got != want {
        return Err(CliError::Other(format!(
            "bench {name}: {got} deliveries, expected {want}"
        )));
    }
    Ok(())
}

async fn herald_publish_wait(n: u64) -> Result<f64, CliError> {
    let bus = Bus::new();
    let c = Arc::new(AtomicU64::new(0));
    counting_async(&bus, "bench.tick", &c)?;
    counting_async(&bus, "bench.*", &c)?;
    let ev = Arc::new(tick()?);
    let start = Instant::now();
    for _ in 0..n {
        bus.publish_shared(ev.clone()).await?;
    }
    let r = rate(n, start);
    check("publish_wait", c.load(Ordering::Relaxed), 2 * n)?;
    Ok(r)
}

async fn broadcast_two_receivers(n: u64) -> Result<f64, CliError> {
    let ev = Arc::new(tick()?);
    let (tx, _) = broadcast::channel::<Arc<Event>>(n as usize);
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let mut rx = tx.subscribe();
        receivers.push(tokio::spawn(async move {
            let mut got = 0u64;
            while got < n {
                match rx.recv().await {
                    Ok(e) => {
                        black_box(e);
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            got
        }));
    }
    let start = Instant::now();
    for _ in 0..n {
        let _ = tx.send(ev.clone());
    }
    let mut total = 0;
    for r in receivers {
        total += r.await.map_err(|e| CliError::Other(e.to_string()))?;
    }
    let r = rate(n, start);
    check("broadcast", total, 2 * n)?;
    Ok(r)
}

async fn herald_emit(n: u64) -> Result<f64, CliError> {
    let bus = Bus::new();
    let c = Arc::new(AtomicU64::new(0));
    counting_sync(&bus, "bench.tick", &c)?;
    let ev = tick()?;
    let start = Instant::now();
    for _ in 0..n {
        bus.emit_wait(ev.clone())
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
    }
    bus.flush().await;
    let r = rate(n, start);
    check("emit", c.load(Ordering::Relaxed), n)?;
    Ok(r)
}

type Callback = Box<dyn Fn(&Event) + Send + Sync>;

async fn mpsc_one_dispatcher(n: u64) -> Result<f64, CliError> {
    let c = Arc::new(AtomicU64::new(0));
    let cc = c.clone();
    let handlers: Vec<Callback> = vec![Box::new(move |_e: &Event| {
        cc.fetch_add(1, Ordering::Relaxed);
    })];
    let (tx, mut rx) = mpsc::channel::<Event>(10_000);
    let dispatcher = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            for h in &handlers {
                h(&e);
            }
        }
    });
    let ev = tick()?;
    let start = Instant::now();
    for _ in 0..n {
        tx.send(ev.clone())
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
    }
    drop(tx);
    dispatcher
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    let r = rate(n, start);
    check("mpsc", c.load(Ordering::Relaxed), n)?;
    Ok(r)
}

async fn herald_sync4(n: u64) -> Result<f64, CliError> {
    let bus = Bus::new();
    let c = Arc::new(AtomicU64::new(0));
    for _ in 0..4 {
        counting_sync(&bus, "bench.tick", &c)?;
    }
    let ev = Arc::new(tick()?);
    let start = Instant::now();
    for _ in 0..n {
        black_box(bus.publish_shared(ev.clone()).await?);
    }
    let r = rate(n, start);
    check("sync4", c.load(Ordering::Relaxed), 4 * n)?;
    Ok(r)
}

async fn vec_box_fn4(n: u64) -> Result<f64, CliError> {
    let c = Arc::new(AtomicU64::new(0));
    let handlers: Vec<Callback> = (0..4)
        .map(|_| {
            let c = c.clone();
            Box::new(move |_e: &Event| {
                c.fetch_add(1, Ordering::Relaxed);
            }) as Callback
        })
        .collect();
    let ev = tick()?;
    let start = Instant::now();
    for _ in 0..n {
        for h in black_box(&handlers) {
            h(black_box(&ev));
        }
    }
    let r = rate(n, start);
    check("vec_box_fn", c.load(Ordering::Relaxed), 4 * n)?;
    Ok(r)
}

/// Total sync publish throughput of `threads` publisher threads (each with its own runtime)
/// into one bus with 4 sync handlers and history 100.
fn threads_publishing(threads: usize, n: u64) -> Result<f64, CliError> {
    let bus = Bus::new();
    for _ in 0..4 {
        // No shared counter here: the handlers must not be what the threads contend on.
        bus.subscribe(
            "bench.tick",
            sync_handler(move |e: &Event| {
                black_box(e);
            }),
        )?
        .detach();
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let bus = bus.clone();
            std::thread::spawn(move || -> Result<(), CliError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| CliError::Other(e.to_string()))?;
                let ev = Arc::new(tick()?);
                rt.block_on(async {
                    for _ in 0..n {
                        bus.publish_shared(ev.clone()).await?;
                    }
                    Ok::<(), CliError>(())
                })
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| CliError::Other("bench publisher thread panicked".into()))??;
    }
    let r = rate(n * threads as u64, start);
    check("threads", bus.stats().events_published, n * threads as u64)?;
    Ok(r)
}

/// Sync publish throughput with `noise` non-matching subscriptions; `subjects` distinct
/// subjects in rotation (more than the cache holds = every lookup walks the trie).
async fn routing(noise: usize, subjects: usize, n: u64) -> Result<f64, CliError> {
    let bus = Bus::new();
    let c = Arc::new(AtomicU64::new(0));
    for i in 0..noise {
        let pattern = match i % 3 {
            0 => format!("noise.{i}.*"),
            1 => format!("noise{i}.>"),
            _ => format!("bench.other{i}"),
        };
        counting_sync(&bus, &pattern, &c)?;
    }
    let hit = Arc::new(AtomicU64::new(0));
    counting_sync(&bus, "bench.*", &hit)?;
    let events: Vec<Arc<Event>> = (0..subjects)
        .map(|i| Ok(Arc::new(Event::new(Subject::new(&format!("bench.s{i}"))?))))
        .collect::<Result<_, CliError>>()?;
    let start = Instant::now();
    for i in 0..n as usize {
        bus.publish_shared(events[i % subjects].clone()).await?;
    }
    let r = rate(n, start);
    check("routing", hit.load(Ordering::Relaxed), n)?;
    check("routing noise", c.load(Ordering::Relaxed), 0)?;
    Ok(r)
}

fn bytes_per_subscription(count: usize) -> Result<(f64, f64), CliError> {
    let before = live_bytes();
    let bus = Bus::new();
    for i in 0..count {
        let c = i as u64;
        bus.subscribe(
            format!("noise.{i}.*"),
            sync_handler(move |_e: &Event| {
                black_box(c);
            }),
        )?
        .detach();
    }
    let herald = (live_bytes() - before) as f64 / count as f64;
    drop(bus);
    let before = live_bytes();
    let mut plain: Vec<(String, Callback)> = Vec::new();
    for i in 0..count {
        let c = i as u64;
        plain.push((
            format!("noise.{i}.*"),
            Box::new(move |_e: &Event| {
                black_box(c);
            }),
        ));
    }
    let baseline = (live_bytes() - before) as f64 / count as f64;
    black_box(&plain);
    Ok((herald, baseline))
}

async fn memory_growth(warm: u64, total: u64) -> Result<(f64, f64), CliError> {
    let bus = Bus::builder().history(100).build();
    let c = Arc::new(AtomicU64::new(0));
    counting_sync(&bus, "bench.*", &c)?;
    let subjects: Vec<Subject> = (0..1_000)
        .map(|i| Subject::new(&format!("bench.m{i}")))
        .collect::<Result<_, _>>()?;
    let before = live_bytes();
    let mut after_warm = 0;
    for i in 0..total {
        bus.publish(Event::new(subjects[i as usize % subjects.len()].clone()))
            .await?;
        if i + 1 == warm {
            after_warm = live_bytes() - before;
        }
    }
    let after_all = live_bytes() - before;
    check("memory", c.load(Ordering::Relaxed), total)?;
    Ok((after_all as f64, after_warm as f64))
}

fn python_seed_002(n: u64) -> Option<f64> {
    let script = include_str!("seed002_bus.py");
    let out = std::process::Command::new("python3")
        .args(["-c", script, &n.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

pub(crate) async fn run(report: &mut Report, scale: f64) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(1_000);

    // First, while this thread holds no other bus's route cache.
    let (after_total, after_warm) = memory_growth(n(10_000.0), n(1_000_000.0)).await?;
    report.add(Figure::lower(
        "bus_heap_after_1m_publishes",
        "bytes",
        after_total,
        after_warm,
        "same bus after 10k publishes",
    ))?;

    let pw = publish_figures(report, scale).await?;
    routing_figures(report, scale).await?;

    match python_seed_002(n(100_000.0)) {
        Some(py) => report.add(
            Figure::higher(
                "publish_wait_vs_seed002_python",
                "events/s",
                pw,
                py,
                "seed 002 Python EventBus, 2 async subs",
            )
            .target(40.0),
        )?,
        None => crate::output::warn_line!(
            "bench: python3 not available; the seed 002 comparison was skipped"
        ),
    }
    Ok(())
}

/// Publish and emit beside tokio: waiting on 2 async subscribers, emit to 1, 4 sync
/// subscribers, 2 threads against 1. Returns the publish-and-wait rate (the Python
/// comparison's figure).
async fn publish_figures(report: &mut Report, scale: f64) -> Result<f64, CliError> {
    let n = |base: f64| ((base * scale) as u64).max(1_000);
    let (pw, bc) = paired(
        5,
        || herald_publish_wait(n(300_000.0)),
        || broadcast_two_receivers(n(300_000.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "publish_wait_2_async_subs",
            "events/s",
            pw,
            bc,
            "tokio broadcast, 2 receiver tasks",
        )
        .target(1.5),
    )?;

    let (em, mp) = paired(
        5,
        || herald_emit(n(300_000.0)),
        || mpsc_one_dispatcher(n(300_000.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "emit_1_sync_sub",
            "events/s",
            em,
            mp,
            "tokio mpsc + 1 dispatcher task",
        )
        .target(1.0),
    )?;

    let (s4, vb) = paired(
        5,
        || herald_sync4(n(2_000_000.0)),
        || vec_box_fn4(n(2_000_000.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "publish_4_sync_subs",
            "events/s",
            s4,
            vb,
            "Vec<Box<dyn Fn>> loop, 4 handlers",
        )
        .target(0.25),
    )?;

    let (t2, t1) = paired(
        5,
        || async { threads_publishing(2, n(1_000_000.0)) },
        || async { threads_publishing(1, n(1_000_000.0)) },
    )
    .await?;
    report.add(Figure::higher(
        "publish_2_threads_vs_1",
        "events/s",
        t2,
        t1,
        "same bus, one publisher thread",
    ))?;
    Ok(pw)
}

/// Routing at 100k subscriptions against 10 (cached and not), and each subscription's bytes.
async fn routing_figures(report: &mut Report, scale: f64) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(1_000);
    let (r100k, r10) = paired(
        5,
        || routing(100_000, 1, n(1_000_000.0)),
        || routing(10, 1, n(1_000_000.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "routing_100k_vs_10_subs",
            "events/s",
            r100k,
            r10,
            "same bus with 10 subscriptions",
        )
        .target(0.9),
    )?;
    let (u100k, u10) = paired(
        5,
        || routing(100_000, 8_192, n(300_000.0)),
        || routing(10, 8_192, n(300_000.0)),
    )
    .await?;
    report.add(
        Figure::higher(
            "routing_uncached_100k_vs_10_subs",
            "events/s",
            u100k,
            u10,
            "same bus with 10 subscriptions",
        )
        .target(0.9),
    )?;

    let (per_sub, per_plain) = bytes_per_subscription(100_000)?;
    report.add(Figure::lower(
        "bytes_per_subscription_at_100k",
        "bytes",
        per_sub,
        per_plain,
        "Vec<(String, Box<dyn Fn>)>",
    ))?;
    Ok(())
}
