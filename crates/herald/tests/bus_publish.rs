//! The bus rows of DESIGN.md's Decisions table about publishing: waiting, emit overflow,
//! isolation, publish loops, history, statistics, stop gating, concurrency, conformance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald::{
    handler_fn, sync_handler, BoxError, Bus, EmitError, Event, PublishError, SubscribeOptions,
};
use herald_testkit::fixtures::{counter, event as ev, id_of, tagged as ev_id};
use herald_testkit::DeliveryCheck;
use parking_lot::Mutex;

/// Spawns `tasks` publishers that each publish `each` events with ids `{task}-{i}` on
/// `subject`; returns every id whose publish returned `Ok`.
async fn publish_from_tasks(
    bus: &Bus,
    subject: &'static str,
    tasks: usize,
    each: usize,
) -> Vec<String> {
    let publishers: Vec<_> = (0..tasks)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(each);
                for i in 0..each {
                    let id = format!("{t}-{i}");
                    bus.publish(ev_id(subject, &id)).await.expect("publish");
                    acked.push(id);
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for p in publishers {
        acked.extend(p.await.expect("publisher task"));
    }
    acked
}

#[allow(dead_code)]
fn assert_send_sync<T: Send + Sync + Clone>() {}
const _: fn() = || assert_send_sync::<Bus>();

// ----- does publish wait -----

#[tokio::test]
async fn publish_returns_after_every_async_handler_has_run_with_a_report() {
    let bus = Bus::new();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let _s = bus
        .subscribe(
            "a.*",
            handler_fn(move |_e: Arc<Event>| {
                let d = d.clone();
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .expect("sub");
    let _f = bus
        .subscribe("a.b", sync_handler(|_: &Event| Err::<(), _>("nope")))
        .expect("sub");
    let report = bus.publish(ev("a.b")).await.expect("publish");
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(report.handlers_run, 2);
    assert_eq!(report.failed(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn emit_overflow_is_refused_with_the_event_back_and_counted() {
    let bus = Bus::builder().queue_capacity(2).build();
    let (n, h) = counter();
    let _s = bus.subscribe(">", h).expect("sub");
    bus.emit(ev_id("a.b", "1")).expect("first fits");
    bus.emit(ev_id("a.b", "2")).expect("second fits");
    let err = bus.emit(ev_id("a.b", "3")).expect_err("third overflows");
    assert!(matches!(err, EmitError::Full { capacity: 2, .. }), "{err}");
    assert_eq!(id_of(&err.into_event()), "3");
    assert_eq!(bus.stats().emit_rejected, 1);
    bus.flush().await;
    assert_eq!(
        n.load(Ordering::SeqCst),
        2,
        "accepted events are all delivered"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn emit_wait_from_a_handler_on_the_dispatcher_refuses_instead_of_waiting_for_itself() {
    let bus = Bus::builder().queue_capacity(1).build();
    let results: Arc<Mutex<Vec<bool>>> = Default::default();
    let (b, r) = (bus.clone(), results.clone());
    let handler = handler_fn(move |_e: Arc<Event>| {
        let (b, r) = (b.clone(), r.clone());
        async move {
            // Fill the one-slot queue, then ask to wait for room that only this very
            // dispatcher could make.
            b.emit(ev("filler")).expect("the queue has room for one");
            let outcome = b.emit_wait(ev("third")).await;
            r.lock()
                .push(matches!(outcome, Err(EmitError::Full { .. })));
        }
    });
    let _s = bus.subscribe("first", handler).expect("sub");
    bus.emit(ev("first")).expect("emit");
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(5), bus.flush()).await;
    assert!(flushed.is_ok(), "the dispatcher deadlocked");
    assert_eq!(*results.lock(), [true]);
}

// ----- isolation -----

#[tokio::test]
async fn a_panicking_handler_among_ten_sync_and_async_leaves_the_others_called_once_per_event() {
    let bus = Bus::new();
    let calls: Vec<Arc<AtomicUsize>> = (0..10).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut subs = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let c = c.clone();
        let h = match i {
            3 => sync_handler(move |_: &Event| -> Result<(), BoxError> {
                c.fetch_add(1, Ordering::SeqCst);
                panic!("sync boom")
            }),
            6 => handler_fn(move |_e: Arc<Event>| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    if c.load(Ordering::SeqCst) > 0 {
                        panic!("async boom")
                    }
                }
            }),
            8 => sync_handler(move |_: &Event| {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("plain error")
            }),
            i if i % 2 == 0 => sync_handler(move |_: &Event| {
                c.fetch_add(1, Ordering::SeqCst);
            }),
            _ => handler_fn(move |_e: Arc<Event>| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }),
        };
        subs.push(
            bus.subscribe_with("p.*", SubscribeOptions::owner(format!("h{i}")), h)
                .expect("sub"),
        );
    }
    for round in 1..=5 {
        let report = bus.publish(ev("p.x")).await.expect("publish goes on");
        assert_eq!(report.handlers_run, 10);
        assert_eq!(report.failed(), 3);
        for c in &calls {
            assert_eq!(
                c.load(Ordering::SeqCst),
                round,
                "each handler exactly once per event"
            );
        }
    }
    let stats = bus.stats();
    assert_eq!(stats.handler_errors, 15);
    assert_eq!(stats.handler_panics, 10);
    assert_eq!(stats.events_dispatched, 50);
    // No lock is left poisoned: subscribing and publishing still work.
    let (n, h) = counter();
    let _s = bus.subscribe("p.x", h).expect("subscribe after panics");
    bus.publish(ev("p.x")).await.expect("publish after panics");
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

// ----- publish loops -----

#[tokio::test]
async fn a_handler_publishing_its_own_event_in_a_loop_is_stopped_at_the_depth_limit() {
    let bus = Bus::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let refused: Arc<Mutex<Vec<PublishError>>> = Default::default();
    let (b, r, f) = (bus.clone(), runs.clone(), refused.clone());
    let _s = bus
        .subscribe(
            "loop.tick",
            handler_fn(move |e: Arc<Event>| {
                let (b, r, f) = (b.clone(), r.clone(), f.clone());
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    if let Err(err) = b.publish((*e).clone()).await {
                        f.lock().push(err);
                    }
                }
            }),
        )
        .expect("sub");
    let report = bus
        .publish(ev("loop.tick"))
        .await
        .expect("outermost publish runs");
    assert!(report.is_ok());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        16,
        "a chain of 16 nested publishes runs"
    );
    let refused = refused.lock().clone();
    assert_eq!(refused.len(), 1, "the 17th is refused");
    assert!(matches!(
        refused[0],
        PublishError::DepthExceeded {
            depth: 17,
            max: 16,
            ..
        }
    ));
    assert_eq!(bus.stats().refused_depth, 1);
    assert_eq!(bus.stats().events_published, 16);
    // The process and the bus live on.
    bus.publish(ev("other.thing"))
        .await
        .expect("later publishes work");
}

#[tokio::test]
async fn an_emit_loop_is_stopped_at_the_depth_limit_too() {
    let bus = Bus::builder().max_depth(5).build();
    let runs = Arc::new(AtomicUsize::new(0));
    let (b, r) = (bus.clone(), runs.clone());
    let _s = bus
        .subscribe(
            "loop.emit",
            sync_handler(move |e: &Event| {
                r.fetch_add(1, Ordering::SeqCst);
                b.emit(e.clone()).map_err(|e| e.to_string())
            }),
        )
        .expect("sub");
    bus.emit(ev("loop.emit")).expect("emit");
    bus.flush().await;
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(bus.stats().refused_depth, 1);
    assert_eq!(
        bus.stats().handler_errors,
        1,
        "the refused emit surfaced as the handler's error"
    );
}

// ----- history -----

#[tokio::test]
async fn history_keeps_the_last_n_events_newest_first_heard_or_not() {
    let bus = Bus::builder().history(3).build();
    let _s = bus
        .subscribe("heard.*", sync_handler(|_: &Event| ()))
        .expect("sub");
    for i in 0..5 {
        let subject = if i % 2 == 0 { "heard.x" } else { "unheard.x" };
        bus.publish(ev_id(subject, &i.to_string()))
            .await
            .expect("publish");
    }
    let ids = |v: Vec<Arc<Event>>| v.iter().map(|e| id_of(e)).collect::<Vec<_>>();
    assert_eq!(ids(bus.history(None)), ["4", "3", "2"]);
    assert_eq!(ids(bus.history(Some(2))), ["4", "3"]);
    assert!(bus.history(Some(0)).is_empty());
    assert_eq!(
        ids(bus.history_matching("unheard.>", None).expect("p")),
        ["3"]
    );
    assert!(Bus::builder().history(0).build().history(None).is_empty());
}

// ----- statistics -----

#[tokio::test]
async fn statistics_count_publishes_handler_calls_and_failures_exactly() {
    let bus = Bus::new();
    let _a = bus
        .subscribe("s.*", sync_handler(|_: &Event| ()))
        .expect("sub");
    let _b = bus
        .subscribe("s.fail", sync_handler(|_: &Event| Err::<(), _>("x")))
        .expect("sub");
    bus.publish(ev("s.ok")).await.expect("publish");
    bus.publish(ev("s.fail")).await.expect("publish");
    bus.publish(ev("nobody.listens")).await.expect("publish");
    let before = bus.stats();
    assert_eq!(
        (
            before.events_published,
            before.events_dispatched,
            before.handler_errors
        ),
        (3, 3, 1)
    );
    bus.publish(ev("s.ok")).await.expect("publish");
    assert_eq!(before.events_published, 3, "stats() is a snapshot");
    assert_eq!(bus.stats().subscriptions, 2);
}

// ----- start/stop gating -----

#[tokio::test]
async fn a_stopped_bus_refuses_publish_and_emit_with_typed_errors_and_counts_them() {
    let bus = Bus::new();
    let (n, h) = counter();
    let _s = bus.subscribe(">", h).expect("sub");
    bus.stop().await;
    assert!(matches!(
        bus.publish(ev("a.b")).await,
        Err(PublishError::Stopped { .. })
    ));
    assert!(matches!(
        bus.emit(ev("a.b")),
        Err(EmitError::Stopped { .. })
    ));
    assert_eq!(bus.stats().refused_stopped, 2);
    assert_eq!(n.load(Ordering::SeqCst), 0);
    bus.start();
    bus.publish(ev("a.b")).await.expect("running again");
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn stop_drains_events_already_queued() {
    let bus = Bus::new();
    let (n, h) = counter();
    let _s = bus.subscribe(">", h).expect("sub");
    for _ in 0..10 {
        bus.emit(ev("a.b")).expect("emit");
    }
    bus.stop().await;
    assert_eq!(n.load(Ordering::SeqCst), 10);
}

// ----- concurrency -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_publishers_into_four_subscribers_deliver_every_event_exactly_once() {
    const TASKS: usize = 16;
    const EACH: usize = 10_000;
    let bus = Bus::builder().history(100).build();
    let seen: Vec<Arc<Mutex<Vec<String>>>> = (0..4).map(|_| Default::default()).collect();
    let mut subs = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        let s = s.clone();
        let pattern = ["c.*", "c.>", ">", "*.*"][i];
        let h = if i % 2 == 0 {
            sync_handler(move |e: &Event| s.lock().push(id_of(e)))
        } else {
            handler_fn(move |e: Arc<Event>| {
                let s = s.clone();
                async move { s.lock().push(id_of(&e)) }
            })
        };
        subs.push(bus.subscribe(pattern, h).expect("sub"));
    }
    let acked = publish_from_tasks(&bus, "c.x", TASKS, EACH).await;
    for s in &seen {
        DeliveryCheck::compare(acked.iter().cloned(), s.lock().iter().cloned())
            .assert_exactly_once();
    }
    let stats = bus.stats();
    assert_eq!(stats.events_published, (TASKS * EACH) as u64);
    assert_eq!(stats.events_dispatched, (TASKS * EACH * 4) as u64);
    assert_eq!(stats.handler_errors, 0);
}

// ----- the transport conformance suite -----

#[tokio::test]
async fn the_in_process_bus_passes_the_transport_conformance_suite() {
    let bus = Bus::new();
    herald_testkit::conformance::run_all(&bus, "conf").await;
}

#[test]
fn emit_works_again_on_a_new_runtime_after_the_first_one_is_gone() {
    let bus = Bus::new();
    let (n, h) = counter();
    let _s = bus.subscribe(">", h).expect("sub");
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            bus.emit(ev("rt.x")).expect("emit");
            bus.flush().await;
        });
        drop(rt); // the dispatcher task dies with its runtime
    }
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_churning_during_concurrent_publishes_never_disturb_the_stable_ones() {
    let bus = Bus::new();
    let stable: Arc<Mutex<Vec<String>>> = Default::default();
    let s = stable.clone();
    let _stable = bus
        .subscribe(
            "churn.*",
            sync_handler(move |e: &Event| s.lock().push(id_of(e))),
        )
        .expect("sub");
    let churn_calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churner = {
        let (bus, calls, stop) = (bus.clone(), churn_calls.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let c = calls.clone();
                let pattern = if rounds.is_multiple_of(2) {
                    "churn.>"
                } else {
                    "*.x"
                };
                let guard = bus
                    .subscribe(
                        pattern,
                        sync_handler(move |_: &Event| {
                            c.fetch_add(1, Ordering::SeqCst);
                        }),
                    )
                    .expect("sub");
                tokio::task::yield_now().await;
                drop(guard);
                rounds += 1;
            }
            rounds
        })
    };
    let acked = publish_from_tasks(&bus, "churn.x", 4, 5_000).await;
    stop.store(true, Ordering::SeqCst);
    let rounds = churner.await.expect("churner");
    assert!(rounds > 0);
    DeliveryCheck::compare(acked, stable.lock().clone()).assert_exactly_once();
    let stats = bus.stats();
    assert_eq!(stats.events_published, 20_000);
    assert_eq!(
        stats.events_dispatched,
        20_000 + churn_calls.load(Ordering::SeqCst) as u64
    );
    assert_eq!(
        stats.subscriptions, 1,
        "every churned subscription was removed"
    );
}

