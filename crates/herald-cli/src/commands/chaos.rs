//! `herald chaos`: fault scenarios on NATS servers of its own, each printing one fixed-format
//! line of figures so runs can be compared: `jetstream-kill` (one server SIGKILLed and
//! restarted under publishes with ids and retries), `jetstream-cluster` (the same on three
//! nodes with an R3 stream, one node at a time), `core-kill` (core publishes across the
//! kills, losses reported, never claimed zero). Only servers it started are signalled.

use std::collections::{BTreeSet, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::queue::{Queue, QueueName};
use herald::{Event, Subject};
use herald_nats::{ConnectionState, JetStream, Nats, StreamSpec};
use herald_postgres::{PgOptions, PgStore};
use herald_testkit::nats_cluster::NatsCluster;
use herald_testkit::nats_server::OwnNatsServer;
use herald_testkit::postgres_server::OwnPostgres;
use herald_testkit::DeliveryCheck;
use parking_lot::Mutex;

use super::chaos_args::{ChaosArgs, ChaosScale, ChaosScenario};
use super::chaos_relay;
use crate::connect::{open_store, with_store};
use crate::output::out;
use crate::CliError;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The servers a scenario runs on.
enum Servers {
    One(OwnNatsServer),
    Three(NatsCluster),
}

impl Servers {
    fn urls(&self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.url()],
            Servers::Three(c) => c.urls(),
        }
    }

    fn kill_and_restart(&mut self, k: u32, down: Duration) {
        match self {
            Servers::One(s) => {
                s.kill9();
                std::thread::sleep(down);
                s.restart();
            }
            Servers::Three(c) => {
                let i = k as usize % c.len();
                c.kill9(i);
                std::thread::sleep(down);
                c.restart(i);
            }
        }
    }
}

async fn connect(urls: Vec<String>, name: &str) -> Result<Nats, CliError> {
    Nats::builder()
        .servers(urls)
        .name(name)
        .max_reconnects(None)
        .connect()
        .await
        .map_err(|e| other(herald::report(&e)))
}

/// Every event id the stream holds, to its leader's last sequence and at least to
/// `highest` (the highest sequence acknowledged).
async fn stored_ids(js: &JetStream, stream: &str, highest: u64) -> Result<Vec<String>, CliError> {
    let messages = js
        .read_stream_to(stream, highest, Duration::from_secs(60))
        .await
        .map_err(|e| other(herald::report(&e)))?;
    // A stored message that is not an envelope is an error, not a quiet gap in the ids.
    messages
        .iter()
        .map(|m| {
            m.event()
                .map(|e| e.event_id().unwrap_or_default().to_owned())
                .map_err(|e| other(format!("stream {stream} sequence {}: {e}", m.sequence)))
        })
        .collect()
}

