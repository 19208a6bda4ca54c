//! `herald chaos` for the relays, on servers of its own: `relay-kill` (the log relay and the
//! NATS server SIGKILLed under appends), `relay-failover` (the active relay SIGKILLed, the
//! standby's takeover timed against the lease), `inbox-kill` (the inbox SIGKILLed while it
//! takes a stream in) and `relay-pg-restart` (PostgreSQL crashed under the relay). Each
//! compares id sets and prints one fixed-format line; the store's log is the reference.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::store::{EventStore, StreamName, WriteCondition};
use herald::{Event, Subject};
use herald_nats::{JetStream, Nats};
use herald_postgres::{PgOptions, PgStore};
use herald_testkit::nats_server::OwnNatsServer;
use herald_testkit::postgres_server::OwnPostgres;
use herald_testkit::DeliveryCheck;

use crate::output::out;
use crate::CliError;

pub(super) const PREFIX: &str = "chaosrelay";

/// A run's names: its own stream (and so its own relay checkpoint and lease) and its own
/// category, so runs on one store (the machine's PostgreSQL) do not see each other's events.
pub(super) struct Names {
    pub(super) stream: String,
    pub(super) category: String,
}

impl Names {
    pub(super) fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000);
        let tag = format!("{}x{nanos}", std::process::id());
        Names {
            stream: format!("CHAOS_RELAY_{tag}"),
            category: format!("chaos{tag}"),
        }
    }
}

pub(super) fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

pub(super) fn nats_server() -> Result<OwnNatsServer, CliError> {
    tokio::task::block_in_place(|| OwnNatsServer::start("herald chaos"))
        .ok_or_else(|| other("nats-server is not installed (scripts/services.sh installs it)"))
}

pub(super) async fn connect(url: &str) -> Result<Nats, CliError> {
    Nats::builder()
        .servers([url.to_owned()])
        .name("herald-chaos-relay")
        .max_reconnects(None)
        .connect()
        .await
        .map_err(|e| other(herald::report(&e)))
}

