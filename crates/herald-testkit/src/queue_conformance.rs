//! The durable queue conformance suite: PGMQ's semantics case by case, competing consumers
//! compared by id sets, and the guarded settle, run unchanged against every backend
//! (memory, SQLite, PostgreSQL).
//!
//! ```no_run
//! # async fn demo() {
//! let store = herald::queue::memory::MemoryQueue::new();
//! herald_testkit::queue_conformance::run_all(&store, "confmem").await;
//! # }
//! ```

use std::collections::HashSet;
use std::time::Duration;

use herald::queue::{Queue, QueueError, QueueName, Settle, Settled, Settlement};
use herald::Event;

use crate::delivery::DeliveryCheck;
use crate::fixtures::{id_of, tagged};

const LONG: Duration = Duration::from_secs(300);

fn name(prefix: &str, case: &str) -> QueueName {
    QueueName::new(&format!("{prefix}_{case}")).expect("a valid test queue name")
}

async fn fresh<Q: Queue>(q: &Q, prefix: &str, case: &str) -> QueueName {
    let n = name(prefix, case);
    q.drop_queue(&n).await.expect("drop");
    q.create(&n).await.expect("create");
    n
}

fn ev(id: &str) -> Event {
    tagged("conformance.queue", id)
}

/// create is idempotent, list shows the queue, drop removes it, a missing queue is a typed
/// error naming it.
pub async fn create_is_idempotent_and_a_missing_queue_is_named<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "create").await;
    q.create(&n).await.expect("second create is a no-op");
    assert!(q.list().await.expect("list").contains(&n.to_string()));
    assert!(q.drop_queue(&n).await.expect("drop"));
    assert!(!q.drop_queue(&n).await.expect("drop again"));
    match q.send(&n, &ev("x"), Duration::ZERO).await {
        Err(QueueError::NoSuchQueue { queue }) => assert_eq!(queue, n.to_string()),
        other => panic!("send to a dropped queue: {other:?}"),
    }
}

/// A read hides the message until its vt; it comes back with read_ct + 1.
pub async fn a_read_message_is_hidden_until_its_vt_then_read_again<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "vt").await;
    let id = q.send(&n, &ev("a"), Duration::ZERO).await.expect("send");
    let first = q.read(&n, Duration::from_secs(1), 10).await.expect("read");
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].msg_id, first[0].read_ct), (id, 1));
    assert_eq!(id_of(&first[0].event().expect("envelope")), "a");
    assert!(
        q.read(&n, LONG, 10).await.expect("read").is_empty(),
        "hidden"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = q.read(&n, LONG, 10).await.expect("read");
    assert_eq!(again.len(), 1, "visible again after its vt");
    assert_eq!((again[0].msg_id, again[0].read_ct), (id, 2));
}

/// delete removes for good; archive keeps the message in the archive.
pub async fn delete_removes_and_archive_keeps<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "delarch").await;
    let ids = q
        .send_batch(&n, &[ev("d"), ev("a"), ev("k")], Duration::ZERO)
        .await
        .expect("send_batch");
    assert_eq!(
        q.delete(&n, &[ids[0], 999_999_999]).await.expect("delete"),
        [ids[0]]
    );
    assert_eq!(q.archive(&n, &[ids[1]]).await.expect("archive"), [ids[1]]);
    assert!(q.archive(&n, &[ids[1]]).await.expect("archive").is_empty());
    let left = q.read(&n, LONG, 10).await.expect("read");
    assert_eq!(left.iter().map(|m| m.msg_id).collect::<Vec<_>>(), [ids[2]]);
    let archived = q.archived(&n, 10).await.expect("archived");
    assert_eq!(archived.len(), 1);
    assert_eq!(id_of(&archived[0].event().expect("envelope")), "a");
}

/// set_vt hides or reveals a message; on a missing message it gives `None`.
pub async fn set_vt_moves_visibility<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "setvt").await;
    let id = q.send(&n, &ev("v"), Duration::ZERO).await.expect("send");
    let m = q
        .set_vt(&n, id, LONG)
        .await
        .expect("set_vt")
        .expect("exists");
    assert_eq!(m.msg_id, id);
    assert!(
        q.read(&n, LONG, 1).await.expect("read").is_empty(),
        "hidden by set_vt"
    );
    q.set_vt(&n, id, Duration::ZERO)
        .await
        .expect("set_vt")
        .expect("exists");
    assert_eq!(
        q.read(&n, LONG, 1).await.expect("read").len(),
        1,
        "revealed"
    );
    assert!(q
        .set_vt(&n, 999_999_999, LONG)
        .await
        .expect("set_vt")
        .is_none());
}