/// JetStream under kills: publishes with ids and retries, then the stream compared by sets.
async fn jetstream(
    name: &str,
    mut servers: Servers,
    replicas: usize,
    n: u64,
    kills: u32,
) -> Result<(), CliError> {
    let nats = connect(servers.urls(), "chaos").await?;
    let js = nats.jetstream();
    let spec = StreamSpec::new("CHAOS", ["chaos.>"]).with_replicas(replicas);
    let start = Instant::now();
    while let Err(e) = js.ensure_stream(&spec).await {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(other(format!("{name}: no stream: {}", herald::report(&e))));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let publisher = {
        let (js, acked, latencies) = (js.clone(), acked.clone(), latencies.clone());
        tokio::spawn(async move {
            let subject = Subject::new("chaos.events").map_err(other)?;
            let mut ids = Vec::with_capacity(n as usize);
            let mut retries = 0u64;
            let mut highest = 0u64;
            for i in 0..n {
                let id = format!("e{i}");
                let e = Event::new(subject.clone()).with_metadata(herald::EVENT_ID, id.as_str());
                let t = Instant::now();
                let (ack, r) = js
                    .publish_retrying(&e, Duration::from_secs(120))
                    .await
                    .map_err(|e| other(herald::report(&e)))?;
                highest = highest.max(ack.sequence);
                latencies.lock().push(t.elapsed().as_secs_f64() * 1000.0);
                retries += u64::from(r);
                ids.push(id);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, CliError>((ids, retries, highest))
        })
    };
    let mut reconnects = Vec::new();
    for k in 0..kills {
        let target = n * u64::from(k + 1) / u64::from(kills + 1);
        while acked.load(Ordering::Relaxed) < target && !publisher.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let down = Duration::from_millis(300);
        let restarted = tokio::task::block_in_place(|| {
            servers.kill_and_restart(k, down);
            Instant::now()
        });
        while nats.state() != ConnectionState::Connected
            && restarted.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reconnects.push(restarted.elapsed().as_secs_f64() * 1000.0);
    }
    let (ids, retries, highest) = publisher.await.map_err(other)??;
    // A cluster may still be electing after the last kill: the read-back waits for it.
    let stored = stored_ids(&js, "CHAOS", highest).await?;
    let acked_set: BTreeSet<&String> = ids.iter().collect();
    let stored_set: BTreeSet<&String> = stored.iter().collect();
    let lost = acked_set.difference(&stored_set).count();
    let duplicates = stored.len() - stored_set.len();
    let mut lat = latencies.lock().clone();
    out!(
        "chaos {name} messages={n} kills={kills} replicas={replicas} acked={} stored={} acked_but_lost={lost} duplicates={duplicates} retries={retries} publish_p50_ms={:.2} publish_p99_ms={:.2} publish_max_ms={:.0} reconnect_p50_ms={:.0} reconnect_p99_ms={:.0}",
        ids.len(),
        stored.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        pct(&mut reconnects, 0.5),
        pct(&mut reconnects, 0.99),
    );
    let _ = nats.drain().await;
    if lost > 0 || duplicates > 0 {
        return Err(other(format!(
            "{name}: {lost} acknowledged event(s) lost, {duplicates} duplicate(s)"
        )));
    }
    Ok(())
}

/// Core NATS under kills: at most once; every figure reported as measured.
async fn core(mut server: OwnNatsServer, n: u64, kills: u32) -> Result<(), CliError> {
    let publisher = connect(vec![server.url()], "chaos-pub").await?;
    let subscriber = connect(vec![server.url()], "chaos-sub").await?;
    let mut stream = subscriber
        .subscribe("chaos.core", None)
        .await
        .map_err(|e| other(herald::report(&e)))?;
    let delivered: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (delivered, done) = (delivered.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    Ok(Some(m)) => {
                        delivered
                            .lock()
                            .insert(m.event.event_id().unwrap_or_default().to_owned());
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        })
    };
    let subject = Subject::new("chaos.core").map_err(other)?;
    let (mut accepted, mut refused) = (Vec::new(), 0u64);
    let per_kill = n / u64::from(kills + 1);
    let mut k = 0;
    for i in 0..n {
        let id = format!("c{i}");
        let e = Event::new(subject.clone()).with_metadata(herald::EVENT_ID, id.as_str());
        match publisher.publish(&e).await {
            Ok(()) => accepted.push(id),
            Err(_) => refused += 1,
        }
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if k < kills && i + 1 == per_kill * u64::from(k + 1) {
            tokio::task::block_in_place(|| {
                server.kill9();
                std::thread::sleep(Duration::from_millis(300));
                server.restart();
            });
            k += 1;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), publisher.flush()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    let _ = reader.await;
    let got = delivered.lock().clone();
    let lost = accepted.iter().filter(|id| !got.contains(*id)).count();
    out!(
        "chaos core-kill messages={n} kills={kills} accepted={} refused={refused} delivered={} accepted_but_lost={lost} (core NATS is at most once: losses across a kill are expected and counted)",
        accepted.len(),
        got.len()
    );
    Ok(())
}

/// Messages per `queue consume` batch in `queue-kill`: the bound on duplicates per kill.
const QUEUE_BATCH: u64 = 100;

/// The durable queue under consumer kills, on `store` (a scratch SQLite file by default).
async fn queue_kill(store: Option<String>, n: u64, kills: u32) -> Result<(), CliError> {
    let scratch = std::env::temp_dir().join(format!("herald-chaos-{}", std::process::id()));
    let url = match store {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(&scratch).map_err(other)?;
            format!("sqlite://{}", scratch.join("chaos.db").display())
        }
    };
    let opened = open_store(&url).await?;
    let result = with_store!(opened, s => queue_kill_on(&s, &url, n, kills).await);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Sends `n` events with ids, then runs `herald queue consume` processes of its own,
/// SIGKILLing each once the ids seen pass the next of `kills` marks (mid-batch, mostly), and a
/// last one until the queue is empty. Every sent id must be printed; a killed batch comes back
/// after the visibility timeout, so duplicates are at most one batch per kill.
async fn queue_kill_on<Q: Queue>(store: &Q, url: &str, n: u64, kills: u32) -> Result<(), CliError> {
    let queue = QueueName::new(&format!("chaos_kill_{}", std::process::id()))?;
    store.create(&queue).await?;
    let subject = Subject::new("chaos.queue")?;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push(Event::new(subject.clone()).with_metadata(herald::EVENT_ID, format!("q{i}")));
        if batch.len() == 1000 || i + 1 == n {
            store.send_batch(&queue, &batch, Duration::ZERO).await?;
            batch.clear();
        }
    }
    let exe = std::env::current_exe().map_err(other)?;
    let began = Instant::now();
    // Every id printed, in order, across all consumers; `seen` tells when a mark is passed.
    let (mut received, mut seen, mut mid_print) = (Vec::new(), HashSet::new(), 0u32);
    for k in 0..=kills {
        let last = k == kills;
        let mark = n * u64::from(k + 1) / u64::from(kills + 1);
        let mut cmd = Command::new(&exe);
        cmd.args(["queue", "consume", queue.as_str(), "--store", url])
            .args(["--vt", "2", "--batch", &QUEUE_BATCH.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if last {
            cmd.arg("--until-empty");
        }
        let mut child = cmd.spawn().map_err(other)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| other("queue consume: no stdout"))?;
        let status = tokio::task::block_in_place(|| {
            let (mut killed, mut printed) = (false, 0u64);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut by the kill does not parse: its batch was not archived.
                let Some(id) = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| {
                        v["message"]["metadata"][herald::EVENT_ID]
                            .as_str()
                            .map(str::to_owned)
                    })
                else {
                    continue;
                };
                printed += 1;
                seen.insert(id.clone());
                received.push(id);
                if !killed && !last && seen.len() as u64 >= mark {
                    // Child::kill is SIGKILL on Unix; lines already in the pipe are still read.
                    let _ = child.kill();
                    killed = true;
                }
            }
            // Each batch prints QUEUE_BATCH lines before it is archived.
            if killed && printed % QUEUE_BATCH != 0 {
                mid_print += 1;
            }
            child.wait()
        })
        .map_err(other)?;
        if last && !status.success() {
            return Err(other(format!(
                "queue-kill: the last consumer exited with {status}"
            )));
        }
    }
    let check = DeliveryCheck::compare((0..n).map(|i| format!("q{i}")), received);
    let lost = check.missing.len();
    let unexpected = check.unexpected.len();
    // Extra deliveries: every copy of an id beyond its first.
    let duplicates: usize = check.duplicated.values().map(|c| c - 1).sum();
    let per_kill = duplicates as f64 / f64::from(kills.max(1));
    let _ = store.drop_queue(&queue).await;
    out!(
        "chaos queue-kill messages={n} kills={kills} batch={QUEUE_BATCH} processed={} lost={lost} duplicates={duplicates} duplicates_per_kill={per_kill:.1} killed_mid_print={mid_print} unexpected={unexpected} seconds={:.1} store={}",
        check.received - duplicates,
        began.elapsed().as_secs_f64(),
        url.split(':').next().unwrap_or("?"),
    );
    let allowed = usize::try_from(u64::from(kills) * QUEUE_BATCH).unwrap_or(usize::MAX);
    if lost > 0 || unexpected > 0 || duplicates > allowed {
        return Err(other(format!(
            "queue-kill: {lost} lost, {unexpected} unexpected, {duplicates} duplicates (at most {allowed} allowed)"
        )));
    }
    Ok(())
}

