//! Core NATS: the `Nats` handle (connect, publish, flush, drain, close, state and stats)
//! speaking Herald's JSON envelope; subscribing is in `subscribe.rs`, request/reply in
//! `request.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use herald::{BoxError, Event, Shutdown};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::NatsConfig;
use crate::error::NatsError;
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
    pub(crate) shutdown: Shutdown,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("config", &self.inner.config)
            .field("state", &self.state())
            .finish()
    }
}

impl Nats {
    pub(crate) fn from_parts(
        client: async_nats::Client,
        state: Arc<StateCell>,
        config: NatsConfig,
        shutdown: Shutdown,
    ) -> Self {
        Nats {
            inner: Arc::new(Inner {
                client,
                state,
                counters: Counters::default(),
                config,
                logged: Mutex::new(HashSet::new()),
                shutdown,
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

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// One round trip to the server on this connection, through a probe subscription of its
    /// own: the server handles a connection's protocol in order, so when the probe published
    /// to that subscription's fresh inbox comes back, everything sent before it (a SUB) has
    /// been processed. (`flush` only empties the client's write buffer; a request answered by
    /// "no responders" would wait for ever when the subscription being checked matches the
    /// inbox, as `>` does.) Returns the probe's subject, which a subscription matching it
    /// also receives and must skip.
    pub(crate) async fn round_trip(&self, within: Duration) -> Result<String, BoxError> {
        let client = &self.inner.client;
        let subject = client.new_inbox();
        let mut probe = client.subscribe(subject.clone()).await?;
        client.publish(subject.clone(), Bytes::new()).await?;
        let back = tokio::time::timeout(within, futures_util::StreamExt::next(&mut probe)).await;
        let _ = probe.unsubscribe().await;
        match back {
            Ok(Some(_)) => Ok(subject),
            Ok(None) => Err("the connection closed during the round trip".into()),
            Err(_) => Err(format!(
                "the server did not answer a round trip within {} ms",
                within.as_millis()
            )
            .into()),
        }
    }

    /// Measures one round trip to the server (a message through it and back on this
    /// connection): what a health check asks, since a connection can look connected while
    /// its server is stopped (SIGSTOP) or overloaded.
    ///
    /// # Errors
    ///
    /// [`NatsError::Connection`] when no answer came `within`, or the connection closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn ping(&self, within: Duration) -> Result<Duration, NatsError> {
        let started = std::time::Instant::now();
        self.round_trip(within)
            .await
            .map(|_| started.elapsed())
            .map_err(|source| NatsError::Connection {
                operation: "ping",
                source,
            })
    }

    /// How long a round trip may take: the connect timeout.
    pub(crate) fn round_trip_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.connect_timeout_ms)
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
    /// NATS headers (the trace context) go with it when given.
    pub(crate) async fn send_with(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Result<(), NatsError> {
        self.check_size(subject, payload.len())?;
        let client = &self.inner.client;
        let fut = match headers {
            Some(h) => futures_util::future::Either::Left(client.publish_with_headers(
                subject.to_owned(),
                h,
                payload,
            )),
            None => {
                futures_util::future::Either::Right(client.publish(subject.to_owned(), payload))
            }
        };
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
        let (continued, _span) = crate::trace::continued(event);
        let event = continued.as_ref().unwrap_or(event);
        let headers = crate::trace::headers(event);
        self.send_with(
            event.subject.as_str(),
            headers,
            Bytes::from(event.to_json()),
        )
        .await
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
    /// delivered, flushes what was published, then closes the connection; then it waits for
    /// the handler and responder tasks to finish what they hold and triggers the connection's
    /// [`Shutdown`]. Returns once all that is done (at most 30 s in all).
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
        let bound = tokio::time::Instant::now() + Duration::from_secs(30);
        let outcome = tokio::time::timeout_at(bound, closed).await;
        outcome.map(drop).map_err(|e| NatsError::Connection {
            operation: "drain",
            source: Box::new(e),
        })?;
        // The subscriptions have ended; their tasks finish the events they already hold.
        let left = bound.saturating_duration_since(tokio::time::Instant::now());
        self.inner
            .shutdown
            .wait(left)
            .await
            .map_err(|e| NatsError::Connection {
                operation: "drain",
                source: Box::new(e),
            })?;
        self.inner.shutdown.trigger();
        Ok(())
    }

    /// The [`Shutdown`] this connection's handler and responder tasks run under (the
    /// builder's, or its own). Triggering it ends each task after the event in hand.
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.inner.shutdown
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
