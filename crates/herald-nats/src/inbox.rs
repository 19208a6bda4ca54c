//! `Inbox`: JetStream into the event store. A durable pull consumer whose every message is
//! appended to the store once, whatever the redeliveries: its key (the `Nats-Msg-Id` header,
//! else the envelope's event id, else `{stream}:{sequence}`) is stored in the append's own
//! transaction (`EventStore::append_once_all`, one transaction per fetched batch), and the
//! message is acked only after that commit.
//! A message whose subject is `{prefix}.{category}.{id}` goes to the store stream
//! `{category}-{id}` (the subject's last two tokens); a body that is not an envelope, or a
//! subject that makes no stream name, is termed and counted.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::store::{EventStore, KeyedWrite, StreamName};

use crate::jetstream::{ConsumerSpec, DurableConsumer, JetStream};
use crate::NatsError;

/// What an inbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InboxReport {
    /// Messages appended to the store.
    pub appended: u64,
    /// Messages whose key was stored already (a redelivery, a re-publish): acked, not
    /// appended again.
    pub duplicates: u64,
    /// Messages termed: not an envelope, or no stream name in their subject.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    appended: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

/// A JetStream stream into the event store.
pub struct Inbox<S> {
    store: S,
    consumer: DurableConsumer,
    stream: String,
    counters: Arc<Counters>,
}

impl<S> std::fmt::Debug for Inbox<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// The store stream of a message on `subject`: `{category}-{id}` from its last two tokens.
pub fn stream_for_subject(subject: &str) -> Option<StreamName> {
    let mut tokens = subject.rsplit('.');
    let id = tokens.next()?;
    let category = tokens.next()?;
    StreamName::new(&format!("{category}-{id}")).ok()
}

impl<S: EventStore> Inbox<S> {
    /// An inbox of JetStream stream `stream` through the durable consumer `consumer`.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] (no such stream, a conflicting consumer).
    pub async fn new(
        store: S,
        js: &JetStream,
        stream: &str,
        consumer: &str,
        ack_wait: Duration,
    ) -> Result<Self, NatsError> {
        let spec = ConsumerSpec::durable(consumer).ack_wait(ack_wait);
        let consumer = js.durable_consumer(stream, &spec).await?;
        Ok(Inbox {
            store,
            consumer,
            stream: stream.to_owned(),
            counters: Arc::default(),
        })
    }

    /// What it has done so far.
    pub fn report(&self) -> InboxReport {
        let c = &self.counters;
        InboxReport {
            appended: c.appended.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// Takes one batch (up to `max`, waiting up to `wait` for the first); returns how many
    /// messages it settled.
    ///
    /// # Errors
    ///
    /// NATS or the store; what was not acked is delivered again.
    pub async fn pass(&self, max: usize, wait: Duration) -> Result<usize, InboxError> {
        let batch = self.consumer.fetch(max, wait).await?;
        let n = batch.len();
        let mut writes = Vec::with_capacity(n);
        let mut taken = Vec::with_capacity(n);
        for d in batch {
            let Some(stream) = stream_for_subject(d.subject()) else {
                tracing::warn!(
                    "inbox {}: no stream name in subject {}: termed",
                    self.stream,
                    d.subject()
                );
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                d.term().await?;
                continue;
            };
            let key = match (d.message_id(), d.event.event_id()) {
                (Some(id), _) => id.to_owned(),
                (None, Some(id)) => id.to_owned(),
                (None, None) => format!("{}:{}", self.stream, d.stream_sequence),
            };
            writes.push(KeyedWrite {
                stream,
                event: (*d.event).clone(),
                key,
            });
            taken.push(d);
        }
        // One transaction for the batch; each message acked after its commit: a crash before
        // the acks redelivers them, and their keys make the second append a duplicate.
        let appended = self.store.append_once_all(&writes).await?;
        for (d, new) in taken.into_iter().zip(appended) {
            let counter = match new {
                true => &self.counters.appended,
                false => &self.counters.duplicates,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            d.ack().await?;
        }
        Ok(n)
    }

    /// Whether nothing is left: no message waiting, none delivered and not acked (one a
    /// killed inbox held comes back after the ack wait).
    ///
    /// # Errors
    ///
    /// NATS.
    pub async fn drained(&self) -> Result<bool, NatsError> {
        Ok(self.consumer.backlog().await? == (0, 0))
    }

    /// Runs until `stop` completes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was not acked is delivered again, and appended at most once.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> InboxReport {
        tokio::pin!(stop);
        loop {
            let r = tokio::select! {
                () = &mut stop => return self.report(),
                r = self.pass(256, Duration::from_millis(500)) => r,
            };
            if let Err(e) = r {
                tracing::warn!("inbox {}: {}", self.stream, herald::report(&e));
                tokio::select! {
                    () = &mut stop => return self.report(),
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// An inbox's error: NATS, or the store.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] herald::store::StoreError),
}
