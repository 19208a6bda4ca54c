//! `herald node`: a processing node on `--store` (a `DistributedEventBroker` in its role, with
//! the built-in `counts` projection as its subscription consumer, run by an `EventRuntime`
//! until SIGINT/SIGTERM), and `herald node status`.

use std::sync::Arc;
use std::time::Duration;

use herald::store::{BrokerStore, CountProjection, EventStore, StoredEvent};
use herald::BoxError;
use herald_runtime::{
    BrokerRole, ConsumerSettings, DistributedEventBroker, DistributedEventBrokerSettings, Ended,
    EventConsumerSettings, EventRuntime, EventSubscriptionConsumer, ServiceManager,
};
use serde_json::json;

use crate::cli::{NodeArgs, NodeCommand};
use crate::config::NodeSection;
use crate::connect::{open_existing_store, open_store, with_store};
use crate::output::out;
use crate::CliError;

/// A node's settings: its flags over the config's `[node]`.
struct Settings {
    role: BrokerRole,
    id: String,
    group: String,
    sources: Vec<String>,
    heartbeat_ms: Option<u64>,
    poll_ms: u64,
    checkpoint_every: u64,
    log_processed: bool,
    run_for: Option<f64>,
    scheduler: bool,
}

/// The node's settings from the config's `[node]`, which already holds its flags and
/// variables and passed `HeraldConfig::validate`.
fn settings(args: &NodeArgs, config: NodeSection) -> Result<Settings, CliError> {
    let role: BrokerRole = config
        .role
        .parse()
        .map_err(|e: herald_runtime::UnknownRole| {
            CliError::Config(format!("config key `node.role`: {e}"))
        })?;
    if role != BrokerRole::Coordinator && config.sources.is_empty() {
        return Err(CliError::Usage(format!(
            "herald node --role {role}: name the categories to consume with --sources (or node.sources in the config)"
        )));
    }
    Ok(Settings {
        role,
        id: config
            .id
            .unwrap_or_else(|| format!("node-{}", std::process::id())),
        group: config.group,
        sources: config.sources,
        heartbeat_ms: config.heartbeat_ms,
        poll_ms: config.poll_ms,
        checkpoint_every: config.checkpoint_every,
        log_processed: args.log_processed,
        run_for: args.run_for,
        scheduler: args.scheduler,
    })
}

pub(crate) async fn run(
    args: NodeArgs,
    store_url: &str,
    config: NodeSection,
) -> Result<(), CliError> {
    if let Some(NodeCommand::Status { json, ttl_ms }) = args.command {
        let store = open_existing_store(store_url).await?;
        let ttl = ttl_ms.map(Duration::from_millis);
        return with_store!(store, s => status(&s, json, ttl).await);
    }
    // Checked before the store opens.
    let settings = settings(&args, config)?;
    let store = open_store(store_url).await?;
    with_store!(store, s => node(s, settings).await)
}

/// The built-in projection: counts each event of its category once (idempotent), and says so
/// on stdout when asked.
fn counts_processor<S: CountProjection>(
    store: S,
    group: String,
    node: String,
    log: bool,
) -> impl Fn(StoredEvent) -> herald::BoxFuture<Result<(), BoxError>> + Send + Sync + 'static {
    move |e: StoredEvent| {
        let (store, group, node) = (store.clone(), group.clone(), node.clone());
        Box::pin(async move {
            store
                .count_event(&group, e.category(), e.global_position)
                .await?;
            if log {
                let id = e
                    .event()
                    .ok()
                    .and_then(|ev| ev.event_id().map(str::to_owned))
                    .unwrap_or_else(|| "-".to_owned());
                crate::output::print_line(&format!(
                    "processed {node} {} {} {id}",
                    e.stream, e.global_position
                ))
                .map_err(|e| -> BoxError { e.to_string().into() })?;
            }
            Ok(())
        })
    }
}

/// The heartbeat and distribution intervals a node runs with.
fn settings_heartbeat(heartbeat_ms: Option<u64>) -> (Duration, Duration) {
    let s = match heartbeat_ms {
        Some(ms) => {
            DistributedEventBrokerSettings::fast(BrokerRole::Full, Duration::from_millis(ms))
        }
        None => DistributedEventBrokerSettings::default(),
    };
    (
        s.subscriber_manager_heartbeat_interval,
        s.coordinator_distribution_interval
            .max(s.subscriber_manager_heartbeat_interval),
    )
}

