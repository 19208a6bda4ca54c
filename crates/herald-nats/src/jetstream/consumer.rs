//! JetStream durable pull consumers: settings, deliveries (ack, nak with delay, term,
//! in-progress; malformed messages termed and counted), and `consume` on Herald's one
//! consume loop, with its retry policy and, when the spec names a dead-letter subject, the
//! core's dead letter published there before a rejected message is termed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use futures_util::StreamExt;
use herald::dead_letter::{DeadLetter, Origin};
use herald::{
    Consume, ConsumeOptions, ConsumeReport, DeliverySource, Event, Handler, Outcome, Subject,
    TransportError,
};

use super::JetStream;
use crate::client::Nats;
use crate::error::{to_transport, NatsError};
use crate::stats::Counters;

impl JetStream {
    /// Creates (or binds to) a durable pull consumer with explicit acks.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] (no such stream, a conflicting consumer config).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn durable_consumer(
        &self,
        stream: &str,
        spec: &ConsumerSpec,
    ) -> Result<DurableConsumer, NatsError> {
        let s = self
            .ctx
            .get_stream(stream)
            .await
            .map_err(|e| NatsError::js(format!("get stream {stream}"), e))?;
        let config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            filter_subject: spec.filter_subject.clone().unwrap_or_default(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: spec.max_ack_pending,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let consumer: PullConsumer = s
            .get_or_create_consumer(&spec.durable, config)
            .await
            .map_err(|e| {
                NatsError::js(format!("create consumer {} on {stream}", spec.durable), e)
            })?;
        let dead_letters = match &spec.dead_letter_subject {
            None => None,
            Some(subject) => Some(Arc::new(DeadLetters {
                js: self.clone(),
                subject: Subject::new(subject)?,
                stream: stream.to_owned(),
                consumer: spec.durable.clone(),
            })),
        };
        Ok(DurableConsumer {
            consumer,
            nats: self.nats.clone(),
            dead_letters,
        })
    }
}

/// Where a consumer's rejected messages go: the core's dead letter, published (and
/// acknowledged) on a subject a stream captures, before the message is termed.
#[derive(Debug)]
struct DeadLetters {
    js: JetStream,
    subject: Subject,
    stream: String,
    consumer: String,
}

/// A durable pull consumer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The durable name: progress survives restarts and reconnects under this name.
    pub durable: String,
    /// Only subjects matching this pattern.
    pub filter_subject: Option<String>,
    /// Redelivery after this long without an ack (default 30 s).
    pub ack_wait: Duration,
    /// Deliveries before the server gives up on a message (-1 = unlimited).
    pub max_deliver: i64,
    /// Unacknowledged messages the server lets out at once (default 1,000).
    pub max_ack_pending: i64,
    /// Where rejected messages go as dead letters (none by default: they are only termed).
    /// A stream must capture it: a dead letter that is not acknowledged fails the settle, and
    /// the message comes back after the ack wait.
    pub dead_letter_subject: Option<String>,
}

