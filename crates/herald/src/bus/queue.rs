//! The bounded emit queue: events ordered by priority (critical first), then publish order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::event::Event;
use crate::message::priority::Priority;

pub(crate) struct Item {
    pub(crate) event: Arc<Event>,
    pub(crate) depth: u32,
    key: (Priority, Reverse<u64>),
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

#[derive(Default)]
struct Heap {
    heap: BinaryHeap<Item>,
    seq: u64,
}

pub(crate) struct Queue {
    heap: Mutex<Heap>,
    capacity: usize,
    /// Queued plus in flight: zero means idle.
    pending: AtomicUsize,
    pub(crate) ready: Notify,
    idle: Notify,
    space: Notify,
    pub(crate) closed: AtomicBool,
    /// A dispatcher task is running for this queue.
    pub(crate) alive: AtomicBool,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Queue {
            heap: Mutex::new(Heap::default()),
            capacity,
            pending: AtomicUsize::new(0),
            ready: Notify::new(),
            idle: Notify::new(),
            space: Notify::new(),
            closed: AtomicBool::new(false),
            alive: AtomicBool::new(false),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues the event, or gives it back when full.
    pub(crate) fn push(&self, event: Arc<Event>, depth: u32) -> Result<(), Arc<Event>> {
        let mut heap = self.heap.lock();
        if heap.heap.len() >= self.capacity {
            return Err(event);
        }
        heap.seq += 1;
        let key = (event.priority, Reverse(heap.seq));
        heap.heap.push(Item { event, depth, key });
        self.pending.fetch_add(1, SeqCst);
        drop(heap);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes up to `max` items, most urgent first, and wakes producers waiting for room.
    pub(crate) fn pop_batch(&self, max: usize, out: &mut Vec<Item>) {
        let mut heap = self.heap.lock();
        for _ in 0..max {
            match heap.heap.pop() {
                Some(item) => out.push(item),
                None => break,
            }
        }
        drop(heap);
        if !out.is_empty() {
            self.space.notify_waiters();
        }
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
        self.heap.lock().heap.len()
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