/// Sends under a PostgreSQL server of its own crashed `kills` times with `-m immediate`: every
/// acknowledged send must be in the queue afterwards. A send whose reply the crash cut may
/// still have committed: counted as stored but not acknowledged, never as lost.
async fn pg_restart(n: u64, kills: u32) -> Result<(), CliError> {
    let server = tokio::task::block_in_place(|| OwnPostgres::start("herald chaos pg-restart"))
        .ok_or_else(|| other("PostgreSQL is not installed (scripts/services.sh installs it)"))?;
    let store = PgStore::connect_with(PgOptions {
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::new(server.url())
    })
    .await?;
    let queue = QueueName::new("chaos_pg_restart")?;
    store.create(&queue).await?;
    let progress = Arc::new(AtomicU64::new(0));
    // (the last ack's time, the longest gap between two acks so far)
    let pauses = Arc::new(Mutex::new((Instant::now(), Duration::ZERO)));
    const TASKS: u64 = 32;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, queue, progress) = (store.clone(), queue.clone(), progress.clone());
        let pauses = pauses.clone();
        let subject = Subject::new("chaos.pg")?;
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0u64);
            for i in (t..n).step_by(TASKS as usize) {
                let id = format!("p{i}");
                let e = Event::new(subject.clone()).with_metadata(herald::EVENT_ID, id.as_str());
                match store.send(&queue, &e, Duration::ZERO).await {
                    Ok(_) => {
                        acked.push(id);
                        progress.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        let mut p = pauses.lock();
                        p.1 = p.1.max(now - p.0);
                        p.0 = now;
                    }
                    Err(_) => {
                        refused += 1;
                        // The server is restarting: do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, refused)
        }));
    }
    for k in 0..kills {
        let mark = n * u64::from(k + 1) / u64::from(kills + 1);
        while progress.load(Ordering::Relaxed) < mark && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::task::block_in_place(|| server.restart_immediate());
    }
    let (mut acked, mut refused) = (Vec::new(), 0u64);
    for t in tasks {
        let (a, r) = t.await.map_err(other)?;
        acked.extend(a);
        refused += r;
    }
    let mut stored = Vec::with_capacity(acked.len());
    loop {
        let got = store
            .read(&queue, Duration::from_secs(3600), 10_000)
            .await?;
        if got.is_empty() {
            break;
        }
        for m in got {
            stored.push(m.event()?.event_id().unwrap_or_default().to_owned());
        }
    }
    let (acked_n, stored_n) = (acked.len(), stored.len());
    let check = DeliveryCheck::compare(acked, stored);
    let lost = check.missing.len();
    // Stored without an ack: the commit landed, the reply was cut (the sender was told).
    let unacked_stored = check.unexpected.len();
    let duplicates = check.duplicated.len();
    out!(
        "chaos pg-restart messages={n} kills={kills} acked={} refused={refused} stored={} acked_but_lost={lost} stored_not_acked={unacked_stored} duplicates={duplicates} longest_pause_ms={:.0}",
        acked_n,
        stored_n,
        pauses.lock().1.as_secs_f64() * 1000.0,
    );
    if lost > 0 || duplicates > 0 {
        return Err(other(format!(
            "pg-restart: {lost} acknowledged send(s) lost, {duplicates} duplicate(s)"
        )));
    }
    Ok(())
}

