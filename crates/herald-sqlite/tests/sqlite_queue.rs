//! The SQLite store against the queue conformance suite, on a file of the test's own; two
//! stores on one file (as two processes would open it); bad URLs and a rolled-back
//! transaction that is never seen.

use std::time::Duration;

use herald::queue::{Queue, QueueName};
use herald_sqlite::SqliteStore;
use herald_testkit::fixtures::{id_of, tagged};
use herald_testkit::DeliveryCheck;

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(herald_testkit::env::unique(name));
    dir.join("herald.db")
}

#[tokio::test]
async fn the_sqlite_store_passes_the_queue_conformance_suite() {
    let path = temp_db("conf");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    herald_testkit::queue_conformance::run_all(&store, "confsqlite").await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_the_dead_letter_place_suite() {
    let path = temp_db("dlq");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    herald_testkit::dlq_conformance::run_all(&store, "dlqsqlite").await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_the_flow_control_suite() {
    let path = temp_db("flow");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    herald_testkit::flow_conformance::run_all(&store, "flowsqlite").await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_share_the_queue_without_sharing_a_message() {
    let path = temp_db("two");
    let url = format!("sqlite://{}", path.display());
    let a = SqliteStore::open(&url).await.expect("open a");
    let b = SqliteStore::open(&url).await.expect("open b");
    let q = QueueName::new("shared").expect("name");
    a.create(&q).await.expect("create");
    b.create(&q)
        .await
        .expect("create is idempotent across stores");
    let ids: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let (ia, ib) = ids.split_at(150);
    let send = |store: SqliteStore, part: Vec<String>, q: QueueName| {
        tokio::spawn(async move {
            for id in part {
                store
                    .send(&q, &tagged("shared.x", &id), Duration::ZERO)
                    .await
                    .expect("send");
            }
        })
    };
    let (sa, sb) = (
        send(a.clone(), ia.to_vec(), q.clone()),
        send(b.clone(), ib.to_vec(), q.clone()),
    );
    sa.await.expect("a");
    sb.await.expect("b");
    let consume = |store: SqliteStore, q: QueueName| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .read(&q, Duration::from_secs(300), 9)
                    .await
                    .expect("read");
                if batch.is_empty() {
                    return got;
                }
                for m in batch {
                    got.push(id_of(&m.event().expect("env")));
                    store.archive(&q, &[m.msg_id]).await.expect("archive");
                }
            }
        })
    };
    let (ca, cb) = (consume(a.clone(), q.clone()), consume(b.clone(), q.clone()));
    let mut all = ca.await.expect("a");
    all.extend(cb.await.expect("b"));
    DeliveryCheck::compare(ids, all).assert_exactly_once();
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test]
async fn a_bad_url_or_file_is_one_error_naming_it() {
    let err = SqliteStore::open("postgres://x")
        .await
        .expect_err("not sqlite");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains("postgres://x"), "{text}");
    let dir = std::env::temp_dir().join(herald_testkit::env::unique("junk"));
    std::fs::create_dir_all(&dir).expect("dir");
    let junk = dir.join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just text long enough to be read as a header",
    )
    .expect("write");
    let err = SqliteStore::open(&format!("sqlite://{}", junk.display()))
        .await
        .expect_err("not a database");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains("junk.db"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_message_sent_in_a_rolled_back_transaction_is_never_seen() {
    let path = temp_db("rollback");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(&url).await.expect("open");
    let q = QueueName::new("rb").expect("name");
    store.create(&q).await.expect("create");
    // Another writer on the same file inserts inside a transaction and rolls it back.
    let conn = rusqlite_open(&path);
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT INTO herald_messages (queue, enqueued_at, vt, message) VALUES ('rb', 0, 0, '{}');
         ROLLBACK;",
    )
    .expect("rolled back insert");
    let got = store
        .read(&q, Duration::from_secs(30), 10)
        .await
        .expect("read");
    assert!(got.is_empty(), "{got:?}");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

fn rusqlite_open(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_the_event_store_conformance_suite() {
    let path = temp_db("events");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    herald_testkit::store_conformance::run_all(&store, "confsqlite").await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test]
async fn a_version_1_file_is_migrated_to_the_current_version_and_keeps_its_queues() {
    use herald::store::{EventStore, StreamName, WriteCondition};
    let path = temp_db("migrate");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    {
        let c = rusqlite_open(&path);
        c.execute_batch(
            "CREATE TABLE herald_schema (version INTEGER NOT NULL);
             INSERT INTO herald_schema (version) VALUES (1);
             CREATE TABLE herald_queues (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL, total_sent INTEGER NOT NULL DEFAULT 0);
             INSERT INTO herald_queues (name, created_at) VALUES ('old', 0);",
        )
        .expect("a version 1 file");
    }
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("opens and migrates");
    assert_eq!(
        store.list().await.expect("list"),
        ["old"],
        "its queues kept"
    );
    let s = StreamName::new("order-1").expect("name");
    store
        .append(
            &s,
            &[tagged("order.created", "o1")],
            WriteCondition::NoStream,
        )
        .await
        .expect("the event store works");
    let version: i64 = rusqlite_open(&path)
        .query_row("SELECT max(version) FROM herald_schema", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 5);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_the_broker_conformance_suite() {
    let path = temp_db("broker");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    herald_testkit::broker_conformance::run_all(&store).await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_on_a_filled_queue_reads_its_messages_keys_at_once() {
    let path = temp_db("flowfill");
    let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let q = QueueName::new("flowfill").expect("name");
    let expected = herald_testkit::flow_conformance::fill_then_set_policy(&store, &q).await;
    // Before any read: every message has its key, and the keys are registered.
    let db = rusqlite::Connection::open(&path).expect("open the file");
    let unkeyed: i64 = db
        .query_row(
            "SELECT count(*) FROM herald_messages WHERE queue = 'flowfill' AND flow_key IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(unkeyed, 0);
    let keys: String = db
        .query_row(
            "SELECT group_concat(key, ',') FROM (SELECT key FROM herald_flow_keys
             WHERE queue = 'flowfill' AND scope = 1 ORDER BY key)",
            [],
            |r| r.get(0),
        )
        .expect("keys");
    assert_eq!(keys, expected);
    drop(db);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}
