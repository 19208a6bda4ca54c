//! `herald dlq` as an operator runs it on the embedded store: a worker's poisoned steps are
//! listed and shown, replayed back to their queue (and die again, counted), refused past
//! `--max-replays`, abandoned with a reason; bad input (an id or place not there,
//! `--max-replays 0`, a dropped target) is one line with a non-zero exit and moves nothing;
//! each replay and abandon leaves one audit event.

use std::process::{Command, Output};

use herald::queue::{Queue, QueueName};
use herald_testkit::env::unique;
use serde_json::Value;

fn herald(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run herald")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(o: &Output) -> Vec<Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn letters(store: &str) -> Vec<Value> {
    let shown = herald(store, &["dlq", "show", "default_steps_dlq", "--json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    lines(&shown)
}

fn refused(o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "expected a refusal: {}",
        text(&o.stderr)
    );
    let err = text(&o.stderr);
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

fn poison(store: &str, n: &str) {
    let run = herald(
        store,
        &[
            "worker",
            "--handler",
            "demo.panic",
            "--enqueue",
            n,
            "--until-empty",
            "--quiet",
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_replays_and_abandons_dead_letters() {
    let dir = std::env::temp_dir().join(unique("dlqcli"));
    let store = format!("sqlite://{}", dir.join("herald.db").display());
    poison(&store, "3");

    let ls = herald(&store, &["dlq", "ls", "--json"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let places = lines(&ls);
    assert_eq!(places.len(), 1, "{places:?}");
    assert_eq!(places[0]["name"], "default_steps_dlq");
    assert_eq!(places[0]["origin"], "default_steps");
    assert_eq!(places[0]["count"], 3);
    let dead = letters(&store);
    assert_eq!(dead.len(), 3);
    assert!(dead
        .iter()
        .all(|l| l["reason"].as_str().unwrap_or("").contains("panics")));
    assert!(dead.iter().all(|l| l["replays"] == 0));

    // Bad input: one line, non-zero, nothing moved.
    refused(
        &herald(
            &store,
            &["dlq", "replay", "default_steps_dlq", "--id", "999999"],
        ),
        "999999",
    );
    refused(
        &herald(&store, &["dlq", "replay", "nope_dlq", "--all"]),
        "no dead-letter place nope_dlq",
    );
    refused(
        &herald(&store, &["dlq", "replay", "default_steps", "--all"]),
        "default_steps_dlq",
    );
    refused(
        &herald(
            &store,
            &[
                "dlq",
                "replay",
                "default_steps_dlq",
                "--all",
                "--max-replays",
                "0",
            ],
        ),
        "--max-replays",
    );
    refused(
        &herald(&store, &["dlq", "abandon", "default_steps_dlq", "--all"]),
        "--reason",
    );
    refused(
        &herald(&store, &["dlq", "replay", "default_steps_dlq"]),
        "--id",
    );
    assert_eq!(letters(&store).len(), 3, "nothing moved");

    // One letter replayed: back on its queue, run again, dead again with its replay counted.
    let first = dead[0]["id"].as_i64().expect("an id").to_string();
    let replayed = herald(
        &store,
        &["dlq", "replay", "default_steps_dlq", "--id", &first],
    );
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert_eq!(letters(&store).len(), 2);
    poison(&store, "0");
    let after = letters(&store);
    assert_eq!(after.len(), 3);
    assert_eq!(
        after.iter().filter(|l| l["replays"] == 1).count(),
        1,
        "{after:?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|l| l["body"] == dead[0]["body"])
            .count(),
        1,
        "the same body"
    );

    // Past --max-replays 1: refused (non-zero, named), the others go back.
    let capped = herald(
        &store,
        &[
            "dlq",
            "replay",
            "default_steps_dlq",
            "--all",
            "--max-replays",
            "1",
            "--json",
        ],
    );
    refused(&capped, "refused");
    let report = &lines(&capped)[0];
    assert_eq!(report["done"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["refused"].as_array().map(Vec::len), Some(1));
    assert_eq!(letters(&store).len(), 1);

    // A target queue dropped: nothing moved, even with --force.
    let lib = herald_sqlite::SqliteStore::open(&store)
        .await
        .expect("open");
    lib.drop_queue(&QueueName::new("default_steps").expect("name"))
        .await
        .expect("drop");
    refused(
        &herald(
            &store,
            &["dlq", "replay", "default_steps_dlq", "--all", "--force"],
        ),
        "does not exist",
    );
    assert_eq!(letters(&store).len(), 1);

    let abandoned = herald(
        &store,
        &[
            "dlq",
            "abandon",
            "default_steps_dlq",
            "--all",
            "--reason",
            "handler retired",
            "--who",
            "ops",
        ],
    );
    assert!(abandoned.status.success(), "{}", text(&abandoned.stderr));
    assert!(letters(&store).is_empty());

    // The audit stream: one event per letter replayed (1 + 2) or abandoned (1).
    let audit = herald(&store, &["store", "read", "herald-audit"]);
    assert!(audit.status.success(), "{}", text(&audit.stderr));
    let events: Vec<Value> = lines(&audit)
        .into_iter()
        .map(|e| e["event"]["data"].clone())
        .collect();
    let actions: Vec<&str> = events.iter().filter_map(|d| d["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec!["replayed", "replayed", "replayed", "abandoned"]
    );
    assert_eq!(events[3]["why"], "handler retired");
    assert_eq!(events[3]["who"], "ops");
    let _ = std::fs::remove_dir_all(dir);
}

/// A runtime consumer's dead letter, on SQLite and PostgreSQL: `herald dlq ls` lists its
/// place, `show` its letter, `replay` sends it back through the consumer's processor (once,
/// the source's checkpoint untouched), `abandon` gives the other up.
async fn runtime_place<S: herald::store::EventStore + Clone>(store: S, url: &str, cat: &str) {
    use herald::store::{StoredEvent, StreamName, WriteCondition};
    use herald_runtime::{ConsumerSettings, EventSubscriptionConsumer};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for (i, amount) in ["1", "x", "y"].iter().enumerate() {
        let e = herald::Event::try_new("order.created", serde_json::json!({"amount": amount}))
            .expect("event");
        let stream = StreamName::new(&format!("{cat}-{i}")).expect("stream");
        store
            .append(&stream, &[e], WriteCondition::Any)
            .await
            .expect("append");
    }
    let fixed = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<(String, String)>::new()));
    let (f, log) = (fixed.clone(), seen.clone());
    let consumer = EventSubscriptionConsumer::new(
        store.clone(),
        "totals",
        &[cat],
        move |e: StoredEvent| {
            let amount = e
                .event()
                .map(|ev| ev.data["amount"].to_string())
                .unwrap_or_default();
            let ok = amount == "\"1\"" || (f.load(Ordering::SeqCst) && amount == "\"x\"");
            if ok {
                log.lock().push((e.stream.clone(), amount));
            }
            std::future::ready(if ok {
                Ok(())
            } else {
                Err::<(), herald::BoxError>("amount is not a number".into())
            })
        },
        ConsumerSettings::default(),
    )
    .expect("consumer");
    consumer.consume_all().await.expect("runs");
    let checkpoint = store.checkpoint("totals", cat).await.expect("checkpoint");
    let place = format!("deadletter-totals.{cat}");

    let ls = herald(url, &["dlq", "ls", "--json"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let listed = lines(&ls)
        .into_iter()
        .find(|p| p["name"] == place.as_str())
        .expect("the stream place");
    assert_eq!(listed["count"], 2);
    let shown = herald(url, &["dlq", "show", &place, "--json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let letters = lines(&shown);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["reason"], "amount is not a number");
    let x = letters[0]["id"].as_i64().expect("id").to_string();
    let y = letters[1]["id"].as_i64().expect("id").to_string();

    fixed.store(true, Ordering::SeqCst);
    let replayed = herald(url, &["dlq", "replay", &place, "--id", &x, "--who", "ops"]);
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    refused(&herald(url, &["dlq", "replay", &place, "--id", &x]), &x);
    let stats = consumer.consume_all().await.expect("runs");
    assert_eq!(stats.replayed, 1);
    assert_eq!(
        *seen.lock(),
        [
            (format!("{cat}-0"), "\"1\"".to_owned()),
            (format!("{cat}-1"), "\"x\"".to_owned())
        ],
        "the replay reached the processor as its original event, once"
    );
    assert_eq!(consumer.consume_all().await.expect("again").replayed, 0);
    assert_eq!(
        store.checkpoint("totals", cat).await.expect("checkpoint"),
        checkpoint
    );
    let abandoned = herald(
        url,
        &["dlq", "abandon", &place, "--id", &y, "--reason", "bad data"],
    );
    assert!(abandoned.status.success(), "{}", text(&abandoned.stderr));
    let left = herald(url, &["dlq", "show", &place, "--json"]);
    assert!(lines(&left).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_dead_letter_is_replayed_through_its_consumer_on_sqlite() {
    let dir = std::env::temp_dir().join(unique("dlqrt"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = herald_sqlite::SqliteStore::open(&url).await.expect("open");
    runtime_place(store, &url, "order").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_dead_letter_is_replayed_through_its_consumer_on_postgres() {
    let Some(url) = herald_testkit::env::database_url("dlq_runtime_postgres") else {
        return;
    };
    let store = herald_postgres::PgStore::connect(&url)
        .await
        .expect("connect");
    let cat = unique("rt").replace('-', "_");
    runtime_place(store, &url, &cat).await;
}
