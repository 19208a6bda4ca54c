//! Events between the store and JetStream: `herald relay`, the event store's log on
//! `--store` to JetStream on `--to` (the outbox), exactly once in the stream within its
//! duplicate window; and `herald inbox`, a JetStream stream into the store, each message
//! appended once. Both run until SIGINT/SIGTERM, or until caught up / idle.

use std::time::Duration;

use clap::Args;
use herald_nats::{Inbox, Relay, RelaySettings};

use crate::connect::{connect_nats, open_existing_store, with_store};
use crate::opts::{BusOpt, ConfigOpt, StoreOpt};
use crate::output::warn_line;
use crate::CliError;

#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// The NATS server to relay to (default: --bus, the config's bus).
    #[arg(long)]
    to: Option<String>,
    /// The categories to relay, comma-separated (default: all but Herald's own).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Subjects are PREFIX.CATEGORY.ID (default `events`; `domain` with --from-queue, on
    /// PREFIX.SUBJECT).
    #[arg(long)]
    subject_prefix: Option<String>,
    /// The JetStream stream that captures PREFIX.>, created when missing (default
    /// `HERALD_EVENTS`; `HERALD_DOMAIN_EVENTS` with --from-queue). The log relay owns its
    /// stream: nothing else should publish on its subjects.
    #[arg(long)]
    stream: Option<String>,
    /// The store's id in each Nats-Msg-Id (STORE_ID:GLOBAL_POSITION); default: one derived
    /// from the store URL.
    #[arg(long)]
    store_id: Option<String>,
    /// The stream's duplicate window in seconds. A relay resumes after the last event the
    /// stream holds; only when that message is not this store's (another publisher, a purged
    /// stream) does it resume from its checkpoint, and then this is the longest outage it
    /// resumes from without a copy.
    #[arg(long, default_value_t = 120)]
    duplicate_window: u64,
    /// Relay this durable queue instead of the log (the worker's domain events:
    /// default_domain_events): each message on PREFIX.SUBJECT, archived after its ack.
    #[arg(long)]
    from_queue: Option<String>,
    /// With --from-queue: seconds a message read stays hidden before it is read again (a
    /// relay killed before its archive).
    #[arg(long, default_value_t = 30)]
    vt: u64,
    /// Seconds the relay's lease lasts unrenewed: one relay per stream is active, the others
    /// wait and take over once it lapses.
    #[arg(long, default_value_t = 10.0, value_parser = crate::opts::positive_secs)]
    lease: f64,
    /// Seconds an idle relay waits before it reads the log again: the lag it adds at most.
    #[arg(long, default_value_t = 0.1, value_parser = crate::opts::positive_secs)]
    poll: f64,
    /// Stop once the whole log (or queue) is relayed.
    #[arg(long)]
    until_caught_up: bool,
}

/// A stable id for the store at `url`: FNV-1a of the URL.
fn store_id(url: &str) -> String {
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("store-{hash:016x}")
}

pub(crate) async fn run(args: RelayArgs, store_url: &str, bus: &str) -> Result<(), CliError> {
    let to = args.to.clone().unwrap_or_else(|| bus.to_owned());
    let mut settings =
        RelaySettings::new(args.store_id.clone().unwrap_or_else(|| store_id(store_url)));
    let (prefix, stream) = match args.from_queue {
        Some(_) => ("domain", "HERALD_DOMAIN_EVENTS"),
        None => ("events", "HERALD_EVENTS"),
    };
    settings.prefix = args.subject_prefix.clone().unwrap_or_else(|| prefix.into());
    settings.categories = args.categories.clone();
    settings.stream = args.stream.clone().unwrap_or_else(|| stream.into());
    settings.duplicate_window = Duration::from_secs(args.duplicate_window.max(1));
    settings.vt = Duration::from_secs(args.vt.max(1));
    settings.lease_ttl = Duration::from_secs_f64(args.lease);
    settings.poll = Duration::from_secs_f64(args.poll);
    let from_queue = match &args.from_queue {
        Some(q) => Some(herald::queue::QueueName::new(q)?),
        None => None,
    };
    let store = open_existing_store(store_url).await?;
    let nats = connect_nats(&to).await?;
    match from_queue {
        Some(queue) => {
            with_store!(store, s => relay_queue(s, queue, nats, settings, args.until_caught_up).await)
        }
        None => with_store!(store, s => relay(s, nats, settings, args.until_caught_up).await),
    }
}

