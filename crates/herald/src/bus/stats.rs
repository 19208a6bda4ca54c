//! The bus's counters (atomics) and the `BusStats` snapshot they produce.

use crate::dispatch::DispatchReport;
use crate::handler::FailureKind;
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

/// How many stripes the hot counters are split into.
const STRIPES: usize = 16;

/// One cache line per stripe, so publishers on different threads never share one.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Stripe {
    published: AtomicU64,
    dispatched: AtomicU64,
}

/// This thread's stripe: handed out round robin when the thread first counts.
fn stripe_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

/// The bus's counters. The two that every publish touches are striped per thread, so that
/// concurrent publishers do not fight over one cache line; a snapshot adds the stripes up
/// (exact once the publishes it should see have returned).
pub(crate) struct Counters {
    hot: Box<[Stripe]>,
    errors: AtomicU64,
    panics: AtomicU64,
    refused_stopped: AtomicU64,
    refused_depth: AtomicU64,
    emitted: AtomicU64,
    emit_rejected: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            hot: (0..STRIPES).map(|_| Stripe::default()).collect(),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            refused_stopped: AtomicU64::new(0),
            refused_depth: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            emit_rejected: AtomicU64::new(0),
        }
    }
}

impl Stripe {
    pub(crate) fn add_published(&self) {
        self.published.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_dispatched(&self, n: usize) {
        if n > 0 {
            self.dispatched.fetch_add(n as u64, Relaxed);
        }
    }
}

impl Counters {
    /// This thread's stripe of the hot counters (look it up once per publish).
    pub(crate) fn hot(&self) -> &Stripe {
        &self.hot[stripe_index()]
    }
    /// Counts the failures of one dispatch report.
    pub(crate) fn record_failures(&self, report: &DispatchReport) {
        let panics = report
            .failures
            .iter()
            .filter(|f| f.failure.kind == FailureKind::Panic)
            .count();
        self.errors.fetch_add(report.failed() as u64, Relaxed);
        if panics > 0 {
            self.panics.fetch_add(panics as u64, Relaxed);
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
            events_published: self.hot.iter().map(|s| s.published.load(Relaxed)).sum(),
            events_dispatched: self.hot.iter().map(|s| s.dispatched.load(Relaxed)).sum(),
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
