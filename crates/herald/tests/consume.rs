//! The one consume loop against a memory delivery source: ack, retry after a delay, reject,
//! the in-flight bound, and a shutdown that drains handlers in flight within its bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::consume::memory::MemorySource;
use herald::{
    handler_fn, sync_handler, BoxError, Consume, ConsumeOptions, Event, Outcome, Reject,
    RetryAfter, Shutdown,
};
use herald_testkit::delivery::DeliveryCheck;
use herald_testkit::fixtures::{id_of, tagged};

fn ev(id: &str) -> Event {
    tagged("orders.placed", id)
}

#[tokio::test]
async fn successes_are_acked_errors_retried_after_their_delay_and_rejects_settled_once() {
    let source = MemorySource::new();
    let ids: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    for id in &ids {
        source.push(ev(id));
    }
    source.close();
    // Ids ending in 3 are poison; ids ending in 7 fail on their first attempt only.
    let attempts: Arc<parking_lot::Mutex<HashMap<String, u32>>> = Default::default();
    let seen = attempts.clone();
    let counting = sync_handler(move |e: &Event| -> Result<(), BoxError> {
        let id = id_of(e);
        let n = {
            let mut seen = seen.lock();
            let n = seen.entry(id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if id.ends_with('3') {
            return Err(Reject::new(format!("{id} is poison")).into());
        }
        if id.ends_with('7') && n == 1 {
            return Err(RetryAfter::new(Duration::from_millis(30), "not yet").into());
        }
        Ok(())
    });
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        Consume::new(source.clone(), counting)
            .options(ConsumeOptions {
                max_in_flight: 4,
                retry: herald::RetryPolicy::fixed(Duration::from_secs(60)),
                ..ConsumeOptions::default()
            })
            .run(std::future::pending()),
    )
    .await
    .expect("the loop ends when the closed source is empty");

    let settled = source.settled();
    let acked: Vec<String> = settled
        .iter()
        .filter(|(_, _, o)| *o == Outcome::Ack)
        .map(|(e, _, _)| id_of(e))
        .collect();
    let rejected: Vec<String> = settled
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Reject { .. }))
        .map(|(e, _, _)| id_of(e))
        .collect();
    let retried: Vec<(String, u32, Outcome)> = settled
        .iter()
        .filter(|(_, _, o)| matches!(o, Outcome::Retry { .. }))
        .map(|(e, a, o)| (id_of(e), *a, o.clone()))
        .collect();
    let poison: Vec<String> = ids.iter().filter(|i| i.ends_with('3')).cloned().collect();
    let late: Vec<String> = ids.iter().filter(|i| i.ends_with('7')).cloned().collect();
    let good: Vec<String> = ids.iter().filter(|i| !i.ends_with('3')).cloned().collect();
    DeliveryCheck::compare(good, acked).assert_exactly_once();
    DeliveryCheck::compare(poison, rejected).assert_exactly_once();
    DeliveryCheck::compare(
        late,
        retried.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
    )
    .assert_exactly_once();
    for (id, attempt, outcome) in &retried {
        assert_eq!(*attempt, 1, "{id} is retried after its first attempt");
        assert_eq!(
            *outcome,
            Outcome::Retry {
                after: Duration::from_millis(30)
            },
            "the handler's own delay wins over the default"
        );
    }
    // The retried ones came back as attempt 2 and were acked then.
    for (e, attempt, outcome) in &settled {
        if id_of(e).ends_with('7') && *outcome == Outcome::Ack {
            assert_eq!(*attempt, 2);
        }
    }
    assert_eq!(report.acked, 45);
    assert_eq!(report.retried, 5);
    assert_eq!(report.rejected, 5);
    assert_eq!(source.pending(), 0);
}