// ----- statistics under many threads -----

#[test]
fn counts_stay_exact_with_more_publishing_threads_than_owned_stripes_and_threads_coming_and_going()
{
    let bus = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _g = rt.enter();
        Bus::new()
    };
    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let _s = bus
        .subscribe(
            "stats.>",
            sync_handler(move |_: &Event| {
                h.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("sub");
    // Three waves of 40 threads: more than the 16 owned stripes at once, and stripes handed
    // back by finished threads taken again by new ones.
    for _wave in 0..3 {
        std::thread::scope(|s| {
            for _ in 0..40 {
                let bus = bus.clone();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        for _ in 0..500 {
                            bus.publish(ev("stats.x")).await.expect("publish");
                        }
                    });
                });
            }
        });
    }
    let stats = bus.stats();
    assert_eq!(heard.load(Ordering::Relaxed), 3 * 40 * 500);
    assert_eq!(stats.events_published, 3 * 40 * 500);
    assert_eq!(stats.events_dispatched, 3 * 40 * 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_when_an_async_dispatch_resumes_on_another_thread() {
    let bus = Bus::new();
    let _s = bus
        .subscribe(
            "hop.>",
            handler_fn(|_e: Arc<Event>| async {
                // Yielding lets the publishing task resume on the other worker thread.
                tokio::task::yield_now().await;
                Ok::<(), BoxError>(())
            }),
        )
        .expect("sub");
    let acked = publish_from_tasks(&bus, "hop.x", 8, 2_000).await;
    let stats = bus.stats();
    assert_eq!(acked.len(), 16_000);
    assert_eq!(stats.events_published, 16_000);
    assert_eq!(stats.events_dispatched, 16_000);
}
