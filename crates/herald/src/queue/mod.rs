//! The durable queue contract, with PGMQ's operations and names: create, drop, list, send
//! (with a delay), send_batch, read (visibility timeout, read count), read_with_poll, pop,
//! delete and archive, set_vt, purge, metrics; plus one guarded settle that archives or
//! deletes a message and sends its follow-ups in one transaction, only if the message is
//! still held at the read count it was read with. No database here: backends implement it
//! (`herald-sqlite`, `herald-postgres`), and `memory.rs` is the reference used in tests.
//!
//! # Guarantees every backend keeps
//!
//! - **Acknowledged = committed**: `send`, `send_batch`, `delete`, `archive`, `set_vt` and
//!   `settle` return `Ok` only after their transaction committed durably. Concurrent calls
//!   may share one commit (group commit); a failed commit fails each of them.
//! - **Visibility**: a read hides each message until its visibility timeout (vt) and adds 1
//!   to its read count; a message whose vt ran out is read again (at-least-once).
//! - **Guarded settle**: a settle names the read count it read the message with; if the
//!   message has since been read again (its vt ran out and another consumer took it) or is
//!   gone, the settle changes nothing and says [`Settled::Stale`].

pub mod consume;
pub mod flow;
pub mod memory;
mod name;
mod poll;

use std::future::Future;
use std::time::Duration;

use crate::handler::BoxError;
use crate::message::event::{EnvelopeError, Event};
use crate::message::timestamp::Timestamp;

pub use name::{QueueName, MAX_LEN};
pub use poll::{read_with_wakeup, read_with_wakeup_by};

/// One message read from a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id, unique within the queue and growing in send order.
    pub msg_id: i64,
    /// How many times it has been read (1 on the first read).
    pub read_ct: i32,
    /// When it was sent.
    pub enqueued_at: Timestamp,
    /// Until when it stays hidden from other reads.
    pub vt: Timestamp,
    /// The body as stored: an `Event` envelope in JSON when Herald sent it.
    pub body: Vec<u8>,
}

impl Message {
    /// The body as an [`Event`].
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] when the body is not an envelope (a message sent by other code).
    pub fn event(&self) -> Result<Event, EnvelopeError> {
        Event::from_json(&self.body).map(|d| d.event)
    }
}

/// A queue's figures, as `pgmq.metrics` gives them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueMetrics {
    /// The queue.
    pub queue_name: String,
    /// Messages in the queue (hidden ones included).
    pub queue_length: i64,
    /// Messages a read would get now (the rest are hidden: being worked on, or delayed).
    pub queue_visible_length: i64,
    /// Age of the newest message, in seconds.
    pub newest_msg_age_sec: Option<i64>,
    /// Age of the oldest message, in seconds.
    pub oldest_msg_age_sec: Option<i64>,
    /// Messages ever sent to the queue.
    pub total_messages: i64,
}

/// What a guarded settle does to the message it names.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Remove it.
    Delete,
    /// Move it to the queue's archive.
    Archive,
    /// Hide it for `after`, then it is read again.
    Retry {
        /// The delay.
        after: Duration,
    },
}

/// A guarded settle: what to do with the message, and events to send in the same
/// transaction (a result, a dead letter).
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// What happens to the message.
    pub settle: Settle,
    /// Events sent in the same transaction, each to its queue.
    pub send: Vec<(QueueName, Event)>,
}

impl Settlement {
    /// Only `settle`, nothing sent.
    pub fn only(settle: Settle) -> Self {
        Settlement {
            settle,
            send: Vec::new(),
        }
    }

    /// The one place a queue message's settle is derived from an [`Outcome`](crate::Outcome):
    /// ack archives it; retry hides it for the delay; reject archives it and sends the dead
    /// letter `dead_letter(reason)` to `dlq`, in the same transaction.
    pub fn for_outcome(
        outcome: &crate::Outcome,
        dlq: &QueueName,
        dead_letter: impl FnOnce(&str) -> Event,
    ) -> Self {
        match outcome {
            crate::Outcome::Ack => Settlement::only(Settle::Archive),
            crate::Outcome::Retry { after } => Settlement::only(Settle::Retry { after: *after }),
            crate::Outcome::Reject { reason } => {
                Settlement::only(Settle::Archive).and_send(dlq.clone(), dead_letter(reason))
            }
        }
    }

    /// The sends as (queue, envelope JSON) pairs, as a backend binds them.
    pub fn sends_as_json(&self) -> Vec<(String, String)> {
        self.send
            .iter()
            .map(|(q, e)| (q.to_string(), e.to_json_string()))
            .collect()
    }

    /// Also sends `event` to `queue` in the same transaction.
    pub fn and_send(mut self, queue: QueueName, event: Event) -> Self {
        self.send.push((queue, event));
        self
    }
}

