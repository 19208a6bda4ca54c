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

/// How many threads at once count on a stripe of their own; more count on a shared one.
const STRIPES: usize = 16;

/// One cache line per stripe, so publishers on different threads never share one.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Stripe {
    published: AtomicU64,
    dispatched: AtomicU64,
}

/// A thread's lease on an owned stripe index, given back when the thread ends.
struct Lease(Option<usize>);

fn free_stripes() -> &'static parking_lot::Mutex<Vec<usize>> {
    static FREE: std::sync::OnceLock<parking_lot::Mutex<Vec<usize>>> = std::sync::OnceLock::new();
    FREE.get_or_init(|| parking_lot::Mutex::new((0..STRIPES).rev().collect()))
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            free_stripes().lock().push(i);
        }
    }
}

thread_local! {
    static LEASE: Lease = Lease(free_stripes().lock().pop());
}

/// This thread's stripe index if it owns one (no other live thread writes it), else `None`.
fn owned_stripe() -> Option<usize> {
    LEASE.try_with(|l| l.0).ok().flatten()
}

/// This thread's hot counters in one bus: its own stripe, written without a read-modify-
/// write (it is the only writer), or the shared stripe past `STRIPES` threads.
/// Not `Send`: held across an `.await`, it could be written from a thread that does not own
/// its stripe.
pub(crate) struct Hot<'a> {
    stripe: &'a Stripe,
    owned: bool,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl Hot<'_> {
    fn add(&self, counter: &AtomicU64, n: u64) {
        if self.owned {
            counter.store(counter.load(Relaxed) + n, Relaxed);
        } else {
            counter.fetch_add(n, Relaxed);
        }
    }
    pub(crate) fn add_published(&self) {
        self.add(&self.stripe.published, 1);
    }
    pub(crate) fn add_dispatched(&self, n: usize) {
        if n > 0 {
            self.add(&self.stripe.dispatched, n as u64);
        }
    }
}

/// The bus's counters. The two that every publish touches are striped per thread: up to
/// `STRIPES` live threads each own a stripe, which only they write (a load and a store, no
/// locked instruction), and more threads share one more stripe with atomic adds. A snapshot
/// adds the stripes up (exact once the publishes it should see have returned).
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
            hot: (0..=STRIPES).map(|_| Stripe::default()).collect(),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            refused_stopped: AtomicU64::new(0),
            refused_depth: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            emit_rejected: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// This thread's stripe of the hot counters (look it up once per publish).
    pub(crate) fn hot(&self) -> Hot<'_> {
        let owned = owned_stripe();
        Hot {
            stripe: &self.hot[owned.unwrap_or(STRIPES)],
            owned: owned.is_some(),
            _this_thread: std::marker::PhantomData,
        }
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
