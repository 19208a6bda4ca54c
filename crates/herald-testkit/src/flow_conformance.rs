//! The flow-control suite, run unchanged against every backend that keeps policies (SQLite,
//! PostgreSQL): keyed and queue concurrency, a shared rate, fairness, priorities, ordering keys
//! with a sequenced dead letter released by replay and by abandon, bad policies; compared by
//! the ids each read hands out, never by timings.

use std::collections::HashMap;
use std::time::Duration;

use herald::dlq::{self, DeadLetterStore, Operator, Selection};
use herald::queue::consume::dead_letter;
use herald::queue::flow::{self, FlowControl, Policy};
use herald::queue::{Message, Queue, QueueError, QueueName, Settle, Settled, Settlement};
use herald::{Event, Outcome};

use crate::fixtures::{id_of, tagged};

const VT: Duration = Duration::from_secs(30);

/// A fresh queue (and its `_dlq`) named `name`.
async fn fresh<S: Queue>(s: &S, name: &str) -> QueueName {
    let q = QueueName::new(name).expect("a valid test queue name");
    let dlq = q.with_suffix("_dlq").expect("dlq name");
    for q in [&q, &dlq] {
        s.drop_queue(q).await.expect("drop");
        s.create(q).await.expect("create");
    }
    q
}

/// Creates `q`, sends it 30 messages over seven keys (`k0`..`k6`, each set by its sender),
/// then sets a keyed concurrency limit on it: a queue filled before its policy. Returns the
/// keys, sorted and joined by commas, for the backend's own check of what `set_policy` did
/// with the messages already there.
pub async fn fill_then_set_policy<S: Queue + FlowControl>(s: &S, q: &QueueName) -> String {
    s.create(q).await.expect("create");
    let events: Vec<Event> = (0..30)
        .map(|i| {
            flow::keyed(
                tagged("flow.filled", &format!("m{i}")),
                format!("k{}", i % 7),
            )
        })
        .collect();
    s.send_batch(q, &events, Duration::ZERO)
        .await
        .expect("send");
    let policy = Policy {
        concurrency: Some(2),
        ..Policy::default()
    };
    s.set_policy(q, &policy).await.expect("policy");
    "k0,k1,k2,k3,k4,k5,k6".to_owned()
}

/// A tagged event `id` with `data.customer` = `key`.
fn of_key(id: &str, key: &str) -> Event {
    let mut e = tagged("flow.conformance", id);
    e.data.insert("customer".into(), key.into());
    e
}

fn keyed_policy() -> Policy {
    Policy {
        key: Some("$.customer".parse().expect("a key path")),
        ..Policy::default()
    }
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| id_of(&m.event().expect("an envelope")))
        .collect()
}

fn key_of(id: &str) -> &str {
    id.split('-').next().unwrap_or("")
}

async fn ack<S: Queue>(s: &S, q: &QueueName, m: &Message) {
    let done = s
        .settle(q, m.msg_id, m.read_ct, Settlement::only(Settle::Archive))
        .await
        .expect("settle");
    assert!(matches!(done, Settled::Applied { .. }), "{done:?}");
}

/// A policy on a missing queue is refused, nothing stored; set, read back, cleared.
pub async fn policies_are_stored_per_queue<S: Queue + FlowControl>(s: &S, prefix: &str) {
    let q = fresh(s, &format!("{prefix}_pol")).await;
    let ghost = QueueName::new(&format!("{prefix}_ghost")).expect("name");
    s.drop_queue(&ghost).await.expect("drop");
    let p = Policy {
        concurrency: Some(2),
        ..keyed_policy()
    };
    let err = s.set_policy(&ghost, &p).await.expect_err("no such queue");
    assert!(matches!(err, QueueError::NoSuchQueue { .. }), "{err}");
    assert_eq!(s.policy(&q).await.expect("policy"), None);
    s.set_policy(&q, &p).await.expect("set");
    assert_eq!(s.policy(&q).await.expect("policy"), Some(p));
    assert!(s.clear_policy(&q).await.expect("clear"));
    assert!(!s.clear_policy(&q).await.expect("clear again"));
    assert_eq!(s.policy(&q).await.expect("policy"), None);
}

