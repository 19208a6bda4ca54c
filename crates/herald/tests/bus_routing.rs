//! The bus rows of DESIGN.md's Decisions table about who hears what, in which order: the
//! pattern language, priorities, handler order, (un)subscribing, and the route cache.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald::{handler_fn, sync_handler, Bus, Event, Pattern, Priority, SubscribeOptions};
use herald_testkit::fixtures::{counter, event as ev, id_of, logger, tagged as ev_id, Log};
use parking_lot::Mutex;

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

#[tokio::test(flavor = "current_thread")]
async fn a_critical_event_emitted_during_a_batch_runs_before_the_rest_of_that_batch() {
    let bus = Bus::new();
    let log: Log = Default::default();
    let (l, b) = (log.clone(), bus.clone());
    let _s = bus
        .subscribe(
            ">",
            sync_handler(move |e: &Event| {
                let id = id_of(e);
                // The first normal event's handler emits a critical one while the other
                // normal events are already taken off the queue in the same batch.
                if id == "n0" {
                    b.emit(ev_id("q.x", "c").with_priority(Priority::Critical))
                        .expect("emit");
                }
                l.lock().push(id);
            }),
        )
        .expect("sub");
    for i in 0..10 {
        bus.emit(ev_id("q.x", &format!("n{i}"))).expect("emit");
    }
    bus.flush().await;
    let want: Vec<String> = ["n0", "c"]
        .into_iter()
        .map(String::from)
        .chain((1..10).map(|i| format!("n{i}")))
        .collect();
    assert_eq!(*log.lock(), want);
    assert_eq!(bus.stats().events_dispatched, 11);
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

// ----- route cache -----

#[tokio::test]
async fn republishing_one_shared_event_sees_every_subscribe_and_unsubscribe_in_between() {
    // The same Arc<Event> (so the same Subject) each time: the route cache's pointer fast
    // path must still notice every change of the routes.
    let bus = Bus::new();
    let event = Arc::new(ev("same.subject"));
    let (a, ha) = counter();
    let (b, hb) = counter();
    let ga = bus.subscribe("same.subject", ha).expect("sub a");
    bus.publish_shared(event.clone()).await.expect("publish 1");
    let gb = bus.subscribe("same.*", hb).expect("sub b");
    bus.publish_shared(event.clone()).await.expect("publish 2");
    drop(ga);
    bus.publish_shared(event.clone()).await.expect("publish 3");
    drop(gb);
    let report = bus.publish_shared(event).await.expect("publish 4");
    assert_eq!(a.load(Ordering::SeqCst), 2, "a ran for publishes 1 and 2");
    assert_eq!(b.load(Ordering::SeqCst), 2, "b ran for publishes 2 and 3");
    assert_eq!(report.handlers_run, 0, "nobody is left for publish 4");
}

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
