//! The `herald` command line: every verb, its arguments and the global options (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Herald: one event system from a single process to a cluster.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The bus when neither `--bus`, `HERALD_BUS` nor the config file names one.
pub(crate) const DEFAULT_BUS: &str = "nats://127.0.0.1:4222";

/// Options accepted before or after the subcommand.
#[derive(Debug, Args, Clone)]
pub(crate) struct Global {
    /// Message bus: nats://HOST:PORT or memory://.
    #[arg(
        long,
        global = true,
        env = "HERALD_BUS",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub(crate) bus: String,
    /// Durable store: sqlite://PATH (embedded; default sqlite://.herald/herald.db) or
    /// postgres://... (PGMQ). Overrides the config file's `store`.
    #[arg(long, global = true, env = "HERALD_STORE")]
    pub(crate) store: Option<String>,
    /// A TOML config file (store, bus, [worker] with seed 001's WorkerConfig fields, [http]);
    /// HERALD_* variables and flags override it. A bad file exits with 78.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the main job on the embedded default, no server needed: plugins talking over the bus.
    Demo(DemoArgs),
    /// Benchmarks: each Herald figure beside the raw library's, measured in the same run.
    Bench(BenchArgs),
    /// Fault scenarios on NATS servers of its own (SIGKILLed and restarted), one line of
    /// figures per scenario.
    Chaos(ChaosArgs),
    /// Publish events to NATS (DATA is a JSON object; `-` reads JSON lines from stdin).
    Pub(PubArgs),
    /// Subscribe and print each event as one JSON envelope per line.
    Sub(SubArgs),
    /// Send a request and print the response envelope.
    Request(RequestArgs),
    /// Answer requests: the response's data is the request's data.
    Reply(ReplyArgs),
    /// Manage JetStream streams.
    Streams(StreamsArgs),
    /// Durable queues on --store (PGMQ semantics): create, ls, send, read, archive, delete,
    /// purge, metrics, dlq.
    Queue(QueueArgs),
    /// Run step handlers from {namespace}_steps on --store, one result per step.
    Worker(WorkerArgs),
    /// A worker with its observability server (/health, /metrics, ...) on --http.
    Serve(WorkerArgs),
    /// Print the /health JSON of a running server; exit 1 when unhealthy.
    Health(HttpArgs),
    /// Print the /metrics.json of a running server (--prometheus: /metrics).
    Metrics(HttpArgs),
    /// Print the effective config (file, then HERALD_* variables), secrets redacted.
    Config(ConfigArgs),
    /// The event store on --store: append, read, ls.
    Store(StoreArgs),
    /// Run a processing node on --store (a distributed broker in a role, with the built-in
    /// `counts` projection), or `node status`: nodes, roles, epochs, allocations, checkpoints.
    Node(NodeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    #[command(subcommand)]
    pub(crate) command: Option<NodeCommand>,
    /// coordinator (allocates only), observer (processes what it is given) or full (both);
    /// default: the config's `node.role`, else full.
    #[arg(long, env = "HERALD_NODE_ROLE", value_parser = parse_role)]
    pub(crate) role: Option<herald_runtime::BrokerRole>,
    /// This node's id (default: the config's `node.id`, else node-{pid}).
    #[arg(long, env = "HERALD_NODE_ID")]
    pub(crate) id: Option<String>,
    /// The categories the built-in `counts` projection consumes (repeat or comma-separate;
    /// default: the config's `node.sources`).
    #[arg(long, value_delimiter = ',', env = "HERALD_NODE_SOURCES")]
    pub(crate) sources: Vec<String>,
    /// The projection's consumer group (default `counts`).
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Heartbeat interval in milliseconds; a node silent for 4 heartbeats is dead, and the
    /// coordinator rebalances every heartbeat (unset: the seed's 10 s heartbeat, 60 s TTL).
    #[arg(long)]
    pub(crate) heartbeat_ms: Option<u64>,
    /// How often the consumer polls, in milliseconds (default 1000).
    #[arg(long)]
    pub(crate) poll_ms: Option<u64>,
    /// Checkpoint after this many events per source (default 100).
    #[arg(long)]
    pub(crate) checkpoint_every: Option<u64>,
    /// Print `processed NODE STREAM GLOBAL_POSITION EVENT_ID` for each event processed.
    #[arg(long)]
    pub(crate) log_processed: bool,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long = "for")]
    pub(crate) run_for: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Nodes (role, live, last heartbeat), the lease, allocations and their checkpoints.
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// A node silent for longer than this many milliseconds shows as dead.
        #[arg(long, default_value_t = 60_000)]
        ttl_ms: u64,
    },
}

