//! The `herald` command line: every verb, its arguments and the global options (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Herald: one event system from a single process to a cluster.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// The log filter when `HERALD_LOG` is unset: `error` for `herald demo --quiet` (its
    /// warnings are the deliberate failures its summary counts), else `warn`.
    pub fn default_log_filter(&self) -> &'static str {
        match &self.command {
            Command::Demo(args) if args.quiet => "error",
            _ => "warn",
        }
    }
}

/// Options given before the verb (`herald --store URL queue ls`). Each verb that uses one
/// takes it after itself too (`herald queue ls --store URL`), and only those list it in
/// their help. `--bus` and `--store` override the config's `bus` and `store` (the file, then
/// `HERALD_BUS` / `HERALD_STORE`).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct Global {
    /// Message bus: nats://HOST:PORT or memory:// (default: the config's `bus`, $HERALD_BUS,
    /// else nats://127.0.0.1:4222).
    #[arg(long)]
    pub(crate) bus: Option<String>,
    /// Durable store: sqlite://PATH (embedded) or postgres://... (PGMQ) (default: the
    /// config's `store`, $HERALD_STORE, else sqlite://.herald/herald.db).
    #[arg(long)]
    pub(crate) store: Option<String>,
    /// A TOML config file (store, bus, [worker] with seed 001's WorkerConfig fields, [http],
    /// [node], [telemetry], [flow.QUEUE]); HERALD_* variables and flags override it. A bad
    /// file exits with 78.
    #[arg(long, env = "HERALD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl Global {
    /// These options, each taken from `verb` where the verb was given it.
    fn over(&self, verb: &Global) -> Global {
        Global {
            bus: verb.bus.clone().or_else(|| self.bus.clone()),
            store: verb.store.clone().or_else(|| self.store.clone()),
            config: verb.config.clone().or_else(|| self.config.clone()),
        }
    }
}

pub(crate) use crate::opts::{
    at_least_one, at_least_one_usize, max_bytes, seconds, whole, BusOpt, ConfigOpt, StoreOpt,
};