#[tokio::test]
async fn a_panic_is_retried_with_the_default_delay_and_the_failure_hook_sees_it() {
    let source = MemorySource::new();
    source.push(ev("boom"));
    let failures = Arc::new(AtomicUsize::new(0));
    let f = failures.clone();
    let stop = Shutdown::new();
    let signal = stop.clone();
    let handler = sync_handler(move |_: &Event| -> Result<(), BoxError> {
        signal.trigger();
        panic!("handler blew up")
    });
    let report = Consume::new(source.clone(), handler)
        .options(ConsumeOptions {
            retry: herald::RetryPolicy::fixed(Duration::from_secs(5)),
            ..ConsumeOptions::default()
        })
        .on_failure(move |_, _| {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .run(stop.cancelled_owned())
        .await;
    assert_eq!(report.retried, 1);
    assert_eq!(failures.load(Ordering::SeqCst), 1);
    assert_eq!(
        source.settled()[0].2,
        Outcome::Retry {
            after: Duration::from_secs(5)
        }
    );
}

#[tokio::test]
async fn no_more_than_max_in_flight_handlers_run_at_once() {
    let source = MemorySource::new();
    for i in 0..40 {
        source.push(ev(&format!("p{i}")));
    }
    source.close();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, p) = (now.clone(), peak.clone());
    let handler = handler_fn(move |_: Arc<Event>| {
        let (n, p) = (n.clone(), p.clone());
        async move {
            let running = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            n.fetch_sub(1, Ordering::SeqCst);
        }
    });
    let report = Consume::new(source, handler)
        .options(ConsumeOptions {
            max_in_flight: 3,
            ..ConsumeOptions::default()
        })
        .run(std::future::pending())
        .await;
    assert_eq!(report.acked, 40);
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_shutdown_stops_reading_and_drains_handlers_in_flight_within_its_bound() {
    let source = MemorySource::new();
    for i in 0..4 {
        source.push(ev(&format!("quick{i}")));
    }
    for i in 0..2 {
        source.push(ev(&format!("stuck{i}")));
    }
    for i in 0..10 {
        source.push(ev(&format!("later{i}")));
    }
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let handler = handler_fn(move |e: Arc<Event>| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            let wait = if id_of(&e).starts_with("stuck") {
                Duration::from_secs(3600) // never finishes within the bound
            } else {
                Duration::from_millis(50)
            };
            tokio::time::sleep(wait).await;
        }
    });
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    let s2 = started.clone();
    tokio::spawn(async move {
        while s2.load(Ordering::SeqCst) < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.trigger();
    });
    let begun = std::time::Instant::now();
    let report = Consume::new(source.clone(), handler)
        .options(ConsumeOptions {
            max_in_flight: 6,
            drain_timeout: Duration::from_millis(300),
            ..ConsumeOptions::default()
        })
        .run(shutdown.cancelled_owned())
        .await;
    // The six in flight at the signal: four finish and settle, two are abandoned at the bound.
    assert_eq!(report.acked, 4, "{report:?}");
    assert_eq!(report.abandoned, 2, "{report:?}");
    assert_eq!(
        started.load(Ordering::SeqCst),
        6,
        "nothing new is read after the signal"
    );
    assert_eq!(source.pending(), 10, "unread events stay in the source");
    assert!(
        begun.elapsed() < Duration::from_secs(60),
        "the drain is bounded"
    );
    let settled: Vec<String> = source.settled().iter().map(|(e, _, _)| id_of(e)).collect();
    DeliveryCheck::compare((0..4).map(|i| format!("quick{i}")), settled).assert_exactly_once();
}

#[tokio::test]
async fn a_bus_shutdown_drains_its_emit_queue_and_refuses_later_emits() {
    let bus = herald::Bus::new();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = seen.clone();
    let _sub = bus
        .subscribe(
            "orders.>",
            handler_fn(move |e: Arc<Event>| {
                let s = s.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    s.lock().push(id_of(&e));
                }
            }),
        )
        .expect("subscribe");
    let ids: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    for id in &ids {
        bus.emit(ev(id)).expect("queued");
    }
    bus.shutdown(Duration::from_secs(10))
        .await
        .expect("drained within the bound");
    DeliveryCheck::compare(ids, seen.lock().clone()).assert_exactly_once();
    assert!(
        bus.emit(ev("late")).is_err(),
        "a shut-down bus refuses emits"
    );
    assert_eq!(bus.shutdown_handle().running(), 0);
}
