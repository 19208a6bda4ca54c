//! Seed 001's domain events on two paths: `durable` (the `{namespace}_domain_events` queue,
//! acknowledged after commit, group commit applies), `fast` (an in-process broadcast with a
//! bounded buffer; what a lagging receiver misses is counted exactly in
//! `domain_events_dropped`), and `broadcast` (both).

mod fast;
mod poller;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::queue::{Queue, QueueError, QueueName};
use herald::{Event, Subject, SubjectError, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use fast::{FastReceiver, PollHandle};
pub use poller::{InProcessDomainEventPoller, PollerError, DOMAIN_EVENT_RECEIVED};

/// A domain event (seed 001's `DomainEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// What happened, e.g. `order.created`.
    pub event_type: String,
    /// Its data.
    pub payload: Map<String, Value>,
    /// Carried through from the step or request that caused it.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    /// When it happened.
    pub timestamp: Timestamp,
}

/// A domain event on the fast path (seed 001's `InProcessDomainEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InProcessDomainEvent {
    /// This event's id.
    pub event_id: Uuid,
    /// What happened.
    pub event_type: String,
    /// Its data.
    pub payload: Map<String, Value>,
    /// The correlation id.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Who published it.
    pub source: String,
}

/// Which path a domain event takes (declared with a step's result, so defined beside it).
pub use crate::step::DeliveryMode;

/// Why a domain event was not published.
#[derive(Debug, thiserror::Error)]
pub enum DomainEventError {
    /// The event type does not make a valid subject (`domain.{event_type}`).
    #[error("event type {0:?} is not a valid subject suffix")]
    EventType(String, #[source] SubjectError),
    /// The durable path failed; nothing was acknowledged.
    #[error("durable publish of {event_type} failed")]
    Durable {
        /// The event type.
        event_type: String,
        /// The store's error.
        #[source]
        source: QueueError,
    },
}

/// The publisher's counters.
#[derive(Debug, Default)]
pub struct DomainEventCounters {
    /// Events accepted by at least one path (durable: committed).
    pub(crate) published: AtomicU64,
    /// Fast-path events that receivers missed because they lagged (summed over receivers).
    pub(crate) dropped: AtomicU64,
    /// Publishes that failed (nothing acknowledged).
    pub(crate) failed: AtomicU64,
    /// Of `dropped`, what the publisher's own receiver (`poll_in_process_events`, the
    /// poller) missed; each [`FastReceiver`] counts its own in [`FastReceiver::missed`].
    pub(crate) dropped_by_poll: AtomicU64,
}

/// The domain-event publisher's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainEventSnapshot {
    /// Events accepted by at least one path (durable: committed).
    pub published: u64,
    /// Fast-path events that receivers missed because they lagged (summed over receivers).
    pub dropped: u64,
    /// Publishes that failed (nothing acknowledged).
    pub failed: u64,
    /// Of `dropped`, what the publisher's own receiver (`poll_in_process_events`, the
    /// poller) missed; each [`FastReceiver`] counts its own in [`FastReceiver::missed`].
    pub dropped_by_poll: u64,
}

impl DomainEventCounters {
    /// The counts now, as plain numbers.
    pub fn snapshot(&self) -> DomainEventSnapshot {
        DomainEventSnapshot {
            published: self.published.load(std::sync::atomic::Ordering::Relaxed),
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
            failed: self.failed.load(std::sync::atomic::Ordering::Relaxed),
            dropped_by_poll: self
                .dropped_by_poll
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The durable queue's msg_id, when the durable path was taken.
    pub msg_id: Option<i64>,
    /// Fast-path receivers it was handed to (0 when none listen, or not taken).
    pub fast_receivers: usize,
}

/// Where a worker publishes the domain events its handlers declare (implemented by
/// [`DomainEventPublisher`] on any store).
pub trait DomainEventSink: Send + Sync + 'static {
    /// Publishes one declared event.
    fn publish_declared(
        self: Arc<Self>,
        event: crate::step::DeclaredEvent,
        correlation_id: Option<Uuid>,
    ) -> herald::BoxFuture<Result<(), DomainEventError>>;
}

impl<Q: Queue> DomainEventSink for DomainEventPublisher<Q> {
    fn publish_declared(
        self: Arc<Self>,
        event: crate::step::DeclaredEvent,
        correlation_id: Option<Uuid>,
    ) -> herald::BoxFuture<Result<(), DomainEventError>> {
        Box::pin(async move {
            self.publish(&event.event_type, event.payload, correlation_id, event.mode)
                .await
                .map(drop)
        })
    }
}

/// Seed 001's `DomainEventPublisher` with the three delivery modes of its real project.
pub struct DomainEventPublisher<Q> {
    store: Q,
    queue: QueueName,
    source: String,
    default_correlation_id: Option<Uuid>,
    fast: fast::Fast,
    counters: Arc<DomainEventCounters>,
}

impl<Q> std::fmt::Debug for DomainEventPublisher<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainEventPublisher")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<Q: Queue> DomainEventPublisher<Q> {
    /// A publisher for `namespace` on `store` (creating `{namespace}_domain_events`), with a
    /// fast-path buffer of `fast_capacity` events per receiver.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`] for a namespace that makes a bad queue name; store errors.
    pub async fn new(
        store: Q,
        namespace: &str,
        source: &str,
        fast_capacity: usize,
    ) -> Result<Self, QueueError> {
        let queue = QueueName::new(&format!("{namespace}_domain_events"))?;
        store.create(&queue).await?;
        let counters = Arc::new(DomainEventCounters::default());
        Ok(DomainEventPublisher {
            store,
            queue,
            source: source.to_owned(),
            default_correlation_id: None,
            fast: fast::Fast::new(fast_capacity, counters.clone()),
            counters,
        })
    }

