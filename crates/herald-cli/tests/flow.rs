//! Flow control across processes, on SQLite and PostgreSQL: four `herald worker` processes of
//! the test's own run `demo.probe` steps under a queue policy, and the probe's log (every
//! handler start and end, with its pid, in µs) is checked: keyed concurrency never above its
//! limit, a shared rate never above its bucket while reaching 90% of it, ordering keys started
//! in send order without overlap through SIGKILLs with a poisoned message holding its key only
//! (until its letter is abandoned). Sets of step ids, never timings, decide completion. Scale
//! the ordering run with HERALD_FLOW_KEYS and HERALD_FLOW_PER_KEY (full: 50 x 200).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::dlq::{self, Operator, Selection};
use herald::queue::flow::{FlowControl, Policy};
use herald::queue::Queue;
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use herald_testkit::env::{database_url, unique};
use herald_worker::{step_event, FfiStepEvent, StepExecutionResult, StepQueues};
use serde_json::{json, Map, Value};

fn scale(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn worker(store: &str, namespace: &str, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "worker",
            "--store",
            store,
            "--namespace",
            namespace,
            "--vt",
            "2",
            "--concurrency",
            "8",
            "--quiet",
        ])
        .env("HERALD_PROBE_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald worker")
}

fn stop(children: &mut Vec<Child>) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();
}

/// A probe step: `id`, `customer_id` = `key`, plus `extra`.
fn probe(id: &str, key: &str, extra: &[(&str, Value)]) -> (String, FfiStepEvent) {
    let mut input = Map::new();
    input.insert("id".into(), id.into());
    input.insert("customer_id".into(), key.into());
    for (k, v) in extra {
        input.insert((*k).into(), v.clone());
    }
    let mut step = FfiStepEvent::new("demo.probe", input);
    step.execution_event.max_retries = 0;
    (id.to_owned(), step)
}

async fn enqueue<Q: Queue + FlowControl>(
    store: &Q,
    namespace: &str,
    steps: &[(String, FfiStepEvent)],
    policy: &Policy,
) {
    let queues = StepQueues::of(namespace).expect("queues");
    for q in [&queues.steps, &queues.results, &queues.dead_letters] {
        store.drop_queue(q).await.expect("drop");
        store.create(q).await.expect("create");
    }
    store
        .set_policy(&queues.steps, policy)
        .await
        .expect("policy");
    for chunk in steps.chunks(500) {
        let events: Vec<_> = chunk.iter().map(|(_, s)| step_event(s)).collect();
        store
            .send_batch(&queues.steps, &events, Duration::ZERO)
            .await
            .expect("enqueue");
    }
}

/// The ids of successful results so far (read with a zero vt: they stay).
async fn done<Q: Queue>(store: &Q, namespace: &str) -> HashSet<String> {
    let queues = StepQueues::of(namespace).expect("queues");
    let mut out = HashSet::new();
    for m in store
        .read(&queues.results, Duration::ZERO, 1_000_000)
        .await
        .expect("read results")
    {
        let event = m.event().expect("a result envelope");
        let r: StepExecutionResult =
            serde_json::from_value(Value::Object(event.data)).expect("a StepExecutionResult");
        if r.success {
            if let Some(id) = r.output.get("id").and_then(Value::as_str) {
                out.insert(id.to_owned());
            }
        }
    }
    out
}

async fn wait_for<Q: Queue>(store: &Q, namespace: &str, want: &HashSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = done(store, namespace).await;
        if want.is_subset(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} steps done after {} s",
            want.intersection(&got).count(),
            want.len(),
            within.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One probe log line.
#[derive(Debug, Clone)]
struct Probe {
    start: bool,
    id: String,
    pid: u32,
    us: u64,
}

fn log(path: &Path) -> Vec<Probe> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<Probe> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some(Probe {
                start: f.next()? == "start",
                id: f.next()?.to_owned(),
                pid: f.next()?.parse().ok()?,
                us: f.next()?.parse().ok()?,
            })
        })
        .collect();
    out.sort_by_key(|p| (p.us, !p.start));
    out
}

fn key_of(id: &str) -> &str {
    id.split('-').next().unwrap_or("")
}