/// What a guarded settle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Done, and these msg_ids were sent (in the order of [`Settlement::send`]).
    Applied {
        /// The ids of the events sent.
        sent: Vec<i64>,
    },
    /// The message was read again since, or is gone: nothing changed.
    Stale,
}

/// A durable-queue failure, naming the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A queue name that PGMQ would refuse; checked before any SQL.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The queue does not exist.
    #[error("no queue named {queue}")]
    NoSuchQueue {
        /// The queue.
        queue: String,
    },
    /// The store failed (a lost connection, a full disk, a busy database).
    #[error("{operation} on queue {queue} failed")]
    Store {
        /// What was attempted.
        operation: &'static str,
        /// The queue ("*" for store-wide operations).
        queue: String,
        /// Whether a retry can help.
        transient: bool,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The store could not be reached at all (refused, unknown host, bad credentials, no
    /// answer in time); the cause says which.
    #[error("cannot connect to {store}")]
    Connect {
        /// The store's URL, any password redacted.
        store: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The store has been closed.
    #[error("the queue store is closed")]
    Closed,
}

impl QueueError {
    /// Whether the same call may succeed later (a store failure marked transient).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            QueueError::Store {
                transient: true,
                ..
            } | QueueError::Connect { .. }
        )
    }

    /// A store failure.
    pub fn store(
        operation: &'static str,
        queue: impl Into<String>,
        transient: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        QueueError::Store {
            operation,
            queue: queue.into(),
            transient,
            source: source.into(),
        }
    }
}

/// A durable queue store with PGMQ's semantics. Cheap to clone: clones share the store.
///
/// Every method takes validated [`QueueName`]s, so no name reaches SQL unchecked; event
/// bodies are always bound parameters.
pub trait Queue: Clone + Send + Sync + 'static {
    /// Its `messaging.system` in a hop's span: `pgmq`, `sqlite`; `herald` by default.
    fn system(&self) -> &'static str {
        "herald"
    }

    /// Creates the queue; a no-op when it exists.
    fn create(&self, queue: &QueueName) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Drops the queue, its messages and its archive; returns whether it existed.
    fn drop_queue(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// The names of all queues, sorted.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Sends one event, visible after `delay`; returns its msg_id once committed.
    fn send(
        &self,
        queue: &QueueName,
        event: &Event,
        delay: Duration,
    ) -> impl Future<Output = Result<i64, QueueError>> + Send;

    /// Sends events in one transaction; returns their msg_ids in order.
    fn send_batch(
        &self,
        queue: &QueueName,
        events: &[Event],
        delay: Duration,
    ) -> impl Future<Output = Result<Vec<i64>, QueueError>> + Send;

    /// Reads up to `qty` visible messages, oldest first, hiding each for `vt` and adding 1
    /// to its read count.
    fn read(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
    ) -> impl Future<Output = Result<Vec<Message>, QueueError>> + Send;

    /// As [`Queue::read`], but waits up to `max_wait` for a first message when none is
    /// visible (woken by a send, not by spinning).
    fn read_with_poll(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Vec<Message>, QueueError>> + Send;

    /// Reads and deletes up to `qty` visible messages at once.
    fn pop(
        &self,
        queue: &QueueName,
        qty: usize,
    ) -> impl Future<Output = Result<Vec<Message>, QueueError>> + Send;

    /// Deletes messages; returns the ids that existed.
    fn delete(
        &self,
        queue: &QueueName,
        msg_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<i64>, QueueError>> + Send;

    /// Moves messages to the queue's archive; returns the ids that existed.
    fn archive(
        &self,
        queue: &QueueName,
        msg_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<i64>, QueueError>> + Send;

    /// Hides a message for `vt` from now; returns it as updated, or `None` if it is gone.
    fn set_vt(
        &self,
        queue: &QueueName,
        msg_id: i64,
        vt: Duration,
    ) -> impl Future<Output = Result<Option<Message>, QueueError>> + Send;

    /// Deletes every message (not the archive); returns how many.
    fn purge(&self, queue: &QueueName) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// The queue's figures.
    fn metrics(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<QueueMetrics, QueueError>> + Send;

    /// Messages in the queue's archive, oldest first (at most `limit`).
    fn archived(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Message>, QueueError>> + Send;

    /// The guarded settle: in one transaction, if `msg_id` is still in `queue` with read
    /// count `read_ct`, applies `settlement` (archive, delete or retry, and the sends);
    /// otherwise changes nothing and returns [`Settled::Stale`].
    fn settle(
        &self,
        queue: &QueueName,
        msg_id: i64,
        read_ct: i32,
        settlement: Settlement,
    ) -> impl Future<Output = Result<Settled, QueueError>> + Send;
}