impl ConsumerSpec {
    /// Defaults: ack wait 30 s, unlimited deliveries, 1,000 pending acks.
    pub fn durable(name: impl Into<String>) -> Self {
        ConsumerSpec {
            durable: name.into(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1_000,
            dead_letter_subject: None,
        }
    }

    /// Rejected messages are published to `subject` as dead letters before they are termed.
    pub fn dead_letters(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// Only subjects matching `pattern`.
    pub fn filter(mut self, pattern: impl Into<String>) -> Self {
        self.filter_subject = Some(pattern.into());
        self
    }

    /// Redelivery after `d` without an ack.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }
}

/// A durable pull consumer.
#[derive(Debug)]
pub struct DurableConsumer {
    consumer: PullConsumer,
    nats: Nats,
    dead_letters: Option<Arc<DeadLetters>>,
}

/// One message from a durable consumer; settle it with exactly one of ack, nak or term
/// (in-progress may come first, any number of times).
#[derive(Debug)]
pub struct Delivery {
    /// The envelope, shared as handlers take it.
    pub event: Arc<Event>,
    /// Its stream sequence.
    pub stream_sequence: u64,
    /// How many times it has been delivered (1 on the first delivery).
    pub delivered: i64,
    message: async_nats::jetstream::Message,
    dead_letters: Option<Arc<DeadLetters>>,
}

fn ack_err(op: &'static str, e: async_nats::Error) -> NatsError {
    NatsError::JetStream {
        operation: op.to_owned(),
        source: e,
    }
}

impl Delivery {
    /// Its `Nats-Msg-Id` header (the publisher's dedupe id), if it has one.
    pub fn message_id(&self) -> Option<&str> {
        self.message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str())
    }

    /// Its subject.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// Done: the server will not deliver it again.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the ack cannot be sent.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; an ack that was not sent leads to a redelivery after the ack wait.
    pub async fn ack(&self) -> Result<(), NatsError> {
        self.message.ack().await.map_err(|e| ack_err("ack", e))
    }

    /// Not now: deliver it again, after `delay` if given.
    ///
    /// # Errors
    ///
    /// As [`Delivery::ack`].
    ///
    /// # Cancel safety
    ///
    /// As [`Delivery::ack`].
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), NatsError> {
        self.message
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| ack_err("nak", e))
    }

    /// Never: do not deliver it again (a poison message).
    ///
    /// # Errors
    ///
    /// As [`Delivery::ack`].
    ///
    /// # Cancel safety
    ///
    /// As [`Delivery::ack`].
    pub async fn term(&self) -> Result<(), NatsError> {
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| ack_err("term", e))
    }

    /// Publishes the core's dead letter of this message for `reason` to the consumer's
    /// dead-letter subject, if it has one, and waits for the stream's ack.
    async fn dead_letter(&self, reason: &str) -> Result<(), NatsError> {
        let Some(to) = &self.dead_letters else {
            return Ok(());
        };
        let origin = Origin::JetStream {
            stream: to.stream.clone(),
            consumer: to.consumer.clone(),
            sequence: self.stream_sequence,
        };
        let letter = DeadLetter::new(origin, self.message.payload.to_vec(), reason)
            .attempts(u32::try_from(self.delivered.max(1)).unwrap_or(u32::MAX))
            .on_subject(to.subject.clone())
            .to_event();
        // Its own message id: the letter keeps the original's event id, which the stream's
        // duplicate window would take for the original; this one is the same for every
        // attempt to dead-letter this message, so a retried dead letter is stored once.
        let id = format!("dl-{}-{}-{}", to.stream, to.consumer, self.stream_sequence);
        to.js.publish_with_id(&letter, &id).await.map(drop)
    }

    /// Still working: restart the ack wait.
    ///
    /// # Errors
    ///
    /// As [`Delivery::ack`].
    ///
    /// # Cancel safety
    ///
    /// As [`Delivery::ack`].
    pub async fn in_progress(&self) -> Result<(), NatsError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| ack_err("in-progress", e))
    }
}

/// A consumer's continuous stream of deliveries.
pub struct Deliveries {
    inner: async_nats::jetstream::consumer::pull::Stream,
    nats: Nats,
    dead_letters: Option<Arc<DeadLetters>>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deliveries")
    }
}

async fn to_delivery(
    nats: &Nats,
    message: async_nats::jetstream::Message,
    dead_letters: Option<&Arc<DeadLetters>>,
) -> Option<Delivery> {
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 0),
    };
    match Event::from_json(&message.payload) {
        Ok(decoded) => {
            Counters::inc(&nats.inner().counters.received);
            let mut event = decoded.event;
            crate::trace::adopt(&mut event, message.headers.as_ref());
            Some(Delivery {
                event: Arc::new(event),
                stream_sequence,
                delivered,
                message,
                dead_letters: dead_letters.cloned(),
            })
        }
        Err(e) => {
            // A poison message: term it so that it never blocks the consumer, count it, log it.
            nats.note_malformed(message.subject.as_str(), &e);
            if let Err(e) = message.ack_with(AckKind::Term).await {
                tracing::warn!("term of a malformed message failed: {e}");
            }
            None
        }
    }
}

impl Deliveries {
    /// The next delivery. Malformed messages are termed, counted and skipped.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] for a consumer error (missed heartbeats while disconnected,
    /// a deleted consumer); the stream may go on after one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message pulled but not yet returned is redelivered after the ack wait.
    pub async fn next(&mut self) -> Option<Result<Delivery, NatsError>> {
        loop {
            match self.inner.next().await? {
                Ok(message) => {
                    if let Some(d) =
                        to_delivery(&self.nats, message, self.dead_letters.as_ref()).await
                    {
                        return Some(Ok(d));
                    }
                }
                Err(e) => return Some(Err(NatsError::js("pull messages", e))),
            }
        }
    }
}

