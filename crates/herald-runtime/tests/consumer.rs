//! Subscription consumers on the memory and SQLite event stores: every event processed once
//! per run (id sets), checkpoints every N and at the end, a resumed consumer starts from its
//! checkpoint, a processor failure leaves the checkpoint before the failing event (processed
//! again: at least once), and a stale owner's checkpoint is refused (fenced).

use std::sync::Arc;

use herald::store::memory::MemoryEventStore;
use herald::store::{EventStore, StoredEvent, StreamName, WriteCondition};
use herald::BoxError;
use herald_runtime::{
    ConsumerError, ConsumerSettings, ErrorHandler, EventSubscriptionConsumer, DEAD_LETTER_CATEGORY,
};
use herald_sqlite::SqliteStore;
use herald_testkit::env::unique;
use herald_testkit::fixtures::{id_of, tagged};
use herald_testkit::DeliveryCheck;
use parking_lot::Mutex;

type Seen = Arc<Mutex<Vec<String>>>;

fn recorder(
    seen: &Seen,
) -> impl Fn(StoredEvent) -> std::future::Ready<Result<(), BoxError>> + Send + Sync + 'static {
    let seen = seen.clone();
    move |e: StoredEvent| {
        let id = e.event().map(|ev| id_of(&ev)).unwrap_or_default();
        if id.starts_with("poison") && !seen.lock().iter().any(|s| s == "cured") {
            return std::future::ready(Err("poison".into()));
        }
        seen.lock().push(id);
        std::future::ready(Ok(()))
    }
}

async fn append<S: EventStore>(
    s: &S,
    category: &str,
    ids: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let stream = StreamName::new(&format!("{category}-{}", i % 7)).expect("stream");
        s.append(
            &stream,
            &[tagged("order.created", &id)],
            WriteCondition::Any,
        )
        .await
        .expect("append");
        out.push(id);
    }
    out
}

async fn scenario<S: EventStore>(s: S) {
    let cat = format!("order{}", unique("c").replace('x', "y"));
    let settings = ConsumerSettings {
        error_handler: ErrorHandler::Raise,
        ..ConsumerSettings::default()
    };
    let first = append(&s, &cat, (0..250).map(|i| format!("e{i}"))).await;
    let seen: Seen = Arc::default();
    let consumer =
        EventSubscriptionConsumer::new(s.clone(), "projection", &[&cat], recorder(&seen), settings)
            .expect("consumer");
    let stats = consumer.consume_all().await.expect("consume_all");
    assert_eq!(
        (stats.processed, stats.checkpoints),
        (250, 3),
        "every 100, and at the end"
    );
    DeliveryCheck::compare(first.clone(), seen.lock().clone()).assert_exactly_once();
    assert_eq!(
        consumer.consume_all().await.expect("again").processed,
        0,
        "nothing new"
    );

    // A new consumer of the same name resumes from the checkpoint.
    let more = append(&s, &cat, (0..50).map(|i| format!("m{i}"))).await;
    seen.lock().clear();
    let resumed =
        EventSubscriptionConsumer::new(s.clone(), "projection", &[&cat], recorder(&seen), settings)
            .expect("consumer");
    assert_eq!(resumed.consume_all().await.expect("resume").processed, 50);
    DeliveryCheck::compare(more, seen.lock().clone()).assert_exactly_once();

    // A poison event stops it; the checkpoint stays before it, so it comes back.
    append(
        &s,
        &cat,
        ["ok1".to_owned(), "poison1".to_owned(), "ok2".to_owned()],
    )
    .await;
    seen.lock().clear();
    match resumed.consume_all().await {
        Err(ConsumerError::Processor {
            position, stream, ..
        }) => {
            assert!(stream.starts_with(&cat) && position >= 0);
        }
        other => panic!("the poison event: {other:?}"),
    }
    assert_eq!(*seen.lock(), ["ok1"]);
    seen.lock().push("cured".into());
    resumed.consume_all().await.expect("after the cure");
    assert_eq!(
        *seen.lock(),
        ["ok1", "cured", "poison1", "ok2"],
        "from the poison event on"
    );

    // A newer owner (epoch 2) takes the source; the old one (epoch 1) is fenced.
    append(&s, &cat, ["late".to_owned()]).await;
    let newer = EventSubscriptionConsumer::new(
        s.clone(),
        "projection",
        &[&cat],
        recorder(&seen),
        ConsumerSettings {
            epoch: 2,
            ..settings
        },
    )
    .expect("consumer");
    newer.consume_all().await.expect("the newer owner");
    append(&s, &cat, ["later".to_owned()]).await;
    match resumed.consume_all().await {
        Err(ConsumerError::Fenced(e)) => assert!(e.to_string().contains("stale"), "{e}"),
        other => panic!("the stale owner: {other:?}"),
    }
}