fn seq_of(id: &str) -> usize {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The most handlers of one key running at once, per key (a sweep over starts and ends;
/// a run cut short by a kill ends at the kill, `killed_at` by pid).
fn peak_in_flight(probes: &[Probe], killed_at: &HashMap<u32, u64>) -> BTreeMap<String, usize> {
    let mut edges: Vec<(u64, i32, String)> = Vec::new();
    let ended: HashSet<(String, u32)> = probes
        .iter()
        .filter(|p| !p.start)
        .map(|p| (p.id.clone(), p.pid))
        .collect();
    for p in probes {
        let key = key_of(&p.id).to_owned();
        if p.start {
            edges.push((p.us, 1, key.clone()));
            if !ended.contains(&(p.id.clone(), p.pid)) {
                let at = killed_at.get(&p.pid).copied().unwrap_or(u64::MAX);
                edges.push((at, -1, key));
            }
        } else {
            edges.push((p.us, -1, key));
        }
    }
    // Ends before starts at the same instant.
    edges.sort_by_key(|(t, d, _)| (*t, *d));
    let mut now: HashMap<String, i32> = HashMap::new();
    let mut peak: BTreeMap<String, usize> = BTreeMap::new();
    for (_, d, key) in edges {
        let n = now.entry(key.clone()).or_default();
        *n += d;
        let p = peak.entry(key).or_default();
        *p = (*p).max(usize::try_from(*n).unwrap_or(0));
    }
    peak
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn keyed_concurrency<Q: Queue + FlowControl>(
    store: Q,
    url: &str,
    namespace: &str,
    dir: &Path,
) {
    let steps: Vec<_> = (0..10)
        .flat_map(|i| (0..20).map(move |k| (i, k)))
        .map(|(i, k)| {
            probe(
                &format!("k{k}-{i}"),
                &format!("k{k}"),
                &[("sleep_ms", json!(20))],
            )
        })
        .collect();
    let policy = Policy {
        key: Some("$.customer_id".parse().expect("path")),
        concurrency: Some(2),
        ..Policy::default()
    };
    enqueue(&store, namespace, &steps, &policy).await;
    let logfile = dir.join("probe.log");
    let mut workers: Vec<Child> = (0..4).map(|_| worker(url, namespace, &logfile)).collect();
    let want: HashSet<String> = steps.iter().map(|(id, _)| id.clone()).collect();
    wait_for(&store, namespace, &want, Duration::from_secs(120)).await;
    stop(&mut workers);
    let probes = log(&logfile);
    let pids: HashSet<u32> = probes.iter().map(|p| p.pid).collect();
    let peak = peak_in_flight(&probes, &HashMap::new());
    eprintln!(
        "keyed concurrency ({}): {} steps by {} processes, peak in flight per key {:?}",
        url.split(':').next().unwrap_or("?"),
        want.len(),
        pids.len(),
        peak.values().max()
    );
    assert!(pids.len() > 1, "the steps were shared by several processes");
    assert!(peak.values().all(|p| *p <= 2), "{peak:?}");
    assert_eq!(peak.len(), 20);
}

async fn shared_rate<Q: Queue + FlowControl>(store: Q, url: &str, namespace: &str, dir: &Path) {
    let n = 200;
    let steps: Vec<_> = (0..n).map(|i| probe(&format!("r-{i}"), "r", &[])).collect();
    let policy = Policy {
        key: Some("$.customer_id".parse().expect("path")),
        // A burst of 2 absorbs a reader's lag (with 1, a token that comes while no reader
        // looks is lost, and the rate reached is 90-95% of the limit).
        rate: Some(
            "20/s"
                .parse::<herald::queue::flow::Rate>()
                .expect("rate")
                .with_burst(2)
                .expect("burst"),
        ),
        ..Policy::default()
    };
    enqueue(&store, namespace, &steps, &policy).await;
    let logfile = dir.join("probe.log");
    let mut workers: Vec<Child> = (0..4).map(|_| worker(url, namespace, &logfile)).collect();
    let want: HashSet<String> = steps.iter().map(|(id, _)| id.clone()).collect();
    wait_for(&store, namespace, &want, Duration::from_secs(60)).await;
    stop(&mut workers);
    let starts: Vec<u64> = log(&logfile)
        .into_iter()
        .filter(|p| p.start)
        .map(|p| p.us)
        .collect();
    // Every window of one second that opens at a start: at most burst + rate = 22 starts.
    let busiest = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| **t < starts[i] + 1_000_000)
                .count()
        })
        .max()
        .unwrap_or(0);
    let span =
        (starts.last().copied().unwrap_or(0) - starts.first().copied().unwrap_or(0)) as f64 / 1e6;
    let rate = (starts.len() - 1) as f64 / span;
    eprintln!(
        "shared rate ({}): {} starts over {span:.2} s = {rate:.1}/s (limit 20/s burst 2), busiest second {busiest}",
        url.split(':').next().unwrap_or("?"),
        starts.len()
    );
    assert!(busiest <= 22, "{busiest} starts in one second");
    assert!(rate >= 18.0, "{rate:.1}/s is under 90% of 20/s");
}

