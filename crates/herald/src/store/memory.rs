//! `MemoryEventStore`: the event store, broker state and count projection contracts in memory,
//! the reference the conformance suites hold every backend to. One mutex serialises it all;
//! the "store clock" is this process's monotonic clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::broker::{BrokerState, LeaseRow, COORDINATOR_LEASE};
use super::{
    condition_holds, Allocation, AllocationChange, Appended, BrokerSnapshot, BrokerStore,
    CountProjection, EventStore, KeyedWrite, NodeInfo, StoreError, StoredEvent, StreamName,
    StreamWrite, WriteCondition,
};
use crate::message::event::Event;
use crate::message::hop;
use crate::message::timestamp::Timestamp;

#[derive(Default)]
struct Log {
    events: Vec<StoredEvent>,
    last: BTreeMap<String, i64>,
    checkpoints: BTreeMap<(String, String), (i64, u64)>,
    broker: BrokerState,
    /// Leases other than the coordinator's (which `broker` holds), by name.
    leases: BTreeMap<String, LeaseRow>,
    counts: BTreeMap<(String, String), (i64, i64)>,
    keys: std::collections::HashSet<String>,
}

/// The event store in memory. Cheap to clone.
#[derive(Clone)]
pub struct MemoryEventStore {
    log: Arc<Mutex<Log>>,
    /// The store clock's zero.
    born: Instant,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        MemoryEventStore {
            log: Arc::default(),
            born: Instant::now(),
        }
    }
}

impl std::fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryEventStore")
    }
}

