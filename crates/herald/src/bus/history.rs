//! The history ring: the last N published events, newest first on read.
//!
//! Concurrent publishers record without a shared lock: each takes a sequence number from one
//! atomic counter and writes its own slot (one cache line each). A slot keeps the newest
//! sequence written to it, so a slow writer never overwrites a newer event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::message::event::Event;
use crate::message::pattern::Pattern;

#[derive(Default)]
#[repr(align(64))]
struct Slot(Mutex<Option<(u64, Arc<Event>)>>);

pub(crate) struct History {
    slots: Box<[Slot]>,
    /// How many events were ever recorded: the next sequence number.
    head: AtomicU64,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        History {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            head: AtomicU64::new(0),
        }
    }

    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq % self.slots.len() as u64) as usize]
    }

    pub(crate) fn record(&self, event: &Arc<Event>) {
        if self.slots.is_empty() {
            return;
        }
        let seq = self.head.fetch_add(1, Ordering::AcqRel);
        let replaced = {
            let mut slot = self.slot(seq).0.lock();
            if slot.as_ref().is_some_and(|(s, _)| *s > seq) {
                return;
            }
            slot.replace((seq, event.clone()))
        };
        // The evicted event is dropped outside the slot's lock.
        drop(replaced);
    }

    /// Newest first; `count` of `None` returns all, `Some(0)` nothing.
    pub(crate) fn query(&self, count: Option<usize>, pattern: Option<&Pattern>) -> Vec<Arc<Event>> {
        let limit = count.unwrap_or(usize::MAX);
        if limit == 0 || self.slots.is_empty() {
            return Vec::new();
        }
        let head = self.head.load(Ordering::Acquire);
        let oldest = head.saturating_sub(self.slots.len() as u64);
        let mut out = Vec::new();
        for seq in (oldest..head).rev() {
            if out.len() >= limit {
                break;
            }
            let slot = self.slot(seq).0.lock();
            // Skip a slot still being written (older seq) or already reused (newer seq).
            if let Some((s, event)) = slot.as_ref() {
                if *s == seq && pattern.is_none_or(|p| p.matches(&event.subject)) {
                    out.push(event.clone());
                }
            }
        }
        out
    }

    pub(crate) fn clear(&self) {
        for slot in self.slots.iter() {
            let old = slot.0.lock().take();
            drop(old);
        }
    }
}
