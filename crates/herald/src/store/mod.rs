//! The event store contract: append events to a stream (`category-id`) under a write
//! condition, read a stream, a category or the whole log from a position. Each stored event
//! has its stream position (from 0) and a global position (from 1) that grows in commit order.
//!
//! # The no-skip rule
//!
//! A reader following the log (or a category) by global position never skips an event that
//! commits later with a lower position. Every backend gets this by **serialising appends**: an
//! append takes the store's append lock (PostgreSQL: a transaction-level advisory lock;
//! SQLite: its single writer; memory: a mutex), so global positions are handed out in commit
//! order and there is never a gap to skip. The cost is one append at a time per store, measured
//! by `herald bench store`.

pub mod broker;
pub mod memory;
mod name;

use std::future::Future;

use crate::handler::BoxError;
use crate::message::event::{EnvelopeError, Event};
use crate::message::timestamp::Timestamp;

pub use broker::{
    Allocation, AllocationChange, BrokerSnapshot, BrokerState, BrokerStore, CountProjection,
    GroupInfo, Lease, LeaseRow, NodeInfo, NodeRow, NodeState, COORDINATOR_LEASE,
};
pub use name::StreamName;

/// When an append may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteCondition {
    /// Whatever the stream holds.
    Any,
    /// Only if the stream has no event yet.
    NoStream,
    /// Only if the stream's last position is exactly this.
    ExpectedPosition(i64),
}

/// One stream's part of an [`EventStore::append_all`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamWrite {
    /// The stream.
    pub stream: StreamName,
    /// The events, appended in order.
    pub events: Vec<Event>,
    /// What the stream must be at first.
    pub condition: WriteCondition,
}

/// One event appended under a key by [`EventStore::append_once_all`] (an inbox's message id).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedWrite {
    /// The stream.
    pub stream: StreamName,
    /// The event.
    pub event: Event,
    /// Its key: appended only if no event was appended under it before.
    pub key: String,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its place in the whole log (from 1, in commit order).
    pub global_position: i64,
    /// Its stream.
    pub stream: String,
    /// Its place in the stream (from 0).
    pub position: i64,
    /// When it was stored.
    pub recorded_at: Timestamp,
    /// The envelope as stored.
    pub body: Vec<u8>,
}

impl StoredEvent {
    /// The envelope.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] when the body is not an envelope.
    pub fn event(&self) -> Result<Event, EnvelopeError> {
        Event::from_json(&self.body).map(|d| d.event)
    }

    /// The stream's category (the part before the first `-`).
    pub fn category(&self) -> &str {
        self.stream.split('-').next().unwrap_or(&self.stream)
    }
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream position of the last event appended.
    pub position: i64,
    /// The global position of the last event appended.
    pub global_position: i64,
}

/// An event store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write condition did not hold; nothing was appended.
    #[error("stream {stream}: expected {expected}, but the stream is at {actual}")]
    WrongPosition {
        /// The stream.
        stream: String,
        /// What the condition expected (`no stream`, or a position).
        expected: String,
        /// Where the stream is (`no stream`, or its last position).
        actual: String,
    },
    /// A malformed stream or category name; checked before any SQL.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The backend failed.
    #[error("{operation} failed")]
    Backend {
        /// What was attempted.
        operation: &'static str,
        /// Whether a retry can help.
        transient: bool,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A checkpoint write carried an older epoch than the one stored: the writer lost its
    /// ownership (fencing); nothing was written.
    #[error("checkpoint {consumer}/{source_name}: epoch {epoch} is stale (the store holds epoch {current})")]
    StaleEpoch {
        /// The consumer.
        consumer: String,
        /// The source (a category or stream).
        source_name: String,
        /// The epoch the write carried.
        epoch: u64,
        /// The epoch stored.
        current: u64,
    },
    /// A coordinator's write carried a lease it no longer holds (another node took it, or it
    /// expired); nothing was written.
    #[error("coordinator {holder}: lease epoch {epoch} is no longer held")]
    LeaseLost {
        /// The node that wrote.
        holder: String,
        /// The epoch it carried.
        epoch: u64,
    },
    /// The store has been closed.
    #[error("the event store is closed")]
    Closed,
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                transient: true,
                ..
            }
        )
    }

    /// The fencing error: `consumer`'s checkpoint on `source` refused for `epoch` because the
    /// store holds `current`.
    pub fn stale_epoch(consumer: &str, source: &str, epoch: u64, current: u64) -> Self {
        StoreError::StaleEpoch {
            consumer: consumer.to_owned(),
            source_name: source.to_owned(),
            epoch,
            current,
        }
    }

    /// The failed condition's error for `stream`, given its last position (`None`: empty).
    pub fn wrong_position(
        stream: &StreamName,
        condition: WriteCondition,
        actual: Option<i64>,
    ) -> Self {
        let show =
            |p: Option<i64>| p.map_or_else(|| "no stream".to_owned(), |p| format!("position {p}"));
        StoreError::WrongPosition {
            stream: stream.to_string(),
            expected: match condition {
                WriteCondition::Any => "any position".into(),
                WriteCondition::NoStream => "no stream".into(),
                WriteCondition::ExpectedPosition(p) => format!("position {p}"),
            },
            actual: show(actual),
        }
    }
}