impl MemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryEventStore::default()
    }

    /// The store clock: microseconds since this store was made.
    fn now(&self) -> i64 {
        i64::try_from(self.born.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
}

fn take(
    events: &[StoredEvent],
    max: usize,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Vec<StoredEvent> {
    events
        .iter()
        .filter(|e| keep(e))
        .take(max)
        .cloned()
        .collect()
}

fn append_locked(
    log: &mut Log,
    stream: &StreamName,
    events: &[Event],
    condition: WriteCondition,
) -> Result<Appended, StoreError> {
    let last = log.last.get(stream.as_str()).copied();
    if !condition_holds(condition, last) {
        return Err(StoreError::wrong_position(stream, condition, last));
    }
    let mut position = last.unwrap_or(-1);
    let mut global = log.events.len() as i64;
    for e in events {
        position += 1;
        global += 1;
        log.events.push(StoredEvent {
            global_position: global,
            stream: stream.to_string(),
            position,
            recorded_at: Timestamp::now(),
            body: e.to_json(),
        });
    }
    if !events.is_empty() {
        log.last.insert(stream.to_string(), position);
    }
    Ok(Appended {
        position,
        global_position: global,
    })
}

impl EventStore for MemoryEventStore {
    async fn append_all(&self, writes: &[StreamWrite]) -> Result<Vec<Appended>, StoreError> {
        // Under the one lock: every condition checked (as the streams will be when its turn
        // comes) before anything is written.
        let mut log = self.log.lock();
        let mut ahead: HashMap<&str, Option<i64>> = HashMap::new();
        for w in writes {
            let last = *ahead
                .entry(w.stream.as_str())
                .or_insert_with(|| log.last.get(w.stream.as_str()).copied());
            if !condition_holds(w.condition, last) {
                return Err(StoreError::wrong_position(&w.stream, w.condition, last));
            }
            if !w.events.is_empty() {
                let n = i64::try_from(w.events.len()).unwrap_or(i64::MAX);
                ahead.insert(w.stream.as_str(), Some(last.unwrap_or(-1) + n));
            }
        }
        let mut spans = Vec::new();
        let out = writes
            .iter()
            .map(|w| {
                let (traced, s) = hop::sent_events("herald", w.stream.as_str(), &w.events);
                spans.extend(s);
                let events = traced.as_deref().unwrap_or(&w.events);
                append_locked(&mut log, &w.stream, events, WriteCondition::Any)
            })
            .collect();
        drop(spans);
        out
    }

    async fn append(
        &self,
        stream: &StreamName,
        events: &[Event],
        condition: WriteCondition,
    ) -> Result<Appended, StoreError> {
        // Appended by a handler of a traced delivery: the trace goes on, in a publish span per
        // event that ends with the append.
        let (traced, _spans) = hop::sent_events("herald", stream.as_str(), events);
        let events = traced.as_deref().unwrap_or(events);
        append_locked(&mut self.log.lock(), stream, events, condition)
    }

    async fn append_once(
        &self,
        stream: &StreamName,
        event: &Event,
        key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let mut log = self.log.lock();
        if !log.keys.insert(key.to_owned()) {
            return Ok(None);
        }
        let (traced, _spans) =
            hop::sent_events("herald", stream.as_str(), std::slice::from_ref(event));
        let events = traced.as_deref().unwrap_or(std::slice::from_ref(event));
        append_locked(&mut log, stream, events, WriteCondition::Any).map(Some)
    }

    async fn append_once_all(&self, writes: &[KeyedWrite]) -> Result<Vec<bool>, StoreError> {
        let mut log = self.log.lock();
        let fresh: Vec<bool> = writes.iter().map(|w| !log.keys.contains(&w.key)).collect();
        let mut out = vec![false; writes.len()];
        let mut seen = std::collections::HashSet::new();
        for (i, w) in writes.iter().enumerate() {
            if fresh[i] && seen.insert(w.key.as_str()) {
                let one = std::slice::from_ref(&w.event);
                let (traced, _span) = hop::sent_events("herald", w.stream.as_str(), one);
                let events = traced.as_deref().unwrap_or(one);
                append_locked(&mut log, &w.stream, events, WriteCondition::Any)?;
                out[i] = true;
            }
        }
        for (i, w) in writes.iter().enumerate() {
            if out[i] {
                log.keys.insert(w.key.clone());
            }
        }
        Ok(out)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: i64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(take(&self.log.lock().events, max, |e| {
            e.stream == stream.as_str() && e.position >= from
        }))
    }

    async fn read_category(
        &self,
        category: &str,
        from: i64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        StreamName::category_name(category)?;
        Ok(take(&self.log.lock().events, max, |e| {
            e.category() == category && e.global_position >= from
        }))
    }

    async fn read_all(&self, from: i64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(take(&self.log.lock().events, max, |e| {
            e.global_position >= from
        }))
    }

    async fn streams(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self
            .log
            .lock()
            .last
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }

    async fn checkpoint(
        &self,
        consumer: &str,
        source: &str,
    ) -> Result<Option<(i64, u64)>, StoreError> {
        Ok(self
            .log
            .lock()
            .checkpoints
            .get(&(consumer.to_owned(), source.to_owned()))
            .copied())
    }

    async fn save_checkpoint(
        &self,
        consumer: &str,
        source: &str,
        position: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let mut log = self.log.lock();
        let key = (consumer.to_owned(), source.to_owned());
        let current = log
            .checkpoints
            .get(&key)
            .map(|(_, e)| *e)
            .max(log.broker.allocations.get(&key).map(|a| a.epoch))
            .unwrap_or(0);
        if current > epoch {
            return Err(StoreError::stale_epoch(consumer, source, epoch, current));
        }
        log.checkpoints.insert(key, (position, epoch));
        Ok(())
    }
}

impl BrokerStore for MemoryEventStore {
    async fn heartbeat(&self, node: &NodeInfo) -> Result<Vec<Allocation>, StoreError> {
        let now = self.now();
        Ok(self.log.lock().broker.heartbeat(now, node).claims.clone())
    }

    async fn leave(&self, node_id: &str) -> Result<(), StoreError> {
        self.log.lock().broker.nodes.remove(node_id);
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let now = self.now();
        let mut log = self.log.lock();
        if name == COORDINATOR_LEASE {
            return Ok(log.broker.acquire_lease(now, holder, ttl));
        }
        let row = LeaseRow::take(log.leases.get(name), now, holder, ttl);
        Ok(row.map(|row| {
            let epoch = row.epoch;
            log.leases.insert(name.to_owned(), row);
            epoch
        }))
    }

    async fn release_lease(&self, name: &str, holder: &str, epoch: u64) -> Result<(), StoreError> {
        let now = self.now();
        let mut log = self.log.lock();
        if name == COORDINATOR_LEASE {
            log.broker.release_lease(now, holder, epoch);
        } else if let Some(l) = log.leases.get_mut(name) {
            l.release(now, holder, epoch);
        }
        Ok(())
    }

    async fn snapshot(&self, node_ttl: Duration) -> Result<BrokerSnapshot, StoreError> {
        let now = self.now();
        Ok(self.log.lock().broker.snapshot(now, node_ttl))
    }

    async fn allocate(
        &self,
        holder: &str,
        epoch: u64,
        node_ttl: Duration,
        changes: &[AllocationChange],
    ) -> Result<usize, StoreError> {
        let now = self.now();
        let mut log = self.log.lock();
        Ok(log
            .broker
            .allocate(now, holder, epoch, node_ttl, changes)?
            .len())
    }

    async fn purge_nodes(&self, max_age: Duration) -> Result<u64, StoreError> {
        let now = self.now();
        Ok(self.log.lock().broker.purge(now, max_age).len() as u64)
    }
}

impl CountProjection for MemoryEventStore {
    async fn count_event(
        &self,
        projection: &str,
        category: &str,
        global_position: i64,
    ) -> Result<bool, StoreError> {
        let mut log = self.log.lock();
        let entry = log
            .counts
            .entry((projection.to_owned(), category.to_owned()))
            .or_insert((0, 0));
        if entry.1 >= global_position {
            return Ok(false);
        }
        *entry = (entry.0 + 1, global_position);
        Ok(true)
    }

    async fn counts(&self, projection: &str) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(self
            .log
            .lock()
            .counts
            .iter()
            .filter(|((p, _), _)| p == projection)
            .map(|((_, c), (n, last))| (c.clone(), *n, *last))
            .collect())
    }
}
