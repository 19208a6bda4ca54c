//! Criterion benches for developers: publish cost (sync and async handlers) beside a plain
//! `Vec<Box<dyn Fn>>`, routing with many non-matching subscriptions, and envelope parsing.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use herald::{handler_fn, sync_handler, Bus, Event, Subject};

type Callback = Box<dyn Fn(&Event) + Send + Sync>;

fn tick() -> Arc<Event> {
    Arc::new(Event::new(Subject::new("bench.tick").expect("subject")))
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("publish");
    let count = Arc::new(AtomicU64::new(0));

    let bus = Bus::new();
    for _ in 0..4 {
        let n = count.clone();
        bus.subscribe(
            "bench.tick",
            sync_handler(move |_: &Event| {
                n.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("sub")
        .detach();
    }
    let ev = tick();
    // 1,000 publishes per iteration, so the runtime's block_on does not dominate.
    g.throughput(criterion::Throughput::Elements(1_000));
    g.bench_function("herald_4_sync_handlers", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..1_000 {
                    bus.publish_shared(ev.clone()).await.expect("publish");
                }
            })
        })
    });

    // The same with the history ring off: what recording every publish costs.
    let quiet = Bus::builder().history(0).build();
    for _ in 0..4 {
        let n = count.clone();
        quiet
            .subscribe(
                "bench.tick",
                sync_handler(move |_: &Event| {
                    n.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .expect("sub")
            .detach();
    }
    g.bench_function("herald_4_sync_handlers_no_history", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..1_000 {
                    quiet.publish_shared(ev.clone()).await.expect("publish");
                }
            })
        })
    });

    let handlers: Vec<Callback> = (0..4)
        .map(|_| {
            let n = count.clone();
            Box::new(move |_: &Event| {
                n.fetch_add(1, Ordering::Relaxed);
            }) as Callback
        })
        .collect();
    g.bench_function("vec_box_fn_4_handlers", |b| {
        b.iter(|| {
            for _ in 0..1_000 {
                for h in &handlers {
                    h(black_box(&ev));
                }
            }
        })
    });

    let async_bus = Bus::new();
    for p in ["bench.tick", "bench.*"] {
        let n = count.clone();
        async_bus
            .subscribe(
                p,
                handler_fn(move |_e: Arc<Event>| {
                    let n = n.clone();
                    async move {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }),
            )
            .expect("sub")
            .detach();
    }
    g.bench_function("herald_2_async_handlers", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..1_000 {
                    async_bus.publish_shared(ev.clone()).await.expect("publish");
                }
            })
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("routing");
    for noise in [10usize, 100_000] {
        let bus = Bus::new();
        for i in 0..noise {
            bus.subscribe(format!("noise.{i}.*"), sync_handler(|_: &Event| ()))
                .expect("sub")
                .detach();
        }
        bus.subscribe("bench.*", sync_handler(|_: &Event| ()))
            .expect("sub")
            .detach();
        let events: Vec<Arc<Event>> = (0..8192)
            .map(|i| {
                Arc::new(Event::new(
                    Subject::new(&format!("bench.s{i}")).expect("subject"),
                ))
            })
            .collect();
        let mut i = 0;
        g.bench_function(format!("uncached_publish_{noise}_non_matching"), |b| {
            b.iter(|| {
                i = (i + 1) % events.len();
                rt.block_on(bus.publish_shared(events[i].clone()))
                    .expect("publish")
            })
        });
    }
    g.finish();
}

/// What a user of raw serde would decode into, for comparison.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawEnvelope {
    subject: String,
    event_type: String,
    source: String,
    data: serde_json::Map<String, serde_json::Value>,
    timestamp: String,
    correlation_id: String,
    priority: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

fn envelope(c: &mut Criterion) {
    let bytes = Event::try_new(
        "trivia.started",
        serde_json::json!({"round": 1, "q": "why"}),
    )
    .expect("event")
    .to_json();
    c.bench_function("envelope_from_json", |b| {
        b.iter(|| Event::from_json(black_box(&bytes)).expect("decode"))
    });
    c.bench_function("envelope_raw_derive_struct", |b| {
        b.iter(|| serde_json::from_slice::<RawEnvelope>(black_box(&bytes)).expect("decode"))
    });
    c.bench_function("timestamp_parse", |b| {
        b.iter(|| {
            herald::Timestamp::parse(black_box("2026-11-23T10:11:12.123456Z")).expect("timestamp")
        })
    });
    c.bench_function("subject_new", |b| {
        b.iter(|| Subject::new(black_box("rosey.command.trivia.start")).expect("subject"))
    });
}

criterion_group!(benches, publish, routing, envelope);
criterion_main!(benches);