/// 4 keys x 5 messages, 2 per key: a read takes 2 of each; nothing more until one settles,
/// then exactly one more of its key; the status counts the rest as waiting on concurrency.
pub async fn keyed_concurrency_hands_out_no_more_than_the_limit<S: Queue + FlowControl>(
    s: &S,
    prefix: &str,
) {
    let q = fresh(s, &format!("{prefix}_conc")).await;
    let events: Vec<Event> = (0..5)
        .flat_map(|i| ["a", "b", "c", "d"].map(|k| of_key(&format!("{k}-{i}"), k)))
        .collect();
    s.send_batch(&q, &events, Duration::ZERO)
        .await
        .expect("send");
    let p = Policy {
        concurrency: Some(2),
        ..keyed_policy()
    };
    s.set_policy(&q, &p).await.expect("set");
    let first = s.read(&q, VT, 100).await.expect("read");
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for id in ids(&first) {
        *per_key.entry(key_of(&id).to_owned()).or_default() += 1;
    }
    assert_eq!(per_key.len(), 4, "{per_key:?}");
    assert!(per_key.values().all(|n| *n == 2), "{per_key:?}");
    assert!(s.read(&q, VT, 100).await.expect("read").is_empty());
    let status = s.flow_status(&q).await.expect("status");
    assert!(status.policy);
    assert_eq!(status.waiting.concurrency, 12, "{status:?}");
    let a = first
        .iter()
        .find(|m| key_of(&ids(std::slice::from_ref(m))[0]) == "a")
        .expect("one of a");
    ack(s, &q, a).await;
    let next = ids(&s.read(&q, VT, 100).await.expect("read"));
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(key_of(&next[0]), "a");
    // A queue-wide limit on top: with 3 per key each key has room for one more, but 8 are
    // in flight already and the queue allows 8.
    let p = Policy {
        max_in_flight: Some(8),
        concurrency: Some(3),
        ..p
    };
    s.set_policy(&q, &p).await.expect("set");
    assert!(s.read(&q, VT, 100).await.expect("read").is_empty());
}

/// A per-key bucket of 1/min with a burst of 2: two now, then none (rate-limited messages
/// stay visible and are not read, so their read count stays 0).
pub async fn a_rate_is_shared_by_every_read<S: Queue + FlowControl>(s: &S, prefix: &str) {
    let q = fresh(s, &format!("{prefix}_rate")).await;
    let events: Vec<Event> = (0..5).map(|i| of_key(&format!("a-{i}"), "a")).collect();
    s.send_batch(&q, &events, Duration::ZERO)
        .await
        .expect("send");
    let p = Policy {
        rate: Some(
            "1/min"
                .parse::<flow::Rate>()
                .expect("rate")
                .with_burst(2)
                .expect("burst"),
        ),
        ..keyed_policy()
    };
    s.set_policy(&q, &p).await.expect("set");
    let first = s.read(&q, VT, 10).await.expect("read");
    assert_eq!(ids(&first), vec!["a-0", "a-1"]);
    for m in &first {
        ack(s, &q, m).await;
    }
    assert!(s.read(&q, VT, 10).await.expect("read").is_empty());
    let status = s.flow_status(&q).await.expect("status");
    assert_eq!(status.waiting.rate, 3, "{status:?}");
    let m = s.metrics(&q).await.expect("metrics");
    assert_eq!(m.queue_visible_length, 3, "held back, still visible");
}

/// Sends `big` messages of the key `big` (`big-0`...), then 10 of each of nine small keys
/// (`s0-0`... of `s0` to `s8`).
async fn send_big_then_small<S: Queue>(s: &S, q: &QueueName, big: usize) {
    let events: Vec<Event> = (0..big)
        .map(|i| of_key(&format!("big-{i}"), "big"))
        .collect();
    for chunk in events.chunks(1_000) {
        s.send_batch(q, chunk, Duration::ZERO).await.expect("send");
    }
    let small: Vec<Event> = (0..10)
        .flat_map(|i| (0..9).map(move |k| of_key(&format!("s{k}-{i}"), &format!("s{k}"))))
        .collect();
    s.send_batch(q, &small, Duration::ZERO).await.expect("send");
}

/// One key with 10,000 waiting, sent first, and 9 with 10 each: reads of 10 finish every
/// small key before a quarter of the big one.
pub async fn small_keys_are_not_starved_by_a_big_one<S: Queue + FlowControl>(s: &S, prefix: &str) {
    let q = fresh(s, &format!("{prefix}_fair")).await;
    send_big_then_small(s, &q, 10_000).await;
    s.set_policy(
        &q,
        &Policy {
            weights: [("s0".to_owned(), 1)].into(),
            ..keyed_policy()
        },
    )
    .await
    .expect("set");
    let mut big_done = 0;
    let mut small_left = 90;
    while small_left > 0 {
        let got = s.read(&q, VT, 10).await.expect("read");
        assert!(
            !got.is_empty(),
            "small keys left ({small_left}) but nothing read after {big_done} of the big key: {:?}",
            s.flow_status(&q).await
        );
        for m in &got {
            if key_of(&ids(std::slice::from_ref(m))[0]) == "big" {
                big_done += 1;
            } else {
                small_left -= 1;
            }
            ack(s, &q, m).await;
        }
    }
    assert!(
        big_done < 2_500,
        "{big_done} of the big key done before the small ones"
    );
}

