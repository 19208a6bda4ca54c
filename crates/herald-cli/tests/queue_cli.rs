//! `herald queue` and `herald worker` as a user runs them on the embedded store: the verbs
//! round-trip a message, bad names (SQL injection attempts included) and bad store URLs are
//! one line naming the value with a non-zero exit and leave the schema unchanged, and two
//! worker processes on one SQLite file store exactly one result per step.

use std::process::{Command, Output};

use herald_testkit::env::unique;

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

fn temp_store() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("qcli"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    (dir, url)
}

#[test]
fn queue_verbs_round_trip_a_message() {
    let (dir, store) = temp_store();
    assert!(herald(&store, &["queue", "create", "jobs"])
        .status
        .success());
    let sent = herald(&store, &["queue", "send", "jobs", r#"{"order": 42}"#]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    let id = text(&sent.stdout).trim().to_owned();
    let read = herald(&store, &["queue", "read", "jobs", "--vt", "30"]);
    let line: serde_json::Value =
        serde_json::from_str(text(&read.stdout).trim()).expect("JSON line");
    assert_eq!(line["msg_id"].to_string(), id);
    assert_eq!(line["read_ct"], 1);
    assert_eq!(line["message"]["data"]["order"], 42);
    assert!(herald(&store, &["queue", "archive", "jobs", &id])
        .status
        .success());
    let metrics = herald(&store, &["queue", "metrics", "jobs"]);
    let m: serde_json::Value = serde_json::from_str(text(&metrics.stdout).trim()).expect("JSON");
    assert_eq!(
        (m["queue_length"].as_i64(), m["total_messages"].as_i64()),
        (Some(0), Some(1))
    );
    let missing = herald(&store, &["queue", "archive", "jobs", "999"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("999"),
        "{}",
        text(&missing.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_names_and_urls_are_one_line_naming_the_value_and_change_nothing() {
    let (dir, store) = temp_store();
    assert!(herald(&store, &["queue", "create", "keep"])
        .status
        .success());
    let before = text(&herald(&store, &["queue", "ls"]).stdout);
    for bad in [
        "x; DROP TABLE herald_messages; --",
        "keep' OR '1'='1",
        "Jobs",
        "q\"x",
        "",
        &"a".repeat(48),
    ] {
        for verb in [
            vec!["queue", "create", bad],
            vec!["queue", "send", bad, "{}"],
        ] {
            let out = herald(&store, &verb);
            assert!(!out.status.success(), "{verb:?} succeeded");
            let err = text(&out.stderr);
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains(&format!("{bad:?}")), "names the value: {err}");
        }
    }
    assert_eq!(
        text(&herald(&store, &["queue", "ls"]).stdout),
        before,
        "schema unchanged"
    );
    for url in ["mysql://u@h/db", "memory://", "sqlite"] {
        let out = herald(url, &["queue", "ls"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(url), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_on_one_sqlite_file_store_one_result_per_step() {
    use herald::queue::Queue;
    let (dir, store_url) = temp_store();
    let store = herald_sqlite::SqliteStore::open(&store_url)
        .await
        .expect("open");
    let queues = herald_worker::StepQueues::of("pair").expect("queues");
    store.create(&queues.steps).await.expect("create");
    let mut sent = Vec::new();
    let mut batch = Vec::new();
    for _ in 0..2000 {
        let step = herald_worker::FfiStepEvent::new("demo.noop", serde_json::Map::new());
        sent.push(step.step_uuid.to_string());
        batch.push(herald_worker::step_event(&step));
    }
    store
        .send_batch(&queues.steps, &batch, std::time::Duration::ZERO)
        .await
        .expect("enqueue");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "--store",
                &store_url,
                "worker",
                "--namespace",
                "pair",
                "--until-empty",
                "--quiet",
            ])
            .spawn()
            .expect("worker")
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().expect("a").success());
    assert!(b.wait().expect("b").success());
    let results = store
        .read(&queues.results, std::time::Duration::from_secs(60), 10_000)
        .await
        .expect("results");
    let got: Vec<String> = results
        .iter()
        .map(|m| {
            let e = m.event().expect("envelope");
            e.data["step_uuid"].as_str().unwrap_or("?").to_owned()
        })
        .collect();
    herald_testkit::DeliveryCheck::compare(sent, got).assert_exactly_once();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn store_verbs_append_under_conditions_and_read_back() {
    let (dir, store) = temp_store();
    let first = herald(
        &store,
        &[
            "store",
            "append",
            "order-1",
            r#"{"total": 3}"#,
            "--type",
            "created",
            "--no-stream",
        ],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    let a: serde_json::Value = serde_json::from_str(text(&first.stdout).trim()).expect("JSON");
    assert_eq!(a["position"], 0);
    let again = herald(&store, &["store", "append", "order-1", "{}", "--no-stream"]);
    assert!(!again.status.success());
    let err = text(&again.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("order-1") && err.contains("no stream") && err.contains("position 0"),
        "{err}"
    );
    let second = herald(
        &store,
        &[
            "store",
            "append",
            "order-1",
            r#"{"total": 4}"#,
            "--expected",
            "0",
        ],
    );
    assert!(second.status.success(), "{}", text(&second.stderr));
    let read = herald(&store, &["store", "read", "--category", "order"]);
    let lines: Vec<serde_json::Value> = text(&read.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"]["subject"], "order.created");
    assert_eq!(lines[1]["event"]["data"]["total"], 4);
    assert_eq!(
        text(&herald(&store, &["store", "ls"]).stdout).trim(),
        "order-1 1"
    );
    let bad = herald(&store, &["store", "append", "Order; drop table x-1", "{}"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("Order; drop table x-1"));
    let _ = std::fs::remove_dir_all(dir);
}
