//! The scheduler's exactly-once test, on both backends: a 1 s schedule, two `herald schedule
//! run` processes, one of them SIGKILLed every 2 s (in turn) and started again, for a minute;
//! then the set of tick times enqueued is compared with the set of tick times that fell in
//! that minute: none missing, none twice. Scale with HERALD_SCHEDULE_CHAOS_SECS.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::queue::{Queue, QueueName};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
use herald_testkit::DeliveryCheck;

fn herald(store: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run herald")
}

fn scheduler(store: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["schedule", "run", "--store", store])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald schedule run")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

async fn chaos<Q: Queue>(store: Q, url: &str, name: &str) {
    let secs = std::env::var("HERALD_SCHEDULE_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    let queue = QueueName::new(name).expect("queue");
    let added_after = now_ms();
    let add = herald(
        url,
        &["schedule", "add", name, "--every", "1s", "--queue", name],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let added_before = now_ms();
    let mut pair = [scheduler(url), scheduler(url)];
    let begun = Instant::now();
    let mut kills = 0;
    let mut turn = 0;
    while begun.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(2));
        pair[turn].kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
        pair[turn].wait().expect("reap");
        pair[turn] = scheduler(url);
        kills += 1;
        turn = 1 - turn;
    }
    let ended = now_ms();
    for child in &mut pair {
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let messages = store
        .read(&queue, Duration::ZERO, 1_000_000)
        .await
        .expect("read the ticks");
    let ticks: Vec<i64> = messages
        .iter()
        .map(|m| {
            let event = m.event().expect("a tick envelope");
            event.metadata["schedule"]["tick_ms"]
                .as_i64()
                .expect("a tick time")
        })
        .collect();
    let distinct: HashSet<i64> = ticks.iter().copied().collect();
    // Every whole second after the schedule was added, until the schedulers stopped (the
    // last second may have been cut off by the final kill).
    let first = (added_after / 1000 + 1) * 1000;
    let last = *distinct.iter().max().expect("some ticks");
    let expected: Vec<i64> = (first / 1000..=last / 1000).map(|s| s * 1000).collect();
    eprintln!(
        "schedule chaos ({}): {secs} s, {kills} SIGKILLs, {} ticks enqueued, {} distinct, {} expected from {first} to {last}",
        url.split(':').next().unwrap_or("?"),
        ticks.len(),
        distinct.len(),
        expected.len()
    );
    assert!(
        first <= (added_before / 1000 + 1) * 1000,
        "the first tick follows the schedule's creation"
    );
    assert!(
        last >= ended - 2500,
        "ticks went on to the end: last {last}, ended {ended}"
    );
    let as_ids = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>();
    DeliveryCheck::compare(as_ids(&expected), as_ids(&ticks)).assert_exactly_once();
    let rm = herald(url, &["schedule", "rm", name]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_each_tick_is_enqueued_once_while_schedulers_are_killed() {
    let dir = std::env::temp_dir().join(unique("schedchaos"));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    chaos(store, &url, "ticks").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_each_tick_is_enqueued_once_while_schedulers_are_killed() {
    let Some(url) = database_url("schedule_chaos_postgres") else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("connect");
    let name = unique("sc");
    chaos(store.clone(), &url, &name).await;
    let _ = store
        .drop_queue(&QueueName::new(&name).expect("queue"))
        .await;
}