/// A scratch SQLite store unless `store` names one; the directory to remove afterwards.
pub(super) fn store_url(
    store: Option<String>,
    name: &str,
) -> Result<(String, Option<std::path::PathBuf>), CliError> {
    match store {
        Some(url) => Ok((url, None)),
        None => {
            let dir =
                std::env::temp_dir().join(format!("herald-chaos-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(other)?;
            let url = format!("sqlite://{}", dir.join("chaos.db").display());
            Ok((url, Some(dir)))
        }
    }
}

/// `$body`, with `$s` the store at `--store` (or a scratch SQLite file, removed afterwards)
/// and `$url` its URL.
macro_rules! on_store {
    ($store:expr, $name:expr, |$s:ident, $url:ident| $body:expr) => {{
        let (url, scratch) = $crate::commands::chaos_relay::store_url($store, $name)?;
        let opened = $crate::connect::open_store(&url).await?;
        let $url = url.as_str();
        let result = $crate::connect::with_store!(opened, $s => $body);
        if let Some(dir) = scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }};
}
pub(super) use on_store;

/// A `herald relay` process of this binary, its output discarded.
fn spawn_relay(
    names: &Names,
    store: &str,
    nats: &str,
    lease: f64,
    until_caught_up: bool,
) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(other)?;
    let mut c = Command::new(exe);
    c.args([
        "relay",
        "--store",
        store,
        "--to",
        nats,
        "--stream",
        &names.stream,
    ])
    .args(["--subject-prefix", PREFIX, "--store-id", "chaos"])
    .args(["--categories", &names.category])
    .args(["--lease", &lease.to_string()]);
    if until_caught_up {
        c.arg("--until-caught-up");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(other)
}

/// SIGKILLs `child` (`Child::kill` on Unix) and reaps it.
pub(super) fn kill9(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Appends `n` events with ids `r0..` (10 per append, over 16 streams) until done or `stop`.
/// An append that fails (a restarting server) is not tried again: it may have committed, and
/// a second try would put its ids in the log twice. The log, not `n`, is the reference.
async fn append_all<S: EventStore>(
    store: S,
    category: String,
    n: u64,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> u64 {
    let subject = Subject::new("chaos.relay").expect("a valid subject");
    let mut i = 0u64;
    while i < n && !stop.load(Ordering::Relaxed) {
        let stream = StreamName::new(&format!("{category}-{}", (i / 10) % 16)).expect("stream");
        let batch: Vec<Event> = (i..(i + 10).min(n))
            .map(|k| Event::new(subject.clone()).with_metadata(herald::EVENT_ID, format!("r{k}")))
            .collect();
        if store
            .append(&stream, &batch, WriteCondition::Any)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        i += batch.len() as u64;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    i
}

/// The log's `chaos` events: id -> global position, in log order.
pub(super) async fn log_ids<S: EventStore>(
    store: &S,
    category: &str,
) -> Result<Vec<(String, i64)>, CliError> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read_category(category, from, 5000).await?;
        let Some(last) = page.last() else { break };
        from = last.global_position + 1;
        for e in &page {
            let id = e.event()?.event_id().unwrap_or_default().to_owned();
            out.push((id, e.global_position));
        }
    }
    Ok(out)
}

/// How the stream compares with the log: the check by ids, and how many messages came after
/// one of a later log position (the stream must be in log order).
struct Compared {
    check: DeliveryCheck,
    out_of_order: usize,
    in_stream: usize,
}

async fn compare<S: EventStore>(
    names: &Names,
    store: &S,
    js: &JetStream,
) -> Result<Compared, CliError> {
    let log = log_ids(store, &names.category).await?;
    let position: HashMap<&str, i64> = log.iter().map(|(id, p)| (id.as_str(), *p)).collect();
    let messages = js
        .read_stream(&names.stream, Duration::from_secs(60))
        .await
        .map_err(|e| other(herald::report(&e)))?;
    let (mut got, mut out_of_order, mut last) = (Vec::with_capacity(messages.len()), 0, 0i64);
    for m in &messages {
        let id = m
            .event()
            .map_err(|e| {
                other(format!(
                    "stream {} sequence {}: {e}",
                    names.stream, m.sequence
                ))
            })?
            .event_id()
            .unwrap_or_default()
            .to_owned();
        let p = position.get(id.as_str()).copied().unwrap_or(0);
        if p <= last {
            out_of_order += 1;
        }
        last = last.max(p);
        got.push(id);
    }
    Ok(Compared {
        in_stream: got.len(),
        check: DeliveryCheck::compare(log.into_iter().map(|(id, _)| id), got),
        out_of_order,
    })
}

fn verdict(name: &str, c: &Compared) -> Result<(), CliError> {
    let duplicates: usize = c.check.duplicated.values().map(|n| n - 1).sum();
    let (missing, unexpected) = (c.check.missing.len(), c.check.unexpected.len());
    if missing + unexpected + duplicates + c.out_of_order > 0 {
        return Err(other(format!(
            "{name}: {missing} missing, {duplicates} duplicates, {unexpected} unexpected, {} out of order",
            c.out_of_order
        )));
    }
    Ok(())
}

fn figures(c: &Compared) -> String {
    let duplicates: usize = c.check.duplicated.values().map(|n| n - 1).sum();
    format!(
        "in_stream={} missing={} duplicates={duplicates} unexpected={} out_of_order={}",
        c.in_stream,
        c.check.missing.len(),
        c.check.unexpected.len(),
        c.out_of_order
    )
}

/// The stream's last sequence (0 when it cannot be read: the server is down).
async fn stream_end(names: &Names, js: &JetStream) -> u64 {
    js.stream_tail(&names.stream)
        .await
        .map_or(0, |(last, _)| last)
}

pub(super) async fn drop_stream(names: &Names, js: &JetStream) {
    let _ = js.context().delete_stream(&names.stream).await;
}

/// A relay scenario under way: its names, a NATS server of its own, and appends to `store`
/// in the background (stopped by `stop`), begun at `began`.
struct Scenario {
    names: Names,
    server: OwnNatsServer,
    js: JetStream,
    began: Instant,
    stop: Arc<AtomicBool>,
    appender: tokio::task::JoinHandle<u64>,
}

/// Starts a scenario: up to `n` appends, one batch of 10 every `pace`.
async fn begin<S: EventStore>(store: &S, n: u64, pace: Duration) -> Result<Scenario, CliError> {
    let names = Names::new();
    let server = nats_server()?;
    let js = connect(&server.url()).await?.jetstream();
    drop_stream(&names, &js).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appender = tokio::spawn(append_all(
        store.clone(),
        names.category.clone(),
        n,
        pace,
        stop.clone(),
    ));
    Ok(Scenario {
        names,
        server,
        js,
        began: Instant::now(),
        stop,
        appender,
    })
}

/// The pause between batches of 10 for `n` appends to last about `per_kill` per kill.
fn pace(n: u64, kills: u32, per_kill: Duration) -> Duration {
    let total = per_kill.as_micros() as u64 * u64::from(kills.max(1));
    Duration::from_micros((total * 10 / n.max(1)).min(50_000))
}

/// `relay-kill`: `n` appends while relays (lease 1 s) are SIGKILLed `kills` times after 1 to 2
/// s each, and the NATS server is SIGKILLed and restarted after every second relay kill; then
/// a last relay catches up. The stream must equal the log: missing 0, duplicates 0, in order.
pub(crate) async fn relay_kill(store: Option<String>, n: u64, kills: u32) -> Result<(), CliError> {
    on_store!(store, "relay-kill", |s, url| relay_kill_on(
        s, url, n, kills
    )
    .await)
}

async fn relay_kill_on<S: EventStore>(
    store: S,
    url: &str,
    n: u64,
    kills: u32,
) -> Result<(), CliError> {
    // Paced so that the appends last about as long as the kills.
    let Scenario {
        names,
        mut server,
        js,
        began,
        appender,
        ..
    } = begin(&store, n, pace(n, kills, Duration::from_millis(1500))).await?;
    let (mut nats_kills, mut mid_relay) = (0u32, 0u32);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in 0..kills {
        let before = stream_end(&names, &js).await;
        let child = spawn_relay(&names, url, &server.url(), 1.0, false)?;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let life = Duration::from_millis(1000 + x % 1000);
        if k % 2 == 1 {
            // The NATS server SIGKILLed while the relay publishes, and restarted.
            tokio::time::sleep(life / 2).await;
            tokio::task::block_in_place(|| {
                server.kill9();
                std::thread::sleep(Duration::from_millis(300));
                server.restart();
            });
            nats_kills += 1;
            tokio::time::sleep(life / 2).await;
        } else {
            tokio::time::sleep(life).await;
        }
        kill9(child);
        if stream_end(&names, &js).await > before && !appender.is_finished() {
            mid_relay += 1;
        }
    }
    let appended = appender.await.map_err(other)?;
    let status = tokio::task::block_in_place(|| {
        spawn_relay(&names, url, &server.url(), 1.0, true).and_then(|mut c| c.wait().map_err(other))
    })?;
    if !status.success() {
        return Err(other(format!(
            "relay-kill: the last relay exited with {status}"
        )));
    }
    let c = compare(&names, &store, &js).await?;
    out!(
        "chaos relay-kill appends={appended} relay_kills={kills} nats_kills={nats_kills} kills_mid_relay={mid_relay} {} seconds={:.1} store={}",
        figures(&c),
        began.elapsed().as_secs_f64(),
        url.split(':').next().unwrap_or("?"),
    );
    drop_stream(&names, &js).await;
    verdict("relay-kill", &c)
}

/// `relay-failover`: two relays with a lease of `lease` seconds under appends; `kills` times
/// the active one (the one the stream grows under) is SIGKILLed and a fresh standby started;
/// the time until the stream grows again is the takeover, which must stay within two lease
/// periods. Then the stream must equal the log.
pub(crate) async fn relay_failover(
    store: Option<String>,
    n: u64,
    kills: u32,
) -> Result<(), CliError> {
    on_store!(store, "relay-failover", |s, url| failover_on(
        s, url, n, kills
    )
    .await)
}

async fn failover_on<S: EventStore>(
    store: S,
    url: &str,
    n: u64,
    kills: u32,
) -> Result<(), CliError> {
    const LEASE: f64 = 2.0;
    // Appends all along (500 a second), until the kills are done.
    let Scenario {
        names,
        server,
        js,
        began,
        stop,
        appender,
    } = begin(&store, n.max(1_000_000), Duration::from_millis(20)).await?;
    // The first relay takes the lease; the second waits.
    let mut active = spawn_relay(&names, url, &server.url(), LEASE, false)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut standby = spawn_relay(&names, url, &server.url(), LEASE, false)?;
    let mut takeovers = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kill9(active);
        let killed = Instant::now();
        // Appends land all the time: the stream grows again once the standby took over.
        let mark = stream_end(&names, &js).await;
        let took = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if stream_end(&names, &js).await > mark + 1 {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs_f64(LEASE * 10.0) {
                break killed.elapsed();
            }
        };
        takeovers.push(took.as_secs_f64());
        active = standby;
        standby = spawn_relay(&names, url, &server.url(), LEASE, false)?;
    }
    stop.store(true, Ordering::Relaxed);
    let appended = appender.await.map_err(other)?;
    kill9(standby);
    kill9(active);
    let status = tokio::task::block_in_place(|| {
        spawn_relay(&names, url, &server.url(), LEASE, true)
            .and_then(|mut c| c.wait().map_err(other))
    })?;
    if !status.success() {
        return Err(other(format!(
            "relay-failover: the last relay exited with {status}"
        )));
    }
    let c = compare(&names, &store, &js).await?;
    let longest = takeovers.iter().copied().fold(0.0, f64::max);
    out!(
        "chaos relay-failover appends={appended} kills={kills} lease_s={LEASE} takeover_max_s={longest:.2} takeovers_s={:?} {} seconds={:.1} store={}",
        takeovers.iter().map(|t| (t * 100.0).round() / 100.0).collect::<Vec<_>>(),
        figures(&c),
        began.elapsed().as_secs_f64(),
        url.split(':').next().unwrap_or("?"),
    );
    drop_stream(&names, &js).await;
    verdict("relay-failover", &c)?;
    if longest > 2.0 * LEASE {
        return Err(other(format!(
            "relay-failover: a standby took {longest:.2} s to take over (more than two lease periods, {} s)",
            2.0 * LEASE
        )));
    }
    Ok(())
}

/// `relay-pg-restart`: a relay on a PostgreSQL server of its own, which is crashed and
/// restarted (`-m immediate`) `kills` times under appends; then the stream must equal the log.
pub(crate) async fn relay_pg_restart(n: u64, kills: u32) -> Result<(), CliError> {
    let server =
        tokio::task::block_in_place(|| OwnPostgres::start("herald chaos relay-pg-restart"))
            .ok_or_else(|| {
                other("PostgreSQL is not installed (scripts/services.sh installs it)")
            })?;
    let url = server.url();
    let store = PgStore::connect_with(PgOptions {
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::new(url.clone())
    })
    .await?;
    let Scenario {
        names,
        server: nats_server,
        js,
        began,
        appender,
        ..
    } = begin(&store, n, pace(n, kills, Duration::from_secs(2))).await?;
    let relay = spawn_relay(&names, &url, &nats_server.url(), 2.0, false)?;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokio::task::block_in_place(|| server.restart_immediate());
    }
    let appended = appender.await.map_err(other)?;
    // The running relay catches up with the log (appends cut by a crash are not in it); give
    // it the time, then a last one checks it is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_log = loop {
        match log_ids(&store, &names.category).await {
            Ok(ids) => break ids.len() as u64,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    while stream_end(&names, &js).await < in_log && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill9(relay);
    let status = tokio::task::block_in_place(|| {
        spawn_relay(&names, &url, &nats_server.url(), 2.0, true)
            .and_then(|mut c| c.wait().map_err(other))
    })?;
    if !status.success() {
        return Err(other(format!(
            "relay-pg-restart: the last relay exited with {status}"
        )));
    }
    let c = compare(&names, &store, &js).await?;
    out!(
        "chaos relay-pg-restart appends={appended} pg_restarts={kills} {} seconds={:.1}",
        figures(&c),
        began.elapsed().as_secs_f64(),
    );
    drop_stream(&names, &js).await;
    verdict("relay-pg-restart", &c)
}
