//! The cadence (cron in a time zone, fixed intervals, bad input named) and the scheduler on
//! a real SQLite store: on-time ticks sent, a misfire skipped or caught up once by policy, a
//! paused schedule silent, and a tick another scheduler took not sent again.

use std::time::Duration;

use herald::queue::{Queue, QueueName};
use herald::schedule::{Missed, ScheduleSpec, ScheduleStore};
use herald_schedule::{parse_every, Cadence, CadenceError, Scheduler, SchedulerConfig};
use herald_sqlite::SqliteStore;
use herald_testkit::env::unique;

fn ms(rfc3339: &str) -> i64 {
    let t = herald::Timestamp::parse(rfc3339).expect("a time");
    i64::try_from(t.as_datetime().unix_timestamp_nanos() / 1_000_000).expect("ms")
}

#[test]
fn a_cron_expression_is_read_in_its_time_zone() {
    // 03:00 in Paris is 02:00Z in winter and 01:00Z in summer.
    let c = Cadence::parse(Some("0 3 * * *"), None, "Europe/Paris").expect("cadence");
    assert_eq!(
        c.next_after(ms("2026-12-04T12:00:00Z")),
        Some(ms("2026-12-05T02:00:00Z"))
    );
    assert_eq!(
        c.next_after(ms("2026-07-04T12:00:00Z")),
        Some(ms("2026-07-05T01:00:00Z"))
    );
    let five = c.upcoming(ms("2026-12-04T12:00:00Z"), 5);
    assert_eq!(five.len(), 5);
    assert_eq!(five[4], ms("2026-12-09T02:00:00Z"));
    // Six fields: seconds first.
    let s = Cadence::parse(Some("*/15 * * * * *"), None, "UTC").expect("cadence");
    assert_eq!(
        s.next_after(ms("2026-12-04T12:00:01Z")),
        Some(ms("2026-12-04T12:00:15Z"))
    );
}

#[test]
fn the_due_tick_is_the_latest_one_since_the_last_however_long_ago() {
    let c = Cadence::parse(Some("* * * * *"), None, "UTC").expect("cadence");
    let now = ms("2026-12-04T12:00:30Z");
    assert_eq!(
        c.latest_due(ms("2026-12-04T11:59:10Z"), now),
        Some(ms("2026-12-04T12:00:00Z"))
    );
    assert_eq!(
        c.latest_due(ms("2025-12-04T11:59:10Z"), now),
        Some(ms("2026-12-04T12:00:00Z"))
    );
    assert_eq!(c.latest_due(ms("2026-12-04T12:00:00Z"), now), None);
    let yearly = Cadence::parse(Some("0 0 1 1 *"), None, "UTC").expect("cadence");
    assert_eq!(
        yearly.latest_due(ms("2025-06-01T00:00:00Z"), now),
        Some(ms("2026-01-01T00:00:00Z"))
    );
    let every = Cadence::parse(None, Some(30_000), "UTC").expect("cadence");
    assert_eq!(
        every.latest_due(ms("2026-12-04T11:00:00Z"), now),
        Some(ms("2026-12-04T12:00:30Z"))
    );
    assert_eq!(every.next_after(now), Some(ms("2026-12-04T12:01:00Z")));
}

#[test]
fn bad_cadences_are_named() {
    let err = |r: Result<Cadence, CadenceError>| r.expect_err("refused").to_string();
    assert!(err(Cadence::parse(Some("61 * * * *"), None, "UTC")).contains("\"61 * * * *\""));
    assert!(err(Cadence::parse(Some("* * * * *"), None, "Mars/Base")).contains("Mars/Base"));
    assert!(err(Cadence::parse(None, Some(0), "UTC")).contains("more than 0"));
    assert!(err(Cadence::parse(None, None, "UTC")).contains("exactly one"));
    assert_eq!(parse_every("30s").expect("30s"), Duration::from_secs(30));
    assert_eq!(
        parse_every("500ms").expect("500ms"),
        Duration::from_millis(500)
    );
    assert_eq!(parse_every("2h").expect("2h"), Duration::from_secs(7200));
    for bad in ["0s", "30", "s", "-5s", "5 weeks", "99999999999999999999d"] {
        assert!(parse_every(bad).is_err(), "{bad} accepted");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

fn every_second(name: &str, missed: Missed) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: None,
        every_ms: Some(1000),
        tz: "UTC".into(),
        queue: name.replace('-', "_"),
        subject: format!("herald.schedule.{name}"),
        data: serde_json::Map::new(),
        missed,
    }
}

async fn ticks(store: &SqliteStore, spec: &ScheduleSpec) -> usize {
    let q = QueueName::new(&spec.queue).expect("queue");
    store
        .read(&q, Duration::ZERO, 1000)
        .await
        .expect("read")
        .len()
}

async fn run_for(store: &SqliteStore, d: Duration) -> herald_schedule::SchedulerReport {
    // A short grace, so that only the ticks of this run count as on time.
    let config = SchedulerConfig {
        grace: Duration::from_millis(500),
        ..SchedulerConfig::default()
    };
    let s = Scheduler::new(store.clone(), config);
    s.run(tokio::time::sleep(d)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misfires_follow_the_policy_and_paused_schedules_stay_silent() {
    let dir = std::env::temp_dir().join(unique("sched"));
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("h.db").display()))
        .await
        .expect("open");
    // Added an hour ago with nothing running since: the due tick is a misfire.
    let hour_ago = now_ms() - 3_600_000;
    let skip = every_second("skip-me", Missed::Skip);
    let catch = every_second("catch-up", Missed::CatchUp);
    let paused = every_second("paused", Missed::CatchUp);
    for spec in [&skip, &catch, &paused] {
        store.add_schedule(spec, hour_ago).await.expect("add");
    }
    store.pause_schedule("paused", true).await.expect("pause");
    let before = now_ms();
    let report = run_for(&store, Duration::from_millis(2500)).await;
    // skip: the misfire is recorded, not sent; then on-time ticks are sent.
    // catch-up: one tick at once for the hour, then on-time ticks.
    let (s, c) = (ticks(&store, &skip).await, ticks(&store, &catch).await);
    assert!((1..=4).contains(&s), "skip sent {s}");
    assert_eq!(c, s + 1, "catch-up sends exactly one more than skip");
    assert_eq!(ticks(&store, &paused).await, 0, "paused sends nothing");
    assert_eq!(report.skipped, 1, "{report:?}");
    let listed = store.schedules().await.expect("ls");
    let last = |n: &str| {
        listed
            .iter()
            .find(|s| s.spec.name == n)
            .expect(n)
            .last_tick_ms
    };
    assert!(
        last("skip-me") >= before - 1000,
        "the misfire moved its last tick"
    );
    assert_eq!(
        last("paused"),
        hour_ago,
        "a paused schedule keeps its last tick"
    );

    // A tick already taken (by another scheduler) is not sent again.
    let taken = now_ms() / 1000 * 1000 + 60_000;
    let q = QueueName::new(&skip.queue).expect("q");
    let event = skip.tick_event(taken).expect("event");
    assert!(store
        .fire("skip-me", taken, Some((&q, &event)))
        .await
        .expect("fire")
        .is_some());
    assert!(store
        .fire("skip-me", taken, Some((&q, &event)))
        .await
        .expect("fire")
        .is_none());
    assert!(store
        .fire("paused", taken, None)
        .await
        .expect("fire")
        .is_none());
    let _ = std::fs::remove_dir_all(dir);
}