/// Reads of 10 from `q`, each message acked, until `left` messages of `keys` are read;
/// returns how many of the other keys were read meanwhile.
async fn others_read_until<S: Queue>(
    s: &S,
    q: &QueueName,
    keys: &[&str],
    mut left: usize,
) -> usize {
    let mut others = 0;
    while left > 0 {
        let got = s.read(q, VT, 10).await.expect("read");
        assert!(!got.is_empty(), "{left} of {keys:?} left but nothing read");
        for m in &got {
            if keys.contains(&key_of(&ids(std::slice::from_ref(m))[0])) {
                left -= 1;
            } else {
                others += 1;
            }
            ack(s, q, m).await;
        }
    }
    others
}

/// Under a keyed concurrency limit alone (no weights), set before the sends: one key with
/// 3,000 waiting, sent first, and 9 with 10 each; every small key is done before a quarter of
/// the big one. Then, 300 of the big one later, a key that was never there sends 10: they are
/// all read before 100 more of the big one (a key that comes late is not put behind the
/// backlog of one that kept sending).
pub async fn a_key_that_comes_late_is_not_put_behind_a_big_one<S: Queue + FlowControl>(
    s: &S,
    prefix: &str,
) {
    let q = fresh(s, &format!("{prefix}_late")).await;
    let p = Policy {
        concurrency: Some(50),
        ..keyed_policy()
    };
    s.set_policy(&q, &p).await.expect("set");
    send_big_then_small(s, &q, 3_000).await;
    let keys = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];
    let mut big_done = others_read_until(s, &q, &keys, 90).await;
    assert!(
        big_done < 750,
        "{big_done} of the big key done before the small ones"
    );
    while big_done < 300 {
        let got = s.read(&q, VT, 10).await.expect("read");
        assert!(!got.is_empty(), "the big key stopped at {big_done}");
        for m in &got {
            ack(s, &q, m).await;
        }
        big_done += got.len();
    }
    let late: Vec<Event> = (0..10)
        .map(|i| of_key(&format!("late-{i}"), "late"))
        .collect();
    s.send_batch(&q, &late, Duration::ZERO).await.expect("send");
    let meanwhile = others_read_until(s, &q, &["late"], 10).await;
    assert!(
        meanwhile < 100,
        "{meanwhile} of the big key read before the late key's 10"
    );
}

/// Without keys, priorities 0, 9 and 5 read 9, 5, 0.
pub async fn higher_priorities_go_first<S: Queue + FlowControl>(s: &S, prefix: &str) {
    let q = fresh(s, &format!("{prefix}_prio")).await;
    for (id, p) in [("p-0", 0), ("p-9", 9), ("p-5", 5)] {
        let e = flow::prioritized(tagged("flow.conformance", id), p).expect("in range");
        s.send(&q, &e, Duration::ZERO).await.expect("send");
    }
    s.set_policy(
        &q,
        &Policy {
            max_in_flight: Some(100),
            ..Policy::default()
        },
    )
    .await
    .expect("set");
    let mut order = Vec::new();
    for _ in 0..3 {
        order.extend(ids(&s.read(&q, VT, 1).await.expect("read")));
    }
    assert_eq!(order, vec!["p-9", "p-5", "p-0"]);
}

/// Reads `q` one key head at a time, acking each, until `n` are done; returns the ids.
async fn drain<S: Queue>(s: &S, q: &QueueName, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n * 4 {
        if out.len() >= n {
            break;
        }
        for m in s.read(q, VT, 10).await.expect("read") {
            out.push(ids(std::slice::from_ref(&m)).remove(0));
            ack(s, q, &m).await;
        }
    }
    out
}

/// Ordering keys: one head per key at a time, in send order; a retry keeps the key waiting; a
/// dead letter holds its key only, until its replay (which goes first) or its abandon.
pub async fn ordering_keys_go_one_at_a_time_and_a_dead_letter_holds_its_key<
    S: Queue + FlowControl + DeadLetterStore,