impl Cli {
    /// The options in force: each from after the verb, else from before it.
    pub(crate) fn options(&self) -> Global {
        let (store, bus, config) = match &self.command {
            Command::Demo(_) => (None, None, None),
            Command::Bench(a) => (Some(&a.store), Some(&a.bus), Some(&a.config)),
            Command::Chaos(a) => (Some(&a.store), None, Some(&a.config)),
            Command::Pub(a) => (None, Some(&a.bus), Some(&a.config)),
            Command::Sub(a) => (None, Some(&a.bus), Some(&a.config)),
            Command::Request(a) => (None, Some(&a.bus), Some(&a.config)),
            Command::Reply(a) => (None, Some(&a.bus), Some(&a.config)),
            Command::Streams(a) => (None, Some(&a.bus), Some(&a.config)),
            Command::Queue(a) => (Some(&a.store), None, Some(&a.config)),
            Command::Worker(a) | Command::Serve(a) => {
                (Some(&a.store), Some(&a.bus), Some(&a.config))
            }
            Command::Health(a) => (None, None, Some(&a.config)),
            Command::Metrics(a) => (None, None, Some(&a.config)),
            Command::Config(a) => (Some(&a.store), Some(&a.bus), Some(&a.config)),
            Command::Store(a) => (Some(&a.store), None, Some(&a.config)),
            Command::Dlq(a) => (Some(&a.store), None, Some(&a.config)),
            Command::Schedule(a) => (Some(&a.store), None, Some(&a.config)),
            Command::Relay(a) => (Some(&a.store), Some(&a.bus), Some(&a.config)),
            Command::Inbox(a) => (Some(&a.store), Some(&a.bus), Some(&a.config)),
            Command::Node(a) => (Some(&a.store), None, Some(&a.config)),
        };
        self.global.over(&Global {
            store: store.and_then(|o| o.store.clone()),
            bus: bus.and_then(|o| o.bus.clone()),
            config: config.and_then(|o| o.config.clone()),
        })
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the main job on the embedded default, no server needed: plugins talking over the bus.
    #[command(after_help = "Examples:\n  herald demo\n  herald demo --quiet --rounds 1")]
    Demo(DemoArgs),
    /// Benchmarks: each Herald figure beside the raw library's, measured in the same run.
    #[command(
        after_help = "Examples:\n  herald bench bus\n  herald bench queue --json\n  herald --store postgres://postgres@127.0.0.1:5432/test bench worker --scale 0.2"
    )]
    Bench(BenchArgs),
    /// Fault scenarios on NATS servers of its own (SIGKILLed and restarted), one line of
    /// figures per scenario.
    #[command(
        after_help = "Examples:\n  herald chaos\n  herald chaos --scenario queue-kill --messages 5000 --kills 5\n  herald chaos --scenario jetstream-cluster --scale full"
    )]
    Chaos(crate::commands::chaos_args::ChaosArgs),
    /// Publish events to NATS (DATA is a JSON object; `-` reads JSON lines from stdin).
    #[command(
        after_help = "Examples:\n  herald pub trivia.started '{\"round\": 1}' --source trivia --priority high\n  herald pub orders.created '{\"id\": 7}' --js\n  printf '{\"n\": 1}\\n{\"n\": 2}\\n' | herald pub metrics.sample -"
    )]
    Pub(PubArgs),
    /// Subscribe and print each event as one JSON envelope per line.
    #[command(
        after_help = "Examples:\n  herald sub 'trivia.>'\n  herald sub '>' --count 10\n  herald sub 'jobs.*' --queue workers --timeout 30"
    )]
    Sub(SubArgs),
    /// Send a request and print the response envelope.
    #[command(
        after_help = "Examples:\n  herald request svc.echo '{\"ping\": true}'\n  herald request svc.slow '{}' --timeout 30"
    )]
    Request(RequestArgs),
    /// Answer requests: the response's data is the request's data.
    #[command(
        after_help = "Examples:\n  herald reply svc.echo\n  herald reply 'svc.>' --queue echoers --count 100"
    )]
    Reply(ReplyArgs),
    /// Manage JetStream streams.
    #[command(
        after_help = "Examples:\n  herald streams add\n  herald streams add ORDERS --subjects 'orders.>' --max-age 86400\n  herald streams info ORDERS\n  herald streams rm ORDERS"
    )]
    Streams(StreamsArgs),
    /// Durable queues on --store (PGMQ semantics): create, ls, send, read, archive, delete,
    /// purge, metrics, dlq.
    #[command(
        after_help = "Examples:\n  herald queue create jobs\n  id=$(herald queue send jobs '{\"order\": 42}')\n  herald queue read jobs --vt 30 --qty 10\n  herald queue archive jobs \"$id\"\n  herald queue consume jobs --until-empty\n  herald queue dlq default_steps\n  herald --store postgres://postgres@127.0.0.1:5432/test queue ls"
    )]
    Queue(crate::commands::queue::QueueArgs),
    /// Run step handlers from {namespace}_steps on --store, one result per step.
    #[command(
        after_help = "Examples:\n  herald worker --enqueue 1000 --until-empty\n  herald worker --namespace orders --concurrency 32\n  herald --store postgres://postgres@127.0.0.1:5432/test worker --handler demo.sum --enqueue 10 --until-empty"
    )]
    Worker(WorkerArgs),
    /// A worker with its observability server on --http (default 127.0.0.1:8081): /health,
    /// /livez, /readyz, /metrics (Prometheus), /metrics.json, /config, and a live page at
    /// http://ADDR/ that refreshes itself. With --nats, the NATS connection is a component of
    /// /health (down: the service is degraded, and it starts anyway).
    #[command(
        after_help = "Examples:\n  herald serve\n  herald serve --http 127.0.0.1:9090 --nats\n  herald health && herald metrics --prometheus"
    )]
    Serve(WorkerArgs),
    /// Print the /health JSON of a running server; exit 1 when unhealthy.
    #[command(
        after_help = "Examples:\n  herald health\n  herald health --http http://127.0.0.1:9090\n  HERALD_HTTP_ADDR=127.0.0.1:9090 herald health"
    )]
    Health(crate::commands::observe::HealthArgs),
    /// Print the /metrics.json of a running server (--prometheus: /metrics).
    #[command(
        after_help = "Examples:\n  herald metrics\n  herald metrics --prometheus\n  herald --config herald.toml metrics"
    )]
    Metrics(crate::commands::observe::MetricsArgs),
    /// Print the effective config (file, then HERALD_* variables), secrets redacted.
    #[command(
        after_help = "Examples:\n  herald config\n  herald --config herald.toml config --json\n  herald config --check herald.toml"
    )]
    Config(ConfigArgs),
    /// The event store on --store: append, read, ls.
    #[command(
        after_help = "Examples:\n  herald store append order-42 '{\"total\": 3}' --type created --no-stream\n  herald store read order-42\n  herald store read --category order --from 100 --max 50\n  herald store ls"
    )]
    Store(crate::commands::store::StoreArgs),
    /// Dead letters on --store: ls, show, replay (back to their queue), abandon; each replay
    /// and abandon is recorded on the event store's herald-audit stream.
    #[command(
        after_help = "Examples:\n  herald dlq ls\n  herald dlq show orders_dlq --limit 5\n  herald dlq replay orders_dlq --id 12 --id 13\n  herald dlq replay orders_dlq --all --max-replays 3\n  herald dlq abandon orders_dlq --all --reason 'bad product ids, fixed upstream'"
    )]
    Dlq(crate::commands::dlq::DlqArgs),
    /// Schedules on --store: add (--cron or --every, a time zone, a missed-tick policy), ls
    /// (with the next five fire times), rm, pause, resume; run a scheduler.
    #[command(
        after_help = "Examples:\n  herald schedule add nightly --cron '0 3 * * *' --tz Europe/Paris --queue reports --data '{\"kind\": \"daily\"}'\n  herald schedule add heartbeat --every 30s --queue pings\n  herald schedule ls\n  herald schedule pause nightly && herald schedule resume nightly\n  herald schedule run    # or: herald worker --scheduler, herald node --scheduler"
    )]
    Schedule(crate::commands::schedule::ScheduleArgs),
    /// Relay the event store's log to JetStream (the outbox): each event once in the stream, in
    /// log order, with Nats-Msg-Id STORE_ID:GLOBAL_POSITION; one relay per stream is active,
    /// a second one waits and takes over.
    #[command(
        after_help = "Examples:\n  herald relay --to nats://127.0.0.1:4222\n  herald relay --categories order,user --subject-prefix events --until-caught-up"
    )]
    Relay(crate::commands::relay::RelayArgs),
    /// Take a JetStream stream into the event store: each message appended once (its
    /// Nats-Msg-Id, or event id, stored with the append), to the stream CATEGORY-ID named by
    /// its subject's last two tokens.
    #[command(
        after_help = "Examples:\n  herald inbox --from HERALD_EVENTS --consumer orders-inbox\n  herald inbox --from ORDERS --until-idle"
    )]
    Inbox(crate::commands::relay::InboxArgs),
    /// Run a processing node on --store (a distributed broker in a role, with the built-in
    /// `counts` projection), or `node status`: nodes, roles, epochs, allocations, checkpoints.
    #[command(
        after_help = "Examples:\n  herald node --role full --sources order,user --id n1\n  herald node --role full --sources order,user --id n2 --heartbeat-ms 500\n  herald node status --json"
    )]
    Node(NodeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    #[command(subcommand)]
    pub(crate) command: Option<NodeCommand>,
    /// coordinator (allocates only), observer (processes what it is given) or full (both);
    /// default: the config's `node.role` ($HERALD_NODE_ROLE), else full.
    #[arg(long, value_parser = parse_role)]
    pub(crate) role: Option<String>,
    /// This node's id: letters, digits, _, - and . (default: the config's `node.id`
    /// ($HERALD_NODE_ID), else node-{pid}).
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// The categories the built-in `counts` projection consumes (repeat or comma-separate;
    /// default: the config's `node.sources`, $HERALD_NODE_SOURCES).
    #[arg(long, value_delimiter = ',')]
    pub(crate) sources: Vec<String>,
    /// The projection's consumer group (default `counts`).
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Heartbeat interval in milliseconds; a node silent for 4 heartbeats is dead, and the
    /// coordinator rebalances every heartbeat (unset: the seed's 10 s heartbeat, 60 s TTL).
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub(crate) heartbeat_ms: Option<u64>,
    /// How often the consumer polls, in milliseconds (default 1000).
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub(crate) poll_ms: Option<u64>,
    /// Checkpoint after this many events per source (default 100).
    #[arg(long, allow_negative_numbers = true, value_parser = whole)]
    pub(crate) checkpoint_every: Option<u64>,
    /// Print `processed NODE STREAM GLOBAL_POSITION EVENT_ID` for each event processed.
    #[arg(long)]
    pub(crate) log_processed: bool,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long = "for")]
    pub(crate) run_for: Option<f64>,
    /// Also run a scheduler: the store's schedules (`herald schedule add`) are fired here,
    /// each tick once however many schedulers run.
    #[arg(long)]
    pub(crate) scheduler: bool,
}

