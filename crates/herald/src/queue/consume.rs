//! A durable queue as a delivery source for the one consume loop: `QueueSource` reads in
//! batches (waiting without spinning), and each `QueueDelivery` settles guarded by the read
//! count it was read with: ack archives, retry hides it for the delay, reject dead-letters it
//! (archived, and a copy with the reason sent to `{queue}_dlq` in the same transaction). A
//! message whose body is not an envelope is dead-lettered at once, counted and logged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Message, Queue, QueueError, QueueName, Settled, Settlement};
use crate::dead_letter::{DeadLetter, Origin};
use crate::message::event::Event;
use crate::outcome::Outcome;
use crate::transport::{Delivery, DeliverySource, ErrorKind, TransportError};

pub use crate::dead_letter::DEAD_LETTER_SUBJECT;

/// The dead letter of `message` read from `queue`, dead for `reason`: the one builder
/// ([`DeadLetter`]) with the queue as its origin and the read count as its attempts.
pub fn dead_letter(queue: &QueueName, message: &Message, reason: &str) -> Event {
    let origin = Origin::Queue {
        queue: queue.to_string(),
        msg_id: message.msg_id,
    };
    DeadLetter::new(origin, message.body.clone(), reason)
        .attempts(u32::try_from(message.read_ct).unwrap_or(0))
        .to_event()
}

/// Counters of a [`QueueSource`], shared with its deliveries.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Messages whose body was not an envelope, dead-lettered on read.
    pub(crate) malformed: AtomicU64,
    /// Settles refused because the message had been read again since (its vt ran out).
    pub(crate) stale: AtomicU64,
    /// Messages dead-lettered (rejected or malformed).
    pub(crate) dead_lettered: AtomicU64,
}

/// A [`QueueSource`]'s counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceSnapshot {
    /// Messages whose body was not an envelope, dead-lettered on read.
    pub malformed: u64,
    /// Settles refused because the message had been read again since (its vt ran out).
    pub stale: u64,
    /// Messages dead-lettered (rejected or malformed).
    pub dead_lettered: u64,
}

impl SourceCounters {
    /// The counts now, as plain numbers.
    pub fn snapshot(&self) -> SourceSnapshot {
        SourceSnapshot {
            malformed: self.malformed.load(std::sync::atomic::Ordering::Relaxed),
            stale: self.stale.load(std::sync::atomic::Ordering::Relaxed),
            dead_lettered: self
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

struct Shared<Q> {
    store: Q,
    queue: QueueName,
    dlq: QueueName,
    counters: SourceCounters,
}

/// A queue read as a [`DeliverySource`].
pub struct QueueSource<Q> {
    shared: Arc<Shared<Q>>,
    vt: Duration,
    batch: usize,
    wait: Duration,
    buffer: VecDeque<Message>,
}

impl<Q> std::fmt::Debug for QueueSource<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSource")
            .field("queue", &self.shared.queue)
            .finish()
    }
}

impl<Q: Queue> QueueSource<Q> {
    /// Reads `queue` of `store` (and creates it and its `_dlq` when missing), hiding each
    /// message for `vt` while its handler runs; reads up to 32 at a time, waiting up to 1 s
    /// per read for a first message.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`] when `{queue}_dlq` is too long; store errors from create.
    pub async fn new(store: Q, queue: QueueName, vt: Duration) -> Result<Self, QueueError> {
        let dlq = queue.with_suffix("_dlq")?;
        store.create(&queue).await?;
        store.create(&dlq).await?;
        Ok(QueueSource {
            shared: Arc::new(Shared {
                store,
                queue,
                dlq,
                counters: SourceCounters::default(),
            }),
            vt,
            batch: 32,
            wait: Duration::from_secs(1),
            buffer: VecDeque::new(),
        })
    }

    /// Messages per read (default 32; at least 1).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The dead-letter queue.
    pub fn dlq(&self) -> &QueueName {
        &self.shared.dlq
    }

    /// The source's counters.
    pub fn counters(&self) -> &SourceCounters {
        &self.shared.counters
    }

