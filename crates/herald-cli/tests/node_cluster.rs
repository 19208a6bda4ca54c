//! `herald node` processes on PostgreSQL (each test in a database of its own): seed 003's two
//! integration cases (a coordinator-only node with one observer; one coordinator with several
//! observers), and the chaos run: 3 full nodes, 20 sources, steady appends, a node SIGKILLed and
//! restarted 10 times, one SIGSTOPped past its time-to-live and woken. Every event processed at
//! least once (id sets), no source claimed by two live nodes (sampled), no stale checkpoint
//! accepted, and the figures printed on one line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::store::{BrokerStore, CountProjection, EventStore, StreamName, WriteCondition};
use herald::{Event, Subject};
use herald_postgres::PgStore;
use herald_testkit::env::{database_url, FreshDatabase};
use herald_testkit::DeliveryCheck;
use parking_lot::Mutex;

const BEAT_MS: u64 = 100;
const TTL: Duration = Duration::from_millis(4 * BEAT_MS);

type Processed = Arc<Mutex<Vec<(String, String)>>>;

struct Node {
    id: String,
    args: Vec<String>,
    child: Child,
    processed: Processed,
    stderr: Arc<Mutex<String>>,
}

impl Node {
    fn start(url: &str, id: &str, role: &str, sources: &[String], processed: &Processed) -> Node {
        let mut args = vec![
            "node".to_owned(),
            "--store".to_owned(),
            url.to_owned(),
            "--role".to_owned(),
            role.to_owned(),
            "--id".to_owned(),
            id.to_owned(),
            "--heartbeat-ms".to_owned(),
            BEAT_MS.to_string(),
            "--poll-ms".to_owned(),
            "50".to_owned(),
            "--checkpoint-every".to_owned(),
            "10".to_owned(),
            "--log-processed".to_owned(),
        ];
        if !sources.is_empty() {
            args.push("--sources".to_owned());
            args.push(sources.join(","));
        }
        Node::spawn(id, args, processed)
    }

    fn spawn(id: &str, args: Vec<String>, processed: &Processed) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald node");
        let out = child.stdout.take().expect("stdout");
        let sink = processed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut f = line.split_whitespace();
                if f.next() == Some("processed") {
                    let (node, _stream, _global, id) = (f.next(), f.next(), f.next(), f.next());
                    if let (Some(node), Some(id)) = (node, id) {
                        sink.lock().push((node.to_owned(), id.to_owned()));
                    }
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut k = keep.lock();
                k.push_str(&line);
                k.push('\n');
            }
        });
        Node {
            id: id.to_owned(),
            args,
            child,
            processed: processed.clone(),
            stderr,
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        *self = Node::spawn(&self.id, self.args.clone(), &self.processed);
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig}");
    }

    fn terminate(mut self) -> String {
        self.signal("-TERM");
        let _ = self.child.wait();
        let s = self.stderr.lock().clone();
        s
    }
}

