//! Crash test, on both backends: `herald worker` processes of the test's own are killed with
//! SIGKILL mid-batch 20 times while 10,000 steps flow; afterwards every step has exactly one
//! result (set comparison of step ids: missing 0, duplicated 0) and re-executions are counted
//! and reported. Scale with HERALD_CRASH_STEPS and HERALD_CRASH_KILLS.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald::queue::Queue;
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
use herald_testkit::DeliveryCheck;
use herald_worker::{step_event, FfiStepEvent, StepExecutionResult, StepQueues};
use serde_json::{Map, Value};

fn scale(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn worker(store: &str, namespace: &str, until_empty: bool) -> std::process::Child {
    let mut args = vec![
        "worker",
        "--store",
        store,
        "--namespace",
        namespace,
        "--vt",
        "2",
        "--concurrency",
        "16",
        "--quiet",
    ];
    if until_empty {
        args.push("--until-empty");
    }
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald worker")
}

/// A small deterministic sequence of kill delays (ms), 80..400.
fn delays(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            80 + x % 320
        })
        .collect()
}

async fn crash_run<Q: Queue>(store: Q, url: &str, namespace: &str) {
    let steps = scale("HERALD_CRASH_STEPS", 10_000);
    let kills = scale("HERALD_CRASH_KILLS", 20);
    let queues = StepQueues::of(namespace).expect("queues");
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        store.create(q).await.expect("create");
    }
    let mut ids = Vec::with_capacity(steps);
    let mut batch = Vec::new();
    for _ in 0..steps {
        let step = FfiStepEvent::new("demo.noop", Map::new());
        ids.push(step.step_uuid.to_string());
        batch.push(step_event(&step));
        if batch.len() == 500 {
            store
                .send_batch(&queues.steps, &batch, Duration::ZERO)
                .await
                .expect("enqueue");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store
            .send_batch(&queues.steps, &batch, Duration::ZERO)
            .await
            .expect("enqueue");
    }
    let begun = Instant::now();
    let mut killed_mid_flow = 0;
    for delay in delays(kills) {
        let mut child = worker(url, namespace, false);
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("poll").is_none() {
            killed_mid_flow += 1;
        }
        child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
        child.wait().expect("reap");
    }
    let mut last = worker(url, namespace, true);
    let deadline = Instant::now() + Duration::from_secs(300);
    while last.try_wait().expect("poll").is_none() {
        assert!(
            Instant::now() < deadline,
            "the final worker did not finish in 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let results = store
        .read(&queues.results, Duration::from_secs(600), steps * 2 + 10)
        .await
        .expect("read results");
    let mut got = Vec::with_capacity(results.len());
    let mut reexecuted = 0;
    for m in &results {
        let event = m.event().expect("a result envelope");
        let r: StepExecutionResult =
            serde_json::from_value(Value::Object(event.data)).expect("a StepExecutionResult");
        assert!(r.success, "{r:?}");
        if r.metadata
            .get("attempt")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            > 1
        {
            reexecuted += 1;
        }
        got.push(r.step_uuid.to_string());
    }
    let distinct: HashSet<&String> = got.iter().collect();
    eprintln!(
        "crash test ({}): {} steps, {} kills ({} mid-flow), {} results, {} distinct, {} stored by a re-execution (at-least-once), {:.1} s",
        url.split(':').next().unwrap_or("?"),
        steps,
        kills,
        killed_mid_flow,
        got.len(),
        distinct.len(),
        reexecuted,
        begun.elapsed().as_secs_f64()
    );
    DeliveryCheck::compare(ids, got).assert_exactly_once();
    let left = store.metrics(&queues.steps).await.expect("metrics");
    assert_eq!(left.queue_length, 0, "every step archived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkilled_workers_leave_exactly_one_result_per_step() {
    let dir = std::env::temp_dir().join(unique("crash"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    crash_run(store, &url, "crash").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkilled_workers_leave_exactly_one_result_per_step() {
    let Some(url) = database_url("crash_postgres") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let namespace = unique("c");
    crash_run(store.clone(), &url, &namespace).await;
    let queues = StepQueues::of(&namespace).expect("queues");
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        let _ = store.drop_queue(q).await;
    }
}