fn nats_server(name: &str) -> Result<OwnNatsServer, CliError> {
    OwnNatsServer::start(name)
        .ok_or_else(|| other("nats-server is not installed (scripts/services.sh installs it)"))
}

/// Runs the scenarios; Ctrl-C or SIGTERM ends the run with exit code 130 after the servers it
/// started have been stopped (dropping a scenario stops its servers; a killed process could
/// not).
pub(crate) async fn run(args: ChaosArgs, store: Option<String>) -> Result<(), CliError> {
    // Registered before any scenario starts (a scenario blocks its thread while it starts or
    // kills servers): a signal that arrives then is handled once the scenario yields.
    let signalled = crate::signal::terminated();
    tokio::select! {
        result = scenarios(args, store) => result,
        _ = signalled => Err(interrupted()),
    }
}

fn interrupted() -> CliError {
    CliError::Exit(
        130,
        "chaos interrupted; the servers it started are stopped".to_owned(),
    )
}

async fn scenarios(args: ChaosArgs, store: Option<String>) -> Result<(), CliError> {
    let (n, kills) = match args.scale {
        ChaosScale::Small => (2_000, 3),
        ChaosScale::Full => (1_000_000, 20),
    };
    let n = args.messages.unwrap_or(n).max(1);
    let kills = args.kills.unwrap_or(kills);
    let all = args.scenario == ChaosScenario::All;
    if all || args.scenario == ChaosScenario::JetstreamKill {
        jetstream(
            "jetstream-kill",
            Servers::One(nats_server("chaos")?),
            1,
            n,
            kills,
        )
        .await?;
    }
    if all || args.scenario == ChaosScenario::JetstreamCluster {
        let cluster = NatsCluster::start("chaos", 3).ok_or_else(|| {
            other("nats-server is not installed (scripts/services.sh installs it)")
        })?;
        jetstream("jetstream-cluster", Servers::Three(cluster), 3, n, kills).await?;
    }
    if all || args.scenario == ChaosScenario::CoreKill {
        core(nats_server("chaos")?, n, kills).await?;
    }
    if all || args.scenario == ChaosScenario::QueueKill {
        queue_kill(store.clone(), n, kills).await?;
    }
    if all || args.scenario == ChaosScenario::PgRestart {
        pg_restart(n, kills).await?;
    }
    relays(&args, store, kills).await
}

