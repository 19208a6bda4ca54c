//! Core NATS: the `Nats` handle (publish, subscribe as a stream or with a handler, request and
//! respond, flush, drain, close) speaking Herald's JSON envelope.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use herald::{
    Event, FailureKind, Handler, IntoPattern, Object, Pattern, Receipt, SubjectError, Transport,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::NatsError;
use crate::jetstream::JetStream;
use crate::options::{NatsBuilder, NatsConfig};
use crate::state::{ConnectionState, StateCell};
use crate::stats::{Counters, NatsStats};

/// A connection to NATS. Cheap to clone: clones share one connection.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use herald::Event;
/// use herald_nats::Nats;
///
/// let nats = Nats::connect("nats://127.0.0.1:4222").await?;
/// let mut sub = nats.subscribe("trivia.*", None).await?;
/// nats.publish(&Event::try_new("trivia.started", serde_json::json!({"round": 1}))?).await?;
/// let got = sub.next().await.expect("an event");
/// assert_eq!(got.event.subject.as_str(), "trivia.started");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Nats {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    state: Arc<StateCell>,
    pub(crate) counters: Counters,
    config: NatsConfig,
    logged: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("config", &self.inner.config)
            .field("state", &self.state())
            .finish()
    }
}

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

fn check_queue(queue: &str) -> Result<(), NatsError> {
    if queue.is_empty() || queue.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(NatsError::Config {
            key: "queue",
            reason: format!("{queue:?} is not a valid queue group name"),
        });
    }
    Ok(())
}

impl Nats {
    /// A builder with the defaults (reconnect forever, 2 s apart).
    pub fn builder() -> NatsBuilder {
        NatsBuilder::default()
    }

