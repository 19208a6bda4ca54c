//! Core NATS against a real nats-server: conformance, wildcards, queue groups, request/reply,
//! malformed input and refused subjects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::{handler_fn, sync_handler, Event, Subject};
use herald_nats::{Nats, NatsError};
use herald_testkit::env::{nats_url, unique};
use herald_testkit::fixtures::{id_of, tagged as ev};
use herald_testkit::DeliveryCheck;

async fn connect(test: &str) -> Option<Nats> {
    let url = nats_url(test)?;
    Some(
        Nats::connect(&url)
            .await
            .expect("connect to the test server"),
    )
}

#[tokio::test]
async fn nats_passes_the_transport_conformance_suite() {
    let Some(nats) = connect("nats_passes_the_transport_conformance_suite").await else {
        return;
    };
    herald_testkit::conformance::run_all(&nats, &unique("conf")).await;
    assert!(
        nats.stats().handler_errors > 0,
        "the flaky handler's failures are counted"
    );
}

#[tokio::test]
async fn a_queue_group_gives_each_message_to_exactly_one_member_and_uses_every_member() {
    let Some(nats) = connect("queue_groups").await else {
        return;
    };
    let prefix = unique("qg");
    let members: Vec<Arc<Mutex<Vec<String>>>> = (0..3).map(|_| Default::default()).collect();
    let mut subs = Vec::new();
    for m in &members {
        // Each member on its own connection, as separate processes would be.
        let conn = connect("queue_groups").await.expect("connect");
        let m = m.clone();
        let sub = conn
            .subscribe_handler(
                format!("{prefix}.jobs.*"),
                Some("workers"),
                sync_handler(move |e: &Event| {
                    m.lock().expect("lock").push(id_of(e));
                }),
            )
            .await
            .expect("queue subscribe");
        subs.push((conn, sub));
    }
    let all: Arc<Mutex<Vec<String>>> = Default::default();
    let a = all.clone();
    let _watcher = nats
        .subscribe_handler(
            format!("{prefix}.jobs.>"),
            None,
            sync_handler(move |e: &Event| a.lock().expect("lock").push(id_of(e))),
        )
        .await
        .expect("subscribe");
    let ids: Vec<String> = (0..300).map(|i| format!("job-{i}")).collect();
    for id in &ids {
        nats.publish(&ev(&format!("{prefix}.jobs.x"), id))
            .await
            .expect("publish");
    }
    nats.flush().await.expect("flush");
    for _ in 0..200 {
        let got: usize = members.iter().map(|m| m.lock().expect("lock").len()).sum();
        if got >= ids.len() && all.lock().expect("lock").len() >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let union: Vec<String> = members
        .iter()
        .flat_map(|m| m.lock().expect("lock").clone())
        .collect();
    DeliveryCheck::compare(ids.clone(), union).assert_exactly_once();
    for (i, m) in members.iter().enumerate() {
        assert!(
            !m.lock().expect("lock").is_empty(),
            "member {i} was never used"
        );
    }
    DeliveryCheck::compare(ids, all.lock().expect("lock").clone()).assert_exactly_once();
}

#[tokio::test]
async fn request_reply_copies_the_correlation_id_and_echoes_data() {
    let Some(nats) = connect("request_reply").await else {
        return;
    };
    let subject = format!("{}.echo", unique("rr"));
    let _responder = nats
        .respond(
            subject.as_str(),
            Some("echo"),
            |req: Arc<Event>| async move { Ok(req.data.clone()) },
        )
        .await
        .expect("responder");
    let request = Event::try_new(&subject, serde_json::json!({"ping": 1}))
        .expect("event")
        .with_type("request")
        .with_correlation_id("corr-123");
    let response = nats
        .request(&request, Duration::from_secs(2))
        .await
        .expect("response");
    assert_eq!(response.correlation_id, "corr-123");
    assert_eq!(response.event_type, "response");
    assert_eq!(response.data, request.data);
    assert_eq!(response.subject, request.subject);
}

#[tokio::test]
async fn no_responders_and_timeouts_are_distinct_typed_errors() {
    let Some(nats) = connect("request_errors").await else {
        return;
    };
    let nobody = Event::new(Subject::new(&format!("{}.nobody", unique("rr"))).expect("subject"));
    let err = nats
        .request(&nobody, Duration::from_secs(2))
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, NatsError::NoResponders { .. }), "{err}");

    let silent_subject = format!("{}.silent", unique("rr"));
    let _silent = nats
        .subscribe(silent_subject.as_str(), None)
        .await
        .expect("subscribe");
    let silent = Event::new(Subject::new(&silent_subject).expect("subject"));
    let err = nats
        .request(&silent, Duration::from_millis(300))
        .await
        .expect_err("nobody answers");
    assert!(matches!(err, NatsError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn malformed_messages_are_counted_and_skipped_and_the_subscription_keeps_running() {
    let Some(nats) = connect("malformed").await else {
        return;
    };
    let subject = format!("{}.in", unique("bad"));
    let mut stream = nats
        .subscribe(subject.as_str(), None)
        .await
        .expect("subscribe");
    let raw = nats.client();
    for bad in [
        &b"not json"[..],
        br#"{"subject":"a.b","source":"s","data":[]}"#,
        br#"{"subject":"a.b","source":"s","data":{},"priority":"urgent"}"#,
    ] {
        raw.publish(subject.clone(), bad.to_vec().into())
            .await
            .expect("raw publish");
    }
    let extra = format!(
        r#"{{"subject":"{subject}","source":"py","data":{{}},"metadata":{{"test_id":"extra"}},"trace":"x"}}"#
    );
    raw.publish(subject.clone(), extra.into_bytes().into())
        .await
        .expect("raw publish");
    nats.publish(&ev(&subject, "good")).await.expect("publish");
    let mut got = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("in time")
            .expect("an event");
        got.push(id_of(&next.event));
    }
    assert_eq!(got, ["extra", "good"]);
    let stats = nats.stats();
    assert_eq!(stats.malformed, 3);
    assert_eq!(
        stats.unknown_fields, 1,
        "the extra top-level field was accepted and counted"
    );
    assert_eq!(stats.received, 2);
}

#[tokio::test]
async fn bad_subjects_patterns_queues_and_oversized_payloads_are_refused_before_sending() {
    let Some(nats) = connect("refusals").await else {
        return;
    };
    for bad in ["a b", "a.b c", "a\r\nb", "a..b", "a.>.b", ""] {
        assert!(nats.subscribe(bad, None).await.is_err(), "{bad:?}");
    }
    let glob = herald::Pattern::glob("a*").expect("glob");
    assert!(matches!(
        nats.subscribe(glob, None).await,
        Err(NatsError::Subject(_))
    ));
    assert!(matches!(
        nats.subscribe("a.b", Some("bad queue")).await,
        Err(NatsError::Config { key: "queue", .. })
    ));
    let big = "x".repeat(nats.max_payload() + 1);
    let event = Event::try_new("big.payload", serde_json::json!({"blob": big})).expect("event");
    let err = nats.publish(&event).await.expect_err("too large");
    assert!(matches!(err, NatsError::PayloadTooLarge { .. }), "{err}");
    assert_eq!(nats.stats().publish_failed, 1);
    assert_eq!(nats.stats().published, 0);
}

#[tokio::test]
async fn the_same_handler_value_runs_on_the_bus_and_on_nats() {
    let Some(nats) = connect("shared_handler").await else {
        return;
    };
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let s = seen.clone();
    let handler = handler_fn(move |e: Arc<Event>| {
        let s = s.clone();
        async move { s.lock().expect("lock").push(id_of(&e)) }
    });
    let subject = format!("{}.both", unique("shared"));
    let bus = herald::Bus::new();
    let _b = bus
        .subscribe(subject.as_str(), handler.clone())
        .expect("bus subscribe");
    let _n = nats
        .subscribe_handler(subject.as_str(), None, handler)
        .await
        .expect("nats subscribe");
    bus.publish(ev(&subject, "from-bus"))
        .await
        .expect("bus publish");
    nats.publish(&ev(&subject, "from-nats"))
        .await
        .expect("nats publish");
    for _ in 0..100 {
        if seen.lock().expect("lock").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    DeliveryCheck::compare(
        ["from-bus", "from-nats"],
        seen.lock().expect("lock").clone(),
    )
    .assert_exactly_once();
}

#[tokio::test]
async fn an_unreachable_server_fails_within_seconds() {
    let port = herald_testkit::env::free_port();
    let start = std::time::Instant::now();
    let err = Nats::connect(&format!("nats://127.0.0.1:{port}"))
        .await
        .expect_err("nobody there");
    assert!(matches!(err, NatsError::Connect { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn token_and_user_password_auth_are_sent_and_a_wrong_secret_is_a_connect_error() {
    use herald_testkit::nats_server::OwnNatsServer;
    let Some(token_server) = OwnNatsServer::start_with("auth_token", &["--auth", "s3cret-token"])
    else {
        return;
    };
    let url = token_server.url();
    let ok = Nats::builder()
        .server(&url)
        .token("s3cret-token")
        .connect()
        .await
        .expect("right token");
    ok.publish(&ev("auth.x", "1")).await.expect("publish");
    let err = Nats::builder()
        .server(&url)
        .token("wrong")
        .connect()
        .await
        .expect_err("wrong token");
    assert!(matches!(err, NatsError::Connect { .. }), "{err}");
    assert!(
        !format!("{:?}", ok).contains("s3cret-token"),
        "the token is redacted"
    );

    let Some(user_server) =
        OwnNatsServer::start_with("auth_user", &["--user", "ada", "--pass", "lovelace"])
    else {
        return;
    };
    let url = user_server.url();
    Nats::builder()
        .server(&url)
        .user_and_password("ada", "lovelace")
        .connect()
        .await
        .expect("right password");
    let err = Nats::builder()
        .server(&url)
        .user_and_password("ada", "babbage")
        .connect()
        .await
        .expect_err("wrong password");
    assert!(matches!(err, NatsError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn drain_delivers_what_was_in_flight_then_closes() {
    let Some(nats) = connect("drain").await else {
        return;
    };
    let subject = format!("{}.drain", unique("drain"));
    let mut stream = nats
        .subscribe(subject.as_str(), None)
        .await
        .expect("subscribe");
    let ids: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    for id in &ids {
        nats.publish(&ev(&subject, id)).await.expect("publish");
    }
    nats.flush().await.expect("flush");
    // Wait until the server has delivered them to the client, then drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(30), nats.drain())
        .await
        .expect("in time")
        .expect("drain");
    assert_eq!(nats.state(), herald_nats::ConnectionState::Closed);
    let mut got = Vec::new();
    while let Ok(Some(incoming)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
    {
        got.push(id_of(&incoming.event));
    }
    DeliveryCheck::compare(ids, got).assert_exactly_once();
    assert!(
        nats.publish(&ev(&subject, "late")).await.is_err(),
        "a drained connection refuses publishes"
    );
}

#[tokio::test]
async fn a_fresh_connection_reports_connected_and_no_reconnects() {
    let Some(nats) = connect("fresh_connection").await else {
        return;
    };
    assert_eq!(nats.state(), herald_nats::ConnectionState::Connected);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(nats.stats().reconnects, 0);
}

#[tokio::test]
async fn a_responder_that_panics_before_its_first_await_keeps_answering() {
    let Some(nats) = connect("responder_panic").await else {
        return;
    };
    let subject = format!("{}.fragile", unique("rr"));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let _responder = nats
        .respond(subject.as_str(), None, move |req: Arc<Event>| {
            // A panic in the closure itself, not inside the async block.
            if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                panic!("first request breaks the responder");
            }
            async move { Ok(req.data.clone()) }
        })
        .await
        .expect("responder");
    let request = Event::try_new(&subject, serde_json::json!({"n": 1})).expect("event");
    let first = nats.request(&request, Duration::from_millis(500)).await;
    assert!(matches!(first, Err(NatsError::Timeout { .. })), "{first:?}");
    let second = nats
        .request(&request, Duration::from_secs(2))
        .await
        .expect("the responder lives on");
    assert_eq!(second.data["n"], 1);
    assert_eq!(nats.stats().handler_panics, 1);
}

/// Issue 18: `>` (and every pattern that matches `_INBOX.*`) subscribes at once and receives
/// events.
#[tokio::test]
async fn subscribing_to_everything_works_and_skips_its_own_probe() {
    let Some(nats) = connect("subscribe_everything").await else {
        return;
    };
    let prefix = unique("all");
    for pattern in [">", "*.>", "_INBOX.>"] {
        let started = std::time::Instant::now();
        let mut stream = nats.subscribe(pattern, None).await.expect(pattern);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "subscribe to {pattern} took {:?}",
            started.elapsed()
        );
        if pattern == "_INBOX.>" {
            continue;
        }
        let id = format!("{pattern}-event");
        nats.publish(&ev(&format!("{prefix}.seen"), &id))
            .await
            .expect("publish");
        // Other clients of the shared server may publish too: look for our id.
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let incoming = stream.next().await.expect("stream open");
                if id_of(&incoming.event) == id {
                    return incoming;
                }
            }
        })
        .await
        .expect("the event arrives on the `>` subscription");
        assert_eq!(got.event.subject.as_str(), format!("{prefix}.seen"));
    }
}
