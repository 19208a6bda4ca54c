//! The conformance suite: one set of delivery tests that every Herald transport must pass,
//! compared by id sets (missing, duplicated, unexpected), never by counts alone.
//!
//! A backend calls [`run_all`] with a constructor's result and a prefix of its own, as
//! watermill's `TestPubSub` does:
//!
//! ```no_run
//! # async fn demo() {
//! let bus = herald::Bus::new();
//! herald_testkit::conformance::run_all(&bus, "conf-bus").await;
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{handler_fn, sync_handler, Event, Handler, Pattern, Subject, Transport};

use crate::delivery::DeliveryCheck;
use crate::fixtures::{id_of, tagged as event};

type Seen = Arc<Mutex<Vec<String>>>;

fn lock(seen: &Seen) -> std::sync::MutexGuard<'_, Vec<String>> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

fn recorder(seen: &Seen, async_handler: bool) -> Handler {
    let seen = seen.clone();
    if async_handler {
        handler_fn(move |e: Arc<Event>| {
            let seen = seen.clone();
            async move { lock(&seen).push(id_of(&e)) }
        })
    } else {
        sync_handler(move |e: &Event| lock(&seen).push(id_of(e)))
    }
}

/// Waits until `seen` holds at least `want` ids, or five seconds pass.
async fn settle(seen: &[&Seen], want: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if seen.iter().zip(want).all(|(s, w)| lock(s).len() >= *w) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give late duplicates a moment to show up.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Every event reaches each matching subscriber exactly once, for sync and async handlers.
pub async fn every_event_reaches_each_matching_subscriber_exactly_once<T: Transport>(
    t: &T,
    prefix: &str,
) {
    let (a, b): (Seen, Seen) = Default::default();
    let pa = Pattern::new(&format!("{prefix}.one.orders")).expect("pattern");
    let pb = Pattern::new(&format!("{prefix}.one.*")).expect("pattern");
    let _sa = t
        .subscribe_handler(pa, recorder(&a, false))
        .await
        .expect("subscribe exact");
    let _sb = t
        .subscribe_handler(pb, recorder(&b, true))
        .await
        .expect("subscribe wildcard");
    let mut acked = Vec::new();
    for i in 0..200 {
        let id = format!("{prefix}-{i}");
        t.publish_event(event(&format!("{prefix}.one.orders"), &id))
            .await
            .expect("publish");
        acked.push(id);
    }
    t.flush().await.expect("flush");
    settle(&[&a, &b], &[200, 200]).await;
    DeliveryCheck::compare(acked.clone(), lock(&a).clone()).assert_exactly_once();
    DeliveryCheck::compare(acked, lock(&b).clone()).assert_exactly_once();
}

/// `*` takes one token, `>` the rest: each subscriber gets exactly the matching events.
pub async fn wildcards_route_exactly_what_they_match<T: Transport>(t: &T, prefix: &str) {
    let patterns = [
        format!("{prefix}.wild.*"),
        format!("{prefix}.wild.>"),
        format!("{prefix}.*.x.*"),
        format!("{prefix}.wild.a"),
    ];
    let subjects = [
        format!("{prefix}.wild.a"),
        format!("{prefix}.wild.x.y"),
        format!("{prefix}.other.x.z"),
        format!("{prefix}.wild"),
        format!("{prefix}.wild.a.b.c"),
    ];
    let seen: Vec<Seen> = patterns.iter().map(|_| Seen::default()).collect();
    let mut subs = Vec::new();
    for (p, s) in patterns.iter().zip(&seen) {
        subs.push(
            t.subscribe_handler(Pattern::new(p).expect("pattern"), recorder(s, false))
                .await
                .expect("subscribe"),
        );
    }
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); patterns.len()];
    for round in 0..20 {
        for s in &subjects {
            let id = format!("{s}#{round}");
            t.publish_event(event(s, &id)).await.expect("publish");
            let subject = Subject::new(s).expect("subject");
            for (i, p) in patterns.iter().enumerate() {
                if Pattern::new(p).expect("pattern").matches(&subject) {
                    expected[i].push(id.clone());
                }
            }
        }
    }
    t.flush().await.expect("flush");
    let refs: Vec<&Seen> = seen.iter().collect();
    let want: Vec<usize> = expected.iter().map(Vec::len).collect();
    settle(&refs, &want).await;
    for (i, p) in patterns.iter().enumerate() {
        let check = DeliveryCheck::compare(expected[i].clone(), lock(&seen[i]).clone());
        assert!(check.is_exactly_once(), "pattern {p}: {check}");
    }
}

