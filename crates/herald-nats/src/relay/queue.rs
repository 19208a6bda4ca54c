//! `QueueRelay`: a durable queue (the worker's domain events) to JetStream, each message
//! archived once the stream acknowledged it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use herald::Subject;

use super::{ensure_stream, send, Counters, RelayError, RelayReport, RelaySettings};
use crate::jetstream::JetStream;
use crate::NatsError;

/// A durable queue to JetStream (the worker's domain events, `{ns}_domain_events`, say):
/// each message's body unchanged on `{prefix}.{event subject}` with `Nats-Msg-Id` =
/// `{store id}:{queue}:{msg_id}`, archived after its ack. A relay killed between the ack and
/// the archive reads the message again once its visibility timeout runs out and publishes it
/// again; the stream's duplicate window drops it.
#[derive(Debug, Clone)]
pub struct QueueRelay<Q> {
    queue_store: Q,
    queue: herald::queue::QueueName,
    js: JetStream,
    settings: RelaySettings,
    counters: Arc<Counters>,
}

impl<Q: herald::queue::Queue> QueueRelay<Q> {
    /// A relay of `queue` on `store` to `js`; makes sure the stream exists.
    ///
    /// # Errors
    ///
    /// As [`crate::Relay::new`].
    pub async fn new(
        store: Q,
        queue: herald::queue::QueueName,
        js: JetStream,
        settings: RelaySettings,
    ) -> Result<Self, RelayError> {
        ensure_stream(&js, &settings).await?;
        Ok(QueueRelay {
            queue_store: store,
            queue,
            js,
            settings,
            counters: Arc::default(),
        })
    }

    /// What it has done so far (`skipped`: messages that were not envelopes, archived).
    pub fn report(&self) -> RelayReport {
        self.counters.report()
    }

    /// Relays up to `max` visible messages; returns how many it took (0: nothing visible).
    ///
    /// # Errors
    ///
    /// [`RelayError`]: NATS, or the queue (as [`RelayError::Store`], naming it); what was not
    /// archived is read again after its visibility timeout.
    pub async fn pass(&self, max: usize) -> Result<usize, RelayError> {
        let messages = self
            .queue_store
            .read(&self.queue, self.settings.vt, max)
            .await
            .map_err(|e| queue_error(&self.queue, e))?;
        let mut acks = Vec::with_capacity(messages.len());
        let mut done = Vec::with_capacity(messages.len());
        for m in &messages {
            let subject = m.event().ok().and_then(|e| {
                Subject::new(&format!("{}.{}", self.settings.prefix, e.subject)).ok()
            });
            let Some(subject) = subject else {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                done.push(m.msg_id);
                continue;
            };
            let id = format!("{}:{}:{}", self.settings.store_id, self.queue, m.msg_id);
            let ack = send(&self.js, &subject, &m.body, id, None).await?;
            acks.push((subject, ack, m.msg_id));
        }
        for (subject, ack, msg_id) in acks {
            let ack = ack.await.map_err(|err| NatsError::Publish {
                subject: subject.to_string(),
                source: err.to_string().into(),
            })?;
            self.counters.acked(ack.duplicate);
            done.push(msg_id);
        }
        // Archived only once stored in the stream.
        self.queue_store
            .archive(&self.queue, &done)
            .await
            .map_err(|e| queue_error(&self.queue, e))?;
        Ok(messages.len())
    }

    /// Messages left in the queue, visible or not (0: all relayed and archived).
    ///
    /// # Errors
    ///
    /// The queue's, as [`RelayError::Store`].
    pub async fn left(&self) -> Result<i64, RelayError> {
        self.queue_store
            .metrics(&self.queue)
            .await
            .map(|m| m.queue_length)
            .map_err(|e| queue_error(&self.queue, e))
    }
}

fn queue_error(queue: &herald::queue::QueueName, e: herald::queue::QueueError) -> RelayError {
    RelayError::Store(herald::store::StoreError::Backend {
        operation: "relay from a queue",
        transient: e.is_transient(),
        source: format!("queue {queue}: {}", herald::report(&e)).into(),
    })
}