    /// Connects to one server with the defaults.
    ///
    /// # Errors
    ///
    /// As [`NatsBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(url: &str) -> Result<Nats, NatsError> {
        Nats::builder().server(url).connect().await
    }

    pub(crate) fn from_parts(
        client: async_nats::Client,
        state: Arc<StateCell>,
        config: NatsConfig,
    ) -> Self {
        Nats {
            inner: Arc::new(Inner {
                client,
                state,
                counters: Counters::default(),
                config,
                logged: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The underlying async-nats client, for what Herald does not wrap.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.get()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.watch()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NatsStats {
        self.inner.counters.snapshot(
            self.inner.state.reconnects(),
            self.inner.state.slow_consumers(),
        )
    }

    /// The server's `max_payload` in bytes.
    pub fn max_payload(&self) -> usize {
        self.inner.client.max_payload()
    }

    /// The name this connection gives as source of its responses.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// JetStream on this connection.
    pub fn jetstream(&self) -> JetStream {
        JetStream::new(self.clone())
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// One round trip to the server on this connection. The server handles a connection's
    /// protocol in order, so everything sent before (a SUB) has been processed when it
    /// returns. (`flush` only empties the client's write buffer.)
    async fn round_trip(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let client = &self.inner.client;
        let probe = async_nats::Request::new().timeout(Some(Duration::from_secs(5)));
        match client.send_request(client.new_inbox(), probe).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Err(e) => Err(Box::new(e)),
        }
    }

    pub(crate) fn check_size(&self, subject: &str, size: usize) -> Result<(), NatsError> {
        let max = self.inner.client.max_payload();
        if max > 0 && size > max {
            Counters::inc(&self.inner.counters.publish_failed);
            return Err(NatsError::PayloadTooLarge {
                subject: subject.to_string(),
                size,
                max,
            });
        }
        Ok(())
    }

    /// Sends a payload to a subject that is already valid (a `Subject`, or a reply inbox
    /// handed to us by the server).
    async fn send(&self, subject: &str, payload: Bytes) -> Result<(), NatsError> {
        self.check_size(subject, payload.len())?;
        let fut = self.inner.client.publish(subject.to_owned(), payload);
        let result = if self.state() == ConnectionState::Connected {
            fut.await
        } else {
            // Disconnected: the client's command buffer is the reconnect buffer. Sending into
            // it either succeeds at once or the buffer is full; a pending send queued nothing.
            match fut.now_or_never() {
                Some(r) => r,
                None => {
                    Counters::inc(&self.inner.counters.publish_failed);
                    return Err(NatsError::BufferFull {
                        subject: subject.to_string(),
                    });
                }
            }
        };
        result.map_err(|e| {
            Counters::inc(&self.inner.counters.publish_failed);
            NatsError::Publish {
                subject: subject.to_string(),
                source: Box::new(e),
            }
        })?;
        Counters::inc(&self.inner.counters.published);
        Ok(())
    }

    /// Publishes one event on core NATS (at most once: no acknowledgement).
    ///
    /// # Errors
    ///
    /// [`NatsError::PayloadTooLarge`] (nothing sent), [`NatsError::BufferFull`] while
    /// disconnected with a full buffer, [`NatsError::Publish`] when the client is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, the event was not queued.
    pub async fn publish(&self, event: &Event) -> Result<(), NatsError> {
        self.send(event.subject.as_str(), Bytes::from(event.to_json()))
            .await
    }

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
        let client = &self.inner.client;
        let sub_err = |e: Box<dyn std::error::Error + Send + Sync>| NatsError::Subscribe {
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
        self.round_trip().await.map_err(sub_err)?;
        Ok(EventStream {
            subscriber,
            nats: self.clone(),
        })
    }

    /// Runs `handler` for each event matching `pattern`, one at a time, in arrival order. An
    /// error or panic in the handler is counted and logged; the subscription goes on.
    /// Dropping the returned guard unsubscribes.
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
        let task = tokio::spawn(async move {
            while let Some(incoming) = stream.next().await {
                let event = Arc::new(incoming.event);
                if let Err(f) = handler.call(&event).await {
                    nats.record_failure(&event, &f);
                }
            }
        });
        Ok(HandlerSubscription::new(task))
    }

    pub(crate) fn record_failure(&self, event: &Event, f: &herald::Failure) {
        Counters::inc(&self.inner.counters.handler_errors);
        if f.kind == FailureKind::Panic {
            Counters::inc(&self.inner.counters.handler_panics);
        }
        tracing::warn!(subject = event.subject.as_str(), "{f}");
    }

    /// Sends `request` and waits for one response envelope. The request's `event_type` is
    /// kept as given (seed 004 uses `request`).
    ///
    /// # Errors
    ///
    /// [`NatsError::Timeout`] when nobody answered in time, [`NatsError::NoResponders`] when
    /// nobody listens, [`NatsError::Envelope`] when the response is not an envelope.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a late response is discarded.
    pub async fn request(&self, request: &Event, timeout: Duration) -> Result<Event, NatsError> {
        let payload = Bytes::from(request.to_json());
        self.check_size(request.subject.as_str(), payload.len())?;
        let subject = request.subject.to_string();
        let req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        let response = self
            .inner
            .client
            .send_request(subject.clone(), req)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => NatsError::Timeout {
                    subject: subject.clone(),
                    timeout,
                },
                async_nats::RequestErrorKind::NoResponders => NatsError::NoResponders {
                    subject: subject.clone(),
                },
                _ => NatsError::Request {
                    subject: subject.clone(),
                    source: Box::new(e),
                },
            })?;
        let decoded = Event::from_json(&response.payload)?;
        Ok(decoded.event)
    }

    /// Answers requests on `pattern`: `respond` turns each request into the response's data.
    /// The response envelope has the request's subject and `correlation_id`, `event_type`
    /// `response`, and this connection's name as source. A failing `respond` sends no
    /// response (the requester times out) and is counted.
    ///
    /// # Errors
    ///
    /// As [`Nats::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Nats::subscribe`].
    pub async fn respond<F, Fut>(
        &self,
        pattern: impl IntoPattern,
        queue: Option<&str>,
        respond: F,
    ) -> Result<HandlerSubscription, NatsError>
    where
        F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Object, herald::BoxError>> + Send + 'static,
    {
        let mut stream = self.subscribe(pattern, queue).await?;
        let nats = self.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = stream.next().await {
                let Some(reply) = incoming.reply else {
                    tracing::warn!(
                        subject = incoming.event.subject.as_str(),
                        "message without a reply subject on a responder; skipped"
                    );
                    continue;
                };
                let request = Arc::new(incoming.event);
                // The same isolation as a handler's, including a panic before the first await.
                let data = match herald::isolate(|| respond(request.clone())).await {
                    Ok(data) => data,
                    Err(failure) => {
                        nats.record_failure(&request, &failure);
                        continue;
                    }
                };
                if let Err(e) = nats.answer(&reply, &request, data).await {
                    tracing::warn!("response not sent: {e}");
                }
            }
        });
        Ok(HandlerSubscription::new(task))
    }

    /// Answers one request received on an [`EventStream`]: the response envelope has the
    /// request's subject and `correlation_id`, `event_type` `response`, this connection's name
    /// as source, and `data`. Returns the response sent.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] when the message has no reply subject (it was not a request);
    /// otherwise as [`Nats::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`Nats::publish`].
    pub async fn respond_to(&self, request: &Incoming, data: Object) -> Result<Event, NatsError> {
        let Some(reply) = &request.reply else {
            return Err(NatsError::Config {
                key: "reply",
                reason: format!(
                    "the message on {} is not a request (no reply subject)",
                    request.event.subject
                ),
            });
        };
        self.answer(reply, &request.event, data).await
    }

    async fn answer(&self, reply: &str, request: &Event, data: Object) -> Result<Event, NatsError> {
        let response = Event::new(request.subject.clone())
            .with_type("response")
            .with_source(self.name())
            .with_correlation_id(request.correlation_id.clone())
            .with_data(data);
        self.send(reply, Bytes::from(response.to_json())).await?;
        Ok(response)
    }

    /// Waits until everything published so far has been written to the server.
    ///
    /// # Errors
    ///
    /// [`NatsError::Connection`] when the flush fails (disconnected, closed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn flush(&self) -> Result<(), NatsError> {
        self.inner
            .client
            .flush()
            .await
            .map_err(|e| NatsError::Connection {
                operation: "flush",
                source: Box::new(e),
            })
    }

    /// The polite close: unsubscribes everything, lets subscribers take what was already
    /// delivered, flushes what was published, then closes the connection. Returns once the
    /// connection is closed (at most 30 s).
    ///
    /// # Errors
    ///
    /// [`NatsError::Connection`] when the drain cannot start or does not finish in 30 s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the drain goes on in the background.
    pub async fn drain(&self) -> Result<(), NatsError> {
        let mut state = self.watch_state();
        self.inner
            .client
            .drain()
            .await
            .map_err(|e| NatsError::Connection {
                operation: "drain",
                source: Box::new(e),
            })?;
        let closed = async {
            state
                .wait_for(|s| *s == ConnectionState::Closed)
                .await
                .is_ok()
        };
        let outcome = tokio::time::timeout(Duration::from_secs(30), closed).await;
        outcome.map(drop).map_err(|e| NatsError::Connection {
            operation: "drain",
            source: Box::new(e),
        })
    }

    /// Flushes what was published and closes the connection (alias of [`Nats::drain`]: the
    /// client has no ruder close that keeps published messages).
    ///
    /// # Errors
    ///
    /// [`NatsError::Connection`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn close(&self) -> Result<(), NatsError> {
        self.drain().await
    }

    pub(crate) fn note_malformed(&self, subject: &str, e: &herald::EnvelopeError) {
        Counters::inc(&self.inner.counters.malformed);
        let mut logged = self.inner.logged.lock();
        if logged.len() < 1024 && logged.insert(subject.to_owned()) {
            tracing::warn!(subject, "malformed envelope skipped (further ones on this subject are counted, not logged): {e}");
        }
    }
}

/// A subscription's events, decoded. Dropping it unsubscribes.
pub struct EventStream {
    subscriber: async_nats::Subscriber,
    nats: Nats,
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

    fn decode(&self, msg: async_nats::Message) -> Option<Incoming> {
        match Event::from_json(&msg.payload) {
            Ok(decoded) => {
                let c = &self.nats.inner.counters;
                Counters::inc(&c.received);
                if decoded.unknown_fields > 0 {
                    Counters::inc(&c.unknown_fields);
                }
                Some(Incoming {
                    event: decoded.event,
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
    fn new(task: tokio::task::JoinHandle<()>) -> Self {
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

impl Transport for Nats {
    type Subscription = HandlerSubscription;

    async fn publish_event(&self, event: Event) -> Result<Receipt, herald::BoxError> {
        self.publish(&event).await?;
        Ok(Receipt::Accepted)
    }

    async fn subscribe_handler(
        &self,
        pattern: Pattern,
        handler: Handler,
    ) -> Result<HandlerSubscription, herald::BoxError> {
        Ok(Nats::subscribe_handler(self, pattern, None, handler).await?)
    }

    async fn flush(&self) -> Result<(), herald::BoxError> {
        Ok(Nats::flush(self).await?)
    }
}
