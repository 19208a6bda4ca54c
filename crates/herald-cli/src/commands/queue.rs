//! `herald queue`: the durable queue verbs on `--store` (create, ls, send, read, archive,
//! delete, purge, metrics, dlq, consume, policy). Names and policies are validated before the
//! store is touched.

use std::time::Duration;

use clap::{Args, Subcommand};
use herald::queue::flow::{self, FlowControl, Policy, Rate};
use herald::queue::{Message, Queue, QueueName};
use herald::{Event, Subject};
use serde_json::{json, Value};

use crate::connect::{open_existing_store, open_store, with_store};
use crate::data::parse_data;
use crate::opts::{
    at_least_one, at_least_one_usize, delay, position, seconds, ConfigOpt, StoreOpt,
};
use crate::output::out;
use crate::CliError;

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct QueueArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
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
        #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = seconds)]
        vt: u64,
        /// Messages at most.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = at_least_one_usize)]
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
        #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = at_least_one)]
        vt: u64,
        /// Messages per batch.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = at_least_one_usize)]
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
        #[arg(required = true, allow_negative_numbers = true, value_parser = position)]
        ids: Vec<i64>,
    },
    /// Delete messages.
    Delete {
        /// The queue.
        name: String,
        /// Message ids.
        #[arg(required = true, allow_negative_numbers = true, value_parser = position)]
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
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = at_least_one_usize)]
        limit: usize,
    },
    /// Drop a queue: its messages, its archive and its dead-letter queue.
    Drop {
        /// The queue.
        name: String,
    },
    /// Flow control: what a queue's reads obey (every reader of the store obeys it).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Set (replace) the queue's policy.
    Set(PolicySetArgs),
    /// Print the queue's policy as JSON (nothing when it has none).
    Show {
        /// The queue.
        name: String,
    },
    /// Remove the queue's policy and its buckets.
    Clear {
        /// The queue.
        name: String,
    },
    /// What the queue's reads hold back now, by reason (rate, concurrency, order), as JSON.
    Status {
        /// The queue.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PolicySetArgs {
    /// The queue.
    pub(crate) name: String,
    /// Where the flow key is: a JSON path of the data (a step's input first), `$.customer_id`,
    /// or `meta.NAME`. A sender's `metadata.flow_key` wins; nothing found is the default key.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// In flight per key at most, across every worker on the store.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) concurrency: Option<u32>,
    /// In flight in the whole queue at most.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) max_in_flight: Option<u32>,
    /// A token bucket per key: N/s, N/min or N/h.
    #[arg(long)]
    pub(crate) rate: Option<String>,
    /// Tokens a key's bucket holds at most (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) burst: Option<u32>,
    /// One token bucket for the whole queue: N/s, N/min or N/h.
    #[arg(long)]
    pub(crate) queue_rate: Option<String>,
    /// Tokens the queue's bucket holds at most (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) queue_burst: Option<u32>,
    /// Ordering keys: one message per key at a time, in send order; a dead letter holds the
    /// rest of its key until it is replayed or abandoned.
    #[arg(long)]
    pub(crate) ordered: bool,
    /// Seconds of waiting worth one priority step (default 10).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) aging: Option<u32>,
    /// KEY=N: the key takes N messages per round (default 1); repeatable.
    #[arg(long = "weight")]
    pub(crate) weights: Vec<String>,
}

impl PolicySetArgs {
    /// The policy asked for, checked.
    pub(crate) fn policy(&self) -> Result<Policy, CliError> {
        let rate = |text: &Option<String>, burst: Option<u32>| -> Result<Option<Rate>, CliError> {
            let Some(t) = text else {
                if burst.is_some() {
                    return Err(CliError::Usage(
                        "a burst needs its rate (--rate with --burst, --queue-rate with --queue-burst)".into(),
                    ));
                }
                return Ok(None);
            };
            let r: Rate = t.parse()?;
            Ok(Some(match burst {
                Some(b) => r.with_burst(b)?,
                None => r,
            }))
        };
        let mut weights = std::collections::BTreeMap::new();
        for w in &self.weights {
            let (k, n) = w
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--weight {w:?}: write KEY=N")))?;
            let n: u32 = n.trim().parse().map_err(|_| {
                CliError::Usage(format!("--weight {w:?}: N must be a whole number"))
            })?;
            weights.insert(k.to_owned(), n);
        }
        let policy = Policy {
            key: self.key.as_deref().map(str::parse).transpose()?,
            concurrency: self.concurrency,
            max_in_flight: self.max_in_flight,
            rate: rate(&self.rate, self.burst)?,
            queue_rate: rate(&self.queue_rate, self.queue_burst)?,
            ordered: self.ordered,
            aging_secs: self.aging.unwrap_or(10),
            weights,
        };
        policy.validate()?;
        Ok(policy)
    }
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
    /// Seconds before it becomes visible (at most a year, 31536000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = delay)]
    pub(crate) delay: u64,
    /// Its flow key (`metadata.flow_key`), ahead of any key path of the queue's policy.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Its priority, 0 to 9, higher first (`metadata.flow_priority`).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) priority: Option<i64>,
}

