//! Crash test of `herald dlq replay --all`, on both backends: 10,000 dead letters, the CLI
//! killed with SIGKILL mid-way 10 times, then run to the end. After the kills every letter is
//! either back in its queue exactly once or still dead (never both, never twice), and each
//! one replayed has exactly one audit event; at the end all are back exactly once. Compared
//! as id sets. Scale with HERALD_DLQ_CRASH_LETTERS and HERALD_DLQ_CRASH_KILLS.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald::dlq::{self, DeadLetterStore, AUDIT_STREAM};
use herald::queue::consume::dead_letter;
use herald::queue::{Message, Queue, QueueName};
use herald::store::{EventStore, StreamName};
use herald::{Event, Timestamp};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
use herald_testkit::fixtures::{id_of, tagged};
use herald_testkit::DeliveryCheck;

fn scale(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn replay_all(store: &str, place: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "dlq",
            "replay",
            place,
            "--all",
            "--store",
            store,
            "--who",
            "crash-test",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald dlq replay")
}

/// A small deterministic sequence of kill delays (ms), 40..340.
fn delays(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            40 + x % 300
        })
        .collect()
}

/// The tagged ids now in `queue`, with repeats.
async fn back_in<S: Queue>(s: &S, queue: &QueueName) -> Vec<String> {
    let messages = s
        .read(queue, Duration::ZERO, 1_000_000)
        .await
        .expect("read");
    messages
        .iter()
        .map(|m| id_of(&m.event().expect("an envelope")))
        .collect()
}

/// The tagged ids of the letters still in `place`.
async fn still_dead<S: DeadLetterStore>(s: &S, place: &QueueName) -> Vec<String> {
    let letters = s.letters(place, 0, 1_000_000).await.expect("letters");
    letters
        .iter()
        .map(|l| id_of(&Event::from_json(&l.body).expect("the original").event))
        .collect()
}

/// How many audit events each letter id of `place` has.
async fn audited<S: EventStore>(s: &S, place: &QueueName) -> HashMap<i64, usize> {
    let stream = StreamName::new(AUDIT_STREAM).expect("stream");
    let mut out = HashMap::new();
    let mut from = 0;
    loop {
        let batch = s.read_stream(&stream, from, 5000).await.expect("audit");
        let Some(last) = batch.last() else {
            return out;
        };
        from = last.position + 1;
        for e in &batch {
            let event = Event::from_json(&e.body).expect("an audit envelope").event;
            if event.data["place"] == place.as_str() {
                let id = event.data["id"].as_i64().expect("a letter id");
                *out.entry(id).or_default() += 1;
            }
        }
    }
}

async fn crash_run<S: Queue + DeadLetterStore + EventStore>(store: S, url: &str, prefix: &str) {
    let letters = scale("HERALD_DLQ_CRASH_LETTERS", 10_000);
    let kills = scale("HERALD_DLQ_CRASH_KILLS", 10);
    let queue = QueueName::new(prefix).expect("queue");
    let place = dlq::place(&format!("{prefix}_dlq")).expect("place");
    for q in [&queue, &place] {
        store.create(q).await.expect("create");
    }
    let ids: Vec<String> = (0..letters).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in ids.chunks(500) {
        let batch: Vec<Event> = chunk
            .iter()
            .map(|id| {
                let message = Message {
                    msg_id: 1,
                    read_ct: 4,
                    enqueued_at: Timestamp::now(),
                    vt: Timestamp::now(),
                    body: tagged("dlq.crash", id).to_json(),
                };
                dead_letter(&queue, &message, "poisoned")
            })
            .collect();
        store
            .send_batch(&place, &batch, Duration::ZERO)
            .await
            .expect("dead letters");
    }
    let letter_ids: HashSet<i64> = store
        .letters(&place, 0, letters + 1)
        .await
        .expect("letters")
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(letter_ids.len(), letters);

    let begun = Instant::now();
    let mut mid_way = 0;
    for delay in delays(kills) {
        let mut child = replay_all(url, place.as_str());
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("poll").is_none() {
            mid_way += 1;
        }
        child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
        child.wait().expect("reap");
    }
    // After the kills: each letter back once or still dead, never both.
    let back = back_in(&store, &queue).await;
    let dead = still_dead(&store, &place).await;
    let mut both: Vec<String> = back.clone();
    both.extend(dead.iter().cloned());
    DeliveryCheck::compare(ids.clone(), both).assert_exactly_once();
    let remaining: HashSet<i64> = store
        .letters(&place, 0, letters + 1)
        .await
        .expect("letters")
        .iter()
        .map(|l| l.id)
        .collect();
    let replayed: HashSet<i64> = letter_ids.difference(&remaining).copied().collect();
    let audits = audited(&store, &place).await;
    assert_eq!(
        audits.keys().copied().collect::<HashSet<_>>(),
        replayed,
        "an audit event for each letter replayed, and for no other"
    );
    assert!(
        audits.values().all(|n| *n == 1),
        "one audit event per replay"
    );
    let after_kills = back.len();

    let mut last = replay_all(url, place.as_str());
    let deadline = Instant::now() + Duration::from_secs(300);
    while last.try_wait().expect("poll").is_none() {
        assert!(
            Instant::now() < deadline,
            "the last replay did not finish in 300 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        last.wait().expect("reap").success(),
        "the last replay exits 0"
    );
    let back = back_in(&store, &queue).await;
    eprintln!(
        "dlq crash test ({}): {letters} letters, {kills} kills ({mid_way} mid-way), {after_kills} replayed before the last run, {} back in the end, {:.1} s",
        url.split(':').next().unwrap_or("?"),
        back.len(),
        begun.elapsed().as_secs_f64()
    );
    DeliveryCheck::compare(ids, back).assert_exactly_once();
    assert!(still_dead(&store, &place).await.is_empty());
    let audits = audited(&store, &place).await;
    assert_eq!(audits.keys().copied().collect::<HashSet<_>>(), letter_ids);
    assert!(
        audits.values().all(|n| *n == 1),
        "one audit event per replay"
    );
    assert!(mid_way > 0, "no kill landed while a replay ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkilled_replays_move_each_letter_once() {
    let dir = std::env::temp_dir().join(unique("dlqcrash"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    crash_run(store, &url, "dlqcrash").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkilled_replays_move_each_letter_once() {
    let Some(url) = database_url("dlq_crash_postgres") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let prefix = unique("dc");
    crash_run(store.clone(), &url, &prefix).await;
    let place = dlq::place(&format!("{prefix}_dlq")).expect("place");
    for q in [QueueName::new(&prefix).expect("queue"), place] {
        let _ = store.drop_queue(&q).await;
    }
}
