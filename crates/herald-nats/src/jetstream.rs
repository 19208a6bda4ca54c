//! JetStream: streams from config (idempotent create-or-update), publish with PubAck and a
//! dedupe id, durable pull consumers with explicit ack, nak with delay, term and in-progress,
//! and a handler-driven consume loop with bounded in-flight messages.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures_util::StreamExt;
use herald::{Event, Handler};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::client::Nats;
use crate::error::NatsError;
use crate::stats::Counters;

/// One stream, as a config file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// The stream's name (no spaces, dots or wildcards).
    pub name: String,
    /// Subjects it captures (`*`/`>` allowed).
    pub subjects: Vec<String>,
    /// Oldest message kept, in seconds; 0 = unlimited.
    #[serde(default)]
    pub max_age_secs: u64,
    /// Bytes kept; -1 = unlimited.
    #[serde(default = "unlimited")]
    pub max_bytes: i64,
    /// Keep messages in memory instead of files.
    #[serde(default)]
    pub memory: bool,
    /// How long a message id is remembered for dedupe, in seconds (server default 120).
    #[serde(default = "two_minutes")]
    pub duplicate_window_secs: u64,
}

fn unlimited() -> i64 {
    -1
}

fn two_minutes() -> u64 {
    120
}

impl StreamSpec {
    /// A file-backed stream with limits retention and no other limit.
    pub fn new(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        StreamSpec {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            max_age_secs: 0,
            max_bytes: -1,
            memory: false,
            duplicate_window_secs: 120,
        }
    }

    /// Checks the name and subjects; the error names the key.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`].
    pub fn validate(&self) -> Result<(), NatsError> {
        if self.name.is_empty()
            || self
                .name
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(NatsError::Config {
                key: "name",
                reason: format!(
                    "{:?} is not a valid stream name (no spaces, dots or wildcards)",
                    self.name
                ),
            });
        }
        if self.subjects.is_empty() {
            return Err(NatsError::Config {
                key: "subjects",
                reason: format!("stream {} captures no subject", self.name),
            });
        }
        for s in &self.subjects {
            herald::Pattern::new(s).map_err(|e| NatsError::Config {
                key: "subjects",
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn to_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            retention: RetentionPolicy::Limits,
            max_age: Duration::from_secs(self.max_age_secs),
            max_bytes: self.max_bytes,
            storage: if self.memory {
                StorageType::Memory
            } else {
                StorageType::File
            },
            // The server refuses a duplicate window longer than the max age.
            duplicate_window: Duration::from_secs(match self.max_age_secs {
                0 => self.duplicate_window_secs,
                age => self.duplicate_window_secs.min(age),
            }),
            ..Default::default()
        }
    }
}

/// Seed 004's three streams: `PLATFORM_EVENTS` (`rosey.platform.>`, 7 days, 1 GiB),
/// `COMMANDS` (`rosey.commands.>`, 24 h, 100 MiB), `PLUGINS` (`rosey.plugins.>`, 24 h,
/// 100 MiB), all with limits retention.
pub fn default_streams() -> Vec<StreamSpec> {
    let spec = |name: &str, subject: &str, age: u64, bytes: i64| StreamSpec {
        max_age_secs: age,
        max_bytes: bytes,
        ..StreamSpec::new(name, [subject])
    };
    vec![
        spec(
            "PLATFORM_EVENTS",
            "rosey.platform.>",
            7 * 24 * 3600,
            1024 * 1024 * 1024,
        ),
        spec("COMMANDS", "rosey.commands.>", 24 * 3600, 100 * 1024 * 1024),
        spec("PLUGINS", "rosey.plugins.>", 24 * 3600, 100 * 1024 * 1024),
    ]
}

/// What a stream holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    /// Name.
    pub name: String,
    /// Captured subjects.
    pub subjects: Vec<String>,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence kept.
    pub first_sequence: u64,
    /// Last sequence stored.
    pub last_sequence: u64,
    /// Consumers.
    pub consumers: usize,
    /// Max age in seconds (0 = unlimited).
    pub max_age_secs: u64,
    /// Max bytes (-1 = unlimited).
    pub max_bytes: i64,
}

impl From<stream::Info> for StreamSummary {
    fn from(info: stream::Info) -> Self {
        StreamSummary {
            name: info.config.name,
            subjects: info.config.subjects,
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            consumers: info.state.consumer_count,
            max_age_secs: info.config.max_age.as_secs(),
            max_bytes: info.config.max_bytes,
        }
    }
}

