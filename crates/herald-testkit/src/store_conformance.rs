//! The event store conformance suite: positions, write conditions (with 16 concurrent writers
//! to one stream, exactly one winning each position), reads by stream, category and log, and
//! the no-skip rule under concurrent appends (a follower of the log sees every committed event
//! and never a gap); compared by id sets. Runs unchanged on memory, SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::store::{EventStore, KeyedWrite, StoreError, StreamName, StreamWrite, WriteCondition};
use herald::Event;

use crate::delivery::DeliveryCheck;
use crate::fixtures::{id_of, tagged};

fn stream(category: &str, id: &str) -> StreamName {
    StreamName::new(&format!("{category}-{id}")).expect("a valid test stream")
}

fn ev(id: &str) -> Event {
    tagged("conformance.store", id)
}

/// Positions count from 0 per stream; global positions grow; reads start where asked.
pub async fn positions_and_reads<S: EventStore>(s: &S, category: &str) {
    let a = stream(category, "a");
    let b = stream(category, "b");
    let first = s
        .append(&a, &[ev("a0"), ev("a1")], WriteCondition::NoStream)
        .await
        .expect("append");
    assert_eq!(first.position, 1);
    let second = s
        .append(&b, &[ev("b0")], WriteCondition::Any)
        .await
        .expect("append");
    assert_eq!(second.position, 0);
    assert!(second.global_position > first.global_position);
    let third = s
        .append(&a, &[ev("a2")], WriteCondition::ExpectedPosition(1))
        .await
        .expect("append");
    assert_eq!(third.position, 2);
    let read = s.read_stream(&a, 1, 10).await.expect("read");
    let got: Vec<(i64, String)> = read
        .iter()
        .map(|e| (e.position, id_of(&e.event().expect("env"))))
        .collect();
    assert_eq!(got, [(1, "a1".to_owned()), (2, "a2".to_owned())]);
    let cat = s.read_category(category, 0, 100).await.expect("category");
    let ids: Vec<String> = cat
        .iter()
        .map(|e| id_of(&e.event().expect("env")))
        .collect();
    assert_eq!(ids, ["a0", "a1", "b0", "a2"], "in commit order");
    assert!(cat
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    let from = cat[2].global_position;
    let tail = s
        .read_category(category, from, 100)
        .await
        .expect("category");
    assert_eq!(tail.len(), 2);
    let all = s.read_all(from, 2).await.expect("all");
    assert_eq!(all.len(), 2, "max honoured");
    let streams = s.streams().await.expect("streams");
    assert!(streams.contains(&(a.to_string(), 2)));
    assert!(streams.contains(&(b.to_string(), 0)));
}

/// A failed condition is a typed error naming the stream and both positions; nothing is
/// appended.
pub async fn failed_conditions_name_the_stream_and_both_positions<S: EventStore>(
    s: &S,
    category: &str,
) {
    let c = stream(category, "cond");
    s.append(&c, &[ev("c0")], WriteCondition::NoStream)
        .await
        .expect("first");
    match s.append(&c, &[ev("c1")], WriteCondition::NoStream).await {
        Err(StoreError::WrongPosition {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, c.to_string());
            assert_eq!(
                (expected.as_str(), actual.as_str()),
                ("no stream", "position 0")
            );
        }
        other => panic!("a second NoStream append: {other:?}"),
    }
    let e = s
        .append(&c, &[ev("c1")], WriteCondition::ExpectedPosition(5))
        .await
        .expect_err("position 5 is not where the stream is");
    let text = e.to_string();
    assert!(
        text.contains(c.as_str()) && text.contains("position 5") && text.contains("position 0"),
        "{text}"
    );
    let empty = stream(category, "empty");
    let e = s
        .append(&empty, &[ev("x")], WriteCondition::ExpectedPosition(0))
        .await
        .expect_err("an empty stream is not at 0");
    assert!(e.to_string().contains("no stream"), "{e}");
    assert_eq!(
        s.read_stream(&c, 0, 10).await.expect("read").len(),
        1,
        "nothing appended"
    );
}

/// 16 writers race on one stream, each appending at the position it read: exactly one wins
/// each position, and every acknowledged append is there once.
pub async fn sixteen_writers_one_winner_per_position<S: EventStore>(s: &S, category: &str) {
    let st = stream(category, "race");
    let each = 10;
    // All 16 read the (empty) stream before any appends: the first round is a real race.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (s, st, start) = (s.clone(), st.clone(), start.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut lost = 0;
            let mut first = true;
            while acked.len() < each {
                let last = s
                    .read_stream(&st, 0, 100_000)
                    .await
                    .expect("read")
                    .last()
                    .map(|e| e.position);
                let condition =
                    last.map_or(WriteCondition::NoStream, WriteCondition::ExpectedPosition);
                if first {
                    // Everyone has read the empty stream before anyone appends.
                    start.wait().await;
                    first = false;
                }
                tokio::task::yield_now().await;
                let id = format!("w{w}-{}", acked.len());
                match s.append(&st, &[ev(&id)], condition).await {
                    Ok(a) => acked.push((id, a.position)),
                    Err(StoreError::WrongPosition { .. }) => lost += 1,
                    Err(e) => panic!("append: {e}"),
                }
            }
            (acked, lost)
        }));
    }
    let mut acked = Vec::new();
    let mut lost = 0;
    for w in writers {
        let (a, l) = w.await.expect("writer");
        acked.extend(a);
        lost += l;
    }
    assert!(lost > 0, "the writers really raced");
    let stored = s.read_stream(&st, 0, 100_000).await.expect("read");
    let positions: Vec<i64> = stored.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (0..(16 * each) as i64).collect::<Vec<_>>(),
        "one event per position"
    );
    let by_position: BTreeMap<i64, String> = stored
        .iter()
        .map(|e| (e.position, id_of(&e.event().expect("env"))))
        .collect();
    for (id, position) in &acked {
        assert_eq!(
            by_position.get(position),
            Some(id),
            "the winner of {position} is {id}"
        );
    }
    DeliveryCheck::compare(
        acked.iter().map(|(id, _)| id.clone()),
        stored.iter().map(|e| id_of(&e.event().expect("env"))),
    )
    .assert_exactly_once();
}

