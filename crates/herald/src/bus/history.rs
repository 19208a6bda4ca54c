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

/// The sequence counter on a cache line of its own: every publish writes it, and nothing a
/// publish only reads (the route generation beside it in the bus) may share its line.
#[derive(Default)]
#[repr(align(64))]
struct Head(AtomicU64);

pub(crate) struct History {
    slots: Box<[Slot]>,
    /// How many events were ever recorded: the next sequence number.
    head: Head,
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        History {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            head: Head::default(),
        }
    }

    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq % self.slots.len() as u64) as usize]
    }

    pub(crate) fn record(&self, event: &Arc<Event>) {
        if self.slots.is_empty() {
            return;
        }
        let seq = self.head.0.fetch_add(1, Ordering::AcqRel);
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
        let head = self.head.0.load(Ordering::Acquire);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::subject::Subject;

    fn ev(subject: &str) -> Arc<Event> {
        Arc::new(Event::new(Subject::new(subject).expect("subject")))
    }

    fn subjects(events: &[Arc<Event>]) -> Vec<String> {
        events.iter().map(|e| e.subject.to_string()).collect()
    }

    #[test]
    fn the_ring_keeps_the_last_n_newest_first_and_counts_as_asked() {
        let h = History::new(3);
        for s in ["a.1", "a.2", "b.3", "a.4"] {
            h.record(&ev(s));
        }
        assert_eq!(subjects(&h.query(None, None)), ["a.4", "b.3", "a.2"]);
        assert_eq!(subjects(&h.query(Some(2), None)), ["a.4", "b.3"]);
        assert!(h.query(Some(0), None).is_empty());
        let a = Pattern::new("a.*").expect("pattern");
        assert_eq!(subjects(&h.query(None, Some(&a))), ["a.4", "a.2"]);
        h.clear();
        assert!(h.query(None, None).is_empty());
    }

    #[test]
    fn a_ring_of_zero_keeps_nothing() {
        let h = History::new(0);
        h.record(&ev("a.b"));
        assert!(h.query(None, None).is_empty());
    }

    #[test]
    fn concurrent_writers_leave_only_the_newest_n() {
        let h = Arc::new(History::new(8));
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = h.clone();
                s.spawn(move || {
                    for i in 0..1000 {
                        h.record(&ev(&format!("t{t}.e{i}")));
                    }
                });
            }
        });
        let got = h.query(None, None);
        assert_eq!(got.len(), 8, "every slot holds one of the newest events");
    }
}
