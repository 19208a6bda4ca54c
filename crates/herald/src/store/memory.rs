//! `MemoryEventStore`: the event store contract in memory, the reference the conformance suite
//! holds every backend to. Appends are serialised by one mutex.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    condition_holds, Appended, EventStore, StoreError, StoredEvent, StreamName, WriteCondition,
};
use crate::message::event::Event;
use crate::message::timestamp::Timestamp;

#[derive(Default)]
struct Log {
    events: Vec<StoredEvent>,
    last: BTreeMap<String, i64>,
    checkpoints: BTreeMap<(String, String), (i64, u64)>,
}

/// The event store in memory. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryEventStore {
    log: Arc<Mutex<Log>>,
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

impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        stream: &StreamName,
        events: &[Event],
        condition: WriteCondition,
    ) -> Result<Appended, StoreError> {
        let mut log = self.log.lock();
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
        if let Some((_, current)) = log.checkpoints.get(&key) {
            if *current > epoch {
                return Err(StoreError::stale_epoch(consumer, source, epoch, *current));
            }
        }
        log.checkpoints.insert(key, (position, epoch));
        Ok(())
    }
}
