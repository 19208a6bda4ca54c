//! Subscribing on core NATS: `EventStream` (decoded events; malformed ones counted and
//! skipped), handler subscriptions run under the connection's `Shutdown`, and their guard.

use std::sync::Arc;

use futures_util::StreamExt;
use herald::{BoxError, Event, FailureKind, Handler, IntoPattern, Pattern, SubjectError};

use crate::client::Nats;
use crate::error::NatsError;
use crate::stats::Counters;

/// One event received on a subscription.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The envelope, with the fields and values that were sent.
    pub event: Event,
    /// Where a response should go (requests only).
    pub reply: Option<String>,
}

fn no_globs(pattern: &Pattern) -> Result<(), NatsError> {
    if pattern.is_glob() {
        return Err(NatsError::Subject(SubjectError::Wildcard {
            input: pattern.as_str().to_owned(),
            reason: "glob patterns are in-process only; NATS takes `*` and `>` tokens",
        }));
    }
    Ok(())
}

pub(crate) fn check_queue(queue: &str) -> Result<(), NatsError> {
    if queue.is_empty() || queue.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(NatsError::Config {
            key: "queue",
            reason: format!("{queue:?} is not a valid queue group name"),
        });
    }
    Ok(())
}

impl Nats {
    /// Subscribes and returns a stream of events. Malformed messages are counted, logged once
    /// per subject, and skipped. The subscription is live at the server when this returns.
    ///
    /// # Errors
    ///
    /// [`NatsError::Subject`] for a malformed or glob pattern, [`NatsError::Config`] for a bad
    /// queue name, [`NatsError::Subscribe`] when the client refuses.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, a subscription may exist until the stream is dropped.
    pub async fn subscribe(
        &self,
        pattern: impl IntoPattern,
        queue: Option<&str>,
    ) -> Result<EventStream, NatsError> {
        let pattern = pattern.into_pattern()?;
        no_globs(&pattern)?;
        let client = &self.inner().client;
        let sub_err = |e: BoxError| NatsError::Subscribe {
            pattern: pattern.to_string(),
            source: e,
        };
        let subscriber = match queue {
            Some(q) => {
                check_queue(q)?;
                client
                    .queue_subscribe(pattern.to_string(), q.to_owned())
                    .await
            }
            None => client.subscribe(pattern.to_string()).await,
        }
        .map_err(|e| sub_err(Box::new(e)))?;
        let probe = self
            .round_trip(self.round_trip_timeout())
            .await
            .map_err(sub_err)?;
        Ok(EventStream {
            subscriber,
            nats: self.clone(),
            probe: Some(probe),
        })
    }

    /// Runs `handler` for each event matching `pattern`, one at a time, in arrival order. An
    /// error or panic in the handler is counted and logged; the subscription goes on.
    /// Dropping the returned guard unsubscribes. The task runs under the connection's
    /// [`Shutdown`](herald::Shutdown): a triggered shutdown ends it after the event in hand.
    ///
    /// # Errors
    ///
    /// As [`Nats::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Nats::subscribe`].
    pub async fn subscribe_handler(
        &self,
        pattern: impl IntoPattern,
        queue: Option<&str>,
        handler: impl Into<Handler>,
    ) -> Result<HandlerSubscription, NatsError> {
        let mut stream = self.subscribe(pattern, queue).await?;
        let handler = handler.into();
        let nats = self.clone();
        let stop = self.inner().shutdown.cancelled_owned();
        let task = self.inner().shutdown.spawn(async move {
            tokio::pin!(stop);
            // A shutdown ends the loop between two events, never inside a handler.
            while let Some(incoming) = next_or_stop(&mut stream, &mut stop).await {
                let event = Arc::new(incoming.event);
                let processing = herald::hop::process(&crate::trace::hop(&event, 1), &event);
                if let Err(f) = processing.run(handler.call(&event)).await {
                    nats.record_failure(&event, &f);
                }
            }
        });
        Ok(HandlerSubscription::new(task))
    }

    pub(crate) fn record_failure(&self, event: &Event, f: &herald::Failure) {
        Counters::inc(&self.inner().counters.handler_errors);
        if f.kind == FailureKind::Panic {
            Counters::inc(&self.inner().counters.handler_panics);
        }
        tracing::warn!(subject = event.subject.as_str(), "{f}");
    }
}

/// The next event, or `None` once the stream ends or `stop` completes.
pub(crate) async fn next_or_stop(
    stream: &mut EventStream,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<Incoming> {
    tokio::select! {
        biased;
        _ = stop.as_mut() => None,
        next = stream.next() => next,
    }
}

/// A subscription's events, decoded. Dropping it unsubscribes.
pub struct EventStream {
    subscriber: async_nats::Subscriber,
    nats: Nats,
    /// The subject of the round trip's probe, until a subscription that matches it has
    /// skipped it.
    probe: Option<String>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStream")
    }
}

impl EventStream {
    /// The next well-formed event; `None` once the subscription ends (unsubscribed, drained,
    /// or the connection closed). Malformed messages are counted and skipped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no event is lost when the future is dropped.
    pub async fn next(&mut self) -> Option<Incoming> {
        StreamExt::next(self).await
    }

    fn decode(&mut self, msg: async_nats::Message) -> Option<Incoming> {
        if self.probe.as_deref() == Some(msg.subject.as_str()) {
            self.probe = None;
            return None;
        }
        // Another connection's round-trip probe (an empty message to a fresh inbox), seen by a
        // subscription as wide as `>`: not an event, and not a malformed one either.
        if msg.payload.is_empty() && msg.subject.as_str().starts_with("_INBOX.") {
            return None;
        }
        match Event::from_json(&msg.payload) {
            Ok(decoded) => {
                let c = &self.nats.inner().counters;
                Counters::inc(&c.received);
                if decoded.unknown_fields > 0 {
                    Counters::inc(&c.unknown_fields);
                }
                let mut event = decoded.event;
                crate::trace::adopt(&mut event, msg.headers.as_ref());
                Some(Incoming {
                    event,
                    reply: msg.reply.map(|r| r.to_string()),
                })
            }
            Err(e) => {
                self.nats.note_malformed(msg.subject.as_str(), &e);
                None
            }
        }
    }

    /// Unsubscribes now.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn unsubscribe(mut self) {
        let _ = self.subscriber.unsubscribe().await;
    }
}

/// The same events as [`EventStream::next`], for `StreamExt` combinators.
impl futures_util::Stream for EventStream {
    type Item = Incoming;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        use std::task::Poll;
        loop {
            match std::pin::Pin::new(&mut self.subscriber).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(msg)) => {
                    if let Some(incoming) = self.decode(msg) {
                        return Poll::Ready(Some(incoming));
                    }
                }
            }
        }
    }
}

/// A handler or responder running on a subscription. Dropping it unsubscribes.
#[derive(Debug)]
#[must_use = "dropping a HandlerSubscription unsubscribes it"]
pub struct HandlerSubscription {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HandlerSubscription {
    pub(crate) fn new(task: tokio::task::JoinHandle<()>) -> Self {
        HandlerSubscription { task: Some(task) }
    }

    /// Keeps the handler running after this guard is gone, until the connection closes.
    pub fn detach(mut self) {
        self.task = None;
    }
}

impl Drop for HandlerSubscription {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