    /// A handle on the counters that outlives the source (which the consume loop takes).
    pub fn counters_handle(&self) -> impl std::ops::Deref<Target = SourceCounters> + use<Q> {
        struct Handle<Q>(Arc<Shared<Q>>);
        impl<Q> std::ops::Deref for Handle<Q> {
            type Target = SourceCounters;
            fn deref(&self) -> &SourceCounters {
                &self.0.counters
            }
        }
        Handle(self.shared.clone())
    }
}

fn to_transport(e: QueueError, operation: &'static str, queue: &QueueName) -> TransportError {
    let kind = match &e {
        QueueError::InvalidName { .. } => ErrorKind::Invalid,
        QueueError::NoSuchQueue { .. } | QueueError::Closed => ErrorKind::Refused,
        QueueError::Store { transient, .. } if *transient => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    };
    TransportError::new(kind, operation, queue.to_string(), e)
}

impl<Q: Queue> DeliverySource for QueueSource<Q> {
    type Delivery = QueueDelivery<Q>;

    async fn next(&mut self) -> Option<Result<QueueDelivery<Q>, TransportError>> {
        loop {
            while let Some(message) = self.buffer.pop_front() {
                match message.event() {
                    Ok(event) => {
                        return Some(Ok(QueueDelivery {
                            shared: self.shared.clone(),
                            event: Arc::new(event),
                            message,
                        }))
                    }
                    Err(e) => {
                        let s = &self.shared;
                        s.counters.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            queue = s.queue.as_str(),
                            msg_id = message.msg_id,
                            "malformed message dead-lettered: {e}"
                        );
                        let reject = Outcome::Reject {
                            reason: e.to_string(),
                        };
                        let settlement = Settlement::for_outcome(&reject, &s.dlq, |reason| {
                            dead_letter(&s.queue, &message, reason)
                        });
                        match s
                            .store
                            .settle(&s.queue, message.msg_id, message.read_ct, settlement)
                            .await
                        {
                            Ok(Settled::Applied { .. }) => {
                                s.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Settled::Stale) => {
                                s.counters.stale.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => return Some(Err(to_transport(e, "dead-letter", &s.queue))),
                        }
                    }
                }
            }
            let s = &self.shared;
            match s
                .store
                .read_with_poll(&s.queue, self.vt, self.batch, self.wait)
                .await
            {
                Ok(messages) => self.buffer.extend(messages),
                Err(e) => return Some(Err(to_transport(e, "read", &s.queue))),
            }
        }
    }
}

/// One message of a [`QueueSource`], settled with a guarded settle.
pub struct QueueDelivery<Q> {
    shared: Arc<Shared<Q>>,
    event: Arc<Event>,
    /// As read: its receipt, and the original body a dead letter keeps.
    message: Message,
}

impl<Q> std::fmt::Debug for QueueDelivery<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueDelivery")
            .field("msg_id", &self.message.msg_id)
            .field("read_ct", &self.message.read_ct)
            .finish()
    }
}

impl<Q: Queue> Delivery for QueueDelivery<Q> {
    fn event(&self) -> &Arc<Event> {
        &self.event
    }

    fn attempt(&self) -> u32 {
        u32::try_from(self.message.read_ct.max(1)).unwrap_or(1)
    }

    fn hop(&self) -> crate::hop::Hop<'_> {
        crate::hop::Hop {
            system: self.shared.store.system(),
            destination: self.shared.queue.as_str(),
            message_id: crate::hop::MessageId::Number(self.message.msg_id),
            attempt: self.attempt(),
        }
    }

    async fn settle(self, outcome: Outcome) -> Result<(), TransportError> {
        let s = &self.shared;
        let settlement = Settlement::for_outcome(&outcome, &s.dlq, |reason| {
            dead_letter(&s.queue, &self.message, reason)
        });
        match s
            .store
            .settle(
                &s.queue,
                self.message.msg_id,
                self.message.read_ct,
                settlement,
            )
            .await
        {
            Ok(Settled::Applied { .. }) => {
                if matches!(outcome, Outcome::Reject { .. }) {
                    s.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(Settled::Stale) => {
                s.counters.stale.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    queue = s.queue.as_str(),
                    msg_id = self.message.msg_id,
                    "settle refused: the message was read again since (its vt ran out)"
                );
                Ok(())
            }
            Err(e) => Err(to_transport(e, "settle", &s.queue)),
        }
    }
}
