//! JetStream publish: PubAck, windows of pending acks, the automatic dedupe id
//! (`Nats-Msg-Id`), and the "no stream captures this subject" check.

use std::hash::{Hash, Hasher};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use herald::Event;
use serde::Serialize;

use super::JetStream;
use crate::client::Nats;
use crate::error::NatsError;
use crate::stats::Counters;

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

/// The `Nats-Msg-Id` of a publish: the event's [`event_id`](Event::event_id) when it has one,
/// otherwise `h-` and a 128-bit hash of the envelope's bytes. An envelope carries its
/// timestamp (microseconds) and correlation id, so two different events get different ids,
/// while the same event published again (a retry after a lost ack) gets the same one and
/// the stream stores it once.
pub fn message_id(event: &Event, payload: &[u8]) -> String {
    if let Some(id) = event.event_id() {
        return id.to_owned();
    }
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        payload.hash(&mut h);
        h.finish()
    };
    format!("h-{:016x}{:016x}", half(0x68657261), half(0x6c64))
}

impl JetStream {
    /// Publishes and waits for the stream's acknowledgement. Every publish carries a
    /// `Nats-Msg-Id` (see [`message_id`]), so a retried publish of the same event within the
    /// stream's duplicate window is stored once ([`JsAck::duplicate`] tells), with nothing
    /// for the caller to do.
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
    /// [`NatsError::PayloadTooLarge`] (nothing sent), [`NatsError::NoStream`],
    /// [`NatsError::Publish`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn publish_async(&self, event: &Event) -> Result<PendingAck, NatsError> {
        let subject = event.subject.as_str();
        let payload = Bytes::from(event.to_json());
        self.nats.check_size(subject, payload.len())?;
        let id = message_id(event, &payload);
        let msg = PublishMessage::build().payload(payload).message_id(id);
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

    /// The stream that captures `subject`, checked before publishing (so that a command
    /// can refuse before it sends anything).
    ///
    /// # Errors
    ///
    /// [`NatsError::NoStream`] when no stream captures it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stream_for(&self, subject: &str) -> Result<String, NatsError> {
        self.ctx
            .stream_by_subject(subject)
            .await
            .map_err(|_| NatsError::NoStream {
                subject: subject.to_owned(),
            })
    }
}