/// Four appenders write while a follower reads the log from the last global position it saw:
/// it sees every committed event, in order, with no gap.
pub async fn a_follower_never_skips_an_event<S: EventStore>(s: &S, category: &str) {
    let start = s
        .read_all(0, usize::MAX)
        .await
        .expect("all")
        .last()
        .map_or(0, |e| e.global_position);
    let mut appenders = Vec::new();
    for a in 0..4 {
        let s = s.clone();
        let st = stream(category, &format!("f{a}"));
        appenders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..50 {
                let id = format!("f{a}-{i}");
                s.append(&st, &[ev(&id)], WriteCondition::Any)
                    .await
                    .expect("append");
                acked.push(id);
            }
            acked
        }));
    }
    let follower = {
        let (s, category) = (s.clone(), category.to_owned());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = start;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < 200 && tokio::time::Instant::now() < deadline {
                for e in s.read_all(last + 1, 50).await.expect("follow") {
                    assert_eq!(e.global_position, last + 1, "no gap in the log");
                    last = e.global_position;
                    if e.category() == category {
                        seen.push(id_of(&e.event().expect("env")));
                    }
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let mut acked = Vec::new();
    for a in appenders {
        acked.extend(a.await.expect("appender"));
    }
    let seen = follower.await.expect("follower");
    DeliveryCheck::compare(acked, seen).assert_exactly_once();
}

/// Checkpoints are read back as saved, and a write with an older epoch than the stored one is
/// refused (fencing) and changes nothing.
pub async fn checkpoints_are_fenced_by_epoch<S: EventStore>(s: &S, category: &str) {
    let consumer = format!("{category}_projection");
    assert_eq!(s.checkpoint(&consumer, category).await.expect("read"), None);
    s.save_checkpoint(&consumer, category, 10, 1)
        .await
        .expect("save");
    s.save_checkpoint(&consumer, category, 20, 1)
        .await
        .expect("same epoch moves it");
    assert_eq!(
        s.checkpoint(&consumer, category).await.expect("read"),
        Some((20, 1))
    );
    s.save_checkpoint(&consumer, category, 25, 3)
        .await
        .expect("a newer owner");
    match s.save_checkpoint(&consumer, category, 99, 2).await {
        Err(StoreError::StaleEpoch { epoch, current, .. }) => assert_eq!((epoch, current), (2, 3)),
        other => panic!("a stale epoch's write: {other:?}"),
    }
    assert_eq!(
        s.checkpoint(&consumer, category).await.expect("read"),
        Some((25, 3)),
        "unchanged"
    );
    let other = format!("{category}_other");
    assert_eq!(
        s.checkpoint(&other, category).await.expect("read"),
        None,
        "per consumer"
    );
}

/// `append_all` writes several streams all or nothing: a condition that fails on the last
/// stream leaves the first unwritten; when every condition holds, every stream is written.
pub async fn several_streams_are_written_all_or_nothing<S: EventStore>(s: &S, category: &str) {
    let a = StreamName::new(&format!("{category}-all_a")).expect("name");
    let b = StreamName::new(&format!("{category}-all_b")).expect("name");
    let write = |stream: &StreamName, id: &str, condition| StreamWrite {
        stream: stream.clone(),
        events: vec![tagged("conformance.all", id)],
        condition,
    };
    let refused = s
        .append_all(&[
            write(&a, "a0", WriteCondition::NoStream),
            write(&b, "b0", WriteCondition::ExpectedPosition(7)),
        ])
        .await;
    assert!(
        matches!(refused, Err(StoreError::WrongPosition { .. })),
        "{refused:?}"
    );
    assert!(
        s.read_stream(&a, 0, 10).await.expect("read").is_empty(),
        "nothing written"
    );
    let done = s
        .append_all(&[
            write(&a, "a0", WriteCondition::NoStream),
            write(&b, "b0", WriteCondition::NoStream),
            write(&a, "a1", WriteCondition::ExpectedPosition(0)),
        ])
        .await
        .expect("all written");
    assert_eq!(
        done.iter().map(|d| d.position).collect::<Vec<_>>(),
        [0, 0, 1]
    );
    assert_eq!(
        ids(s.read_stream(&a, 0, 10).await.expect("a")),
        ["a0", "a1"]
    );
    assert_eq!(ids(s.read_stream(&b, 0, 10).await.expect("b")), ["b0"]);
}

fn ids(events: Vec<herald::store::StoredEvent>) -> Vec<String> {
    events
        .iter()
        .map(|e| id_of(&e.event().expect("an envelope")))
        .collect()
}

/// `append_once` appends an event under a key once: the same key again is a duplicate (none
/// written), from any number of racing callers.
pub async fn a_key_is_appended_once<S: EventStore>(s: &S, category: &str) {
    let stream = StreamName::new(&format!("{category}-once")).expect("name");
    let key = format!("{category}:key-1");
    let mut racers = Vec::new();
    for i in 0..8 {
        let (s, stream, key) = (s.clone(), stream.clone(), key.clone());
        racers.push(tokio::spawn(async move {
            s.append_once(&stream, &tagged("conformance.once", &format!("r{i}")), &key)
                .await
                .expect("append_once")
                .is_some()
        }));
    }
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.expect("racer"));
    }
    assert_eq!(won, 1, "one racer appends, the others are duplicates");
    assert_eq!(s.read_stream(&stream, 0, 10).await.expect("read").len(), 1);
    let other = s
        .append_once(
            &stream,
            &tagged("conformance.once", "other"),
            &format!("{category}:key-2"),
        )
        .await
        .expect("another key");
    assert_eq!(other.map(|a| a.position), Some(1));
}