fn name(n: &str) -> Result<QueueName, CliError> {
    Ok(QueueName::new(n)?)
}

/// One message as a JSON line: its ids, times, and the message (parsed when it is JSON).
pub(crate) fn message_json(m: &Message) -> Value {
    let message = serde_json::from_slice::<Value>(&m.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&m.body).into_owned()));
    json!({
        "msg_id": m.msg_id,
        "read_ct": m.read_ct,
        "enqueued_at": m.enqueued_at.to_string(),
        "vt": m.vt.to_string(),
        "message": message,
    })
}

pub(crate) async fn run(args: QueueArgs, store_url: &str) -> Result<(), CliError> {
    // Validate what can be validated before opening anything.
    let queue = match &args.command {
        QueueCommand::Ls => None,
        QueueCommand::Create { name: n }
        | QueueCommand::Read { name: n, .. }
        | QueueCommand::Consume { name: n, .. }
        | QueueCommand::Archive { name: n, .. }
        | QueueCommand::Delete { name: n, .. }
        | QueueCommand::Purge { name: n }
        | QueueCommand::Metrics { name: n }
        | QueueCommand::Dlq { name: n, .. }
        | QueueCommand::Drop { name: n } => Some(name(n)?),
        QueueCommand::Send(a) => Some(name(&a.name)?),
        QueueCommand::Policy(
            PolicyCommand::Show { name: n }
            | PolicyCommand::Clear { name: n }
            | PolicyCommand::Status { name: n },
        ) => Some(name(n)?),
        QueueCommand::Policy(PolicyCommand::Set(a)) => Some(name(&a.name)?),
    };
    let policy = match &args.command {
        QueueCommand::Policy(PolicyCommand::Set(a)) => Some(a.policy()?),
        _ => None,
    };
    let event = match &args.command {
        QueueCommand::Send(a) => {
            let subject = Subject::new(&a.subject)?;
            let data = parse_data(a.data.as_deref(), "queue send")?;
            let mut e = Event::new(subject)
                .with_data(data)
                .with_source("herald-cli");
            if let Some(k) = &a.key {
                e = flow::keyed(e, k.clone());
            }
            if let Some(p) = a.priority {
                e = flow::prioritized(e, p)?;
            }
            Some(e)
        }
        _ => None,
    };
    let writes = matches!(
        args.command,
        QueueCommand::Create { .. } | QueueCommand::Send(_)
    );
    let store = if writes {
        open_store(store_url).await?
    } else {
        open_existing_store(store_url).await?
    };
    if let QueueCommand::Policy(verb) = args.command {
        let queue = queue.ok_or_else(|| CliError::Usage("a queue name is needed".into()))?;
        return with_store!(store, s => policy_command(&s, verb, queue, policy).await);
    }
    with_store!(store, s => command(&s, args.command, queue, event).await)
}

/// `herald queue policy ...`.
async fn policy_command<Q: FlowControl>(
    store: &Q,
    verb: PolicyCommand,
    queue: QueueName,
    policy: Option<Policy>,
) -> Result<(), CliError> {
    match verb {
        PolicyCommand::Set(_) => {
            let policy = policy.ok_or_else(|| CliError::Usage("no policy given".into()))?;
            store.set_policy(&queue, &policy).await?;
            crate::output::warn_line!("queue {queue}: {policy}");
        }
        PolicyCommand::Show { .. } => {
            if let Some(p) = store.policy(&queue).await? {
                out!("{}", p.to_json());
            } else {
                crate::output::warn_line!("queue {queue} has no policy");
            }
        }
        PolicyCommand::Clear { .. } => {
            let had = store.clear_policy(&queue).await?;
            crate::output::warn_line!(
                "queue {queue}: {}",
                if had {
                    "policy cleared"
                } else {
                    "had no policy"
                }
            );
        }
        PolicyCommand::Status { .. } => {
            let status = store.flow_status(&queue).await?;
            out!("{}", serde_json::to_string(&status).unwrap_or_default());
        }
    }
    Ok(())
}

