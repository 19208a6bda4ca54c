//! Flow control on a durable queue: the policy a queue's reads obey (a flow key, keyed and
//! queue-wide concurrency, token-bucket rates, weights, priorities with aging, ordering
//! keys), how it is written and checked, and the [`FlowControl`] contract backends keep.
//! The choice of what a read hands out is made by [`plan`] from facts the backend reads
//! inside its transaction, so every backend applies the same rules.
//!
//! # The rules, as every backend applies them
//!
//! - **Flow key**: `metadata.flow_key` when the sender set it; otherwise the policy's key path
//!   (`$.customer_id`) looked up in a worker step's `input_data` first, then in `data`; or
//!   `meta.NAME` for `metadata.NAME`. A message where nothing is found falls in the default
//!   key, the empty string (shown as `(default)`); never an error.
//! - **In flight**: a message read and not yet settled, or waiting out a retry delay (its
//!   read count is above 0 and it is hidden). Archive, delete or dead-letter frees its slot.
//! - **Keyed concurrency** (`concurrency`): a key with that many in flight hands out nothing;
//!   its messages stay visible and are skipped, never read and put back.
//!   **Queue concurrency** (`max_in_flight`): the same for the whole queue (a handler).
//! - **Rates** (`rate` per key, `queue_rate` for the queue): token buckets of `burst` tokens
//!   refilled at the rate, kept in the store so all readers share them; a read takes one
//!   token per message it hands out. In any window of T seconds at most `burst + rate × T`
//!   messages of one bucket are handed out.
//! - **Fairness**: a read serves keys round-robin, least recently served first, each key up
//!   to its weight (default 1) per round, so a key with 100,000 waiting delays a key with one
//!   by at most one round. (PostgreSQL's read function, for a keyed concurrency limit alone,
//!   keeps the same promise by start-time fair queuing: see `herald-postgres`'s `flow_fn`.)
//! - **Priority** (`metadata.flow_priority`, 0 to 9, default 0, higher first): within a key,
//!   and between keys within a round. **Aging**: a waiting message gains 1 for every
//!   `aging_secs` it has waited (default 10 s), up to 9 within its key, and equal priorities
//!   go oldest first, so a priority-0 message waits at most about 9 × `aging_secs` behind
//!   newer ones. Between keys a head ages only up to the highest priority sent among the
//!   queue's messages (the ceiling): where every message has one priority, fairness alone
//!   orders keys, however long a big key's head has waited.
//! - **Ordering keys** (`ordered`): one message of a key at a time, in send order (a
//!   replayed dead letter keeps its first msg_id as `metadata.flow_seq`, so it goes first);
//!   a message that is dead-lettered holds the rest of its key while its letter is in
//!   `{queue}_dlq` (a sequenced dead letter): `herald dlq replay` or `abandon` of it
//!   releases the key. Other keys go on.
//! - A queue without a policy reads as before, at no cost beyond one lookup.

mod error;
mod plan;
mod policy;
mod rate;

use std::future::Future;

use serde_json::Value;

use super::{QueueError, QueueName};
use crate::message::event::Event;

pub use error::FlowError;
pub use plan::{
    candidates_per_key, effective_priority, plan, rows_of, window_size, windows, Candidate, Hidden,
    KeyState, KeyWindow, Plan, Planned, Row, Waiting,
};
pub use policy::{KeyPath, Policy};
pub use rate::Rate;

/// `metadata.flow_key`: the flow key a sender set.
pub const FLOW_KEY: &str = "flow_key";

/// `metadata.flow_priority`: a message's priority, 0 to 9, higher first.
pub const FLOW_PRIORITY: &str = "flow_priority";

/// `metadata.flow_seq`: the msg_id a replayed dead letter had first, which keeps its place in
/// its ordering key.
pub const FLOW_SEQ: &str = "flow_seq";

/// The highest priority.
pub const MAX_PRIORITY: i64 = 9;

/// The flow key of a message whose key path finds nothing.
pub const DEFAULT_KEY: &str = "";