#[tokio::test]
async fn a_consumer_on_the_memory_store() {
    scenario(MemoryEventStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_the_sqlite_store() {
    let dir = std::env::temp_dir().join(unique("rt"));
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("h.db").display()))
        .await
        .expect("open");
    scenario(store).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_source_that_is_not_a_category_is_named() {
    let e = EventSubscriptionConsumer::new(
        MemoryEventStore::new(),
        "p",
        &["Bad Category"],
        |_e: StoredEvent| std::future::ready(Ok::<(), BoxError>(())),
        ConsumerSettings::default(),
    )
    .expect_err("refused");
    assert!(e.to_string().contains("Bad Category"), "{e}");
}

/// The default handler skips a poison event, counts it and dead-letters it with its error; the
/// retry handler tries again with backoff before it gives up the same way.
#[tokio::test]
async fn continue_dead_letters_a_poison_event_and_retry_tries_again_first() {
    let s = MemoryEventStore::new();
    let cat = "shop";
    let ids = append(
        &s,
        cat,
        ["a".to_owned(), "poison1".to_owned(), "b".to_owned()],
    )
    .await;
    let seen: Seen = Arc::default();
    let consumer = EventSubscriptionConsumer::new(
        s.clone(),
        "counter",
        &[cat],
        recorder(&seen),
        ConsumerSettings::default(),
    )
    .expect("consumer");
    let stats = consumer.consume_all().await.expect("continue never stops");
    assert_eq!((stats.processed, stats.skipped), (3, 1));
    assert_eq!(*seen.lock(), ["a", "b"]);
    let dead = s
        .read_category(DEAD_LETTER_CATEGORY, 0, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    let letter = dead[0].event().expect("an envelope");
    assert_eq!(id_of(&letter), "poison1");
    assert_eq!(letter.metadata["dead_letter"]["reason"], "poison");
    assert_eq!(
        consumer.consume_all().await.expect("again").processed,
        0,
        "checkpoint moved past it"
    );
    let _ = ids;

    // Retry: fails twice, then works; processed once, two extra attempts, nothing skipped.
    let flaky = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let f = flaky.clone();
    append(&s, "retry", ["r1".to_owned()]).await;
    let retrying = EventSubscriptionConsumer::new(
        s.clone(),
        "retrier",
        &["retry"],
        move |_e: StoredEvent| {
            let n = f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(if n < 2 {
                Err::<(), BoxError>("not yet".into())
            } else {
                Ok(())
            })
        },
        ConsumerSettings {
            error_handler: ErrorHandler::Retry {
                max: 3,
                backoff: std::time::Duration::from_millis(5),
            },
            ..ConsumerSettings::default()
        },
    )
    .expect("consumer");
    let stats = retrying.consume_all().await.expect("retried");
    assert_eq!((stats.processed, stats.retried, stats.skipped), (1, 2, 0));
}

/// A runtime consumer takes the core's `RetryPolicy` (here three attempts; the error handler
/// applies it once, per event), runs the consume path's middleware (an observer hears each
/// attempt's outcome), and dead-letters with the core's builder: origin, attempts, and the
/// stored body byte for byte.
#[tokio::test]
async fn a_consumer_retries_under_the_policy_and_dead_letters_with_the_cores_builder() {
    use herald::consume::layer::Observe;
    use herald::dead_letter::DeadLetter;
    use herald::RetryPolicy;

    let s = MemoryEventStore::new();
    let cat = "policy";
    append(
        &s,
        cat,
        ["ok1".to_owned(), "poison9".to_owned(), "ok2".to_owned()],
    )
    .await;
    let stored = s.read_category(cat, 0, 10).await.expect("read");
    let poison = stored
        .iter()
        .find(|e| e.event().map(|ev| id_of(&ev)).unwrap_or_default() == "poison9")
        .expect("poison stored")
        .clone();
    let seen: Seen = Arc::default();
    let heard: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let h = heard.clone();
    let consumer = EventSubscriptionConsumer::new(
        s.clone(),
        "policied",
        &[cat],
        recorder(&seen),
        ConsumerSettings::default(),
    )
    .expect("consumer")
    .with_retry(RetryPolicy::fixed(std::time::Duration::from_millis(2)).max_attempts(3))
    .layer(Observe::new(move |ctx, outcome, _| {
        h.lock().push((id_of(&ctx.event), outcome.name()));
    }));
    let stats = consumer.consume_all().await.expect("continue never stops");
    assert_eq!((stats.processed, stats.retried, stats.skipped), (3, 2, 1));
    DeliveryCheck::compare(
        vec!["ok1".to_owned(), "ok2".to_owned()],
        seen.lock().clone(),
    )
    .assert_exactly_once();
    let dead = s
        .read_category(DEAD_LETTER_CATEGORY, 0, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].stream,
        herald_runtime::dead_letter_stream("policied", cat)
    );
    let letter = dead[0].event().expect("an envelope");
    let record = &letter.metadata["dead_letter"];
    assert_eq!(record["origin"], "stream");
    assert_eq!(record["consumer"], "policied");
    assert_eq!(record["source"], cat);
    assert_eq!(record["stream"], poison.stream.as_str());
    assert_eq!(record["global_position"], poison.global_position);
    assert_eq!(record["attempts"], 3);
    assert_eq!(
        record["reason"],
        "retries exhausted after 3 attempt(s); last error: poison"
    );
    assert_eq!(DeadLetter::original_body(&letter), poison.body);
    let heard = heard.lock().clone();
    let of = |id: &str| -> Vec<&str> {
        heard
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, o)| *o)
            .collect()
    };
    assert_eq!(of("poison9"), ["retry", "retry", "reject"]);
    assert_eq!((of("ok1"), of("ok2")), (vec!["ack"], vec!["ack"]));
}