/// A role as the broker names it (`coordinator`, `observer`, `full`).
fn parse_role(s: &str) -> Result<String, String> {
    s.parse::<herald_runtime::BrokerRole>()
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Nodes (role, live, last heartbeat), the lease, allocations and their checkpoints.
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// A node silent for longer than this many milliseconds shows as dead (default: each
        /// node's own time-to-live, which it writes with its heartbeats; 60 s for a node
        /// that did not say).
        #[arg(long, allow_negative_numbers = true, value_parser = at_least_one)]
        ttl_ms: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// JSON instead of TOML.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only validate this file (exit 78 with one line when it is bad).
    #[arg(long)]
    pub(crate) check: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// Queues {namespace}_steps, {namespace}_step_results, {namespace}_steps_dlq (default:
    /// the config's worker.namespace, `default`).
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// Handlers running at once (default: the config's worker.max_concurrent_handlers, 10).
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one_usize)]
    pub(crate) concurrency: Option<usize>,
    /// Seconds a read step stays hidden from other workers.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = at_least_one)]
    pub(crate) vt: u64,
    /// Stop once the step queue has been empty for a second (otherwise run until SIGINT or
    /// SIGTERM, then drain).
    #[arg(long)]
    pub(crate) until_empty: bool,
    /// Also run a scheduler: the store's schedules (`herald schedule add`) are fired here,
    /// each tick once however many schedulers run.
    #[arg(long)]
    pub(crate) scheduler: bool,
    /// No progress line.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Enqueue this many steps for --handler first (a load to run).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) enqueue: u64,
    /// The handler of the steps --enqueue makes; built in: demo.noop (succeeds), demo.sum
    /// (sums input_data.numbers), demo.flaky (fails once, then succeeds), demo.panic (always
    /// panics: retried, then dead-lettered).
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
    /// Print the span tree of one step of the worker part: its hops (publish, process, the
    /// result, its domain event) with the time spent in each, from OpenTelemetry spans
    /// collected in memory (no collector needed).
    #[arg(long)]
    pub(crate) trace: bool,
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
    /// The relays on PostgreSQL and --bus: log relay beside sqlx read + async-nats publish
    /// (256 in flight), inbox beside fetch + INSERT + ack, and the append-to-subscriber lag.
    Relay,
    /// What tracing costs each hop (bus publish, NATS publish to a handler, SQLite queue
    /// send, SQLite worker step): on with a discarding exporter beside off, each side in a
    /// child process of its own, alternately.
    Trace,
    /// Every suite.
    All,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// Which suite.
    #[arg(value_enum, default_value = "bus")]
    pub(crate) suite: Suite,
    /// One JSON line per figure: {"name","herald","baseline","ratio","unit"}.
    #[arg(long)]
    pub(crate) json: bool,
    /// Scale the message counts (1.0 = default; smaller is quicker and noisier).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) scale: f64,
    /// `bench trace` runs each side in a child process of its own: this is the child's
    /// side (tracing on with a discarding exporter, or off).
    #[arg(long, value_enum, hide = true)]
    pub(crate) tracing: Option<Tracing>,
}

