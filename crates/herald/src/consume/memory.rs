//! `MemorySource`: a delivery source in memory, for tests and for a consume loop inside one
//! process: pushed events are delivered in order, a retry comes back after its delay with
//! the attempt count raised, and every settle is recorded.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::message::event::Event;
use crate::outcome::Outcome;
use crate::transport::{Delivery, DeliverySource, TransportError};

struct Pending {
    event: Arc<Event>,
    attempt: u32,
    not_before: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    settled: Vec<(Arc<Event>, u32, Outcome)>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Notify,
}

/// A delivery source in memory. Clones share one queue: keep one to push, settle-check and
/// close while the loop reads the other.
#[derive(Clone, Default)]
pub struct MemorySource {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("MemorySource")
            .field("pending", &state.queue.len())
            .field("settled", &state.settled.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl MemorySource {
    /// An empty, open source.
    pub fn new() -> Self {
        MemorySource::default()
    }

    /// Queues an event for its first delivery.
    pub fn push(&self, event: Event) {
        self.enqueue(Arc::new(event), 1, Instant::now());
    }

    fn enqueue(&self, event: Arc<Event>, attempt: u32, not_before: Instant) {
        self.shared.state.lock().queue.push_back(Pending {
            event,
            attempt,
            not_before,
        });
        self.shared.ready.notify_one();
    }

    /// No more pushes: the source ends once nothing is pending (retries still come back).
    pub fn close(&self) {
        self.shared.state.lock().closed = true;
        self.shared.ready.notify_one();
    }

    /// Every settle so far, in order: the event, its attempt, and the outcome.
    pub fn settled(&self) -> Vec<(Arc<Event>, u32, Outcome)> {
        self.shared.state.lock().settled.clone()
    }

    /// Events waiting for a delivery (retries included).
    pub fn pending(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    /// Takes the first due event, or says how long to wait (`None` wait: until pushed).
    fn take(&self) -> Result<Option<MemoryDelivery>, Option<Instant>> {
        let mut state = self.shared.state.lock();
        let now = Instant::now();
        if let Some(i) = state.queue.iter().position(|p| p.not_before <= now) {
            let p = state.queue.remove(i).ok_or(None)?;
            return Ok(Some(MemoryDelivery {
                event: p.event,
                attempt: p.attempt,
                source: self.clone(),
            }));
        }
        if state.queue.is_empty() && state.closed {
            return Ok(None);
        }
        Err(state.queue.iter().map(|p| p.not_before).min())
    }
}

impl DeliverySource for MemorySource {
    type Delivery = MemoryDelivery;

    async fn next(&mut self) -> Option<Result<MemoryDelivery, TransportError>> {
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take() {
                Ok(d) => return d.map(Ok),
                Err(None) => notified.await,
                Err(Some(at)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }
}

/// One delivery from a [`MemorySource`].
#[derive(Debug)]
pub struct MemoryDelivery {
    event: Arc<Event>,
    attempt: u32,
    source: MemorySource,
}

impl Delivery for MemoryDelivery {
    fn event(&self) -> &Arc<Event> {
        &self.event
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn settle(self, outcome: Outcome) -> Result<(), TransportError> {
        if let Outcome::Retry { after } = &outcome {
            self.source.enqueue(
                self.event.clone(),
                self.attempt + 1,
                Instant::now() + *after,
            );
        }
        self.source
            .shared
            .state
            .lock()
            .settled
            .push((self.event, self.attempt, outcome));
        Ok(())
    }
}
