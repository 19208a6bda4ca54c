//! The fire-and-forget path: `Bus::emit`/`emit_wait`, the bounded emit queue (one FIFO lane
//! per event priority, critical first, then emit order) and the dispatcher task that drains it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::error::EmitError;
use super::{Bus, Inner, ON_DISPATCHER};
use crate::message::event::Event;
use crate::message::priority::Priority;
use std::sync::Weak;

pub(crate) struct Item {
    pub(crate) event: Arc<Event>,
    pub(crate) depth: u32,
}

/// One FIFO lane per priority, critical first: a push and a pop are O(1), and popping the
/// first non-empty lane gives the most urgent event, equal priorities in emit order.
struct Lanes {
    lanes: [VecDeque<Item>; 4],
    len: usize,
    /// The lane of the last item of the batch being dispatched (`NONE` between batches): a
    /// push to a more urgent lane preempts the rest of that batch.
    draining: usize,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            lanes: Default::default(),
            len: 0,
            draining: Lanes::NONE,
        }
    }
}

impl Lanes {
    const NONE: usize = 4;

    fn lane(priority: Priority) -> usize {
        match priority {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }
}

pub(crate) struct Queue {
    lanes: Mutex<Lanes>,
    capacity: usize,
    /// Queued plus in flight: zero means idle.
    pending: AtomicUsize,
    pub(crate) ready: Notify,
    idle: Notify,
    space: Notify,
    pub(crate) closed: AtomicBool,
    /// A dispatcher task is running for this queue.
    pub(crate) alive: AtomicBool,
    /// An event more urgent than the rest of the batch in hand was queued: the dispatcher
    /// puts that rest back and takes the urgent one first.
    preempt: AtomicBool,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Queue {
            lanes: Mutex::new(Lanes::default()),
            capacity,
            pending: AtomicUsize::new(0),
            ready: Notify::new(),
            idle: Notify::new(),
            space: Notify::new(),
            closed: AtomicBool::new(false),
            alive: AtomicBool::new(false),
            preempt: AtomicBool::new(false),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues the event, or gives it back when full.
    pub(crate) fn push(&self, event: Arc<Event>, depth: u32) -> Result<(), Arc<Event>> {
        let mut lanes = self.lanes.lock();
        if lanes.len >= self.capacity {
            return Err(event);
        }
        lanes.len += 1;
        let lane = Lanes::lane(event.priority);
        if lane < lanes.draining {
            self.preempt.store(true, Relaxed);
        }
        lanes.lanes[lane].push_back(Item { event, depth });
        self.pending.fetch_add(1, SeqCst);
        drop(lanes);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes up to `max` items, most urgent first, and wakes producers waiting for room.
    pub(crate) fn pop_batch(&self, max: usize, out: &mut Vec<Item>) {
        let mut lanes = self.lanes.lock();
        // A producer waits only after finding the queue full; the first pop after that
        // finds it full too, so only such a pop has anyone to wake.
        let was_full = lanes.len >= self.capacity;
        let mut room = max;
        let mut draining = Lanes::NONE;
        for (i, lane) in lanes.lanes.iter_mut().enumerate() {
            let n = room.min(lane.len());
            if n > 0 {
                out.extend(lane.drain(..n));
                draining = i;
            }
            room -= n;
            if room == 0 {
                break;
            }
        }
        lanes.len -= max - room;
        lanes.draining = draining;
        self.preempt.store(false, Relaxed);
        drop(lanes);
        if was_full && room < max {
            self.space.notify_waiters();
        }
    }

    /// Whether a more urgent event than the rest of the batch in hand has been queued.
    pub(crate) fn preempted(&self) -> bool {
        self.preempt.load(Relaxed)
    }

    /// Puts the undispatched rest of a batch back at the front of its lanes, in order.
    pub(crate) fn requeue(&self, rest: impl DoubleEndedIterator<Item = Item>) {
        let mut lanes = self.lanes.lock();
        for item in rest.rev() {
            lanes.len += 1;
            lanes.lanes[Lanes::lane(item.event.priority)].push_front(item);
        }
        lanes.draining = Lanes::NONE;
    }

    /// Queues the event, waiting for room while the queue is full.
    pub(crate) async fn push_wait(&self, mut event: Arc<Event>, depth: u32) {
        loop {
            // The common case first: there is room, and no waiter needs registering.
            match self.push(event, depth) {
                Ok(()) => return,
                Err(back) => event = back,
            }
            let room = self.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push(event, depth) {
                Ok(()) => return,
                Err(back) => event = back,
            }
            room.await;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.lock().len
    }

    /// Marks `n` popped items as finished.
    pub(crate) fn done(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, SeqCst) == n {
            self.idle.notify_waiters();
        }
    }

    /// Waits until nothing is queued or in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Bus {
    /// Queues `event` for the dispatcher task and returns at once.
    ///
    /// # Errors
    ///
    /// [`EmitError`] with the event inside: the queue is full, the bus is stopped, the emit
    /// is beyond the maximum depth, or there is no Tokio runtime. Each refusal is counted.
    pub fn emit(&self, mut event: Event) -> Result<(), EmitError> {
        // Emitted from a handler that processes a traced delivery: the trace goes on (the
        // publish span ends here; the handlers run later, in their own process span).
        drop(super::publish_span(&mut event));
        let (event, depth) = self.admit(event)?;
        let inner = &self.inner;
        match inner.queue.push(event, depth) {
            Ok(()) => {
                inner.counters.add_emitted();
                Ok(())
            }
            Err(event) => {
                inner.counters.add_emit_rejected();
                Err(EmitError::Full {
                    event: unshare(event),
                    capacity: inner.queue.capacity(),
                })
            }
        }
    }

    /// Like [`Bus::emit`], but waits for room when the queue is full instead of refusing:
    /// backpressure for producers that can wait, as `mpsc::Sender::send` gives.
    ///
    /// A handler running on the dispatcher task (one that handles an emitted event) would wait
    /// for itself, so there it does not wait: a full queue refuses with `Full`, as `emit` does.
    ///
    /// # Errors
    ///
    /// [`EmitError`] with the event inside; `Full` only on the dispatcher task.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped while waiting for room, the event was not queued.
    pub async fn emit_wait(&self, event: Event) -> Result<(), EmitError> {
        if ON_DISPATCHER.try_with(|_| ()).is_ok() {
            return self.emit(event);
        }
        let (event, depth) = self.admit(event)?;
        self.inner.queue.push_wait(event, depth).await;
        self.inner.counters.add_emitted();
        Ok(())
    }

    /// The checks before an event may enter the queue: running, depth, a runtime.
    fn admit(&self, event: Event) -> Result<(Arc<Event>, u32), EmitError> {
        let inner = &self.inner;
        // One atomic load: a triggered shutdown is turned into `running = false` by the
        // dispatcher (checking the token here would take its mutex on every emit).
        if !inner.running.load(Acquire) {
            inner.counters.add_refused_stopped();
            return Err(EmitError::Stopped {
                event: Box::new(event),
            });
        }
        let depth = super::depth::here() + 1;
        if depth > inner.max_depth {
            inner.counters.add_refused_depth();
            return Err(EmitError::DepthExceeded {
                event: Box::new(event),
                depth,
                max: inner.max_depth,
            });
        }
        if self.ensure_dispatcher().is_err() {
            return Err(EmitError::NoRuntime {
                event: Box::new(event),
            });
        }
        // One allocation: the queue holds the Arc that the handlers will share.
        Ok((Arc::new(event), depth))
    }

    fn ensure_dispatcher(&self) -> Result<(), NoRuntime> {
        // Fast path: one atomic load. The flag drops when the dispatcher ends or its runtime
        // goes away, and the next emit starts a new one on the caller's runtime.
        if self.inner.queue.alive.load(Acquire) {
            return Ok(());
        }
        let _spawning = self.inner.dispatcher.lock();
        if self.inner.queue.alive.load(Acquire) {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        let queue = self.inner.queue.clone();
        let weak = Arc::downgrade(&self.inner);
        queue.alive.store(true, Release);
        let stop = self.inner.shutdown.cancelled_owned();
        self.inner.shutdown.spawn_on(
            ON_DISPATCHER.scope((), run_dispatcher(queue, weak, stop)),
            &handle,
        );
        Ok(())
    }
}

struct NoRuntime;

/// Gives back a refused event, which nobody else holds.
fn unshare(event: Arc<Event>) -> Box<Event> {
    Box::new(Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone()))
}

/// How many queued events the dispatcher takes per lock. A more urgent event that arrives
/// meanwhile preempts the rest of the batch: it waits for one dispatch at most.
const BATCH: usize = 256;

/// Clears the queue's `alive` flag however the dispatcher ends (returns, or is dropped with
/// its runtime).
struct AliveGuard(Arc<Queue>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Release);
    }
}

/// Drains the queue until the bus is gone or the shutdown is triggered; on a shutdown it
/// dispatches what is still queued, then ends.
async fn run_dispatcher(
    queue: Arc<Queue>,
    bus: Weak<Inner>,
    stop: impl std::future::Future<Output = ()>,
) {
    let _alive = AliveGuard(queue.clone());
    tokio::pin!(stop);
    let mut stopping = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let notified = queue.ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            queue.pop_batch(BATCH, &mut batch);
            if batch.is_empty() {
                break;
            }
            let Some(inner) = bus.upgrade() else {
                return;
            };
            let mut done = 0;
            let mut items = batch.drain(..);
            while let Some(item) = items.next() {
                // The emitting handler ran at depth - 1; deliver() refuses beyond the maximum.
                let _ = inner.deliver(item.event, item.depth).await;
                done += 1;
                if queue.preempted() {
                    queue.requeue(items.by_ref());
                    break;
                }
            }
            drop(items);
            drop(inner);
            queue.done(done);
        }
        if stopping || queue.closed.load(SeqCst) {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = &mut stop => {
                // Refuse later emits, then one more pass drains what is queued.
                if let Some(inner) = bus.upgrade() {
                    inner.running.store(false, Release);
                }
                stopping = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::subject::Subject;

    fn ev(subject: &str, priority: Priority) -> Arc<Event> {
        Arc::new(Event::new(Subject::new(subject).expect("subject")).with_priority(priority))
    }

    #[test]
    fn the_lanes_pop_critical_first_and_equal_priorities_in_emit_order() {
        let q = Queue::new(10);
        for (s, p) in [
            ("l1", Priority::Low),
            ("n1", Priority::Normal),
            ("c1", Priority::Critical),
            ("n2", Priority::Normal),
            ("h1", Priority::High),
            ("c2", Priority::Critical),
        ] {
            q.push(ev(s, p), 1).map_err(drop).expect("room");
        }
        let mut out = Vec::new();
        q.pop_batch(10, &mut out);
        let order: Vec<String> = out.iter().map(|i| i.event.subject.to_string()).collect();
        assert_eq!(order, ["c1", "c2", "h1", "n1", "n2", "l1"]);
    }

    #[test]
    fn a_full_queue_gives_the_event_back_and_a_pop_makes_room() {
        let q = Queue::new(2);
        q.push(ev("a", Priority::Normal), 1)
            .map_err(drop)
            .expect("room");
        q.push(ev("b", Priority::Normal), 1)
            .map_err(drop)
            .expect("room");
        let back = q.push(ev("c", Priority::Critical), 1).expect_err("full");
        assert_eq!(back.subject.as_str(), "c");
        assert_eq!(q.len(), 2);
        let mut out = Vec::new();
        q.pop_batch(1, &mut out);
        assert_eq!(out.len(), 1);
        q.push(back, 1).map_err(drop).expect("room after a pop");
    }

    #[tokio::test]
    async fn idle_waits_until_popped_items_are_marked_done() {
        let q = Queue::new(4);
        q.push(ev("a", Priority::Normal), 1)
            .map_err(drop)
            .expect("room");
        let mut out = Vec::new();
        q.pop_batch(4, &mut out);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.idle().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one item is still in flight");
        q.done(out.len());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle after done")
            .expect("task");
    }
}