async fn node<S>(store: S, args: Settings) -> Result<(), CliError>
where
    S: EventStore + BrokerStore + CountProjection + herald::schedule::ScheduleStore,
{
    let node_id = args.id.clone();
    let settings = match args.heartbeat_ms {
        Some(ms) => {
            DistributedEventBrokerSettings::fast(args.role, Duration::from_millis(ms.max(1)))
        }
        None => DistributedEventBrokerSettings {
            role: args.role,
            ..DistributedEventBrokerSettings::default()
        },
    };
    let broker = Arc::new(
        DistributedEventBroker::new(&node_id, store.clone(), settings)
            .map_err(|e| CliError::Usage(e.to_string()))?,
    );
    let defaults = EventConsumerSettings {
        poll_interval: Duration::from_millis(args.poll_ms.max(1)),
        ..EventConsumerSettings::default()
    };
    let mut runtime = EventRuntime::new(
        &node_id,
        broker.clone(),
        ServiceManager::new(),
        Some(defaults),
    );
    if args.role != BrokerRole::Coordinator {
        let sources: Vec<&str> = args.sources.iter().map(String::as_str).collect();
        let consumer = EventSubscriptionConsumer::new(
            store.clone(),
            &args.group,
            &sources,
            counts_processor(
                store.clone(),
                args.group.clone(),
                node_id.clone(),
                args.log_processed,
            ),
            ConsumerSettings {
                checkpoint_every: args.checkpoint_every.max(1),
                ..ConsumerSettings::default()
            },
        )
        .map_err(|e| CliError::Usage(e.to_string()))?;
        runtime
            .register_subscription_consumer(Arc::new(consumer), None)
            .map_err(|e| CliError::Other(herald::report(&e)))?;
    }
    runtime
        .start()
        .map_err(|e| CliError::Other(herald::report(&e)))?;
    tracing::info!(node = node_id.as_str(), role = %args.role, "node started");
    let heartbeat = settings_heartbeat(args.heartbeat_ms);
    crate::output::warn_line!(
        "herald node {node_id}: {} on {} source(s); it heartbeats every {} ms and is given sources at the coordinator's next distribution (within {} ms); SIGINT/SIGTERM stops it",
        args.role,
        args.sources.len(),
        heartbeat.0.as_millis(),
        heartbeat.1.as_millis()
    );
    let scheduling = herald::Shutdown::new();
    if args.scheduler {
        crate::commands::schedule::spawn_scheduler(store.clone(), &scheduling);
    }
    let ended = match args.run_for {
        Some(secs) => tokio::select! {
            e = runtime.wait(crate::signal::terminated()) => e,
            () = tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))) => Ended::Stopped,
        },
        None => runtime.wait(crate::signal::terminated()).await,
    };
    let _ = scheduling.shutdown(Duration::from_secs(5)).await;
    let report = runtime.stop(Duration::from_secs(10)).await;
    crate::output::warn_line!(
        "herald node {node_id}: stopped ({}); {} service(s) drained, {} abandoned",
        match &ended {
            Ended::Signal(s) => (*s).to_owned(),
            Ended::Finished(s) => format!("{s} ended"),
            Ended::Error(e) => herald::report(e),
            Ended::Stopped => "done".to_owned(),
        },
        report.stopped,
        report.abandoned.len()
    );
    match ended {
        Ended::Error(e) => match e.exit_code() {
            Some(code) => Err(CliError::Exit(code, herald::report(&e))),
            None => Err(CliError::Other(herald::report(&e))),
        },
        _ => Ok(()),
    }
}

/// A node's time-to-live when it did not write its own and `--ttl-ms` is not given: the
/// seed's 60 s.
const DEFAULT_TTL: Duration = Duration::from_secs(60);