/// `append_once_all`: a batch in one transaction; a key stored before, or twice in the batch,
/// is a duplicate; each stream keeps the batch's order; two racing batches with the same keys
/// append each key once.
pub async fn a_batch_of_keys_is_appended_once<S: EventStore>(s: &S, category: &str) {
    let (a, b) = (
        StreamName::new(&format!("{category}-batcha")).expect("name"),
        StreamName::new(&format!("{category}-batchb")).expect("name"),
    );
    let w = |stream: &StreamName, id: &str| KeyedWrite {
        stream: stream.clone(),
        event: tagged("conformance.batch", id),
        key: format!("{category}:batch:{id}"),
    };
    s.append_once(
        &a,
        &tagged("conformance.batch", "a0"),
        &format!("{category}:batch:a0"),
    )
    .await
    .expect("append_once");
    let got = s
        .append_once_all(&[
            w(&a, "a0"),
            w(&a, "a1"),
            w(&b, "b0"),
            w(&a, "a2"),
            w(&b, "b0"),
        ])
        .await
        .expect("append_once_all");
    assert_eq!(got, [false, true, true, true, false]);
    assert_eq!(
        ids(s.read_stream(&a, 0, 10).await.expect("a")),
        ["a0", "a1", "a2"]
    );
    assert_eq!(ids(s.read_stream(&b, 0, 10).await.expect("b")), ["b0"]);
    let batch: Vec<KeyedWrite> = (0..20).map(|i| w(&b, &format!("r{i}"))).collect();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (s, batch) = (s.clone(), batch.clone());
            tokio::spawn(async move { s.append_once_all(&batch).await.expect("racer") })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += r.await.expect("racer").iter().filter(|n| **n).count();
    }
    assert_eq!(won, 20, "each key appended by one racer");
    assert_eq!(s.read_stream(&b, 0, 100).await.expect("b").len(), 21);
    assert!(s.append_once_all(&[]).await.expect("empty").is_empty());
}

/// Every case, on streams of `category` (lowercase letters, digits and `_`, unique per run).
pub async fn run_all<S: EventStore>(s: &S, category: &str) {
    positions_and_reads(s, category).await;
    failed_conditions_name_the_stream_and_both_positions(s, category).await;
    sixteen_writers_one_winner_per_position(s, category).await;
    a_follower_never_skips_an_event(s, category).await;
    checkpoints_are_fenced_by_epoch(s, category).await;
    several_streams_are_written_all_or_nothing(s, category).await;
    a_key_is_appended_once(s, category).await;
    a_batch_of_keys_is_appended_once(s, category).await;
}
