//! The bus's counters (atomics) and the `BusStats` snapshot they produce.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the bus's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BusStats {
    /// +1 per publish that was dispatched (heard or not), emitted events included.
    pub events_published: u64,
    /// +1 per handler call, failed ones included.
    pub events_dispatched: u64,
    /// +1 per handler failure (error or panic).
    pub handler_errors: u64,
    /// Of `handler_errors`, how many were panics.
    pub handler_panics: u64,
    /// Publishes and emits refused because the bus was stopped.
    pub refused_stopped: u64,
    /// Publishes refused because they exceeded the maximum dispatch depth.
    pub refused_depth: u64,
    /// Events accepted by `emit` into the queue.
    pub emitted: u64,
    /// Events refused by `emit` because the queue was full.
    pub emit_rejected: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// Events waiting in the emit queue.
    pub queued: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    dispatched: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    refused_stopped: AtomicU64,
    refused_depth: AtomicU64,
    emitted: AtomicU64,
    emit_rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn add_published(&self) {
        self.published.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_dispatched(&self, n: usize) {
        if n > 0 {
            self.dispatched.fetch_add(n as u64, Relaxed);
        }
    }
    pub(crate) fn record_failure(&self, panic: bool) {
        self.errors.fetch_add(1, Relaxed);
        if panic {
            self.panics.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn add_refused_stopped(&self) {
        self.refused_stopped.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_refused_depth(&self) {
        self.refused_depth.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_emitted(&self) {
        self.emitted.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_emit_rejected(&self) {
        self.emit_rejected.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, subscriptions: usize, queued: usize) -> BusStats {
        BusStats {
            events_published: self.published.load(Relaxed),
            events_dispatched: self.dispatched.load(Relaxed),
            handler_errors: self.errors.load(Relaxed),
            handler_panics: self.panics.load(Relaxed),
            refused_stopped: self.refused_stopped.load(Relaxed),
            refused_depth: self.refused_depth.load(Relaxed),
            emitted: self.emitted.load(Relaxed),
            emit_rejected: self.emit_rejected.load(Relaxed),
            subscriptions: subscriptions as u64,
            queued: queued as u64,
        }
    }
}