/// The relay scenarios: 100,000 events and 10 kills at full scale (each kill lets a relay run
/// 1 to 2 s), 2,000 and 3 at small.
async fn relays(args: &ChaosArgs, store: Option<String>, kills: u32) -> Result<(), CliError> {
    let all = args.scenario == ChaosScenario::All;
    let n = match args.scale {
        ChaosScale::Small => 2_000,
        ChaosScale::Full => 100_000,
    };
    let n = args.messages.unwrap_or(n).max(1);
    let kills = match (args.kills, args.scale) {
        (Some(k), _) => k,
        (None, ChaosScale::Small) => kills,
        (None, ChaosScale::Full) => 10,
    };
    if all || args.scenario == ChaosScenario::RelayKill {
        chaos_relay::relay_kill(store.clone(), n, kills).await?;
    }
    if all || args.scenario == ChaosScenario::RelayFailover {
        chaos_relay::relay_failover(store.clone(), n, kills).await?;
    }
    if all || args.scenario == ChaosScenario::InboxKill {
        super::chaos_inbox::inbox_kill(store.clone(), n, kills).await?;
    }
    if all || args.scenario == ChaosScenario::RelayPgRestart {
        chaos_relay::relay_pg_restart(n, kills).await?;
    }
    Ok(())
}
