//! The relays: events from the store's parts to JetStream, each once in the stream. The log
//! relay ([`Relay`], `log.rs`) is the outbox: the event store's log in global order, one
//! active relay per destination stream under a named lease, resuming from where the stream
//! itself ends. The queue relay ([`QueueRelay`], `queue.rs`) moves a durable queue's messages
//! (the worker's domain events). Here: their settings, counters, errors and subjects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use herald::Subject;

use crate::jetstream::{JetStream, StreamSpec};
use crate::NatsError;

mod log;
mod queue;

pub use log::Relay;
pub use queue::QueueRelay;

/// How a relay runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Subjects are `{prefix}.{category}.{id}` (default `events`).
    pub prefix: String,
    /// The categories relayed (empty: all but Herald's own, `deadletter`, `replay` and
    /// `herald`).
    pub categories: Vec<String>,
    /// The store's id in every `Nats-Msg-Id` (`{store id}:{global position}`): unique per
    /// store, stable across restarts.
    pub store_id: String,
    /// The JetStream stream that captures `{prefix}.>` (created when missing; default
    /// `HERALD_EVENTS`).
    pub stream: String,
    /// Its duplicate window (default 2 minutes): the longest outage a relay resumes from
    /// without a duplicate in the stream.
    pub duplicate_window: Duration,
    /// Publishes in flight at most (default 256).
    pub window: usize,
    /// How long an idle relay waits before it reads the log again (default 100 ms).
    pub poll: Duration,
    /// A queue relay's visibility timeout: how long a message it read stays hidden before
    /// another relay (or its restart) may read it (default 30 s).
    pub vt: Duration,
    /// The log relay's lease (`relay.{stream}` in the store): how long an active relay that
    /// stops renewing it stays active for the others (default 10 s). A standby takes over
    /// within about 1.25 of these after the active one dies.
    pub lease_ttl: Duration,
    /// Who this relay is, in the lease (default `relay-{pid}-{nanos}`): unique per process.
    pub holder: String,
}

impl RelaySettings {
    /// The defaults for a store known as `store_id`.
    pub fn new(store_id: impl Into<String>) -> Self {
        RelaySettings {
            prefix: "events".into(),
            categories: Vec::new(),
            store_id: store_id.into(),
            stream: "HERALD_EVENTS".into(),
            duplicate_window: Duration::from_secs(120),
            window: 256,
            poll: Duration::from_millis(100),
            vt: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(10),
            holder: format!(
                "relay-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ),
        }
    }

    /// The checkpoint's consumer name in the store: one per destination stream.
    pub fn checkpoint_name(&self) -> String {
        format!("herald-relay.{}", self.stream)
    }

    /// The lease's name in the store: one active log relay per destination stream.
    pub fn lease_name(&self) -> String {
        format!("relay.{}", self.stream)
    }
}

/// What a relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayReport {
    /// Events published and acknowledged as new.
    pub published: u64,
    /// Publishes the stream acknowledged as duplicates (a re-publish after a restart).
    pub duplicates: u64,
    /// Events of the log not relayed (another category).
    pub skipped: u64,
    /// Checkpoints saved.
    pub checkpoints: u64,
    /// Terms begun: each time this relay took the lease (1 for a relay that ran alone).
    pub terms: u64,
    /// Times it resumed from where the stream ends rather than from its checkpoint (the
    /// stream held events acknowledged after the last checkpoint).
    pub skipped_ahead: u64,
    /// Resumes from the checkpoint (the stream's last message not this store's) whose next
    /// event is older than the duplicate window: copies are possible (warned).
    pub stale_resumes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    duplicates: AtomicU64,
    skipped: AtomicU64,
    checkpoints: AtomicU64,
    terms: AtomicU64,
    skipped_ahead: AtomicU64,
    stale_resumes: AtomicU64,
}

impl Counters {
    pub(crate) fn report(&self) -> RelayReport {
        RelayReport {
            published: self.published.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            terms: self.terms.load(Ordering::Relaxed),
            skipped_ahead: self.skipped_ahead.load(Ordering::Relaxed),
            stale_resumes: self.stale_resumes.load(Ordering::Relaxed),
        }
    }

    /// Counts a stream's ack: a new message, or a duplicate it dropped.
    pub(crate) fn acked(&self, duplicate: bool) {
        let c = if duplicate {
            &self.duplicates
        } else {
            &self.published
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes sure the stream of `settings` exists, capturing `{prefix}.>`, with its duplicate
/// window.
pub(crate) async fn ensure_stream(
    js: &JetStream,
    settings: &RelaySettings,
) -> Result<(), RelayError> {
    Subject::new(&format!("{}.x", settings.prefix)).map_err(|e| NatsError::Config {
        key: "relay.prefix",
        reason: format!("{:?}: {e}", settings.prefix),
    })?;
    let mut spec = StreamSpec::new(&settings.stream, [format!("{}.>", settings.prefix)]);
    spec.duplicate_window_secs = settings.duplicate_window.as_secs().max(1);
    js.ensure_stream(&spec).await?;
    Ok(())
}

/// Sends `body` as stored on `subject` under `Nats-Msg-Id` `id`, with
/// `Nats-Expected-Last-Sequence` when `expected` is set (the stream refuses it unless its
/// last sequence is that one); the ack comes later.
pub(crate) async fn send(
    js: &JetStream,
    subject: &Subject,
    body: &[u8],
    id: String,
    expected: Option<u64>,
) -> Result<async_nats::jetstream::context::PublishAckFuture, NatsError> {
    let mut msg = PublishMessage::build()
        .payload(Bytes::copy_from_slice(body))
        .message_id(id);
    if let Some(seq) = expected {
        msg = msg.expected_last_sequence(seq);
    }
    // The body goes unchanged; its trace context also goes as headers, for clients that do
    // not read Herald's envelope.
    if let Some(ctx) = herald::TraceContext::of_body(body) {
        msg = msg.header(herald::TRACEPARENT, ctx.traceparent());
        if let Some(ts) = ctx.tracestate() {
            msg = msg.header(herald::TRACESTATE, ts);
        }
    }
    js.context()
        .send_publish(subject.as_str().to_owned(), msg)
        .await
        .map_err(|err| NatsError::Publish {
            subject: subject.to_string(),
            source: err.to_string().into(),
        })
}

/// A relay's error: the store, or NATS.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] herald::store::StoreError),
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The stream acknowledged a publish at another sequence than the one the relay
    /// expected (another writer on its subjects): the relay reads where the stream ends
    /// again before it goes on.
    #[error("stream {stream}: event at position {position} stored at sequence {got}, expected {expected}")]
    OutOfStep {
        /// The stream.
        stream: String,
        /// The event's global position.
        position: i64,
        /// The sequence the relay expected.
        expected: u64,
        /// The sequence the stream gave.
        got: u64,
    },
}

/// The subject of an event of `stream` under `prefix`: `{prefix}.{category}.{id}`, each
/// character of the id that a subject token may not hold (`.`, `*`, `>`, whitespace) as `_`.
pub fn subject_for(prefix: &str, stream: &str) -> Option<Subject> {
    let (category, id) = stream.split_once('-').unwrap_or((stream, "_"));
    let id: String = id
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    Subject::new(&format!("{prefix}.{category}.{id}")).ok()
}
