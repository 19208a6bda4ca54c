//! Counters of one NATS connection and the `NatsStats` snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a connection's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatsStats {
    /// Core publishes handed to the client.
    pub published: u64,
    /// Publishes refused (buffer full, payload too large, send failure).
    pub publish_failed: u64,
    /// JetStream publishes acknowledged by a stream.
    pub js_acked: u64,
    /// Envelopes received and decoded.
    pub received: u64,
    /// Messages that were not a valid envelope: counted, logged, skipped.
    pub malformed: u64,
    /// Envelopes that carried extra top-level fields (accepted).
    pub unknown_fields: u64,
    /// Handler failures (errors and panics).
    pub handler_errors: u64,
    /// Of `handler_errors`, panics.
    pub handler_panics: u64,
    /// Successful reconnects.
    pub reconnects: u64,
    /// Slow-consumer events (the client dropped messages for a subscription that fell behind).
    pub slow_consumers: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failed: AtomicU64,
    pub(crate) js_acked: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) unknown_fields: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, reconnects: u64, slow_consumers: u64) -> NatsStats {
        NatsStats {
            published: self.published.load(Relaxed),
            publish_failed: self.publish_failed.load(Relaxed),
            js_acked: self.js_acked.load(Relaxed),
            received: self.received.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            unknown_fields: self.unknown_fields.load(Relaxed),
            handler_errors: self.handler_errors.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            reconnects,
            slow_consumers,
        }
    }
}
