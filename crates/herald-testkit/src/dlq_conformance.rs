//! The dead-letter place suite, run unchanged against every backend that keeps places
//! (SQLite, PostgreSQL): listing, showing, replay (ids and all, the replay limit, a dropped
//! target, two operators at once) and abandon, each compared by id sets with the queue's
//! contents and the audit stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use herald::dlq::{self, DeadLetterStore, DlqError, Operator, Selection, AUDIT_STREAM};
use herald::queue::consume::dead_letter;
use herald::queue::{Message, Queue, QueueName};
use herald::store::{EventStore, StreamName};
use herald::{Event, Timestamp};

use crate::delivery::DeliveryCheck;
use crate::fixtures::{id_of, tagged};

/// A queue and its place, both fresh, with `n` dead letters (ids `{prefix}-{i}`) in the place.
async fn dead<S: Queue + DeadLetterStore>(
    s: &S,
    prefix: &str,
    n: usize,
) -> (QueueName, QueueName, Vec<String>) {
    let queue = QueueName::new(prefix).expect("a valid test queue name");
    let place = dlq::place(&format!("{prefix}_dlq")).expect("a place name");
    for q in [&queue, &place] {
        s.drop_queue(q).await.expect("drop");
        s.create(q).await.expect("create");
    }
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let body = tagged("dlq.conformance", id).to_json();
        let message = Message {
            msg_id: i64::try_from(i).unwrap_or(0) + 1,
            read_ct: 3,
            enqueued_at: Timestamp::now(),
            vt: Timestamp::now(),
            body,
        };
        let letter = dead_letter(&queue, &message, "handler said no");
        s.send(&place, &letter, Duration::ZERO).await.expect("send");
    }
    (queue, place, ids)
}

/// The tagged ids of every message now visible in `queue` (read with a zero vt, so they stay).
async fn ids_in<S: Queue>(s: &S, queue: &QueueName) -> Vec<String> {
    let mut out = Vec::new();
    for m in s.read(queue, Duration::ZERO, 100_000).await.expect("read") {
        out.push(id_of(&m.event().expect("an envelope")));
    }
    out
}

/// Audit events of `place` by action: `(action, letter id)`.
async fn audits<S: EventStore>(s: &S, place: &QueueName) -> Vec<(String, i64)> {
    let stream = StreamName::new(AUDIT_STREAM).expect("stream");
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = s.read_stream(&stream, from, 1000).await.expect("audit");
        let Some(last) = batch.last() else {
            return out;
        };
        from = last.position + 1;
        for e in &batch {
            let event = Event::from_json(&e.body).expect("an audit envelope").event;
            if event.data["place"] == place.as_str() {
                out.push((
                    event.data["action"].as_str().unwrap_or("").to_owned(),
                    event.data["id"].as_i64().unwrap_or(-1),
                ));
            }
        }
    }
}

fn operator() -> Operator {
    Operator {
        who: "conformance".into(),
        why: Some("testing".into()),
    }
}

/// A place is listed with its count and origin; its letters show reason, attempts and the
/// original body byte for byte; a name that is not a place and a place that is not there
/// are typed errors.
pub async fn places_and_letters<S: Queue + DeadLetterStore>(s: &S, prefix: &str) {
    let (queue, place, ids) = dead(s, prefix, 3).await;
    let places = s.places().await.expect("places");
    let listed = places
        .iter()
        .find(|p| p.name == place.as_str())
        .expect("the place is listed");
    assert_eq!(listed.count, 3);
    assert_eq!(listed.origin, queue.as_str());
    assert!(listed.oldest_age_ms.is_some());
    let letters = s.letters(&place, 0, 10).await.expect("letters");
    assert_eq!(letters.len(), 3);
    for (letter, id) in letters.iter().zip(&ids) {
        assert_eq!(letter.reason, "handler said no");
        assert_eq!(letter.attempts, 3);
        assert_eq!(letter.origin, queue.as_str());
        assert_eq!(letter.replays, 0);
        let body = Event::from_json(&letter.body).expect("the original").event;
        assert_eq!(&id_of(&body), id);
        assert!(
            body.metadata.get("dead_letter").is_none(),
            "the original body, not the letter"
        );
    }
    assert!(matches!(
        dlq::place("orders"),
        Err(DlqError::NotAPlace { .. })
    ));
    let ghost = dlq::place(&format!("{prefix}_ghost_dlq")).expect("a place name");
    assert!(matches!(
        s.letters(&ghost, 0, 10).await,
        Err(DlqError::NoSuchPlace { .. })
    ));
}