async fn ordering_keys<Q: Queue + FlowControl + dlq::DeadLetterStore>(
    store: Q,
    url: &str,
    namespace: &str,
    dir: &Path,
) {
    let keys = scale("HERALD_FLOW_KEYS", 20);
    let per_key = scale("HERALD_FLOW_PER_KEY", 25);
    let poisoned = "k0-5".to_owned();
    let steps: Vec<_> = (0..per_key)
        .flat_map(|i| (0..keys).map(move |k| (i, k)))
        .map(|(i, k)| {
            let id = format!("k{k}-{i}");
            let extra = if id == "k0-5" {
                vec![("fail", json!(true))]
            } else {
                vec![("sleep_ms", json!(10))]
            };
            probe(&id, &format!("k{k}"), &extra)
        })
        .collect();
    let policy = Policy {
        key: Some("$.customer_id".parse().expect("path")),
        ordered: true,
        ..Policy::default()
    };
    enqueue(&store, namespace, &steps, &policy).await;
    let logfile = dir.join("probe.log");
    let mut workers: Vec<Child> = (0..4).map(|_| worker(url, namespace, &logfile)).collect();
    // Three SIGKILLs while it flows; each killed worker is replaced.
    let mut killed_at: HashMap<u32, u64> = HashMap::new();
    for delay in [300, 300, 300] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut victim = workers.remove(0);
        killed_at.insert(victim.id(), now_us());
        victim.kill().expect("SIGKILL");
        victim.wait().expect("reap");
        workers.push(worker(url, namespace, &logfile));
    }
    let held: HashSet<String> = (5..per_key).map(|i| format!("k0-{i}")).collect();
    let want: HashSet<String> = steps
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| !held.contains(id))
        .collect();
    wait_for(&store, namespace, &want, Duration::from_secs(300)).await;
    // The poisoned key is held: nothing after its letter started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started: HashSet<String> = log(&logfile)
        .into_iter()
        .filter(|p| p.start)
        .map(|p| p.id)
        .collect();
    let past: Vec<&String> = held
        .iter()
        .filter(|id| **id != poisoned && started.contains(*id))
        .collect();
    assert!(past.is_empty(), "held messages ran: {past:?}");
    // Abandon the letter: the rest of k0 goes on, in order.
    let queues = StepQueues::of(namespace).expect("queues");
    let place = dlq::place(queues.dead_letters.as_str()).expect("place");
    let op = Operator {
        who: "flow-test".into(),
        why: Some("poisoned on purpose".into()),
    };
    let report = dlq::abandon(&store, &place, Selection::All, &op)
        .await
        .expect("abandon");
    assert_eq!(report.done.len(), 1, "{report:?}");
    let rest: HashSet<String> = held.iter().filter(|id| **id != poisoned).cloned().collect();
    wait_for(&store, namespace, &rest, Duration::from_secs(120)).await;
    stop(&mut workers);
    let probes = log(&logfile);
    // Per key: starts in send order (a re-run of the same message may repeat it), none
    // overlapping the one before.
    let mut by_key: BTreeMap<String, Vec<&Probe>> = BTreeMap::new();
    for p in probes.iter().filter(|p| p.start) {
        by_key.entry(key_of(&p.id).to_owned()).or_default().push(p);
    }
    let peak = peak_in_flight(&probes, &killed_at);
    let reruns = probes.iter().filter(|p| p.start).count() - steps.len();
    eprintln!(
        "ordering keys ({}): {keys} keys x {per_key}, 3 SIGKILLs, {reruns} re-run(s), peak in flight per key {:?}",
        url.split(':').next().unwrap_or("?"),
        peak.values().max()
    );
    for (key, starts) in &by_key {
        let seqs: Vec<usize> = starts.iter().map(|p| seq_of(&p.id)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "{key} out of order: {seqs:?}"
        );
        assert_eq!(seqs.last().copied(), Some(per_key - 1), "{key} finished");
    }
    assert!(peak.values().all(|p| *p <= 1), "{peak:?}");
}

/// One run at a time: each starts four worker processes, and two cores shared by eight
/// would lag handler starts behind their reads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

macro_rules! on_both {
    ($sqlite:ident, $postgres:ident, $run:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let _one = SERIAL.lock().await;
            let dir = temp(stringify!($sqlite));
            let url = format!("sqlite://{}", dir.join("herald.db").display());
            let store = SqliteStore::open(&url).await.expect("open");
            $run(store, &url, "flow", &dir).await;
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(url) = database_url(stringify!($postgres)) else {
                return;
            };
            let _one = SERIAL.lock().await;
            let dir = temp(stringify!($postgres));
            let store = PgStore::connect(&url).await.expect("connect");
            let namespace = unique("flw");
            $run(store, &url, &namespace, &dir).await;
            let _ = std::fs::remove_dir_all(&dir);
        }
    };
}

on_both!(
    sqlite_keyed_concurrency_holds_across_four_worker_processes,
    postgres_keyed_concurrency_holds_across_four_worker_processes,
    keyed_concurrency
);
on_both!(
    sqlite_a_rate_is_shared_by_four_worker_processes,
    postgres_a_rate_is_shared_by_four_worker_processes,
    shared_rate
);
on_both!(
    sqlite_ordering_keys_hold_through_sigkills_and_a_poisoned_key_only_holds_itself,
    postgres_ordering_keys_hold_through_sigkills_and_a_poisoned_key_only_holds_itself,
    ordering_keys
);