fn parse_role(s: &str) -> Result<herald_runtime::BrokerRole, String> {
    s.parse()
        .map_err(|e: herald_runtime::UnknownRole| e.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    #[command(subcommand)]
    pub(crate) command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Append an event (DATA is a JSON object) to STREAM (category-id); prints its positions.
    Append {
        /// The stream, e.g. order-42.
        stream: String,
        /// The event's data.
        data: Option<String>,
        /// The event type (its subject is `CATEGORY.TYPE`).
        #[arg(long = "type", default_value = "appended")]
        event_type: String,
        /// Only if the stream's last position is this.
        #[arg(long, conflicts_with = "no_stream")]
        expected: Option<i64>,
        /// Only if the stream has no event yet.
        #[arg(long)]
        no_stream: bool,
    },
    /// Read a stream (STREAM), a category (--category), or the whole log (neither), one JSON
    /// line per event.
    Read {
        /// The stream.
        stream: Option<String>,
        /// A category instead.
        #[arg(long, conflicts_with = "stream")]
        category: Option<String>,
        /// From this position (stream) or global position (category, log).
        #[arg(long, default_value_t = 0)]
        from: i64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// List streams and their last positions.
    Ls,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// JSON instead of TOML.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only validate this file (exit 78 with one line when it is bad).
    #[arg(long)]
    pub(crate) check: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct HttpArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub(crate) http: String,
    /// The Prometheus text instead of JSON (metrics only).
    #[arg(long)]
    pub(crate) prometheus: bool,
}

#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    #[command(subcommand)]
    pub(crate) command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Create a queue (a no-op when it exists).
    Create {
        /// Lowercase letters, digits and _, at most 47 characters.
        name: String,
    },
    /// List queues.
    Ls,
    /// Send an event (DATA is a JSON object) and print its msg_id.
    Send(QueueSendArgs),
    /// Read messages (hidden for --vt seconds; read_ct + 1), one JSON line each.
    Read {
        /// The queue.
        name: String,
        /// Visibility timeout in seconds.
        #[arg(long, default_value_t = 30)]
        vt: u64,
        /// Messages at most.
        #[arg(long, default_value_t = 1)]
        qty: usize,
    },
    /// Consume: read a batch, print each message as a JSON line, then archive the batch;
    /// again until stopped (or, with --until-empty, until the queue holds nothing). A consumer
    /// killed mid-batch leaves that batch unarchived: it is read again after --vt seconds
    /// (at least once; duplicates at most one batch per kill).
    Consume {
        /// The queue.
        name: String,
        /// Visibility timeout in seconds: how long a read batch stays hidden.
        #[arg(long, default_value_t = 30)]
        vt: u64,
        /// Messages per batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Exit once the queue holds no message (hidden ones included).
        #[arg(long)]
        until_empty: bool,
    },
    /// Move messages to the queue's archive.
    Archive {
        /// The queue.
        name: String,
        /// Message ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Delete messages.
    Delete {
        /// The queue.
        name: String,
        /// Message ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Delete every message (the archive stays).
    Purge {
        /// The queue.
        name: String,
    },
    /// Length, ages and total sent, as JSON.
    Metrics {
        /// The queue.
        name: String,
    },
    /// List the dead letters of a queue (kept in {queue}_dlq with their reason).
    Dlq {
        /// The queue whose dead letters to list (a worker's is {namespace}_steps).
        name: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub(crate) struct QueueSendArgs {
    /// The queue.
    pub(crate) name: String,
    /// The event's data: a JSON object.
    pub(crate) data: Option<String>,
    /// The event's subject.
    #[arg(long, default_value = "herald.message")]
    pub(crate) subject: String,
    /// Seconds before it becomes visible.
    #[arg(long, default_value_t = 0)]
    pub(crate) delay: u64,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Queues {namespace}_steps, {namespace}_step_results, {namespace}_steps_dlq (default:
    /// the config's worker.namespace, `default`).
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// Handlers running at once (default: the config's worker.max_concurrent_handlers, 10).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Seconds a read step stays hidden from other workers.
    #[arg(long, default_value_t = 30)]
    pub(crate) vt: u64,
    /// Stop once the step queue has been empty for a second (otherwise run until SIGINT or
    /// SIGTERM, then drain).
    #[arg(long)]
    pub(crate) until_empty: bool,
    /// No progress line.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Enqueue this many steps for --handler first (a load to run).
    #[arg(long, default_value_t = 0)]
    pub(crate) enqueue: usize,
    /// The handler of the steps --enqueue makes.
    #[arg(long, default_value = "demo.noop")]
    pub(crate) handler: String,
    /// Serve /health, /livez, /readyz, /metrics, /metrics.json and /config here
    /// (`herald serve` defaults to 127.0.0.1:8081; another address is logged as a warning).
    #[arg(long)]
    pub(crate) http: Option<String>,
    /// Connect to the NATS server at --bus and report its connection in /health (an
    /// optional component: down makes the service degraded, not unhealthy).
    #[arg(long)]
    pub(crate) nats: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Print only the summary.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Trivia rounds to play.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Suite {
    /// The in-process bus.
    Bus,
    /// The NATS transport (needs a server at --bus).
    Nats,
    /// Durable queues: PostgreSQL (--store if postgres://, else the local test database)
    /// beside the raw pgmq crate, SQLite beside the disk's fdatasync floor.
    Queue,
    /// The step worker end to end beside the bare queue's send + read + archive.
    Worker,
    /// The event store beside raw sqlx / rusqlite doing the same INSERT and SELECT.
    Store,
    /// The processing runtime end to end on PostgreSQL with 1, 2 and 3 nodes, beside a raw
    /// sqlx loop doing the same reads, projection upserts and checkpoints.
    Runtime,
    /// Every suite.
    All,
}

#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// Which scenario.
    #[arg(long, value_enum, default_value = "all")]
    pub(crate) scenario: ChaosScenario,
    /// small (seconds) or full (1,000,000 messages, 20 kills).
    #[arg(long, value_enum, default_value = "small")]
    pub(crate) scale: ChaosScale,
    /// Messages per scenario (overrides the scale).
    #[arg(long)]
    pub(crate) messages: Option<u64>,
    /// Kills per scenario (overrides the scale).
    #[arg(long)]
    pub(crate) kills: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ChaosScenario {
    /// JetStream publishes with ids and retries while one server is SIGKILLed and restarted.
    JetstreamKill,
    /// The same on a 3-node cluster with an R3 stream, one node killed at a time.
    JetstreamCluster,
    /// Core publishes across the same kills: accepted, refused, delivered, lost.
    CoreKill,
    /// `herald queue consume` processes SIGKILLed mid-batch on --store (default: a scratch
    /// SQLite file): lost 0, duplicates at most one batch per kill.
    QueueKill,
    /// Sends while a PostgreSQL server of its own is restarted with -m immediate.
    PgRestart,
    /// Every scenario.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ChaosScale {
    /// 2,000 messages, 3 kills.
    Small,
    /// 1,000,000 messages, 20 kills.
    Full,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which suite.
    #[arg(value_enum, default_value = "bus")]
    pub(crate) suite: Suite,
    /// One JSON line per figure: {"name","herald","baseline","ratio","unit"}.
    #[arg(long)]
    pub(crate) json: bool,
    /// Scale the message counts (1.0 = default; smaller is quicker and noisier).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) scale: f64,
}

#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    /// The subject, e.g. trivia.started.
    pub(crate) subject: String,
    /// The data: a JSON object, or `-` for JSON lines on stdin (one event each).
    pub(crate) data: Option<String>,
    /// Publish to JetStream and wait for the stream's acknowledgement.
    #[arg(long)]
    pub(crate) js: bool,
    /// Event type (default: the subject's last token).
    #[arg(long = "type")]
    pub(crate) event_type: Option<String>,
    /// Source component.
    #[arg(long, default_value = "herald-cli")]
    pub(crate) source: String,
    /// Priority: low, normal, high, critical.
    #[arg(long, default_value = "normal")]
    pub(crate) priority: String,
    /// Publish the event this many times.
    #[arg(long, default_value_t = 1)]
    pub(crate) count: u64,
}

#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    /// The pattern: `*` one token, `>` the rest.
    pub(crate) pattern: String,
    /// Join a queue group: each event goes to one member.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Exit after this many events.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// The subject.
    pub(crate) subject: String,
    /// The data: a JSON object (default {}).
    pub(crate) data: Option<String>,
    /// Seconds to wait for the response.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) timeout: f64,
}

#[derive(Debug, Args)]
pub(crate) struct ReplyArgs {
    /// The subject (or pattern) to answer on.
    pub(crate) subject: String,
    /// Join a queue group.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Exit after answering this many requests.
    #[arg(long)]
    pub(crate) count: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct StreamsArgs {
    #[command(subcommand)]
    pub(crate) command: StreamsCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StreamsCommand {
    /// List streams.
    Ls,
    /// Create or update a stream; without arguments, the default set (PLATFORM_EVENTS, COMMANDS, PLUGINS).
    Add(StreamAddArgs),
    /// Show one stream.
    Info {
        /// The stream's name.
        name: String,
    },
    /// Delete one stream.
    Rm {
        /// The stream's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StreamAddArgs {
    /// The stream's name (omit for the default set).
    pub(crate) name: Option<String>,
    /// Subjects it captures (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub(crate) subjects: Vec<String>,
    /// Maximum age in seconds (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_age: u64,
    /// Maximum bytes (-1 = unlimited).
    #[arg(long, default_value_t = -1)]
    pub(crate) max_bytes: i64,
    /// Copies kept on a cluster (1 to 5; 3 survives losing one node).
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: usize,
}