/// A side of `herald bench trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Tracing {
    /// Spans exported in batches to an exporter that drops them.
    On,
    /// No exporter: the default.
    Off,
}

#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
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
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = at_least_one)]
    pub(crate) count: u64,
}

#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// The pattern: `*` one token, `>` the rest.
    pub(crate) pattern: String,
    /// Join a queue group: each event goes to one member.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Exit after this many events.
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one)]
    pub(crate) count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
    /// Print each event's trace id (`-` when it has none) before its JSON.
    #[arg(long)]
    pub(crate) trace: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
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
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// The subject (or pattern) to answer on.
    pub(crate) subject: String,
    /// Join a queue group.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Exit after answering this many requests.
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one)]
    pub(crate) count: Option<u64>,
}

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct StreamsArgs {
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
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
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = seconds)]
    pub(crate) max_age: u64,
    /// Maximum bytes (-1 = unlimited).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = max_bytes)]
    pub(crate) max_bytes: i64,
    /// Copies kept on a cluster (1 to 5; 3 survives losing one node).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = at_least_one_usize)]
    pub(crate) replicas: usize,
}

/// clap's rendered error as Herald prints it: one line that keeps everything clap says (the
/// lines it indents under its message, such as the missing arguments, the possible values
/// and a "did you mean" tip, then its usage and help pointer), folded in order.
pub fn render_usage_error(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let mut out = format!("herald: {}", first.strip_prefix("error: ").unwrap_or(first));
    let mut listed = 0;
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        // A list under a line ending in ':' continues it; a tip, the usage and the help
        // pointer are clauses of their own.
        let clause = trimmed.starts_with("tip:")
            || trimmed.starts_with("Usage:")
            || trimmed.starts_with("For more");
        let sep = if clause {
            listed = 0;
            "; "
        } else if listed > 0 {
            ", "
        } else {
            " "
        };
        if !clause {
            listed += 1;
        }
        out.push_str(sep);
        out.push_str(trimmed);
    }
    out
}