/// The stream's acknowledgement of a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsAck {
    /// The stream that stored it.
    pub stream: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// The message id had been seen within the duplicate window: stored once, earlier.
    pub duplicate: bool,
}

/// JetStream on one connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JetStream {
    nats: Nats,
    ctx: async_nats::jetstream::Context,
}

/// A publish whose acknowledgement has not arrived yet (see [`JetStream::publish_async`]).
pub struct PendingAck {
    fut: async_nats::jetstream::context::PublishAckFuture,
    subject: String,
    nats: Nats,
}

impl PendingAck {
    /// Waits for the stream's acknowledgement.
    ///
    /// # Errors
    ///
    /// [`NatsError::NoStream`] when no stream captures the subject, [`NatsError::Publish`]
    /// on timeout or another failure.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, the message may or may not be stored.
    pub async fn ack(self) -> Result<JsAck, NatsError> {
        let subject = self.subject;
        let ack = self.fut.await.map_err(|e| publish_error(&subject, e))?;
        Counters::inc(&self.nats.inner().counters.js_acked);
        Ok(JsAck {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

fn publish_error(subject: &str, e: async_nats::jetstream::context::PublishError) -> NatsError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => NatsError::NoStream {
            subject: subject.to_owned(),
        },
        _ => NatsError::Publish {
            subject: subject.to_owned(),
            source: Box::new(e),
        },
    }
}

impl JetStream {
    pub(crate) fn new(nats: Nats) -> Self {
        let ctx = async_nats::jetstream::new(nats.client().clone());
        JetStream { nats, ctx }
    }

    /// The async-nats JetStream context, for what Herald does not wrap.
    pub fn context(&self) -> &async_nats::jetstream::Context {
        &self.ctx
    }

    /// Creates the stream, or updates it to match `spec`. Idempotent.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for an invalid spec, [`NatsError::JetStream`] when the server
    /// refuses (an overlapping subject, JetStream disabled).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the stream may or may not exist.
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamSummary, NatsError> {
        spec.validate()?;
        let info = self
            .ctx
            .create_or_update_stream(spec.to_config())
            .await
            .map_err(|e| NatsError::js(format!("create or update stream {}", spec.name), e))?;
        Ok(info.into())
    }

    /// Ensures seed 004's three default streams.
    ///
    /// # Errors
    ///
    /// As [`JetStream::ensure_stream`].
    ///
    /// # Cancel safety
    ///
    /// As [`JetStream::ensure_stream`].
    pub async fn ensure_default_streams(&self) -> Result<Vec<StreamSummary>, NatsError> {
        let mut out = Vec::new();
        for spec in default_streams() {
            out.push(self.ensure_stream(&spec).await?);
        }
        Ok(out)
    }

    /// The names of all streams.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stream_names(&self) -> Result<Vec<String>, NatsError> {
        let mut names = Vec::new();
        let mut pages = self.ctx.stream_names();
        while let Some(name) = pages.next().await {
            names.push(name.map_err(|e| NatsError::js("list streams", e))?);
        }
        names.sort();
        Ok(names)
    }

    /// One stream's state.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] (for instance, no such stream).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stream_info(&self, name: &str) -> Result<StreamSummary, NatsError> {
        let mut stream = self
            .ctx
            .get_stream(name)
            .await
            .map_err(|e| NatsError::js(format!("get stream {name}"), e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| NatsError::js(format!("stream info {name}"), e))?;
        Ok(info.clone().into())
    }

    /// Deletes a stream and everything in it.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] (for instance, no such stream).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn delete_stream(&self, name: &str) -> Result<(), NatsError> {
        self.ctx
            .delete_stream(name)
            .await
            .map_err(|e| NatsError::js(format!("delete stream {name}"), e))?;
        Ok(())
    }

    /// Publishes and waits for the stream's acknowledgement. The event's
    /// [`event_id`](Event::event_id), when present, is sent as `Nats-Msg-Id`, so a retried
    /// publish of the same event within the duplicate window is stored once
    /// ([`JsAck::duplicate`] tells).
    ///
    /// # Errors
    ///
    /// As [`JetStream::publish_async`] and [`PendingAck::ack`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the event may or may not be stored; publish it again
    /// with the same event id to be sure, and dedupe keeps one copy.
    pub async fn publish(&self, event: &Event) -> Result<JsAck, NatsError> {
        self.publish_async(event).await?.ack().await
    }

