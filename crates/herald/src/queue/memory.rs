//! `MemoryQueue`: the queue contract in memory, the reference the conformance suite holds
//! every backend to. Nothing survives the process; for tests and the demo only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{
    read_with_wakeup, Message, Queue, QueueError, QueueMetrics, QueueName, Settle, Settled,
    Settlement,
};
use crate::message::event::Event;
use crate::message::timestamp::Timestamp;

#[derive(Default)]
struct Q {
    live: BTreeMap<i64, Message>,
    archive: Vec<Message>,
    next_id: i64,
    total: i64,
}

#[derive(Default)]
struct Shared {
    queues: Mutex<HashMap<String, Q>>,
    sent: Notify,
}

/// The queue contract in memory. Cheap to clone: clones share the queues.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryQueue")
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn later(d: Duration) -> Timestamp {
    Timestamp::from_datetime(now() + d)
}

fn no_queue(queue: &QueueName) -> QueueError {
    QueueError::NoSuchQueue {
        queue: queue.to_string(),
    }
}

impl MemoryQueue {
    /// An empty store.
    pub fn new() -> Self {
        MemoryQueue::default()
    }

    fn with<T>(&self, queue: &QueueName, f: impl FnOnce(&mut Q) -> T) -> Result<T, QueueError> {
        let mut queues = self.shared.queues.lock();
        let q = queues
            .get_mut(queue.as_str())
            .ok_or_else(|| no_queue(queue))?;
        Ok(f(q))
    }

    fn push(q: &mut Q, event: &Event, delay: Duration) -> i64 {
        q.next_id += 1;
        q.total += 1;
        let id = q.next_id;
        q.live.insert(
            id,
            Message {
                msg_id: id,
                read_ct: 0,
                enqueued_at: Timestamp::now(),
                vt: later(delay),
                body: event.to_json(),
            },
        );
        id
    }

    fn take_visible(q: &mut Q, vt: Duration, qty: usize) -> Vec<Message> {
        let now = now();
        let ids: Vec<i64> = q
            .live
            .values()
            .filter(|m| m.vt.as_datetime() <= now)
            .map(|m| m.msg_id)
            .take(qty)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = q.live.get_mut(&id) {
                m.read_ct += 1;
                m.vt = later(vt);
                out.push(m.clone());
            }
        }
        out
    }
}

impl Queue for MemoryQueue {
    async fn create(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.shared
            .queues
            .lock()
            .entry(queue.to_string())
            .or_default();
        Ok(())
    }

    async fn drop_queue(&self, queue: &QueueName) -> Result<bool, QueueError> {
        Ok(self.shared.queues.lock().remove(queue.as_str()).is_some())
    }

    async fn list(&self) -> Result<Vec<String>, QueueError> {
        let mut names: Vec<String> = self.shared.queues.lock().keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    async fn send(
        &self,
        queue: &QueueName,
        event: &Event,
        delay: Duration,
    ) -> Result<i64, QueueError> {
        let id = self.with(queue, |q| Self::push(q, event, delay))?;
        self.shared.sent.notify_waiters();
        Ok(id)
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        events: &[Event],
        delay: Duration,
    ) -> Result<Vec<i64>, QueueError> {
        let ids = self.with(queue, |q| {
            events.iter().map(|e| Self::push(q, e, delay)).collect()
        })?;
        self.shared.sent.notify_waiters();
        Ok(ids)
    }

    async fn read(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
    ) -> Result<Vec<Message>, QueueError> {
        self.with(queue, |q| Self::take_visible(q, vt, qty))
    }

    async fn read_with_poll(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
        max_wait: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        // Woken by a send; a delayed message becomes visible without one, so look again at
        // least every 100 ms.
        read_with_wakeup(
            &self.shared.sent,
            max_wait,
            Duration::from_millis(100),
            || self.read(queue, vt, qty),
        )
        .await
    }

    async fn pop(&self, queue: &QueueName, qty: usize) -> Result<Vec<Message>, QueueError> {
        self.with(queue, |q| {
            let got = Self::take_visible(q, Duration::ZERO, qty);
            for m in &got {
                q.live.remove(&m.msg_id);
            }
            got
        })
    }

    async fn delete(&self, queue: &QueueName, msg_ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        self.with(queue, |q| {
            msg_ids
                .iter()
                .copied()
                .filter(|id| q.live.remove(id).is_some())
                .collect()
        })
    }

    async fn archive(&self, queue: &QueueName, msg_ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        self.with(queue, |q| {
            let mut done = Vec::new();
            for id in msg_ids {
                if let Some(m) = q.live.remove(id) {
                    q.archive.push(m);
                    done.push(*id);
                }
            }
            done
        })
    }

    async fn set_vt(
        &self,
        queue: &QueueName,
        msg_id: i64,
        vt: Duration,
    ) -> Result<Option<Message>, QueueError> {
        self.with(queue, |q| {
            q.live.get_mut(&msg_id).map(|m| {
                m.vt = later(vt);
                m.clone()
            })
        })
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        self.with(queue, |q| {
            let n = q.live.len() as u64;
            q.live.clear();
            n
        })
    }

    async fn metrics(&self, queue: &QueueName) -> Result<QueueMetrics, QueueError> {
        self.with(queue, |q| {
            let now = now();
            let age = |m: &Message| (now - m.enqueued_at.as_datetime()).whole_seconds();
            QueueMetrics {
                queue_name: queue.to_string(),
                queue_length: q.live.len() as i64,
                queue_visible_length: q
                    .live
                    .values()
                    .filter(|m| m.vt.as_datetime() <= now)
                    .count() as i64,
                newest_msg_age_sec: q.live.values().next_back().map(age),
                oldest_msg_age_sec: q.live.values().next().map(age),
                total_messages: q.total,
            }
        })
    }

    async fn archived(&self, queue: &QueueName, limit: usize) -> Result<Vec<Message>, QueueError> {
        self.with(queue, |q| q.archive.iter().take(limit).cloned().collect())
    }

    async fn settle(
        &self,
        queue: &QueueName,
        msg_id: i64,
        read_ct: i32,
        settlement: Settlement,
    ) -> Result<Settled, QueueError> {
        let mut queues = self.shared.queues.lock();
        // Every target must exist before anything changes: all or nothing.
        for (to, _) in &settlement.send {
            if !queues.contains_key(to.as_str()) {
                return Err(no_queue(to));
            }
        }
        let q = queues
            .get_mut(queue.as_str())
            .ok_or_else(|| no_queue(queue))?;
        match q.live.get_mut(&msg_id) {
            Some(m) if m.read_ct == read_ct => match settlement.settle {
                Settle::Delete => {
                    q.live.remove(&msg_id);
                }
                Settle::Archive => {
                    if let Some(m) = q.live.remove(&msg_id) {
                        q.archive.push(m);
                    }
                }
                Settle::Retry { after } => m.vt = later(after),
            },
            _ => return Ok(Settled::Stale),
        }
        let mut sent = Vec::with_capacity(settlement.send.len());
        for (to, event) in &settlement.send {
            if let Some(target) = queues.get_mut(to.as_str()) {
                sent.push(Self::push(target, event, Duration::ZERO));
            }
        }
        drop(queues);
        if !sent.is_empty() {
            self.shared.sent.notify_waiters();
        }
        Ok(Settled::Applied { sent })
    }
}