async fn command<Q: Queue>(
    store: &Q,
    command: QueueCommand,
    queue: Option<QueueName>,
    event: Option<Event>,
) -> Result<(), CliError> {
    let q = || {
        queue
            .clone()
            .ok_or_else(|| CliError::Usage("a queue name is needed".into()))
    };
    match command {
        QueueCommand::Create { .. } => {
            let queue = q()?;
            dead_letter_queue(&queue)?;
            store.create(&queue).await?;
            crate::output::warn_line!("queue {queue} ready");
        }
        QueueCommand::Drop { .. } => {
            let queue = q()?;
            must_exist(store, &queue).await?;
            store.drop_queue(&queue).await?;
            let dlq = dead_letter_queue(&queue).ok();
            let mut dropped = vec![queue.to_string()];
            if let Some(dlq) = dlq {
                if store.list().await?.iter().any(|n| n == dlq.as_str()) {
                    store.drop_queue(&dlq).await?;
                    dropped.push(dlq.to_string());
                }
            }
            crate::output::warn_line!("dropped {}", dropped.join(" and "));
        }
        QueueCommand::Ls => {
            for n in store.list().await? {
                out!("{n}");
            }
        }
        QueueCommand::Send(a) => {
            let event = event.ok_or_else(|| CliError::Usage("nothing to send".into()))?;
            let id = store
                .send(&q()?, &event, Duration::from_secs(a.delay))
                .await?;
            out!("{id}");
        }
        QueueCommand::Read { vt, qty, .. } => {
            for m in store.read(&q()?, Duration::from_secs(vt), qty).await? {
                out!("{}", message_json(&m));
            }
        }
        QueueCommand::Consume {
            vt,
            batch,
            until_empty,
            ..
        } => consume(store, &q()?, Duration::from_secs(vt), batch, until_empty).await?,
        QueueCommand::Archive { ids, .. } => {
            let done = store.archive(&q()?, &ids).await?;
            report_missing("archived", &ids, &done)?;
        }
        QueueCommand::Delete { ids, .. } => {
            let done = store.delete(&q()?, &ids).await?;
            report_missing("deleted", &ids, &done)?;
        }
        QueueCommand::Purge { .. } => {
            let n = store.purge(&q()?).await?;
            crate::output::warn_line!("purged {n} message(s) from {}", q()?);
        }
        QueueCommand::Metrics { .. } => {
            let m = store.metrics(&q()?).await?;
            out!("{}", serde_json::to_string(&m).unwrap_or_default());
        }
        QueueCommand::Dlq { limit, .. } => {
            let queue = q()?;
            must_exist(store, &queue).await?;
            let dlq = dead_letter_queue(&queue)?;
            // No dead-letter queue yet: nothing died. Listing creates nothing.
            if store.list().await?.iter().any(|n| n == dlq.as_str()) {
                // Read with a zero visibility timeout: listed, not hidden.
                for m in store.read(&dlq, Duration::ZERO, limit).await? {
                    out!("{}", message_json(&m));
                }
            }
        }
        QueueCommand::Policy(_) => {}
    }
    Ok(())
}

/// The queue's dead-letter queue, `{queue}_dlq`; refused when that name would be too long,
/// so that a queue is never created whose dead letters could not be kept.
fn dead_letter_queue(queue: &QueueName) -> Result<QueueName, CliError> {
    queue.with_suffix("_dlq").map_err(|_| {
        CliError::Usage(format!(
            "queue name {queue:?} is too long: its dead-letter queue {queue}_dlq would be over {} characters (a queue name has at most {})",
            herald::queue::MAX_LEN,
            herald::queue::MAX_LEN - "_dlq".len()
        ))
    })
}

/// Refuses a queue that does not exist, as every other verb does.
async fn must_exist<Q: Queue>(store: &Q, queue: &QueueName) -> Result<(), CliError> {
    if store.list().await?.iter().any(|n| n == queue.as_str()) {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "no queue named {queue} (herald queue ls lists them)"
        )))
    }
}

/// `queue consume`: read, print, archive, in batches. The print comes before the archive, so a
/// message is printed at least once and archived only once printed.
async fn consume<Q: Queue>(
    store: &Q,
    queue: &QueueName,
    vt: Duration,
    batch: usize,
    until_empty: bool,
) -> Result<(), CliError> {
    let batch = batch.max(1);
    let mut told = None;
    loop {
        let messages = store.read(queue, vt, batch).await?;
        if messages.is_empty() {
            if until_empty {
                let hidden = store.metrics(queue).await?.queue_length;
                if hidden == 0 {
                    return Ok(());
                }
                if told != Some(hidden) {
                    told = Some(hidden);
                    crate::output::warn_line!(
                        "herald queue consume: no visible message; waiting for {hidden} hidden one(s) (read by another consumer, hidden for up to --vt {} s, or sent with --delay)",
                        vt.as_secs()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for m in &messages {
            if !crate::output::print_line(&message_json(m).to_string())? {
                // The reader has gone: what was not printed stays unarchived.
                return Ok(());
            }
            ids.push(m.msg_id);
        }
        store.archive(queue, &ids).await?;
    }
}

fn report_missing(verb: &str, asked: &[i64], done: &[i64]) -> Result<(), CliError> {
    let missing: Vec<String> = asked
        .iter()
        .filter(|id| !done.contains(id))
        .map(ToString::to_string)
        .collect();
    crate::output::warn_line!("{verb} {} message(s)", done.len());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "no such message(s): {}",
            missing.join(", ")
        )))
    }
}