    /// Sends the event and returns without waiting for the acknowledgement, so that many
    /// publishes can be in flight (a window); await [`PendingAck::ack`] for each.
    ///
    /// # Errors
    ///
    /// [`NatsError::PayloadTooLarge`] (nothing sent), [`NatsError::Publish`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn publish_async(&self, event: &Event) -> Result<PendingAck, NatsError> {
        let subject = event.subject.as_str();
        let payload = Bytes::from(event.to_json());
        self.nats.check_size(subject, payload.len())?;
        let mut msg = PublishMessage::build().payload(payload);
        if let Some(id) = event.event_id() {
            msg = msg.message_id(id);
        }
        let fut = self
            .ctx
            .send_publish(subject.to_owned(), msg)
            .await
            .map_err(|e| publish_error(subject, e))?;
        Ok(PendingAck {
            fut,
            subject: subject.to_owned(),
            nats: self.nats.clone(),
        })
    }

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
        Ok(DurableConsumer {
            consumer,
            nats: self.nats.clone(),
        })
    }
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
        }
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
}

fn ack_err(op: &'static str, e: async_nats::Error) -> NatsError {
    NatsError::JetStream {
        operation: op.to_owned(),
        source: e,
    }
}

impl Delivery {
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
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deliveries")
    }
}

async fn to_delivery(nats: &Nats, message: async_nats::jetstream::Message) -> Option<Delivery> {
    let (stream_sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(_) => (0, 0),
    };
    match Event::from_json(&message.payload) {
        Ok(decoded) => {
            Counters::inc(&nats.inner().counters.received);
            Some(Delivery {
                event: Arc::new(decoded.event),
                stream_sequence,
                delivered,
                message,
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
                    if let Some(d) = to_delivery(&self.nats, message).await {
                        return Some(Ok(d));
                    }
                }
                Err(e) => return Some(Err(NatsError::js("pull messages", e))),
            }
        }
    }
}

/// How [`DurableConsumer::consume`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Handlers running at once (default 64).
    pub max_in_flight: usize,
    /// Redelivery delay after a handler failure (default 1 s).
    pub nak_delay: Duration,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            max_in_flight: 64,
            nak_delay: Duration::from_secs(1),
        }
    }
}

/// What a consume loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Handled and acknowledged.
    pub acked: u64,
    /// Failed and negatively acknowledged (to be redelivered).
    pub naked: u64,
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
        })
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
            if let Some(d) = to_delivery(&self.nats, m).await {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Runs `handler` for each delivery until `shutdown` completes: ack on success, nak
    /// (with [`ConsumeOptions::nak_delay`]) on an error or panic, at most
    /// [`ConsumeOptions::max_in_flight`] at once. On shutdown it stops pulling and waits for
    /// the handlers in flight to settle.
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
        let handler = handler.into();
        let mut deliveries = self.messages().await?;
        let limit = Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1)));
        let mut tasks: JoinSet<bool> = JoinSet::new();
        let mut report = ConsumeReport::default();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                _ = &mut shutdown => break,
                n = deliveries.next() => n,
            };
            while let Some(done) = tasks.try_join_next() {
                tally(&mut report, done);
            }
            let delivery = match next {
                None => break,
                Some(Err(e)) => {
                    // Missed heartbeats while disconnected, a deleted consumer: log, and do
                    // not spin while the cause lasts.
                    tracing::warn!("{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Some(Ok(d)) => d,
            };
            let (handler, nats) = (handler.clone(), self.nats.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let event = delivery.event.clone();
                match handler.call(&event).await {
                    Ok(()) => {
                        if let Err(e) = delivery.ack().await {
                            tracing::warn!("{e}");
                        }
                        true
                    }
                    Err(f) => {
                        nats.record_failure(&event, &f);
                        if let Err(e) = delivery.nak(Some(options.nak_delay)).await {
                            tracing::warn!("{e}");
                        }
                        false
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            tally(&mut report, done);
        }
        Ok(report)
    }
}

fn tally(report: &mut ConsumeReport, done: Result<bool, tokio::task::JoinError>) {
    match done {
        Ok(true) => report.acked += 1,
        Ok(false) => report.naked += 1,
        Err(e) => {
            // Handlers are isolated, so only the settling code could get here; the message
            // was not acked and comes back after the ack wait.
            tracing::warn!("consume task failed: {e}");
            report.naked += 1;
        }
    }
}
