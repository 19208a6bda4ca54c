//! Operations dropped midway (a timeout, a worker's shutdown) leave no connection of the pool
//! inside an open transaction: after each of hundreds of reads and appends cancelled at
//! points of their first round trips, the next send and append acknowledged are committed
//! (another connection sees them at once). And an append refused by its condition frees the
//! append lock as it returns.

use std::time::Duration;

use herald::queue::flow::{keyed, FlowControl, Policy, Rate};
use herald::queue::{Queue, QueueName};
use herald::store::{EventStore, StreamName, WriteCondition};
use herald_postgres::{PgOptions, PgStore};
use herald_testkit::env::{database_url, psql, unique};
use herald_testkit::fixtures::tagged;

/// The tests of this file one at a time: the second checks the append lock, which the
/// first's appends take.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many cancelled operations of each kind.
const ROUNDS: u64 = 600;

/// The cancel point of round `i`: from 0 to 1.5 ms in steps of 5 µs.
fn cut(i: u64) -> Duration {
    Duration::from_micros((i * 5) % 1_500)
}

/// Polls `fut` until it is done or `after` has passed (a thread's clock: finer than the
/// runtime's 1 ms timer), then drops it.
async fn cancel_after<F: std::future::Future>(after: Duration, fut: F) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = tx.send(());
    });
    tokio::select! {
        _ = fut => {}
        _ = rx => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_reads_and_appends_leave_no_transaction_open_on_the_pool() {
    let Some(url) = database_url("pg_cancel") else {
        return;
    };
    let _alone = SERIAL.lock().await;
    // Two connections: a connection left in a transaction is soon used again.
    let mut options = PgOptions::new(url.clone());
    options.max_connections = 2;
    let store = PgStore::connect_with(options).await.expect("connect");
    let q = QueueName::new(&unique("cancelq")).expect("queue name");
    let sink = QueueName::new(&unique("cancels")).expect("queue name");
    store.create(&q).await.expect("create");
    store.create(&sink).await.expect("create");
    // A rate makes each read a transaction (begun with the queue's flow lock).
    let policy = Policy {
        key: Some("$.k".parse().expect("path")),
        concurrency: Some(2),
        rate: Some("1000/s".parse::<Rate>().expect("rate")),
        ..Policy::default()
    };
    store.set_policy(&q, &policy).await.expect("policy");
    for i in 0..20 {
        let e = keyed(tagged("cancel.src", &format!("s{i}")), format!("k{i}"));
        store.send(&q, &e, Duration::ZERO).await.expect("send");
    }
    let stream = StreamName::new(&unique("cancel-stream")).expect("stream");
    let mut check = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("a second connection");
    let mut unseen = Vec::new();
    for i in 0..ROUNDS {
        cancel_after(cut(i), store.read(&q, Duration::from_millis(1), 2)).await;
        cancel_after(
            cut(i),
            store.append(
                &stream,
                &[tagged("cancel.append", &format!("c{i}"))],
                WriteCondition::Any,
            ),
        )
        .await;
        let id = store
            .send(
                &sink,
                &tagged("cancel.sink", &format!("m{i}")),
                Duration::ZERO,
            )
            .await
            .expect("send");
        let visible: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pgmq.\"q_{sink}\" WHERE msg_id = $1"
        ))
        .bind(id)
        .fetch_one(&mut check)
        .await
        .expect("look");
        if visible != 1 {
            unseen.push(format!("send m{i}"));
        }
        let at = store
            .append(
                &stream,
                &[tagged("cancel.append", &format!("a{i}"))],
                WriteCondition::Any,
            )
            .await
            .expect("append");
        let visible: i64 =
            sqlx::query_scalar("SELECT count(*) FROM herald.events WHERE global_position = $1")
                .bind(at.global_position)
                .fetch_one(&mut check)
                .await
                .expect("look");
        if visible != 1 {
            unseen.push(format!("append a{i}"));
        }
    }
    assert!(
        unseen.is_empty(),
        "acknowledged but not committed: {unseen:?}"
    );
    let open = psql(
        &url,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state = 'idle in transaction' \
           AND now() - state_change > interval '2 seconds'",
    );
    assert_eq!(open, "0", "no connection left idle in a transaction");
    for name in [&q, &sink] {
        store.drop_queue(name).await.expect("drop");
    }
}

/// A store and a second connection of its own for the append-lock tests, run one at a time
/// (each holds `SERIAL` through its guard); `None` when no database is configured.
async fn lock_test(
    name: &str,
) -> Option<(
    tokio::sync::MutexGuard<'static, ()>,
    PgStore,
    sqlx::PgConnection,
)> {
    let url = database_url(name)?;
    let alone = SERIAL.lock().await;
    let store = PgStore::connect(&url).await.expect("connect");
    let check = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("a second connection");
    Some((alone, store, check))
}

/// Whether the append lock is free, tried from `check` (taken for its transaction, which
/// is the statement).
async fn append_lock_free(check: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('herald.events.append'))")
        .fetch_one(check)
        .await
        .expect("try the lock")
}

/// An append whose condition fails rolls its transaction back before it returns: the append
/// lock it took is free at once, not held until its connection is next used (or for the
/// second the server lets a transaction idle), which stalled every other append meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_leaves_the_append_lock_free() {
    let Some((_alone, store, mut check)) = lock_test("pg_refused_append").await else {
        return;
    };
    let stream = StreamName::new(&unique("refused-stream")).expect("stream");
    let first = [tagged("refused.append", "r0")];
    store
        .append(&stream, &first, WriteCondition::NoStream)
        .await
        .expect("the first append");
    let again = [tagged("refused.append", "r1")];
    let refused = store
        .append(&stream, &again, WriteCondition::NoStream)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // At once: a dropped transaction's rollback is sent by the pool in the background, after
    // the error has been returned.
    assert!(
        append_lock_free(&mut check).await,
        "the append lock is still held after the refused append returned"
    );
}

/// An `append_once` that fails after it took the append lock (here PostgreSQL refuses the
/// body: `jsonb` has no NUL character) leaves neither the lock nor its key behind. It now
/// rolls back before it returns; before, it dropped the transaction, and this passed as well
/// (sqlx sends a dropped transaction's rollback as its connection goes back to the pool,
/// ahead of this check), so it holds the contract, not the moment of the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_once_leaves_the_append_lock_free() {
    let Some((_alone, store, mut check)) = lock_test("pg_failed_append_once").await else {
        return;
    };
    let stream = StreamName::new(&unique("nul-stream")).expect("stream");
    let key = unique("nul-key");
    let failed = store
        .append_once(&stream, &tagged("nul.append", "a\u{0}b"), &key)
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        append_lock_free(&mut check).await,
        "the append lock is still held after the failed append_once returned"
    );
    // The key was not kept: the same key with a body PostgreSQL takes is appended.
    let again = store
        .append_once(&stream, &tagged("nul.append", "ab"), &key)
        .await
        .expect("the second append_once");
    assert!(again.is_some(), "the failed append_once kept its key");
}