async fn append(store: &PgStore, source: &str, id: &str) {
    let stream = StreamName::new(&format!("{source}-{}", id.len() % 3)).expect("stream");
    let event = Event::new(Subject::new(&format!("{source}.happened")).expect("subject"))
        .with_metadata(herald::EVENT_ID, id);
    store
        .append(&stream, &[event], WriteCondition::Any)
        .await
        .expect("append");
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(processed: &Processed) -> Vec<String> {
    processed.lock().iter().map(|(_, id)| id.clone()).collect()
}

async fn setup(
    test: &str,
    sources: usize,
    per_source: usize,
) -> Option<(FreshDatabase, PgStore, Vec<String>, Vec<String>)> {
    let url = database_url(test)?;
    let db = FreshDatabase::create(&url);
    let store = PgStore::connect(&db.url()).await.expect("connect");
    let names: Vec<String> = (0..sources).map(|i| format!("src{i}")).collect();
    let mut appended = Vec::new();
    for s in &names {
        for i in 0..per_source {
            let id = format!("{s}.{i}");
            append(&store, s, &id).await;
            appended.push(id);
        }
    }
    Some((db, store, names, appended))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_coordinator_and_observer_nodes_work_together() {
    let Some((db, store, sources, appended)) = setup("node_coordinator_observer", 4, 25).await
    else {
        return;
    };
    let processed = Processed::default();
    let coordinator = Node::start(&db.url(), "coord", "coordinator", &[], &processed);
    let observer = Node::start(&db.url(), "obs", "observer", &sources, &processed);
    until(
        "the observer processed everything",
        Duration::from_secs(30),
        || DeliveryCheck::compare(appended.clone(), ids(&processed)).is_at_least_once(),
    )
    .await;
    let snap = store.snapshot(TTL * 5).await.expect("snapshot");
    assert_eq!(
        snap.lease.as_ref().map(|l| l.holder.as_str()),
        Some("coord"),
        "the coordinator allocated"
    );
    assert!(
        snap.allocations
            .iter()
            .all(|a| a.node_id.as_deref() == Some("obs")),
        "{:?}",
        snap.allocations
    );
    let coord = snap
        .nodes
        .iter()
        .find(|n| n.info.node_id == "coord")
        .expect("coordinator row");
    assert!(coord.claims.is_empty() && coord.info.role == "coordinator");
    assert!(
        processed.lock().iter().all(|(n, _)| n == "obs"),
        "only the observer processes"
    );
    let counts = store.counts("counts").await.expect("counts");
    assert_eq!(
        counts.iter().map(|c| c.1).sum::<i64>(),
        100,
        "each event counted once: {counts:?}"
    );
    observer.terminate();
    coordinator.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_multiple_observer_nodes_with_single_coordinator() {
    let Some((db, store, sources, appended)) = setup("node_observers", 6, 20).await else {
        return;
    };
    let processed = Processed::default();
    let coordinator = Node::start(&db.url(), "coord", "coordinator", &[], &processed);
    let mut observers: Vec<Node> = (0..3)
        .map(|i| {
            Node::start(
                &db.url(),
                &format!("obs{i}"),
                "observer",
                &sources,
                &processed,
            )
        })
        .collect();
    until(
        "everything processed and shared out",
        Duration::from_secs(30),
        || DeliveryCheck::compare(appended.clone(), ids(&processed)).is_at_least_once(),
    )
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    // Up to 20 s: on two cores shared with the rest of a CI run, a node's heartbeat can miss
    // its 400 ms TTL, and its sources go back to the pool until the next allocation.
    for _ in 0..400 {
        let snap = store.snapshot(TTL).await.expect("snapshot");
        per_node.clear();
        for a in &snap.allocations {
            *per_node
                .entry(a.node_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
        if per_node.len() == 3 && per_node.values().all(|n| *n == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if per_node
        .keys()
        .map(String::as_str)
        .ne(["obs0", "obs1", "obs2"])
    {
        let mut seen = String::new();
        for o in observers.iter_mut() {
            let state = o.child.try_wait();
            seen.push_str(&format!(
                "{}: {state:?}, stderr:\n{}\n",
                o.id,
                o.stderr.lock()
            ));
        }
        panic!("not every observer holds work: {per_node:?}\n{seen}");
    }
    assert!(
        per_node.values().all(|n| *n == 2),
        "work shared evenly: {per_node:?}"
    );
    let counts = store.counts("counts").await.expect("counts");
    assert_eq!(counts.len(), 6);
    assert!(
        counts.iter().all(|c| c.1 == 20),
        "each event counted once: {counts:?}"
    );
    for o in observers {
        o.terminate();
    }
    coordinator.terminate();
}

/// Samples the store: how many sources two live nodes claim, and whether every source is
/// claimed by a live node other than `dead` (a node just killed, whose row is still young).
async fn sample_without(store: &PgStore, sources: usize, dead: Option<&str>) -> (usize, bool) {
    let snap = store.snapshot(TTL).await.expect("snapshot");
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    let mut others: BTreeSet<String> = BTreeSet::new();
    for n in snap.nodes.iter().filter(|n| n.live) {
        if Some(n.info.node_id.as_str()) != dead {
            others.extend(n.claims.iter().map(|c| c.source.clone()));
        }
        for c in &n.claims {
            *owners.entry(c.source.clone()).or_default() += 1;
        }
    }
    (
        owners.values().filter(|n| **n > 1).count(),
        others.len() == sources,
    )
}

async fn sample(store: &PgStore, sources: usize) -> (usize, bool) {
    sample_without(store, sources, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_nodes_twenty_sources_kill9_and_sigstop() {
    let kills: usize = std::env::var("HERALD_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let Some((db, store, sources, mut appended)) = setup("node_chaos", 20, 5).await else {
        return;
    };
    let url = db.url();
    let processed = Processed::default();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&url, &format!("n{i}"), "full", &sources, &processed))
        .collect();
    // Steady appends for the whole run.
    let writer = {
        let (store, sources) = (store.clone(), sources.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let stop_at = Instant::now() + Duration::from_secs(3600);
            let mut i = 0usize;
            while Instant::now() < stop_at {
                let s = &sources[i % sources.len()];
                let id = format!("live.{i}");
                append(&store, s, &id).await;
                ids.push(id);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            ids
        })
    };
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut overlaps = 0usize;
    let mut samples = 0usize;
    let mut rebalance_beats = Vec::new();
    let mut checkpoints: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    let mut stale_accepted = 0usize;
    let mut watch = |overlap: usize| {
        samples += 1;
        overlaps += overlap;
    };
    // Wait for the first full allocation.
    let start = Instant::now();
    loop {
        let (o, full) = sample(&store, 20).await;
        watch(o);
        if full {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never fully allocated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 0..kills {
        let victim = k % nodes.len();
        nodes[victim].kill9();
        let killed = Instant::now();
        let dead = nodes[victim].id.clone();
        // Rebalanced: every source claimed by another live node.
        loop {
            let (o, full) = sample_without(&store, 20, Some(&dead)).await;
            watch(o);
            if full {
                rebalance_beats.push(killed.elapsed().as_secs_f64() * 1000.0 / BEAT_MS as f64);
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "never rebalanced after kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nodes[victim].restart();
        for _ in 0..10 {
            let (o, _) = sample(&store, 20).await;
            watch(o);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    // SIGSTOP one node for longer than its time-to-live, then wake it.
    nodes[0].signal("-STOP");
    let paused = Instant::now();
    while paused.elapsed() < TTL * 3 {
        let (o, _) = sample(&store, 20).await;
        watch(o);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    nodes[0].signal("-CONT");
    for _ in 0..30 {
        let (o, _) = sample(&store, 20).await;
        watch(o);
        // A checkpoint never goes back in epoch: a stale write was never accepted.
        for s in &sources {
            if let Some((p, e)) = store.checkpoint("counts", s).await.expect("checkpoint") {
                if let Some((_, old_e)) = checkpoints.insert(s.clone(), (p, e)) {
                    if e < old_e {
                        stale_accepted += 1;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    appended.extend(writer.await.expect("writer"));
    until(
        "every appended event processed",
        Duration::from_secs(60),
        || DeliveryCheck::compare(appended.clone(), ids(&processed)).is_at_least_once(),
    )
    .await;
    let mut refused = 0;
    for n in nodes {
        refused += n.terminate().matches("gave the source up").count();
    }
    let got = ids(&processed);
    let check = DeliveryCheck::compare(appended.clone(), got.clone());
    check.assert_at_least_once();
    let distinct: BTreeSet<&String> = got.iter().collect();
    let duplicates = got.len() - distinct.len();
    let counts = store.counts("counts").await.expect("counts");
    let counted: i64 = counts.iter().map(|c| c.1).sum();
    rebalance_beats.sort_by(f64::total_cmp);
    let p50 = rebalance_beats
        .get(rebalance_beats.len() / 2)
        .copied()
        .unwrap_or(0.0);
    let max = rebalance_beats.last().copied().unwrap_or(0.0);
    println!(
        "chaos runtime: events {} processed {} missing 0 duplicates {duplicates} ({:.1} per kill) kills {kills} sigstop 1 \
         stale-epoch accepted {stale_accepted} refused {refused} overlap {overlaps}/{samples} samples \
         rebalance p50 {p50:.1} max {max:.1} heartbeats ({BEAT_MS} ms) counted {counted}",
        appended.len(),
        got.len(),
        duplicates as f64 / kills.max(1) as f64,
    );
    assert_eq!(stale_accepted, 0, "no stale-epoch write accepted");
    assert_eq!(overlaps, 0, "no source claimed by two live nodes at once");
    assert_eq!(
        counted as usize,
        appended.len(),
        "the idempotent projection counted each event once"
    );
}