/// `event` with its flow key set by the sender (`metadata.flow_key`).
pub fn keyed(mut event: Event, key: impl Into<String>) -> Event {
    event
        .metadata
        .insert(FLOW_KEY.to_owned(), Value::String(key.into()));
    event
}

/// `event` with a priority (`metadata.flow_priority`).
///
/// # Errors
///
/// [`FlowError::Priority`] when `priority` is not within 0 to 9.
pub fn prioritized(mut event: Event, priority: i64) -> Result<Event, FlowError> {
    if !(0..=MAX_PRIORITY).contains(&priority) {
        return Err(FlowError::Priority(priority));
    }
    event
        .metadata
        .insert(FLOW_PRIORITY.to_owned(), Value::from(priority));
    Ok(event)
}

/// A replay's body for an ordering key: `body` with `metadata.flow_seq` set to `seq` (the
/// msg_id it first had) unless it has one, so that it keeps its place in its key's order. A
/// body that is not an envelope is returned as it is.
pub fn sequenced(body: &str, seq: i64) -> String {
    match Event::from_json(body.as_bytes()) {
        Ok(d) if !d.event.metadata.contains_key(FLOW_SEQ) => {
            let mut event = d.event;
            event.metadata.insert(FLOW_SEQ.to_owned(), Value::from(seq));
            event.to_json_string()
        }
        _ => body.to_owned(),
    }
}

/// A key as the stores give it: a JSON string as is, any other JSON value as its JSON text,
/// nothing as the default key.
pub fn key_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => DEFAULT_KEY.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// How long an empty read under a policy waits before it looks again: until the next token
/// when a rate held messages back (and that comes sooner than `recheck`, plus 1 ms), else
/// `recheck`.
pub fn recheck_after(
    next_token_us: Option<i64>,
    recheck: std::time::Duration,
) -> std::time::Duration {
    next_token_us
        .and_then(|us| u64::try_from(us).ok())
        .map(|us| std::time::Duration::from_micros(us + 1_000))
        .map_or(recheck, |d| d.min(recheck))
}

/// What reads of a queue wait on right now, by reason (for `/metrics` and the live page).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowStatus {
    /// The queue.
    pub queue: String,
    /// Whether it has a policy.
    pub policy: bool,
    /// Visible messages held back, by reason.
    pub waiting: Waiting,
}

/// A store whose queue reads obey a [`Policy`] per queue, stored beside the queues so that
/// every reader of the store applies it.
pub trait FlowControl: Clone + Send + Sync + 'static {
    /// Sets `queue`'s policy (replacing any); reads obey it from then on (a store that caches
    /// policies says how soon other processes see it).
    ///
    /// # Errors
    ///
    /// [`QueueError::NoSuchQueue`] when the queue does not exist: nothing is stored.
    fn set_policy(
        &self,
        queue: &QueueName,
        policy: &Policy,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// `queue`'s policy, if it has one.
    fn policy(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<Option<Policy>, QueueError>> + Send;

    /// Removes `queue`'s policy (and its buckets); returns whether it had one.
    fn clear_policy(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// What `queue`'s reads would hold back now, by reason.
    fn flow_status(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<FlowStatus, QueueError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::subject::Subject;

    #[test]
    fn keys_and_priorities_are_metadata_and_a_priority_out_of_range_is_refused() {
        let e = Event::new(Subject::new("a.b").expect("a test value"));
        let e = keyed(e, "c-1");
        assert_eq!(e.metadata[FLOW_KEY], "c-1");
        let e = prioritized(e, 9).expect("a test value");
        assert_eq!(e.metadata[FLOW_PRIORITY], 9);
        let err = prioritized(e, 10).expect_err("an error");
        assert_eq!(err.to_string(), "priority 10 is out of range: 0 to 9");
        assert_eq!(key_text(None), "");
        assert_eq!(key_text(Some(&Value::from(42))), "42");
        assert_eq!(key_text(Some(&Value::from("x"))), "x");
    }
}
