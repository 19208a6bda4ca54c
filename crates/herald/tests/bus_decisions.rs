//! Every bus row of DESIGN.md's Decisions table, one test (or a few) per row, named after the behaviour.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald::plugin::{Plugin, PluginContext, PluginManager};
use herald::{
    handler_fn, sync_handler, BoxError, Bus, EmitError, Event, Pattern, Priority, PublishError,
    Subject, SubscribeOptions,
};
use herald_testkit::DeliveryCheck;
use parking_lot::Mutex;

fn ev(subject: &str) -> Event {
    Event::new(Subject::new(subject).expect("valid subject"))
}

fn ev_id(subject: &str, id: &str) -> Event {
    ev(subject).with_metadata("id", id)
}

fn id_of(e: &Event) -> String {
    e.metadata
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned()
}

type Log = Arc<Mutex<Vec<String>>>;

fn logger(log: &Log, tag: &str) -> herald::Handler {
    let (log, tag) = (log.clone(), tag.to_owned());
    sync_handler(move |_: &Event| log.lock().push(tag.clone()))
}

fn counter() -> (Arc<AtomicUsize>, herald::Handler) {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    (
        n,
        sync_handler(move |_: &Event| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

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

// ----- pattern language -----

#[tokio::test]
async fn star_matches_one_token_and_gt_the_rest_on_the_bus() {
    let bus = Bus::new();
    let log: Log = Default::default();
    let _a = bus
        .subscribe("trivia.*", logger(&log, "star"))
        .expect("sub");
    let _b = bus.subscribe("trivia.>", logger(&log, "gt")).expect("sub");
    let _c = bus
        .subscribe(Pattern::glob("tri*").expect("glob"), logger(&log, "glob"))
        .expect("sub");
    bus.publish(ev("trivia.started")).await.expect("publish");
    bus.publish(ev("trivia.round.started"))
        .await
        .expect("publish");
    assert_eq!(*log.lock(), ["star", "gt", "glob", "gt", "glob"]);
    assert!(bus.subscribe("trivia?", logger(&log, "x")).is_err());
}

// ----- what priority orders -----

#[tokio::test]
async fn subscription_priority_orders_handlers_critical_first_then_subscription_order() {
    let bus = Bus::new();
    let log: Log = Default::default();
    let mut subs = Vec::new();
    for (tag, p) in [
        ("low", Priority::Low),
        ("normal1", Priority::Normal),
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("normal2", Priority::Normal),
    ] {
        subs.push(
            bus.subscribe_with(
                "a.b",
                SubscribeOptions::owner("t").priority(p),
                logger(&log, tag),
            )
            .expect("sub"),
        );
    }
    bus.publish(ev("a.b")).await.expect("publish");
    assert_eq!(
        *log.lock(),
        ["critical", "high", "normal1", "normal2", "low"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn event_priority_drains_the_emit_queue_critical_first_then_in_emit_order() {
    let bus = Bus::new();
    let log: Log = Default::default();
    let l = log.clone();
    let _s = bus
        .subscribe(">", sync_handler(move |e: &Event| l.lock().push(id_of(e))))
        .expect("sub");
    // On a current-thread runtime the dispatcher cannot run before we await.
    for (id, p) in [
        ("l1", Priority::Low),
        ("n1", Priority::Normal),
        ("c1", Priority::Critical),
        ("n2", Priority::Normal),
        ("h1", Priority::High),
        ("c2", Priority::Critical),
    ] {
        bus.emit(ev_id("q.x", id).with_priority(p)).expect("emit");
    }
    bus.flush().await;
    assert_eq!(*log.lock(), ["c1", "c2", "h1", "n1", "n2", "l1"]);
}

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

// ----- handler order -----

#[tokio::test]
async fn handlers_of_equal_priority_run_in_global_subscription_order_whatever_the_patterns() {
    let bus = Bus::new();
    let log: Log = Default::default();
    let _s: Vec<_> = [
        ("a.>", "1"),
        ("a.b.c", "2"),
        ("*.b.*", "3"),
        (">", "4"),
        ("a.*.c", "5"),
    ]
    .into_iter()
    .map(|(p, t)| bus.subscribe(p, logger(&log, t)).expect("sub"))
    .collect();
    bus.publish(ev("a.b.c")).await.expect("publish");
    assert_eq!(*log.lock(), ["1", "2", "3", "4", "5"]);
}

// ----- same handler twice -----

#[tokio::test]
async fn the_same_handler_subscribed_twice_runs_once_per_matching_subscription() {
    let bus = Bus::new();
    let (n, h) = counter();
    let _a = bus.subscribe("x.y", h.clone()).expect("sub");
    let _b = bus.subscribe("x.*", h).expect("sub");
    let report = bus.publish(ev("x.y")).await.expect("publish");
    assert_eq!(report.handlers_run, 2);
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

// ----- mutation -----

#[tokio::test]
async fn every_handler_sees_the_event_exactly_as_published() {
    let bus = Bus::new();
    let published = Event::try_new("m.x", serde_json::json!({"k": 1})).expect("event");
    let seen: Arc<Mutex<Vec<Event>>> = Default::default();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let s = seen.clone();
        subs.push(
            bus.subscribe(
                "m.x",
                handler_fn(move |e: Arc<Event>| {
                    let s = s.clone();
                    async move { s.lock().push((*e).clone()) }
                }),
            )
            .expect("sub"),
        );
    }
    bus.publish(published.clone()).await.expect("publish");
    assert_eq!(
        *seen.lock(),
        vec![published.clone(), published.clone(), published]
    );
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

// ----- (un)subscribe during dispatch -----

#[tokio::test]
async fn subscribe_and_unsubscribe_from_inside_a_handler_take_effect_from_the_next_publish() {
    let bus = Bus::new();
    let log: Log = Default::default();
    let victim = bus
        .subscribe_with(
            "d.x",
            SubscribeOptions::owner("victim"),
            logger(&log, "victim"),
        )
        .expect("sub")
        .detach();
    let (b, l) = (bus.clone(), log.clone());
    let _changer = bus
        .subscribe_with(
            "d.x",
            SubscribeOptions::owner("changer").priority(Priority::High),
            sync_handler(move |_: &Event| {
                l.lock().push("changer".into());
                if l.lock().iter().filter(|s| *s == "changer").count() == 1 {
                    b.unsubscribe_id(victim);
                    b.subscribe_with(
                        "d.x",
                        SubscribeOptions::owner("newcomer"),
                        logger(&l, "newcomer"),
                    )
                    .expect("sub")
                    .detach();
                }
            }),
        )
        .expect("sub");
    bus.publish(ev("d.x")).await.expect("publish");
    assert_eq!(
        *log.lock(),
        ["changer", "victim"],
        "first publish keeps the list it started with"
    );
    log.lock().clear();
    bus.publish(ev("d.x")).await.expect("publish");
    assert_eq!(*log.lock(), ["changer", "newcomer"]);
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

// ----- unsubscribe -----

#[tokio::test]
async fn unsubscribe_removes_only_that_owners_subscriptions_with_that_exact_pattern() {
    let bus = Bus::new();
    let opts = |o: &str| SubscribeOptions::owner(o);
    for (p, o) in [("a.*", "x"), ("a.*", "x"), ("a.>", "x"), ("a.*", "y")] {
        bus.subscribe_with(p, opts(o), sync_handler(|_: &Event| ()))
            .expect("sub")
            .detach();
    }
    assert_eq!(bus.unsubscribe("a.*", "x"), 2);
    assert_eq!(
        bus.unsubscribe("a.*", "nobody"),
        0,
        "unknown pairs are a no-op"
    );
    assert_eq!(bus.unsubscribe("b.*", "x"), 0);
    let left: Vec<_> = bus
        .subscriptions()
        .iter()
        .map(|s| (s.pattern.to_string(), s.owner.to_string()))
        .collect();
    assert_eq!(
        left,
        [
            ("a.>".to_owned(), "x".to_owned()),
            ("a.*".to_owned(), "y".to_owned())
        ]
    );
    assert_eq!(bus.unsubscribe_all("x"), 1);
    assert_eq!(bus.subscriptions().len(), 1);
}

#[tokio::test]
async fn dropping_a_subscription_guard_unsubscribes_it() {
    let bus = Bus::new();
    let (n, h) = counter();
    let guard = bus.subscribe("g.x", h).expect("sub");
    bus.publish(ev("g.x")).await.expect("publish");
    drop(guard);
    bus.publish(ev("g.x")).await.expect("publish");
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert!(bus.subscriptions().is_empty());
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

// ----- plugins -----

struct Counting {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Plugin for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let s = self.seen.clone();
        ctx.subscribe(
            "game.*",
            sync_handler(move |e: &Event| s.lock().push(id_of(e))),
        )?;
        let s = self.seen.clone();
        ctx.subscribe_with_priority(
            "game.>",
            Priority::Low,
            sync_handler(move |e: &Event| s.lock().push(format!("all-{}", id_of(e)))),
        )?;
        Ok(())
    }
}

#[tokio::test]
async fn a_plugin_reloaded_three_times_receives_each_later_event_exactly_once() {
    let bus = Bus::new();
    let plugins = PluginManager::new(bus.clone());
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    plugins.load(Counting { seen: seen.clone() }).expect("load");
    for _ in 0..3 {
        plugins.reload("counting").expect("reload");
    }
    assert_eq!(bus.subscriptions().len(), 2);
    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    for id in &ids {
        bus.publish(ev_id("game.move", id)).await.expect("publish");
    }
    let seen = seen.lock();
    let direct: Vec<String> = seen
        .iter()
        .filter(|s| !s.starts_with("all-"))
        .cloned()
        .collect();
    let via_gt: Vec<String> = seen
        .iter()
        .filter_map(|s| s.strip_prefix("all-").map(str::to_owned))
        .collect();
    DeliveryCheck::compare(ids.clone(), direct).assert_exactly_once();
    DeliveryCheck::compare(ids, via_gt).assert_exactly_once();
}

#[tokio::test]
async fn unloading_a_plugin_removes_every_subscription_it_made() {
    let bus = Bus::new();
    let plugins = PluginManager::new(bus.clone());
    plugins
        .load(Counting {
            seen: Default::default(),
        })
        .expect("load");
    assert!(
        plugins
            .load(Counting {
                seen: Default::default()
            })
            .is_err(),
        "names are unique"
    );
    assert_eq!(bus.subscriptions().len(), 2);
    plugins.unload("counting").expect("unload");
    assert!(bus.subscriptions().is_empty());
    assert!(plugins.unload("counting").is_err());
}

struct Broken;
impl Plugin for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.subscribe("x.y", sync_handler(|_: &Event| ()))?;
        Err("cannot start".into())
    }
}

#[tokio::test]
async fn a_plugin_whose_setup_fails_is_not_loaded_and_leaves_no_subscription() {
    let bus = Bus::new();
    let plugins = PluginManager::new(bus.clone());
    let err = plugins.load(Broken).expect_err("setup fails");
    assert!(err.to_string().contains("cannot start"));
    assert!(bus.subscriptions().is_empty());
    assert!(plugins.loaded().is_empty());
}

#[tokio::test]
async fn plugin_events_carry_the_plugin_name_as_source() {
    let bus = Bus::new();
    let ctx = PluginContext::new(bus.clone(), "quote");
    let event = ctx
        .event("quote.added", serde_json::json!({"text": "hi"}))
        .expect("event");
    ctx.publish(event).await.expect("publish");
    assert_eq!(bus.history(Some(1))[0].source, "quote");
}

// ----- the transport conformance suite -----

#[tokio::test]
async fn the_in_process_bus_passes_the_transport_conformance_suite() {
    let bus = Bus::new();
    herald_testkit::conformance::run_all(&bus, "conf").await;
}

// ----- route cache -----

#[test]
fn a_subscription_made_on_one_thread_is_seen_by_a_publisher_on_another_whose_routes_were_cached() {
    let bus = Bus::new();
    let (first, h1) = counter();
    let _a = bus.subscribe("cache.x", h1).expect("sub");
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            for _ in 0..2 {
                go_rx.recv().expect("go");
                rt.block_on(bus.publish(ev("cache.x"))).expect("publish");
                done_tx.send(()).expect("done");
            }
        })
    };
    go_tx.send(()).expect("go");
    done_rx.recv().expect("done"); // the publisher thread has cached the route for cache.x
    let (second, h2) = counter();
    let _b = bus.subscribe("cache.*", h2).expect("sub");
    go_tx.send(()).expect("go");
    done_rx.recv().expect("done");
    publisher.join().expect("join");
    assert_eq!(first.load(Ordering::SeqCst), 2);
    assert_eq!(
        second.load(Ordering::SeqCst),
        1,
        "the cached route list was refreshed"
    );
}

#[test]
fn an_unsubscribed_handler_is_released_even_when_another_thread_cached_its_route() {
    let bus = Bus::new();
    let resource = Arc::new(());
    let held = resource.clone();
    let sub = bus
        .subscribe(
            "release.x",
            sync_handler(move |_: &Event| {
                let _ = &held;
            }),
        )
        .expect("sub");
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(bus.publish(ev("release.x"))).expect("publish");
            // Keep the thread (and its route cache) alive past the unsubscribe.
            std::thread::sleep(std::time::Duration::from_millis(200));
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(sub);
    assert_eq!(
        Arc::strong_count(&resource),
        1,
        "the handler's closure was dropped"
    );
    publisher.join().expect("join");
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

#[test]
fn a_handler_that_owns_its_own_subscription_guard_is_removed_without_deadlock() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let bus = Bus::new();
        let slot: Arc<Mutex<Option<herald::Subscription>>> = Default::default();
        let inner = slot.clone();
        let guard = bus
            .subscribe_with(
                "own.x",
                SubscribeOptions::owner("self"),
                sync_handler(move |_: &Event| {
                    let _ = &inner;
                }),
            )
            .expect("sub");
        *slot.lock() = Some(guard);
        drop(slot); // now only the handler's closure holds its own guard
                    // Removing the subscription drops the closure, which drops the guard, whose drop
                    // unsubscribes again: that must not happen under the routing lock.
        let removed = bus.unsubscribe_all("self");
        let _ = done_tx.send((removed, bus.subscriptions().len()));
    });
    let (removed, left) = done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("unsubscribe_all returned (no deadlock)");
    assert_eq!((removed, left), (1, 0));
}

struct Slow;
impl Plugin for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.subscribe("slow.x", sync_handler(|_: &Event| ()))?;
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok(())
    }
}

#[test]
fn two_concurrent_loads_of_the_same_plugin_let_exactly_one_succeed() {
    let bus = Bus::new();
    let plugins = Arc::new(PluginManager::new(bus.clone()));
    let results: Vec<bool> = (0..2)
        .map(|_| {
            let p = plugins.clone();
            std::thread::spawn(move || p.load(Slow).is_ok())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
    assert_eq!(
        bus.subscriptions().len(),
        1,
        "the loser left nothing subscribed"
    );
}