/// pop reads and deletes at once; purge empties the queue but not its archive.
pub async fn pop_and_purge<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "poppurge").await;
    q.send_batch(
        &n,
        &[ev("p1"), ev("p2"), ev("p3"), ev("p4")],
        Duration::ZERO,
    )
    .await
    .expect("send_batch");
    let popped = q.pop(&n, 2).await.expect("pop");
    let ids: Vec<String> = popped
        .iter()
        .map(|m| id_of(&m.event().expect("env")))
        .collect();
    assert_eq!(ids, ["p1", "p2"], "oldest first");
    let one = q.read(&n, LONG, 1).await.expect("read");
    q.archive(&n, &[one[0].msg_id]).await.expect("archive");
    assert_eq!(q.purge(&n).await.expect("purge"), 1);
    assert!(q
        .read(&n, Duration::ZERO, 10)
        .await
        .expect("read")
        .is_empty());
    assert_eq!(q.archived(&n, 10).await.expect("archived").len(), 1);
}

/// A delayed message is invisible until its delay has passed.
pub async fn a_delayed_message_appears_after_its_delay<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "delay").await;
    q.send(&n, &ev("later"), Duration::from_secs(1))
        .await
        .expect("send");
    assert!(q.read(&n, LONG, 1).await.expect("read").is_empty());
    let got = q
        .read_with_poll(&n, LONG, 1, Duration::from_secs(5))
        .await
        .expect("read_with_poll");
    assert_eq!(got.len(), 1, "visible after the delay");
}

/// Batches keep order, read honours qty, metrics count what is there and what was sent.
pub async fn batches_keep_order_and_metrics_count<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "batch").await;
    let events: Vec<Event> = (0..10).map(|i| ev(&format!("b{i}"))).collect();
    let ids = q
        .send_batch(&n, &events, Duration::ZERO)
        .await
        .expect("batch");
    assert_eq!(ids.len(), 10);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow in send order"
    );
    let first = q.read(&n, LONG, 4).await.expect("read");
    let got: Vec<String> = first
        .iter()
        .map(|m| id_of(&m.event().expect("env")))
        .collect();
    assert_eq!(got, ["b0", "b1", "b2", "b3"]);
    let m = q.metrics(&n).await.expect("metrics");
    assert_eq!((m.queue_length, m.total_messages), (10, 10));
    assert!(m.oldest_msg_age_sec.is_some());
    q.delete(&n, &ids[..5]).await.expect("delete");
    let m = q.metrics(&n).await.expect("metrics");
    assert_eq!((m.queue_length, m.total_messages), (5, 10));
}

/// read_with_poll returns as soon as a message is sent, not at the end of its wait.
pub async fn read_with_poll_wakes_on_a_send<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "poll").await;
    let (q2, n2) = (q.clone(), n.clone());
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        q2.send(&n2, &ev("wake"), Duration::ZERO)
            .await
            .expect("send");
    });
    let begun = std::time::Instant::now();
    let got = q
        .read_with_poll(&n, LONG, 1, Duration::from_secs(20))
        .await
        .expect("read_with_poll");
    sender.await.expect("sender");
    assert_eq!(got.len(), 1);
    assert!(
        begun.elapsed() < Duration::from_secs(15),
        "woken by the send, not by the end of the 20 s wait"
    );
    let empty = q
        .read_with_poll(&n, LONG, 1, Duration::from_millis(300))
        .await
        .expect("read_with_poll");
    assert!(
        empty.is_empty(),
        "nothing visible: returns empty after the wait"
    );
}

/// Eight consumers share 400 messages: none goes to two of them while its vt runs, none is
/// lost (set comparison of ids).
pub async fn competing_consumers_never_share_a_message<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "compete").await;
    let ids: Vec<String> = (0..400).map(|i| format!("c{i}")).collect();
    for chunk in ids.chunks(50) {
        let events: Vec<Event> = chunk.iter().map(|i| ev(i)).collect();
        q.send_batch(&n, &events, Duration::ZERO)
            .await
            .expect("batch");
    }
    let mut consumers = Vec::new();
    for _ in 0..8 {
        let (q, n) = (q.clone(), n.clone());
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.read(&n, LONG, 7).await.expect("read");
                if batch.is_empty() {
                    return got;
                }
                for m in batch {
                    got.push(id_of(&m.event().expect("env")));
                    q.archive(&n, &[m.msg_id]).await.expect("archive");
                }
            }
        }));
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.expect("consumer"));
    }
    DeliveryCheck::compare(ids, all).assert_exactly_once();
}