async fn relay_queue<Q: herald::queue::Queue>(
    store: Q,
    queue: herald::queue::QueueName,
    nats: herald_nats::Nats,
    settings: RelaySettings,
    until_caught_up: bool,
) -> Result<(), CliError> {
    let other = |e: herald_nats::RelayError| CliError::Other(herald::report(&e));
    let (stream, poll) = (settings.stream.clone(), settings.poll);
    let relay = herald_nats::QueueRelay::new(store, queue.clone(), nats.jetstream(), settings)
        .await
        .map_err(other)?;
    warn_line!("herald relay: queue {queue} to stream {stream}");
    let signal = crate::signal::terminated();
    tokio::pin!(signal);
    loop {
        let took = tokio::select! {
            _ = &mut signal => break,
            r = relay.pass(256) => r.map_err(other)?,
        };
        if took == 0 {
            if until_caught_up && relay.left().await.map_err(other)? == 0 {
                break;
            }
            tokio::select! {
                _ = &mut signal => break,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
    let r = relay.report();
    warn_line!(
        "herald relay: {} published, {} duplicates dropped by the stream, {} not envelopes (archived)",
        r.published,
        r.duplicates,
        r.skipped
    );
    Ok(())
}

async fn relay<S: herald::store::EventStore + herald::store::BrokerStore>(
    store: S,
    nats: herald_nats::Nats,
    settings: RelaySettings,
    until_caught_up: bool,
) -> Result<(), CliError> {
    let (stream, prefix) = (settings.stream.clone(), settings.prefix.clone());
    let lease = settings.lease_ttl;
    let relay = Relay::new(store, nats.jetstream(), settings)
        .await
        .map_err(|e| CliError::Other(herald::report(&e)))?;
    warn_line!("herald relay: the store's log to stream {stream} on {prefix}.CATEGORY.ID");
    let report = if until_caught_up {
        let mut standby = false;
        loop {
            match relay.pass(4096).await {
                Ok(Some(0)) => break relay.report(),
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !standby {
                        warn_line!("herald relay: standby, another relay holds the lease");
                        standby = true;
                    }
                    tokio::time::sleep(lease / 4).await;
                }
                Err(e) => {
                    warn_line!("herald relay: {} (trying again)", herald::report(&e));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    } else {
        let signal = crate::signal::terminated();
        relay
            .run(async move {
                signal.await;
            })
            .await
    };
    relay.release().await;
    warn_line!(
        "herald relay: {} published, {} duplicates dropped by the stream, {} skipped (other categories), {} term(s), resumed from the stream's end {} time(s)",
        report.published,
        report.duplicates,
        report.skipped,
        report.terms,
        report.skipped_ahead
    );
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct InboxArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) bus: BusOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// The JetStream stream to take events from.
    #[arg(long)]
    from: String,
    /// The durable consumer's name (its position survives restarts).
    #[arg(long, default_value = "herald-inbox")]
    consumer: String,
    /// Seconds a delivered message stays unacked before the server delivers it again.
    #[arg(long, default_value_t = 10)]
    ack_wait: u64,
    /// Stop once nothing is left: no message waiting, none delivered and not yet acked.
    #[arg(long)]
    until_idle: bool,
}

pub(crate) async fn inbox(args: InboxArgs, store_url: &str, bus: &str) -> Result<(), CliError> {
    let store = crate::connect::open_store(store_url).await?;
    let nats = connect_nats(bus).await?;
    with_store!(store, s => take_in(s, nats, &args).await)
}

async fn take_in<S: herald::store::EventStore>(
    store: S,
    nats: herald_nats::Nats,
    args: &InboxArgs,
) -> Result<(), CliError> {
    let ack_wait = Duration::from_secs(args.ack_wait.max(1));
    let inbox = Inbox::new(
        store,
        &nats.jetstream(),
        &args.from,
        &args.consumer,
        ack_wait,
    )
    .await
    .map_err(|e| CliError::Other(herald::report(&e)))?;
    warn_line!(
        "herald inbox: stream {} into the store (consumer {}), each message once",
        args.from,
        args.consumer
    );
    let report = if args.until_idle {
        loop {
            match inbox.pass(256, Duration::from_secs(1)).await {
                Ok(0) => {
                    let drained = inbox
                        .drained()
                        .await
                        .map_err(|e| CliError::Other(herald::report(&e)))?;
                    if drained {
                        break inbox.report();
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(CliError::Other(herald::report(&e))),
            }
        }
    } else {
        let signal = crate::signal::terminated();
        inbox
            .run(async move {
                signal.await;
            })
            .await
    };
    warn_line!(
        "herald inbox: {} appended, {} duplicates acked without a second append, {} rejected",
        report.appended,
        report.duplicates,
        report.rejected
    );
    Ok(())
}