impl DurableConsumer {
    /// A continuous stream of deliveries.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn messages(&self) -> Result<Deliveries, NatsError> {
        let inner = self
            .consumer
            .messages()
            .await
            .map_err(|e| NatsError::js("consume", e))?;
        Ok(Deliveries {
            inner,
            nats: self.nats.clone(),
            dead_letters: self.dead_letters.clone(),
        })
    }

    /// Messages not yet delivered, and messages delivered but not yet acked (their ack wait
    /// still running), as the server counts them now.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn backlog(&self) -> Result<(u64, u64), NatsError> {
        let mut consumer = self.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| NatsError::js("consumer info", e))?;
        Ok((
            info.num_pending,
            u64::try_from(info.num_ack_pending).unwrap_or(0),
        ))
    }

    /// Up to `max` deliveries, waiting at most `wait` for them.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: pulled messages not returned are redelivered after the ack wait.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, NatsError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| NatsError::js("fetch", e))?;
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| NatsError::JetStream {
                operation: "fetch".to_owned(),
                source: e,
            })?;
            if let Some(d) = to_delivery(&self.nats, m, self.dead_letters.as_ref()).await {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Runs `handler` for each delivery until `shutdown` completes, on Herald's one consume
    /// loop ([`herald::Consume`]): ack on success; on an error or panic, what
    /// [`ConsumeOptions::retry`] decides: nak with the handler's
    /// [`RetryAfter`](herald::RetryAfter) delay or the policy's backoff while attempts are
    /// left, else (and on a [`Reject`](herald::Reject)) the dead letter, when the spec names
    /// a subject for it, and a term; at most
    /// [`ConsumeOptions::max_in_flight`] at once. On shutdown it stops pulling and waits (up
    /// to [`ConsumeOptions::drain_timeout`]) for the handlers in flight to settle.
    ///
    /// Delivery is at least once: a message whose ack is lost (a crash, a disconnect) is
    /// delivered again after the ack wait, so handlers should be idempotent.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the consumer cannot be read at all.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, handlers in flight are aborted and their messages are
    /// redelivered after the ack wait.
    pub async fn consume(
        &self,
        handler: impl Into<Handler>,
        options: ConsumeOptions,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumeReport, NatsError> {
        Ok(self
            .consume_loop(handler, options)
            .await?
            .run(shutdown)
            .await)
    }

    /// The consume loop [`DurableConsumer::consume`] runs, before it runs: add middleware
    /// with [`Consume::layer`], then [`Consume::run`] it.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the consumer cannot be read at all.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (nothing is pulled yet).
    pub async fn consume_loop(
        &self,
        handler: impl Into<Handler>,
        options: ConsumeOptions,
    ) -> Result<Consume<Deliveries>, NatsError> {
        let deliveries = self.messages().await?;
        let nats = self.nats.clone();
        let origin = self.consumer.cached_info().name.clone();
        Ok(Consume::new(deliveries, handler)
            .options(options)
            .origin(origin)
            .on_failure(move |event, failure| nats.record_failure(event, failure)))
    }
}

impl herald::Delivery for Delivery {
    fn event(&self) -> &Arc<Event> {
        &self.event
    }

    fn attempt(&self) -> u32 {
        u32::try_from(self.delivered.max(1)).unwrap_or(u32::MAX)
    }

    fn hop(&self) -> herald::hop::Hop<'_> {
        herald::hop::Hop {
            system: "nats",
            destination: self.event.subject.as_str(),
            message_id: herald::hop::MessageId::Number(
                i64::try_from(self.stream_sequence).unwrap_or(i64::MAX),
            ),
            attempt: herald::Delivery::attempt(self),
        }
    }

    async fn settle(self, outcome: Outcome) -> Result<(), TransportError> {
        let settled = match outcome {
            Outcome::Ack => self.ack().await,
            Outcome::Retry { after } => self.nak(Some(after)).await,
            Outcome::Reject { reason } => {
                tracing::warn!(
                    subject = self.event.subject.as_str(),
                    stream_sequence = self.stream_sequence,
                    "rejected, termed: {reason}"
                );
                match self.dead_letter(&reason).await {
                    Ok(()) => self.term().await,
                    Err(e) => Err(e),
                }
            }
        };
        settled.map_err(|e| to_transport("settle", e))
    }
}

impl DeliverySource for Deliveries {
    type Delivery = Delivery;

    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        Deliveries::next(self)
            .await
            .map(|r| r.map_err(|e| to_transport("read", e)))
    }
}
