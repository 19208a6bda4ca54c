//! The publish paths of `herald bench bus`, alone, for a profiler: `callgrind` counts the
//! instructions of each stage (docs/architecture.md, "What one publish costs").
//!
//! `cargo build --release --example publish_profile -p herald` then
//! `valgrind --tool=callgrind target/release/examples/publish_profile sync4 200000`
//! (or `async2`, `emit1`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald::{handler_fn, sync_handler, Bus, Event};

fn tick() -> Event {
    Event::try_new("bench.tick", serde_json::json!({"n": 1}))
        .expect("a valid subject")
        .with_source("bench")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "sync4".to_owned());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let bus = Bus::new();
    let c = Arc::new(AtomicU64::new(0));
    let subscribe_sync = |pattern: &str| {
        let c = c.clone();
        bus.subscribe(
            pattern,
            sync_handler(move |_e: &Event| {
                c.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("subscribe")
        .detach();
    };
    let subscribe_async = |pattern: &str| {
        let c = c.clone();
        bus.subscribe(
            pattern,
            handler_fn(move |_e: Arc<Event>| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }),
        )
        .expect("subscribe")
        .detach();
    };
    let ev = Arc::new(tick());
    let started = std::time::Instant::now();
    match path.as_str() {
        "sync4" => {
            for _ in 0..4 {
                subscribe_sync("bench.tick");
            }
            for _ in 0..n {
                std::hint::black_box(bus.publish_shared(ev.clone()).await.expect("publish"));
            }
        }
        "async2" => {
            subscribe_async("bench.tick");
            subscribe_async("bench.*");
            for _ in 0..n {
                std::hint::black_box(bus.publish_shared(ev.clone()).await.expect("publish"));
            }
        }
        "emit1" => {
            subscribe_sync("bench.tick");
            let ev = tick();
            for _ in 0..n {
                bus.emit_wait(ev.clone()).await.expect("emit");
            }
            bus.flush().await;
        }
        other => panic!("unknown path {other:?}: sync4, async2 or emit1"),
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{path}: {n} publishes, {ns:.0} ns each, {} handler calls",
        c.load(Ordering::Relaxed)
    );
}