/// A replay of ids sends exactly those originals back to their queue and records each; an id
/// not there fails it with nothing moved; the letter dead again counts its replay, and past the limit
/// a replay is refused unless forced.
pub async fn replay_by_id_and_the_limit<S: Queue + DeadLetterStore + EventStore>(
    s: &S,
    prefix: &str,
) {
    let (queue, place, ids) = dead(s, prefix, 4).await;
    let letters = s.letters(&place, 0, 10).await.expect("letters");
    let with_ghost = vec![letters[0].id, 999_999];
    let ghost = dlq::replay(s, &place, Selection::Ids(with_ghost), 3, false, &operator()).await;
    assert!(
        matches!(&ghost, Err(DlqError::NoSuchLetter { ids, .. }) if ids == &vec![999_999]),
        "{ghost:?}"
    );
    assert!(ids_in(s, &queue).await.is_empty(), "nothing moved");
    let picked = vec![letters[0].id, letters[2].id];
    let report = dlq::replay(s, &place, Selection::Ids(picked), 3, false, &operator())
        .await
        .expect("replay");
    assert_eq!(report.done, vec![letters[0].id, letters[2].id]);
    let back = ids_in(s, &queue).await;
    DeliveryCheck::compare(vec![ids[0].clone(), ids[2].clone()], back).assert_exactly_once();
    assert_eq!(s.letters(&place, 0, 10).await.expect("letters").len(), 2);
    let recorded = audits(s, &place).await;
    assert_eq!(
        recorded,
        vec![
            ("replayed".to_owned(), letters[0].id),
            ("replayed".to_owned(), letters[2].id)
        ]
    );

    // The replayed message dies again: the same body, so its replay count follows it.
    let again = s
        .read(&queue, Duration::from_secs(60), 1)
        .await
        .expect("read");
    let message = again.first().expect("a replayed message");
    let letter = dead_letter(&queue, message, "still no");
    s.archive(&queue, &[message.msg_id]).await.expect("archive");
    s.send(&place, &letter, Duration::ZERO)
        .await
        .expect("dead again");
    let dead_again = s
        .letters(&place, 0, 10)
        .await
        .expect("letters")
        .into_iter()
        .find(|l| l.reason == "still no")
        .expect("the letter dead again");
    assert_eq!(dead_again.replays, 1);
    let refused = dlq::replay(
        s,
        &place,
        Selection::Ids(vec![dead_again.id]),
        1,
        false,
        &operator(),
    )
    .await
    .expect("replay");
    assert!(refused.done.is_empty());
    assert_eq!(refused.refused.len(), 1);
    assert!(refused.refused[0].reason.contains("--max-replays 1"));
    let forced = dlq::replay(
        s,
        &place,
        Selection::Ids(vec![dead_again.id]),
        1,
        true,
        &operator(),
    )
    .await
    .expect("forced");
    assert_eq!(forced.done, vec![dead_again.id]);
    assert!(matches!(
        dlq::replay(s, &place, Selection::All, 0, false, &operator()).await,
        Err(DlqError::ZeroMaxReplays)
    ));
}

/// Abandon of all archives every letter and records each with the operator's reason; a
/// replay whose queue was dropped moves nothing.
pub async fn abandon_all_and_a_dropped_target<S: Queue + DeadLetterStore + EventStore>(
    s: &S,
    prefix: &str,
) {
    let (queue, place, _) = dead(s, prefix, 5).await;
    s.drop_queue(&queue).await.expect("drop the target");
    let gone = dlq::replay(s, &place, Selection::All, 3, false, &operator()).await;
    assert!(matches!(gone, Err(DlqError::TargetGone { .. })), "{gone:?}");
    assert_eq!(
        s.letters(&place, 0, 10).await.expect("letters").len(),
        5,
        "nothing moved"
    );
    let report = dlq::abandon(s, &place, Selection::All, &operator())
        .await
        .expect("abandon");
    assert_eq!(report.done.len(), 5);
    assert!(s.letters(&place, 0, 10).await.expect("letters").is_empty());
    assert_eq!(s.archived(&place, 10).await.expect("archived").len(), 5);
    let recorded = audits(s, &place).await;
    assert_eq!(recorded.len(), 5);
    assert!(recorded.iter().all(|(a, _)| a == "abandoned"));
}

/// Two operators replaying one place at once: every letter replayed exactly once between
/// them, each with one audit event.
pub async fn two_operators_at_once<S: Queue + DeadLetterStore + EventStore>(s: &S, prefix: &str) {
    let (queue, place, ids) = dead(s, prefix, 1200).await;
    let (a, b) = (s.clone(), s.clone());
    let (pa, pb) = (place.clone(), place.clone());
    let one =
        tokio::spawn(
            async move { dlq::replay(&a, &pa, Selection::All, 3, false, &operator()).await },
        );
    let two =
        tokio::spawn(
            async move { dlq::replay(&b, &pb, Selection::All, 3, false, &operator()).await },
        );
    let one = one.await.expect("task").expect("replay one");
    let two = two.await.expect("task").expect("replay two");
    let done: HashSet<i64> = one.done.iter().chain(&two.done).copied().collect();
    assert_eq!(
        done.len(),
        one.done.len() + two.done.len(),
        "no letter taken twice"
    );
    assert_eq!(done.len(), 1200);
    DeliveryCheck::compare(ids, ids_in(s, &queue).await).assert_exactly_once();
    let mut per_letter: HashMap<i64, usize> = HashMap::new();
    for (_, id) in audits(s, &place).await {
        *per_letter.entry(id).or_default() += 1;
    }
    assert_eq!(per_letter.len(), 1200);
    assert!(
        per_letter.values().all(|n| *n == 1),
        "one audit event per replay"
    );
}

/// Every case, with queue names under `prefix`.
pub async fn run_all<S: Queue + DeadLetterStore + EventStore>(s: &S, prefix: &str) {
    places_and_letters(s, &format!("{prefix}_dlqa")).await;
    replay_by_id_and_the_limit(s, &format!("{prefix}_dlqb")).await;
    abandon_all_and_a_dropped_target(s, &format!("{prefix}_dlqc")).await;
    two_operators_at_once(s, &format!("{prefix}_dlqd")).await;
}