/// A handler that fails or panics keeps its subscription, and its neighbours are untouched.
pub async fn a_failing_handler_keeps_its_subscription<T: Transport>(t: &T, prefix: &str) {
    let seen: Seen = Default::default();
    let s2 = seen.clone();
    let flaky = sync_handler(move |e: &Event| -> Result<(), herald::BoxError> {
        let id = id_of(e);
        lock(&s2).push(id.clone());
        match id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
            % 3
        {
            0 => panic!("conformance: planned panic on {id}"),
            1 => Err(format!("conformance: planned error on {id}").into()),
            _ => Ok(()),
        }
    });
    let calm: Seen = Default::default();
    let pattern = Pattern::new(&format!("{prefix}.flaky.>")).expect("pattern");
    let _f = t
        .subscribe_handler(pattern.clone(), flaky)
        .await
        .expect("subscribe");
    let _c = t
        .subscribe_handler(pattern, recorder(&calm, true))
        .await
        .expect("subscribe");
    let mut acked = Vec::new();
    for i in 0..60 {
        let id = format!("{prefix}-{i}");
        t.publish_event(event(&format!("{prefix}.flaky.x"), &id))
            .await
            .expect("publish");
        acked.push(id);
    }
    t.flush().await.expect("flush");
    settle(&[&seen, &calm], &[60, 60]).await;
    DeliveryCheck::compare(acked.clone(), lock(&seen).clone()).assert_exactly_once();
    DeliveryCheck::compare(acked, lock(&calm).clone()).assert_exactly_once();
}

/// After the subscription guard is dropped, nothing more arrives.
pub async fn dropping_the_subscription_stops_delivery<T: Transport>(t: &T, prefix: &str) {
    let seen: Seen = Default::default();
    let subject = format!("{prefix}.drop.x");
    let sub = t
        .subscribe_handler(
            Pattern::new(&subject).expect("pattern"),
            recorder(&seen, false),
        )
        .await
        .expect("subscribe");
    t.publish_event(event(&subject, "before"))
        .await
        .expect("publish");
    t.flush().await.expect("flush");
    settle(&[&seen], &[1]).await;
    drop(sub);
    // Let the unsubscribe reach the server before publishing again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.publish_event(event(&subject, "after"))
        .await
        .expect("publish");
    t.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    DeliveryCheck::compare(["before"], lock(&seen).clone()).assert_exactly_once();
}

/// One publisher's events reach a subscriber in the order they were published.
pub async fn events_from_one_publisher_arrive_in_publish_order<T: Transport>(t: &T, prefix: &str) {
    let seen: Seen = Default::default();
    let subject = format!("{prefix}.order.x");
    let _s = t
        .subscribe_handler(
            Pattern::new(&subject).expect("pattern"),
            recorder(&seen, true),
        )
        .await
        .expect("subscribe");
    let sent: Vec<String> = (0..300).map(|i| format!("{prefix}-{i}")).collect();
    for id in &sent {
        t.publish_event(event(&subject, id)).await.expect("publish");
    }
    t.flush().await.expect("flush");
    settle(&[&seen], &[sent.len()]).await;
    assert_eq!(
        *lock(&seen),
        sent,
        "arrival order differs from publish order"
    );
}

/// Runs the whole suite; each part uses its own subjects under `prefix`.
pub async fn run_all<T: Transport>(t: &T, prefix: &str) {
    every_event_reaches_each_matching_subscriber_exactly_once(t, &format!("{prefix}-a")).await;
    wildcards_route_exactly_what_they_match(t, &format!("{prefix}-b")).await;
    a_failing_handler_keeps_its_subscription(t, &format!("{prefix}-c")).await;
    dropping_the_subscription_stops_delivery(t, &format!("{prefix}-d")).await;
    events_from_one_publisher_arrive_in_publish_order(t, &format!("{prefix}-e")).await;
}