/// A runtime dead letter replayed by an operator goes back through the consumer's processor
/// as its original event (stream, position, body), once, with the source's checkpoint
/// untouched; the place keeps a marker, the audit stream a record; a second replay of the
/// same letter finds nothing; a letter that dies again counts its replay.
#[tokio::test]
async fn a_replayed_dead_letter_goes_back_through_the_processor_once() {
    use herald::dlq::{self, stream, Operator, Selection};
    let s = MemoryEventStore::new();
    let cat = "shop";
    append(
        &s,
        cat,
        ["a".to_owned(), "poison1".to_owned(), "poison2".to_owned()],
    )
    .await;
    let seen: Seen = Arc::default();
    let consumer = EventSubscriptionConsumer::new(
        s.clone(),
        "counter",
        &[cat],
        recorder(&seen),
        ConsumerSettings::default(),
    )
    .expect("consumer");
    consumer.consume_all().await.expect("runs");
    assert_eq!(*seen.lock(), ["a"]);
    let checkpoint = s.checkpoint("counter", cat).await.expect("checkpoint");
    let place = stream::place(&herald_runtime::dead_letter_stream("counter", cat)).expect("place");
    let letters = stream::letters(&s, &place, 10).await.expect("letters");
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].reason, "poison");
    assert_eq!(letters[0].origin, "counter.shop");
    let places = stream::places(&s).await.expect("places");
    assert_eq!(
        (places[0].name.as_str(), places[0].count),
        (place.as_str(), 2)
    );

    seen.lock().push("cured".into());
    let op = Operator {
        who: "ops".into(),
        why: Some("fixed".into()),
    };
    let first = letters[0].id;
    let report = stream::replay(&s, &place, Selection::Ids(vec![first]), 3, false, &op)
        .await
        .expect("replay");
    assert_eq!(report.done, vec![first]);
    assert!(matches!(
        stream::replay(&s, &place, Selection::Ids(vec![first]), 3, false, &op).await,
        Err(dlq::DlqError::NoSuchLetter { .. })
    ));
    let stats = consumer.consume_all().await.expect("runs");
    assert_eq!(stats.replayed, 1);
    assert_eq!(
        *seen.lock(),
        ["a", "cured", "poison1"],
        "the replay went through the processor, once"
    );
    assert_eq!(
        consumer.consume_all().await.expect("again").replayed,
        0,
        "and only once"
    );
    assert_eq!(
        s.checkpoint("counter", cat).await.expect("checkpoint"),
        checkpoint,
        "untouched"
    );
    assert_eq!(
        stream::letters(&s, &place, 10)
            .await
            .expect("letters")
            .len(),
        1
    );

    // The other one: abandoned, recorded.
    let abandoned = stream::abandon(&s, &place, Selection::All, &op)
        .await
        .expect("abandon");
    assert_eq!(abandoned.done, vec![letters[1].id]);
    assert!(stream::letters(&s, &place, 10)
        .await
        .expect("letters")
        .is_empty());
    let audit = s
        .read_stream(&StreamName::new(dlq::AUDIT_STREAM).expect("name"), 0, 10)
        .await
        .expect("audit");
    let actions: Vec<String> = audit
        .iter()
        .map(|e| {
            e.event().expect("event").data["action"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["replayed", "abandoned"]);
}

/// A processor runs in its event's trace: an event it publishes (here, one it builds and
/// continues) carries the same trace id with a parent of its own.
#[tokio::test]
async fn a_processor_runs_in_its_events_trace() {
    let store = MemoryEventStore::new();
    let ctx = herald::TraceContext::new_root();
    let stream = StreamName::new("traced-1").expect("stream");
    store
        .append(
            &stream,
            &[tagged("order.created", "t1").with_trace_context(&ctx)],
            WriteCondition::Any,
        )
        .await
        .expect("append");
    let seen: Arc<Mutex<Vec<Option<herald::TraceContext>>>> = Arc::default();
    let s = seen.clone();
    let processor = move |_e: StoredEvent| {
        let mut followup =
            herald::Event::new(herald::Subject::new("order.shipped").expect("subject"));
        followup.continue_current();
        s.lock().push(followup.trace_context());
        std::future::ready(Ok::<(), BoxError>(()))
    };
    let consumer = EventSubscriptionConsumer::new(
        store,
        "traced",
        &["traced"],
        processor,
        ConsumerSettings::default(),
    )
    .expect("consumer");
    consumer.consume_all().await.expect("consume_all");
    let seen = seen.lock().clone();
    let got = seen[0].clone().expect("the follow-up continues the trace");
    assert_eq!(got.trace_id(), ctx.trace_id());
    assert_ne!(got.parent_id(), ctx.parent_id());
}
