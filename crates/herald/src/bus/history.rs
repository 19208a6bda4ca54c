//! The history ring: the last N published events, newest first on read.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::message::event::Event;
use crate::message::subject::Pattern;

pub(crate) struct History {
    ring: Mutex<VecDeque<Arc<Event>>>,
    capacity: usize,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        History {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    pub(crate) fn record(&self, event: &Arc<Event>) {
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event.clone());
    }

    /// Newest first; `count` of `None` returns all, `Some(0)` nothing.
    pub(crate) fn query(&self, count: Option<usize>, pattern: Option<&Pattern>) -> Vec<Arc<Event>> {
        let limit = count.unwrap_or(usize::MAX);
        if limit == 0 {
            return Vec::new();
        }
        self.ring
            .lock()
            .iter()
            .rev()
            .filter(|e| pattern.is_none_or(|p| p.matches(&e.subject)))
            .take(limit)
            .cloned()
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.ring.lock().clear();
    }
}