    /// Every event without a correlation id of its own gets this one.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.default_correlation_id = Some(id);
        self
    }

    /// The store the durable path writes to.
    pub fn store(&self) -> &Q {
        &self.store
    }

    /// The durable queue.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// The counters (`published`, `dropped`, `failed`).
    pub fn counters(&self) -> &Arc<DomainEventCounters> {
        &self.counters
    }

    /// `domain_events_published`.
    pub fn published(&self) -> u64 {
        self.counters.published.load(Ordering::Relaxed)
    }

    /// `domain_events_dropped`: exactly what lagging fast-path receivers missed.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// A new fast-path receiver: it sees events published from now on.
    pub fn subscribe_fast(&self) -> FastReceiver {
        self.fast.subscribe()
    }

    /// Seed 001's `poll_in_process_events()`: the next fast-path event from the publisher's
    /// own receiver, or `None` at once when there is none (never blocks).
    pub fn poll_in_process_events(&self) -> Option<InProcessDomainEvent> {
        self.fast.poll()
    }

    /// A handle for pollers on their own thread.
    pub fn poll_handle(&self) -> fast::PollHandle {
        self.fast.poll_handle()
    }

    /// Publishes one domain event by `mode`.
    ///
    /// # Errors
    ///
    /// [`DomainEventError::EventType`] before anything is sent;
    /// [`DomainEventError::Durable`] when the durable path did not commit (with `broadcast`,
    /// the fast copy is then not sent either: nothing is half-published).
    pub async fn publish(
        &self,
        event_type: &str,
        payload: Map<String, Value>,
        correlation_id: Option<Uuid>,
        mode: DeliveryMode,
    ) -> Result<Published, DomainEventError> {
        let subject = Subject::new(&format!("domain.{event_type}"))
            .map_err(|e| DomainEventError::EventType(event_type.to_owned(), e))?;
        let correlation_id = correlation_id.or(self.default_correlation_id);
        let event_id = Uuid::now_v7();
        let timestamp = Timestamp::now();
        let mut out = Published {
            msg_id: None,
            fast_receivers: 0,
        };
        if matches!(mode, DeliveryMode::Durable | DeliveryMode::Broadcast) {
            let mut envelope = Event::new(subject)
                .with_type(event_type)
                .with_data(payload.clone())
                .with_source(&self.source)
                .with_metadata(herald::EVENT_ID, event_id.to_string());
            envelope.timestamp = timestamp;
            // Declared by a handler of a traced step: the domain event continues its trace,
            // in a publish span that ends with the send's commit.
            // (The id is formatted only when a span is opened.)
            let _span = if herald::hop::publishes(&envelope) {
                herald::hop::publish(
                    &herald::hop::Hop {
                        system: self.store.system(),
                        destination: self.queue.as_str(),
                        message_id: herald::hop::MessageId::Text(&event_id.to_string()),
                        attempt: 0,
                    },
                    &mut envelope,
                )
            } else {
                tracing::Span::none()
            };
            if let Some(c) = correlation_id {
                envelope = envelope.with_correlation_id(c.to_string());
            }
            match self
                .store
                .send(&self.queue, &envelope, Duration::ZERO)
                .await
            {
                Ok(id) => out.msg_id = Some(id),
                Err(source) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(DomainEventError::Durable {
                        event_type: event_type.to_owned(),
                        source,
                    });
                }
            }
        }
        if matches!(mode, DeliveryMode::Fast | DeliveryMode::Broadcast) {
            out.fast_receivers = self.fast.send(InProcessDomainEvent {
                event_id,
                event_type: event_type.to_owned(),
                payload,
                correlation_id,
                timestamp,
                source: self.source.clone(),
            });
        }
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }
}
