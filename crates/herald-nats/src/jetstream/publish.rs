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
    /// The publish span: it ends with the ack.
    _span: tracing::Span,
}

impl PendingAck {
    /// Waits for the stream's acknowledgement.
    ///
    /// # Errors
    ///
    /// [`NatsError::NoStream`] when no stream captures the subject, [`NatsError::Timeout`]
    /// when no ack came in time and [`NatsError::Connection`] when the connection broke (both
    /// transient: send it again with the same id), [`NatsError::Publish`] otherwise.
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

/// async-nats's JetStream context waits this long for an ack (its default).
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn publish_error(subject: &str, e: async_nats::jetstream::context::PublishError) -> NatsError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => NatsError::NoStream {
            subject: subject.to_owned(),
        },
        // No ack in time (a node down, a leader being elected): the same event may be sent
        // again with the same id; transient.
        PublishErrorKind::TimedOut => NatsError::Timeout {
            subject: subject.to_owned(),
            timeout: ACK_TIMEOUT,
        },
        PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => NatsError::Connection {
            operation: "JetStream publish",
            source: Box::new(e),
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
    // Two independent 64-bit hashes of one pass each: SipHash (std's) and FxHash (8 bytes a
    // step, a fraction of SipHash's cost), written as 32 hex digits by hand.
    let mut sip = std::collections::hash_map::DefaultHasher::new();
    0x6865_7261_u64.hash(&mut sip);
    payload.hash(&mut sip);
    let mut fx = rustc_hash::FxHasher::default();
    payload.hash(&mut fx);
    let mut id = String::with_capacity(34);
    id.push_str("h-");
    for half in [sip.finish(), fx.finish()] {
        for shift in (0..16).rev() {
            let nibble = ((half >> (shift * 4)) & 0xf) as u8;
            id.push(char::from(if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            }));
        }
    }
    id
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

    /// [`JetStream::publish`], retrying a transient failure (no ack, no connection, a stream
    /// that exists but has no leader for a moment) with the
    /// same event id, doubling the delay from 100 ms to 2 s, until acknowledged or `within`
    /// has passed; the server's duplicate window stores a retried event once. Returns the ack
    /// and how many retries it took. The event must carry an event id
    /// ([`Event::ensure_event_id`]) for the retries to be recognised as one event (without
    /// one, the message id is a hash of the envelope, which also works).
    ///
    /// # Errors
    ///
    /// As [`JetStream::publish`]: the first error that is not transient, or the last one
    /// once `within` has passed.
    pub async fn publish_retrying(
        &self,
        event: &Event,
        within: std::time::Duration,
    ) -> Result<(JsAck, u32), NatsError> {
        let started = std::time::Instant::now();
        let mut delay = std::time::Duration::from_millis(100);
        let mut retries = 0u32;
        loop {
            let result = match self.publish(event).await {
                // On a cluster, a stream whose leader is being elected answers "no
                // responders" for a moment: transient if the stream exists.
                Err(NatsError::NoStream { subject }) if self.known.lock().contains(&subject) => {
                    Err(NatsError::Timeout {
                        subject,
                        timeout: ACK_TIMEOUT,
                    })
                }
                other => other,
            };
            match result {
                Ok(ack) => {
                    self.known.lock().insert(event.subject.to_string());
                    return Ok((ack, retries));
                }
                Err(e) if e.is_transient() && started.elapsed() < within => {
                    retries += 1;
                    tracing::warn!(
                        event_id = event.event_id().unwrap_or("?"),
                        "not acknowledged ({e}); retrying with the same id"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
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
        self.publish_async_as(event, None).await
    }

    /// [`JetStream::publish`] under the `Nats-Msg-Id` `id` rather than the event's own (for
    /// a copy of an event that must not be taken for it, such as its dead letter).
    ///
    /// # Errors
    ///
    /// As [`JetStream::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`JetStream::publish`].
    pub async fn publish_with_id(&self, event: &Event, id: &str) -> Result<JsAck, NatsError> {
        self.publish_async_as(event, Some(id.to_owned()))
            .await?
            .ack()
            .await
    }

    async fn publish_async_as(
        &self,
        event: &Event,
        id: Option<String>,
    ) -> Result<PendingAck, NatsError> {
        let (continued, span) = crate::trace::continued(event);
        let event = continued.as_ref().unwrap_or(event);
        let subject = event.subject.as_str();
        let payload = Bytes::from(event.to_json());
        self.nats.check_size(subject, payload.len())?;
        let id = id.unwrap_or_else(|| message_id(event, &payload));
        let mut msg = PublishMessage::build().payload(payload).message_id(id);
        if let Some(ctx) = event.trace_context() {
            msg = msg.header(herald::TRACEPARENT, ctx.traceparent());
            if let Some(ts) = ctx.tracestate() {
                msg = msg.header(herald::TRACESTATE, ts);
            }
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
            _span: span,
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
        let found = self.ctx.stream_by_subject(subject).await;
        if found.is_ok() {
            self.known.lock().insert(subject.to_owned());
        }
        found.map_err(|_| NatsError::NoStream {
            subject: subject.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::message_id;
    use herald::Event;

    #[test]
    fn a_message_id_is_the_event_id_or_32_hex_digits_of_the_envelope() {
        let e = Event::try_new("orders.placed", serde_json::json!({"n": 1})).expect("event");
        let (a, b) = (e.to_json(), e.to_json());
        let id = message_id(&e, &a);
        assert_eq!(id, message_id(&e, &b), "the same envelope, the same id");
        assert!(id.starts_with("h-") && id.len() == 34, "{id}");
        assert!(id[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let other = Event::try_new("orders.placed", serde_json::json!({"n": 2})).expect("event");
        assert_ne!(id, message_id(&other, &other.to_json()));
        let named = e.with_metadata(herald::EVENT_ID, "ev-1");
        assert_eq!(message_id(&named, &named.to_json()), "ev-1");
    }
}