>(
    s: &S,
    prefix: &str,
) {
    let q = fresh(s, &format!("{prefix}_ord")).await;
    let events: Vec<Event> = (0..4)
        .flat_map(|i| ["a", "b"].map(|k| of_key(&format!("{k}-{i}"), k)))
        .collect();
    s.send_batch(&q, &events, Duration::ZERO)
        .await
        .expect("send");
    s.set_policy(
        &q,
        &Policy {
            ordered: true,
            ..keyed_policy()
        },
    )
    .await
    .expect("set");
    let first = s.read(&q, VT, 10).await.expect("read");
    assert_eq!(ids(&first), vec!["a-0", "b-0"]);
    assert!(s.read(&q, VT, 10).await.expect("read").is_empty());
    let status = s.flow_status(&q).await.expect("status");
    assert_eq!(status.waiting.order, 6, "{status:?}");
    // a-0 fails past its retries: dead-lettered; b-0 is retried (hidden 1 s).
    let dlq = q.with_suffix("_dlq").expect("dlq");
    let reject = Outcome::Reject {
        reason: "poison".into(),
    };
    let a0 = &first[0];
    let settlement = Settlement::for_outcome(&reject, &dlq, |r| dead_letter(&q, a0, r));
    s.settle(&q, a0.msg_id, a0.read_ct, settlement)
        .await
        .expect("dead-letter");
    let b0 = &first[1];
    s.settle(
        &q,
        b0.msg_id,
        b0.read_ct,
        Settlement::only(Settle::Retry {
            after: Duration::from_millis(300),
        }),
    )
    .await
    .expect("retry");
    assert!(
        s.read(&q, VT, 10).await.expect("read").is_empty(),
        "a is held by its letter, b waits for its retry"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let b = drain(s, &q, 4).await;
    assert_eq!(b, vec!["b-0", "b-1", "b-2", "b-3"], "b went on, in order");
    assert!(s.read(&q, VT, 10).await.expect("read").is_empty(), "a held");
    // Replay a-0: it goes first, then the rest of a in order.
    let place = dlq::place(dlq.as_str()).expect("place");
    let op = Operator {
        who: "flow-conformance".into(),
        why: None,
    };
    let letters = s.letters(&place, 0, 10).await.expect("letters");
    assert_eq!(letters.len(), 1);
    dlq::replay(s, &place, Selection::All, 3, false, &op)
        .await
        .expect("replay");
    let head = s.read(&q, VT, 10).await.expect("read");
    assert_eq!(
        ids(&head),
        vec!["a-0"],
        "the replayed letter keeps its place"
    );
    // It dies again; abandon releases the key.
    let m = &head[0];
    let settlement = Settlement::for_outcome(&reject, &dlq, |r| dead_letter(&q, m, r));
    s.settle(&q, m.msg_id, m.read_ct, settlement)
        .await
        .expect("dead-letter");
    assert!(s.read(&q, VT, 10).await.expect("read").is_empty());
    let op = Operator {
        who: "flow-conformance".into(),
        why: Some("poison".into()),
    };
    dlq::abandon(s, &place, Selection::All, &op)
        .await
        .expect("abandon");
    assert_eq!(drain(s, &q, 3).await, vec!["a-1", "a-2", "a-3"]);
}

/// A key path that finds nothing: the default key, never an error.
pub async fn a_missing_key_falls_in_the_default_key<S: Queue + FlowControl>(s: &S, prefix: &str) {
    let q = fresh(s, &format!("{prefix}_dflt")).await;
    let events: Vec<Event> = (0..3)
        .map(|i| tagged("flow.conformance", &format!("x-{i}")))
        .collect();
    s.send_batch(&q, &events, Duration::ZERO)
        .await
        .expect("send");
    s.set_policy(
        &q,
        &Policy {
            concurrency: Some(1),
            ..keyed_policy()
        },
    )
    .await
    .expect("set");
    assert_eq!(ids(&s.read(&q, VT, 10).await.expect("read")), vec!["x-0"]);
    assert!(s.read(&q, VT, 10).await.expect("read").is_empty());
}

/// Every case above.
pub async fn run_all<S: Queue + FlowControl + DeadLetterStore>(s: &S, prefix: &str) {
    policies_are_stored_per_queue(s, prefix).await;
    keyed_concurrency_hands_out_no_more_than_the_limit(s, prefix).await;
    a_rate_is_shared_by_every_read(s, prefix).await;
    small_keys_are_not_starved_by_a_big_one(s, prefix).await;
    a_key_that_comes_late_is_not_put_behind_a_big_one(s, prefix).await;
    higher_priorities_go_first(s, prefix).await;
    ordering_keys_go_one_at_a_time_and_a_dead_letter_holds_its_key(s, prefix).await;
    a_missing_key_falls_in_the_default_key(s, prefix).await;
}