/// The guarded settle: applied at the read count it was read with, together with its sends;
/// stale once the message was read again; all or nothing when a send target is missing.
pub async fn a_settle_is_guarded_by_the_read_count<Q: Queue>(q: &Q, prefix: &str) {
    let n = fresh(q, prefix, "settle").await;
    let out = fresh(q, prefix, "settle_out").await;
    let id = q.send(&n, &ev("s"), Duration::ZERO).await.expect("send");
    let first = q.read(&n, Duration::ZERO, 1).await.expect("read");
    // Its vt (zero) has run out: a second consumer takes it.
    let second = q.read(&n, LONG, 1).await.expect("read");
    assert_eq!((first[0].read_ct, second[0].read_ct), (1, 2));
    let stale = q
        .settle(
            &n,
            id,
            1,
            Settlement::only(Settle::Archive).and_send(out.clone(), ev("result-1")),
        )
        .await
        .expect("settle");
    assert_eq!(stale, Settled::Stale);
    assert!(
        q.read(&out, LONG, 10).await.expect("read").is_empty(),
        "nothing sent"
    );
    // A send to a missing queue fails the whole settle: nothing is archived.
    let missing = name(prefix, "settle_missing");
    q.drop_queue(&missing).await.expect("drop");
    let failed = q
        .settle(
            &n,
            id,
            2,
            Settlement::only(Settle::Archive).and_send(missing, ev("lost")),
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        q.archived(&n, 10).await.expect("archived").is_empty(),
        "rolled back"
    );
    let applied = q
        .settle(
            &n,
            id,
            2,
            Settlement::only(Settle::Archive).and_send(out.clone(), ev("result-2")),
        )
        .await
        .expect("settle");
    let Settled::Applied { sent } = applied else {
        panic!("the current holder's settle applies: {applied:?}");
    };
    assert_eq!(sent.len(), 1);
    let results = q.read(&out, LONG, 10).await.expect("read");
    let got: HashSet<String> = results
        .iter()
        .map(|m| id_of(&m.event().expect("e")))
        .collect();
    assert_eq!(got, HashSet::from(["result-2".to_owned()]));
    assert_eq!(q.archived(&n, 10).await.expect("archived").len(), 1);
    // A retry settle hides it again; a second settle at the same read count is stale.
    let id2 = q.send(&n, &ev("r"), Duration::ZERO).await.expect("send");
    let m = q.read(&n, LONG, 1).await.expect("read");
    let retry = Settlement::only(Settle::Retry {
        after: Duration::from_millis(200),
    });
    assert!(matches!(
        q.settle(&n, id2, m[0].read_ct, retry)
            .await
            .expect("settle"),
        Settled::Applied { .. }
    ));
    let back = q
        .read_with_poll(&n, LONG, 1, Duration::from_secs(5))
        .await
        .expect("read");
    assert_eq!((back[0].msg_id, back[0].read_ct), (id2, 2));
    let del = Settlement::only(Settle::Delete);
    assert_eq!(
        q.settle(&n, id2, 1, del.clone()).await.expect("settle"),
        Settled::Stale
    );
    assert!(matches!(
        q.settle(&n, id2, 2, del).await.expect("settle"),
        Settled::Applied { .. }
    ));
}

/// Every case, each on queues of its own under `prefix` (lowercase letters, digits, `_`;
/// at most 25 characters). Queues are dropped afterwards.
pub async fn run_all<Q: Queue>(q: &Q, prefix: &str) {
    create_is_idempotent_and_a_missing_queue_is_named(q, prefix).await;
    a_read_message_is_hidden_until_its_vt_then_read_again(q, prefix).await;
    delete_removes_and_archive_keeps(q, prefix).await;
    set_vt_moves_visibility(q, prefix).await;
    pop_and_purge(q, prefix).await;
    a_delayed_message_appears_after_its_delay(q, prefix).await;
    batches_keep_order_and_metrics_count(q, prefix).await;
    read_with_poll_wakes_on_a_send(q, prefix).await;
    competing_consumers_never_share_a_message(q, prefix).await;
    a_settle_is_guarded_by_the_read_count(q, prefix).await;
    for queue in q.list().await.expect("list") {
        if queue.starts_with(prefix) {
            if let Ok(n) = QueueName::new(&queue) {
                let _ = q.drop_queue(&n).await;
            }
        }
    }
}