async fn status<S>(store: &S, as_json: bool, ttl: Option<Duration>) -> Result<(), CliError>
where
    S: EventStore + BrokerStore + CountProjection,
{
    let mut snap = store.snapshot(ttl.unwrap_or(DEFAULT_TTL)).await?;
    // Live by the node's own time-to-live, unless --ttl-ms overrides it.
    for n in &mut snap.nodes {
        let limit = ttl.or(n.info.ttl).unwrap_or(DEFAULT_TTL);
        n.live = n.since_seen < limit;
    }
    let mut allocations = Vec::new();
    for a in &snap.allocations {
        let cp = store.checkpoint(&a.group, &a.source).await?;
        allocations.push((a.clone(), cp));
    }
    // What the built-in projection counted, per group.
    let groups: std::collections::BTreeSet<&str> =
        snap.allocations.iter().map(|a| a.group.as_str()).collect();
    let mut counts = Vec::new();
    for g in groups {
        counts.push((g.to_owned(), store.counts(g).await?));
    }
    let status = NodeStatus {
        snap,
        allocations,
        counts,
    };
    if as_json {
        out!("{}", status.json(ttl));
        Ok(())
    } else {
        status.print()
    }
}

/// What `herald node status` shows: the broker's snapshot, each allocation's checkpoint, and
/// what the built-in projection counted per group.
struct NodeStatus {
    snap: herald::store::BrokerSnapshot,
    allocations: Vec<(herald::store::Allocation, Option<(i64, u64)>)>,
    counts: Vec<(String, Counts)>,
}

/// One group's counts: `(category, count, last global position)`, as `CountProjection` gives
/// them.
type Counts = Vec<(String, i64, i64)>;

impl NodeStatus {
    /// As one JSON object (`--json`).
    fn json(&self, ttl: Option<Duration>) -> serde_json::Value {
        let (snap, allocations, counts) = (&self.snap, &self.allocations, &self.counts);
        json!({
            "lease": snap.lease.as_ref().map(|l| json!({"holder": l.holder, "epoch": l.epoch, "live": l.live})),
            "nodes": snap.nodes.iter().map(|n| json!({
                "node_id": n.info.node_id,
                "role": n.info.role,
                "live": n.live,
                "since_seen_ms": n.since_seen.as_millis() as u64,
                "ttl_ms": ttl.or(n.info.ttl).unwrap_or(DEFAULT_TTL).as_millis() as u64,
                "groups": n.info.groups,
                "claims": n.claims.iter().map(|c| json!({"group": c.group, "source": c.source, "epoch": c.epoch})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "allocations": allocations.iter().map(|(a, cp)| json!({
                "group": a.group,
                "source": a.source,
                "node_id": a.node_id,
                "epoch": a.epoch,
                "coordinator_epoch": a.coordinator_epoch,
                "checkpoint": cp.map(|(p, e)| json!({"position": p, "epoch": e})),
            })).collect::<Vec<_>>(),
            "counts": counts.iter().map(|(g, rows)| (g.to_string(), rows.iter().map(|(c, n, last)| json!({
                "category": c, "count": n, "last_position": last,
            })).collect::<serde_json::Value>())).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// As tables: the lease, the nodes, the allocations, the counts.
    fn print(&self) -> Result<(), CliError> {
        let (snap, allocations, counts) = (&self.snap, &self.allocations, &self.counts);
        match &snap.lease {
            Some(l) => {
                out!(
                    "lease: {} epoch {} ({})",
                    l.holder,
                    l.epoch,
                    if l.live { "live" } else { "expired" }
                );
            }
            None => {
                out!("lease: nobody has coordinated yet");
            }
        }
        out!(
            "{:<24} {:<12} {:<5} {:>10} {:>6}",
            "NODE",
            "ROLE",
            "LIVE",
            "SEEN (ms)",
            "HOLDS"
        );
        for n in &snap.nodes {
            out!(
                "{:<24} {:<12} {:<5} {:>10} {:>6}",
                n.info.node_id,
                n.info.role,
                if n.live { "yes" } else { "no" },
                n.since_seen.as_millis(),
                n.claims.len()
            );
        }
        out!(
            "{:<16} {:<20} {:<24} {:>6} {:>12}",
            "GROUP",
            "SOURCE",
            "OWNER",
            "EPOCH",
            "CHECKPOINT"
        );
        for (a, cp) in allocations {
            out!(
                "{:<16} {:<20} {:<24} {:>6} {:>12}",
                a.group,
                a.source,
                a.node_id.as_deref().unwrap_or("(revoked)"),
                a.epoch,
                cp.map_or_else(|| "-".to_owned(), |(p, e)| format!("{p}@{e}"))
            );
        }
        for (g, rows) in counts {
            let line: Vec<String> = rows.iter().map(|(c, n, _)| format!("{c}={n}")).collect();
            out!("counted by {g}: {}", line.join(" "));
        }
        Ok(())
    }
}