/// Whether `condition` holds for a stream whose last position is `last` (`None`: empty).
pub fn condition_holds(condition: WriteCondition, last: Option<i64>) -> bool {
    match condition {
        WriteCondition::Any => true,
        WriteCondition::NoStream => last.is_none(),
        WriteCondition::ExpectedPosition(p) => last == Some(p),
    }
}

/// An event store. Cheap to clone: clones share the store.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` in one transaction if `condition` holds; returns where
    /// the last one went once committed.
    fn append(
        &self,
        stream: &StreamName,
        events: &[Event],
        condition: WriteCondition,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Appends to several streams in one transaction: every write's condition holds and all
    /// of them are appended, or none is (a dead-letter replay: the letter's marker, the event
    /// sent back and the audit record).
    fn append_all(
        &self,
        writes: &[StreamWrite],
    ) -> impl Future<Output = Result<Vec<Appended>, StoreError>> + Send;

    /// Appends `event` to `stream` unless an event was appended under `key` before (an inbox's
    /// message id): the key is stored in the append's own transaction, so a redelivered
    /// message is appended once. `None` when the key was there (a duplicate, nothing written).
    fn append_once(
        &self,
        stream: &StreamName,
        event: &Event,
        key: &str,
    ) -> impl Future<Output = Result<Option<Appended>, StoreError>> + Send;

    /// [`EventStore::append_once`] for a batch, in one transaction: whether each write was
    /// appended (`false`: its key was stored before, or earlier in the batch). The events of
    /// one stream keep their order in the batch; streams are appended in the order they first
    /// appear. All or nothing: on an error none is appended.
    fn append_once_all(
        &self,
        writes: &[KeyedWrite],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Up to `max` events of `stream` from stream position `from`, in order.
    fn read_stream(
        &self,
        stream: &StreamName,
        from: i64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// How many events of `category` have a global position above `after` (a consumer's
    /// lag behind the head, from its checkpoint). The default pages through
    /// [`EventStore::read_category`]; the SQL stores count in one query.
    fn count_after(
        &self,
        category: &str,
        after: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async move {
            let (mut n, mut from) = (0u64, after.saturating_add(1));
            loop {
                let page = self.read_category(category, from, 1000).await?;
                let Some(last) = page.last() else {
                    return Ok(n);
                };
                n += page.len() as u64;
                from = last.global_position + 1;
            }
        }
    }

    /// Up to `max` events of `category` from global position `from`, in order.
    fn read_category(
        &self,
        category: &str,
        from: i64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Up to `max` events of the whole log from global position `from`, in order.
    fn read_all(
        &self,
        from: i64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The streams and their last positions, sorted by name.
    fn streams(&self) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;

    /// The checkpoint of `consumer` on `source`: the last position it processed, and the
    /// epoch of the owner that wrote it. `None` when it never checkpointed.
    fn checkpoint(
        &self,
        consumer: &str,
        source: &str,
    ) -> impl Future<Output = Result<Option<(i64, u64)>, StoreError>> + Send;

    /// Saves a checkpoint, fenced by `epoch`: refused with [`StoreError::StaleEpoch`] when the
    /// stored checkpoint, or the source's allocation ([`broker`]), carries a higher epoch (a
    /// newer owner), so a paused node that lost its sources cannot move their checkpoints.
    fn save_checkpoint(
        &self,
        consumer: &str,
        source: &str,
        position: i64,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
