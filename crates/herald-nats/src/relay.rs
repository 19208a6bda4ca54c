//! `Relay`: the event store's log to JetStream (the outbox). It reads the log in global order
//! from its own checkpoint, publishes each stored body unchanged on `{prefix}.{category}.{id}`
//! with `Nats-Msg-Id` = `{store id}:{global position}` (a window of acks in flight), and saves
//! its checkpoint after the acks. A relay killed between an ack and its checkpoint publishes
//! those events again on restart, and the stream's duplicate window drops them: exactly once
//! in the stream, within that window.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use herald::store::{EventStore, StreamName};
use herald::Subject;

use crate::jetstream::{JetStream, StreamSpec};
use crate::NatsError;

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
        }
    }

    /// The checkpoint's consumer name in the store: one per destination stream.
    pub fn checkpoint_name(&self) -> String {
        format!("herald-relay.{}", self.stream)
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
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    duplicates: AtomicU64,
    skipped: AtomicU64,
    checkpoints: AtomicU64,
}

impl Counters {
    fn report(&self) -> RelayReport {
        RelayReport {
            published: self.published.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Counts a stream's ack: a new message, or a duplicate it dropped.
    fn acked(&self, duplicate: bool) {
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
async fn ensure_stream(js: &JetStream, settings: &RelaySettings) -> Result<(), RelayError> {
    Subject::new(&format!("{}.x", settings.prefix)).map_err(|e| NatsError::Config {
        key: "relay.prefix",
        reason: format!("{:?}: {e}", settings.prefix),
    })?;
    let mut spec = StreamSpec::new(&settings.stream, [format!("{}.>", settings.prefix)]);
    spec.duplicate_window_secs = settings.duplicate_window.as_secs().max(1);
    js.ensure_stream(&spec).await?;
    Ok(())
}

/// Sends `body` as stored on `subject` under `Nats-Msg-Id` `id`; the ack comes later.
async fn send(
    js: &JetStream,
    subject: &Subject,
    body: &[u8],
    id: String,
) -> Result<async_nats::jetstream::context::PublishAckFuture, NatsError> {
    let msg = PublishMessage::build()
        .payload(Bytes::copy_from_slice(body))
        .message_id(id);
    js.context()
        .send_publish(subject.as_str().to_owned(), msg)
        .await
        .map_err(|err| NatsError::Publish {
            subject: subject.to_string(),
            source: err.to_string().into(),
        })
}

/// The store's log to JetStream.
#[derive(Debug, Clone)]
pub struct Relay<S> {
    store: S,
    js: JetStream,
    settings: RelaySettings,
    counters: Arc<Counters>,
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

impl<S: EventStore> Relay<S> {
    /// A relay of `store` to `js`; makes sure the stream exists with its duplicate window.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for a prefix that is not a subject; JetStream's errors.
    pub async fn new(store: S, js: JetStream, settings: RelaySettings) -> Result<Self, RelayError> {
        ensure_stream(&js, &settings).await?;
        Ok(Relay {
            store,
            js,
            settings,
            counters: Arc::default(),
        })
    }

    /// What it has done so far.
    pub fn report(&self) -> RelayReport {
        self.counters.report()
    }

    fn relayed(&self, stream: &str) -> bool {
        let category = StreamName::new(stream)
            .map(|s| s.category().to_owned())
            .unwrap_or_default();
        if self.settings.categories.is_empty() {
            !matches!(category.as_str(), "deadletter" | "replay" | "herald")
        } else {
            self.settings.categories.contains(&category)
        }
    }

    /// Relays what the log holds after the checkpoint, up to `max` events; returns how many
    /// events it moved past (0: caught up).
    ///
    /// # Errors
    ///
    /// [`RelayError`]; the checkpoint is where the last acknowledged batch left it.
    pub async fn pass(&self, max: usize) -> Result<usize, RelayError> {
        let name = self.settings.checkpoint_name();
        let from = self
            .store
            .checkpoint(&name, "log")
            .await?
            .map_or(0, |(p, _)| p);
        let events = self.store.read_all(from + 1, max).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            return Ok(0);
        };
        let mut acks = std::collections::VecDeque::new();
        for e in &events {
            let subject = match self.relayed(&e.stream) {
                true => subject_for(&self.settings.prefix, &e.stream),
                false => None,
            };
            let Some(subject) = subject else {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let id = format!("{}:{}", self.settings.store_id, e.global_position);
            let ack = send(&self.js, &subject, &e.body, id).await?;
            acks.push_back((subject, ack));
            if acks.len() >= self.settings.window.max(1) {
                self.settle(acks.pop_front()).await?;
            }
        }
        while let Some(a) = acks.pop_front() {
            self.settle(Some(a)).await?;
        }
        // Every publish up to `last` is acknowledged: the checkpoint moves there.
        self.store.save_checkpoint(&name, "log", last, 0).await?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(events.len())
    }

    async fn settle(
        &self,
        ack: Option<(Subject, async_nats::jetstream::context::PublishAckFuture)>,
    ) -> Result<(), RelayError> {
        let Some((subject, ack)) = ack else {
            return Ok(());
        };
        let ack = ack.await.map_err(|err| NatsError::Publish {
            subject: subject.to_string(),
            source: err.to_string().into(),
        })?;
        self.counters.acked(ack.duplicate);
        Ok(())
    }

    /// Relays until `stop` completes; a failed pass is logged and tried again after the poll
    /// interval (its events are published again: the stream drops the duplicates).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was not checkpointed is relayed again by the next run.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> RelayReport {
        tokio::pin!(stop);
        loop {
            let moved = tokio::select! {
                () = &mut stop => return self.report(),
                r = self.pass(4096) => r,
            };
            let idle = match moved {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!("relay: {}", herald::report(&e));
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = &mut stop => return self.report(),
                    () = tokio::time::sleep(self.settings.poll) => {}
                }
            }
        }
    }
}

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
    /// As [`Relay::new`].
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
            let ack = send(&self.js, &subject, &m.body, id).await?;
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
