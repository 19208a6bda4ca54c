//! The PostgreSQL store against the real server (`HERALD_TEST_DATABASE_URL`): the queue
//! conformance suite, Herald and psql's `pgmq.read`/`pgmq.send` reading each other's
//! messages, a message sent in a rolled-back transaction never seen, the pool's connection
//! settings, flow control's registered keys, and bad input.

use std::time::Duration;

use herald::queue::{Queue, QueueName};
use herald_postgres::PgStore;
use herald_testkit::env::{database_url, psql, unique};
use herald_testkit::fixtures::{id_of, tagged};

async fn store(test: &str) -> Option<(PgStore, String)> {
    let url = database_url(test)?;
    let store = PgStore::connect(&url).await.expect("connect");
    Some((store, url))
}

fn qname(prefix: &str) -> QueueName {
    QueueName::new(&unique(prefix)).expect("queue name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_queue_conformance_suite() {
    let Some((store, _)) = store("pg_conformance").await else {
        return;
    };
    herald_testkit::queue_conformance::run_all(&store, &unique("pgc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_and_psql_read_each_others_messages() {
    let Some((store, url)) = store("pg_psql_interop").await else {
        return;
    };
    let q = qname("interop");
    store.create(&q).await.expect("create");
    // Herald writes, psql reads with pgmq.read.
    store
        .send(&q, &tagged("interop.herald", "from-herald"), Duration::ZERO)
        .await
        .expect("send");
    let seen = psql(
        &url,
        &format!("SELECT message->'metadata'->>'test_id' FROM pgmq.read('{q}', 30, 10)"),
    );
    assert_eq!(seen, "from-herald");
    // psql writes an envelope with pgmq.send, Herald reads it.
    let envelope = r#"{"subject":"interop.psql","event_type":"psql","source":"psql","data":{},"timestamp":"2026-11-23T10:00:00Z","correlation_id":"7d3c6bb5-6c1b-4d5e-9a3e-1f2a3b4c5d6e","priority":"high","metadata":{"test_id":"from-psql"}}"#;
    psql(
        &url,
        &format!("SELECT pgmq.send('{q}', '{envelope}'::jsonb)"),
    );
    let got = store
        .read_with_poll(&q, Duration::from_secs(30), 10, Duration::from_secs(5))
        .await
        .expect("read");
    assert_eq!(got.len(), 1, "only psql's message is visible");
    let event = got[0].event().expect("psql's envelope decodes");
    assert_eq!(id_of(&event), "from-psql");
    assert_eq!(event.subject.as_str(), "interop.psql");
    store.drop_queue(&q).await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_in_a_rolled_back_transaction_is_never_seen() {
    let Some((store, url)) = store("pg_rollback").await else {
        return;
    };
    let q = qname("rollback");
    store.create(&q).await.expect("create");
    psql(
        &url,
        &format!("BEGIN; SELECT pgmq.send('{q}', '{{\"a\":1}}'::jsonb); ROLLBACK;"),
    );
    let got = store
        .read(&q, Duration::from_secs(30), 10)
        .await
        .expect("read");
    assert!(got.is_empty(), "{got:?}");
    store.drop_queue(&q).await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_senders_each_get_their_own_committed_id() {
    let Some((store, _)) = store("pg_group_commit").await else {
        return;
    };
    let q = qname("group");
    store.create(&q).await.expect("create");
    let mut tasks = Vec::new();
    for t in 0..64 {
        let (store, q) = (store.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let id = format!("{t}-{i}");
                let msg_id = store
                    .send(&q, &tagged("group.x", &id), Duration::ZERO)
                    .await
                    .expect("send");
                acked.push((id, msg_id));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("sender"));
    }
    let msg_ids: std::collections::HashSet<i64> = acked.iter().map(|(_, m)| *m).collect();
    assert_eq!(
        msg_ids.len(),
        acked.len(),
        "every caller got its own msg_id"
    );
    let read = store
        .read(&q, Duration::from_secs(60), 2000)
        .await
        .expect("read");
    let by_msg: std::collections::HashMap<i64, String> = read
        .iter()
        .map(|m| (m.msg_id, id_of(&m.event().expect("env"))))
        .collect();
    for (id, msg_id) in &acked {
        assert_eq!(by_msg.get(msg_id), Some(id), "msg_id {msg_id} holds {id}");
    }
    store.drop_queue(&q).await.expect("drop");
}

/// Every pooled connection runs without JIT: a generic plan's estimate over a large queue
/// passes the server's `jit_above_cost`, and compiling cost a flow read 18 of its 19 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_s_connections_run_without_jit() {
    let Some((store, _)) = store("pg_jit").await else {
        return;
    };
    // Every connection the pool opens, not only the first.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = store.pool().acquire().await.expect("acquire");
        let (jit, notify): (String, String) =
            sqlx::query_as("SELECT current_setting('jit'), current_setting('herald.self_notify')")
                .fetch_one(&mut *c)
                .await
                .expect("settings");
        assert_eq!((jit.as_str(), notify.as_str()), ("off", "on"));
        held.push(c);
    }
}

#[tokio::test]
async fn a_bad_url_is_one_error_naming_it_without_the_password() {
    let err = PgStore::connect("mysql://u:pw@x/db")
        .await
        .expect_err("refused");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains("mysql://u:***@x/db"), "{text}");
    assert!(!text.contains("pw"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_event_store_conformance_suite() {
    let Some((store, _)) = store("pg_event_store").await else {
        return;
    };
    herald_testkit::store_conformance::run_all(&store, &unique("pgc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_dead_letter_place_suite() {
    let Some((store, _)) = store("pg_dlq").await else {
        return;
    };
    herald_testkit::dlq_conformance::run_all(&store, &unique("pgd")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_flow_control_suite() {
    let Some((store, _)) = store("pg_flow").await else {
        return;
    };
    herald_testkit::flow_conformance::run_all(&store, &unique("pgf")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_broker_conformance_suite() {
    let Some(url) = database_url("pg_broker") else {
        return;
    };
    let db = herald_testkit::env::FreshDatabase::create(&url);
    let store = PgStore::connect(&db.url()).await.expect("connect");
    herald_testkit::broker_conformance::run_all(&store).await;
    store.pool().close().await;
}

/// Settles that arrive together are applied as one guarded statement per queue (with a
/// result each, the worker's shape: one statement for the whole batch; with none, one guarded
/// statement per group): a stale one (its message read again since) is refused alone, each
/// applied one archives its message and sends its own result once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settles_applied_together_are_guarded_one_by_one() {
    let Some((store, _)) = store("pg_grouped_settles").await else {
        return;
    };
    grouped_settles(&store, true).await;
    grouped_settles(&store, false).await;
}

async fn grouped_settles(store: &PgStore, with_result: bool) {
    use herald::queue::{Settle, Settled, Settlement};
    use std::collections::BTreeSet;
    let (steps, results) = (qname("gs"), qname("gr"));
    store.create(&steps).await.expect("create");
    store.create(&results).await.expect("create");
    let ids: Vec<String> = (0..60).map(|i| format!("step-{i}")).collect();
    for id in &ids {
        store
            .send(&steps, &tagged("g.step", id), Duration::ZERO)
            .await
            .expect("send");
    }
    // Read all with no visibility timeout, then read half of them again: those settles,
    // made with the first read count, are stale.
    let first = store.read(&steps, Duration::ZERO, 60).await.expect("read");
    assert_eq!(first.len(), 60);
    let again = store
        .read(&steps, Duration::from_secs(60), 30)
        .await
        .expect("read");
    let reread: BTreeSet<i64> = again.iter().map(|m| m.msg_id).collect();
    let mut settles = tokio::task::JoinSet::new();
    for m in &first {
        let (store, steps, results) = (store.clone(), steps.clone(), results.clone());
        let result = tagged("g.result", &format!("result-of-{}", m.msg_id));
        let (msg_id, read_ct) = (m.msg_id, m.read_ct);
        settles.spawn(async move {
            let mut settlement = Settlement::only(Settle::Archive);
            if with_result {
                settlement = settlement.and_send(results, result);
            }
            let settled = store
                .settle(&steps, msg_id, read_ct, settlement)
                .await
                .expect("settle");
            (msg_id, settled)
        });
    }
    let done = settles.join_all().await;
    let mut applied = BTreeSet::new();
    for (msg_id, settled) in &done {
        match settled {
            Settled::Stale => assert!(reread.contains(msg_id), "{msg_id} refused"),
            Settled::Applied { sent } => {
                assert!(!reread.contains(msg_id), "{msg_id} was read again");
                assert_eq!(sent.len(), usize::from(with_result));
                applied.insert(format!("result-of-{msg_id}"));
            }
        }
    }
    assert_eq!(applied.len(), 30);
    // The results queue holds exactly the applied settles' results, once each.
    let stored = store
        .read(&results, Duration::from_secs(60), 100)
        .await
        .expect("read results");
    let got: Vec<String> = stored
        .iter()
        .map(|m| id_of(&m.event().expect("an envelope")))
        .collect();
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no result twice");
    let want = if with_result {
        applied
    } else {
        BTreeSet::new()
    };
    assert_eq!(got_set, want, "missing or unexpected results");
    // The stale half is still live (held by its second read), the rest archived.
    let live = store.metrics(&steps).await.expect("metrics").queue_length;
    assert_eq!(live, 30);
    store.drop_queue(&steps).await.expect("drop");
    store.drop_queue(&results).await.expect("drop");
}

/// The store's tasks run under its `Shutdown`: `close` commits what was submitted, ends them
/// within the bound, and a later write is `Closed`, not lost in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_stores_tasks_and_later_writes_are_refused() {
    let Some((store, url)) = store("pg_close").await else {
        return;
    };
    let q = qname("close");
    store.create(&q).await.expect("create");
    let id = store
        .send(&q, &tagged("c.x", "before-close"), Duration::ZERO)
        .await
        .expect("send");
    store
        .close(Duration::from_secs(5))
        .await
        .expect("the committer and the listener end");
    let after = store
        .send(&q, &tagged("c.x", "after-close"), Duration::ZERO)
        .await;
    assert!(
        matches!(after, Err(herald::queue::QueueError::Closed)),
        "{after:?}"
    );
    // What was acknowledged before the close is there.
    let other = PgStore::connect(&url).await.expect("connect");
    let got = other
        .read(&q, Duration::from_secs(30), 10)
        .await
        .expect("read");
    assert_eq!(got.iter().map(|m| m.msg_id).collect::<Vec<_>>(), vec![id]);
    other.drop_queue(&q).await.expect("drop");
}

/// A traced message's context is also in PGMQ's `headers` column (this PGMQ has it), on a
/// send, a batch and a settle that sends a result; an untraced message's headers stay null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_message_has_its_context_in_pgmqs_headers_column() {
    let Some((store, url)) = store("pg_headers").await else {
        return;
    };
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ctx = herald::TraceContext::parse(TP, Some("v=\"1\"")).expect("valid");
    let (q, results) = (qname("hdr"), qname("hdrres"));
    for name in [&q, &results] {
        store.create(name).await.expect("create");
    }
    let traced = tagged("hdr.one", "traced").with_trace_context(&ctx);
    let plain = tagged("hdr.two", "plain");
    let one = store.send(&q, &traced, Duration::ZERO).await.expect("send");
    let batch = store
        .send_batch(&q, &[plain.clone(), traced.clone()], Duration::ZERO)
        .await
        .expect("send_batch");
    let headers = |queue: &QueueName, id: i64| {
        psql(
            &url,
            &format!(
                "SELECT coalesce(headers::text, 'null') FROM pgmq.q_{queue} WHERE msg_id = {id}"
            ),
        )
        .trim()
        .to_owned()
    };
    // As jsonb prints it: shorter keys first.
    let want = r#"{"tracestate": "v=\"1\"", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;
    assert_eq!(headers(&q, one), want, "a send");
    assert_eq!(headers(&q, batch[0]), "null", "untraced");
    assert_eq!(headers(&q, batch[1]), want, "a batch");
    // A settle that sends a traced result (the worker's shape).
    let read = store
        .read(&q, Duration::from_secs(30), 1)
        .await
        .expect("read");
    let m = &read[0];
    let settlement = herald::queue::Settlement::only(herald::queue::Settle::Archive)
        .and_send(results.clone(), traced.clone());
    store
        .settle(&q, m.msg_id, m.read_ct, settlement)
        .await
        .expect("settle");
    let sent = psql(
        &url,
        &format!("SELECT coalesce(headers::text, 'null') FROM pgmq.q_{results}"),
    );
    assert_eq!(sent.trim(), want, "a settle's result");
    assert_eq!(id_of(&m.event().expect("envelope")), "traced");
    for name in [&q, &results] {
        store.drop_queue(name).await.expect("drop");
    }
}

/// A queue under a keyed concurrency limit of 1 (a policy the read function serves), with
/// `n` messages over `keys` keys sent; the ids sent.
async fn keyed_queue(
    store: &PgStore,
    q: &QueueName,
    n: usize,
    keys: usize,
) -> std::collections::BTreeSet<String> {
    use herald::queue::flow::{keyed, FlowControl, Policy};
    store.create(q).await.expect("create");
    let policy = Policy {
        concurrency: Some(1),
        ..Policy::default()
    };
    store.set_policy(q, &policy).await.expect("policy");
    let mut sent = std::collections::BTreeSet::new();
    for i in 0..n {
        let id = format!("m{i}");
        let e = keyed(tagged("flow.keyed", &id), format!("k{}", i % keys));
        store.send(q, &e, Duration::ZERO).await.expect("send");
        sent.insert(id);
    }
    sent
}

/// Reads `q` 4 at a time, archiving each batch, until `want` ids were read or 30 s passed;
/// the ids read, in order, duplicates kept.
async fn read_all(store: &PgStore, q: &QueueName, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want && std::time::Instant::now() < deadline {
        let batch = store
            .read(q, Duration::from_secs(30), 4)
            .await
            .expect("read");
        let ids: Vec<i64> = batch.iter().map(|m| m.msg_id).collect();
        got.extend(
            batch
                .iter()
                .map(|m| id_of(&m.event().expect("an envelope"))),
        );
        store.archive(q, &ids).await.expect("archive");
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    got
}

/// Each id of `got` once, and `got` and `sent` the same set.
fn read_once_each(got: &[String], sent: &std::collections::BTreeSet<String>) {
    let unique: std::collections::BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "duplicates in {got:?}");
    let missing: Vec<_> = sent.difference(&unique).collect();
    let unexpected: Vec<_> = unique.difference(sent).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing {missing:?}, unexpected {unexpected:?}"
    );
}

/// After [`herald_postgres::FLOW_FULL_PASS`], a read of the drained `q` finds nothing and
/// leaves none of its keys registered.
async fn drained_keys_forgotten(store: &PgStore, url: &str, q: &QueueName) {
    tokio::time::sleep(herald_postgres::FLOW_FULL_PASS + Duration::from_millis(100)).await;
    assert!(store
        .read(q, Duration::from_secs(30), 4)
        .await
        .expect("read")
        .is_empty());
    assert_eq!(registered_keys(url, q), "0", "drained keys forgotten");
}

fn registered_keys(url: &str, q: &QueueName) -> String {
    psql(
        url,
        &format!("SELECT count(*) FROM herald.flow_keys WHERE queue = '{q}' AND scope = 1"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_missing_from_the_register_or_a_missing_read_function_still_read_once_each() {
    let Some((store, url)) = store("pg_flow_register").await else {
        return;
    };
    let q = qname("flowreg");
    let sent = keyed_queue(&store, &q, 40, 20).await;
    // Every key's registration gone (as a concurrent clean-up can leave one): the short pass
    // sees none of them, and the whole pass must find and register them again. And the
    // queue's read function gone (as for a policy set by an older Herald): reads take the
    // transaction path.
    psql(
        &url,
        &format!(
            "DELETE FROM herald.flow_keys WHERE queue = '{q}'; \
             DROP FUNCTION herald.\"flow_read_{q}\"(bigint, int, float8)"
        ),
    );
    read_once_each(&read_all(&store, &q, sent.len()).await, &sent);
    // The register holds the keys again, and a key that drained is forgotten by a later
    // whole pass (once its bucket, if any, is full).
    assert_ne!(registered_keys(&url, &q), "0", "keys registered again");
    drained_keys_forgotten(&store, &url, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_on_a_filled_queue_registers_the_keys_already_there() {
    let Some((store, url)) = store("pg_flow_filled").await else {
        return;
    };
    let q = qname("flowfill");
    let expected = herald_testkit::flow_conformance::fill_then_set_policy(&store, &q).await;
    // Registered by the policy itself, before any read (a read's short pass looks only at
    // registered keys).
    let keys = psql(
        &url,
        &format!(
            "SELECT string_agg(key, ',' ORDER BY key) FROM herald.flow_keys \
             WHERE queue = '{q}' AND scope = 1"
        ),
    );
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_keys_are_forgotten_where_the_read_function_serves() {
    let Some((store, url)) = store("pg_flow_forget").await else {
        return;
    };
    let q = qname("flowforget");
    // A keyed concurrency limit alone: reads go through the queue's read function, which
    // skips the whole pass that forgot drained keys; the forgetting must still happen.
    let sent = keyed_queue(&store, &q, 12, 4).await;
    let function = psql(
        &url,
        &format!("SELECT count(*) FROM pg_proc WHERE proname = 'flow_read_{q}'"),
    );
    assert_eq!(function, "1", "the queue has its read function");
    assert_eq!(
        registered_keys(&url, &q),
        "4",
        "each key registered by its send"
    );
    read_once_each(&read_all(&store, &q, sent.len()).await, &sent);
    drained_keys_forgotten(&store, &url, &q).await;
    store.drop_queue(&q).await.expect("drop");
}
