//! The fast path: a tokio broadcast channel with a bounded buffer per receiver. A receiver
//! that falls more than the buffer behind loses the oldest events; tokio reports each lag as
//! a count, and every count is added to `domain_events_dropped`, so misses are exact.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{DomainEventCounters, InProcessDomainEvent};

pub(super) struct Fast {
    tx: broadcast::Sender<Arc<InProcessDomainEvent>>,
    /// The publisher's own receiver, read by `poll_in_process_events`.
    own: Arc<Mutex<broadcast::Receiver<Arc<InProcessDomainEvent>>>>,
    counters: Arc<DomainEventCounters>,
}

impl Fast {
    pub(super) fn new(capacity: usize, counters: Arc<DomainEventCounters>) -> Self {
        let (tx, rx) = broadcast::channel(capacity.max(1));
        Fast {
            tx,
            own: Arc::new(Mutex::new(rx)),
            counters,
        }
    }

    /// Hands the event to every receiver; returns how many there are.
    pub(super) fn send(&self, event: InProcessDomainEvent) -> usize {
        self.tx.send(Arc::new(event)).unwrap_or(0)
    }

    pub(super) fn subscribe(&self) -> FastReceiver {
        FastReceiver {
            rx: self.tx.subscribe(),
            counters: self.counters.clone(),
            missed: 0,
        }
    }

    pub(super) fn poll(&self) -> Option<InProcessDomainEvent> {
        poll(&self.own, &self.counters)
    }

    pub(super) fn poll_handle(&self) -> PollHandle {
        PollHandle {
            own: self.own.clone(),
            counters: self.counters.clone(),
        }
    }
}

fn poll(
    own: &Mutex<broadcast::Receiver<Arc<InProcessDomainEvent>>>,
    counters: &DomainEventCounters,
) -> Option<InProcessDomainEvent> {
    let mut rx = own.lock();
    loop {
        match rx.try_recv() {
            Ok(e) => return Some((*e).clone()),
            Err(TryRecvError::Lagged(n)) => {
                counters.dropped.fetch_add(n, Ordering::Relaxed);
                counters.dropped_by_poll.fetch_add(n, Ordering::Relaxed);
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
        }
    }
}

/// `poll_in_process_events` for another thread (the poller).
#[derive(Clone)]
pub struct PollHandle {
    own: Arc<Mutex<broadcast::Receiver<Arc<InProcessDomainEvent>>>>,
    counters: Arc<DomainEventCounters>,
}

impl std::fmt::Debug for PollHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PollHandle")
    }
}

impl PollHandle {
    /// The next fast-path event, or `None` at once.
    pub fn poll_in_process_events(&self) -> Option<InProcessDomainEvent> {
        poll(&self.own, &self.counters)
    }
}

/// A fast-path receiver; each event it misses by lagging is counted as dropped.
#[derive(Debug)]
pub struct FastReceiver {
    rx: broadcast::Receiver<Arc<InProcessDomainEvent>>,
    counters: Arc<DomainEventCounters>,
    missed: u64,
}

impl FastReceiver {
    /// The next event; `None` once the publisher is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Arc<InProcessDomainEvent>> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(RecvError::Lagged(n)) => {
                    self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    self.missed += n;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting, else `None` at once.
    pub fn try_recv(&mut self) -> Option<Arc<InProcessDomainEvent>> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(TryRecvError::Lagged(n)) => {
                    self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    self.missed += n;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }

    /// The events this receiver missed by lagging (its share of `domain_events_dropped`).
    pub fn missed(&self) -> u64 {
        self.missed
    }
}
