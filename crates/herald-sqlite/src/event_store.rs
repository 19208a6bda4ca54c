//! The event store contract on the same SQLite file as the queues: appends go through the
//! single writer (so they are serialised, and a follower of the log never skips), each in its
//! own savepoint of a group-committed transaction.

use herald::store::{
    condition_holds, Appended, EventStore, KeyedWrite, StoreError, StoredEvent, StreamName,
    StreamWrite, WriteCondition,
};
use herald::{Event, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::queue::SqliteStore;

pub(crate) fn backend(operation: &'static str, e: rusqlite::Error) -> StoreError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    StoreError::Backend {
        operation,
        transient,
        source: Box::new(e),
    }
}

pub(crate) fn from_queue(e: herald::queue::QueueError) -> StoreError {
    match e {
        herald::queue::QueueError::Closed => StoreError::Closed,
        // A store error carried through the writer (so that its savepoint rolled back).
        herald::queue::QueueError::Store {
            source,
            operation,
            transient,
            ..
        } => match source.downcast::<StoreError>() {
            Ok(e) => *e,
            Err(source) => StoreError::Backend {
                operation,
                transient,
                source,
            },
        },
        other => StoreError::Backend {
            operation: "event store",
            transient: other.is_transient(),
            source: Box::new(other),
        },
    }
}

fn stored(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let us: i64 = row.get(3)?;
    let body: String = row.get(4)?;
    Ok(StoredEvent {
        global_position: row.get(0)?,
        stream: row.get(1)?,
        position: row.get(2)?,
        recorded_at: Timestamp::from_datetime(
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        ),
        body: body.into_bytes(),
    })
}

const COLUMNS: &str = "global_position, stream, position, recorded_at, body";

fn select(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredEvent>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(params, stored)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| backend("read events", e))
}

fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

impl EventStore for SqliteStore {
    async fn append_all(&self, writes: &[StreamWrite]) -> Result<Vec<Appended>, StoreError> {
        // Each event continues the current trace, in a publish span that ends with the commit.
        let mut spans = Vec::new();
        let writes: Vec<(StreamName, Vec<String>, WriteCondition)> = writes
            .iter()
            .map(|w| {
                let (bodies, s) = herald::hop::sent_bodies("herald", w.stream.as_str(), &w.events);
                spans.extend(s);
                (w.stream.clone(), bodies, w.condition)
            })
            .collect();
        self.writer()
            .run("append", "*", move |c| {
                // One savepoint for all: an error in any rolls every write back.
                let mut out = Vec::with_capacity(writes.len());
                for (stream, bodies, condition) in &writes {
                    let done = append_in(c, stream, bodies, *condition).map_err(|e| {
                        herald::queue::QueueError::store("append", stream.as_str(), false, e)
                    })?;
                    out.push(done);
                }
                Ok(out)
            })
            .await
            .map_err(from_queue)
    }

    async fn append(
        &self,
        stream: &StreamName,
        events: &[Event],
        condition: WriteCondition,
    ) -> Result<Appended, StoreError> {
        // Appended by a handler of a traced delivery: the trace goes on, in a publish span
        // per event that ends with the commit.
        let (bodies, _spans) = herald::hop::sent_bodies("herald", stream.as_str(), events);
        let name = stream.clone();
        self.writer()
            .run("append", stream.as_str(), move |c| {
                // An error rolls this append's savepoint back: all of it or nothing.
                append_in(c, &name, &bodies, condition).map_err(|e| {
                    herald::queue::QueueError::store("append", name.as_str(), false, e)
                })
            })
            .await
            .map_err(from_queue)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: i64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let name = stream.to_string();
        self.writer()
            .run("read stream", stream.as_str(), move |c| {
                Ok(select(
                    c,
                    &format!("SELECT {COLUMNS} FROM herald_events WHERE stream = ?1 AND position >= ?2 ORDER BY position LIMIT ?3"),
                    params![name, from, limit(max)],
                ))
            })
            .await
            .map_err(from_queue)?
    }

    async fn append_once(
        &self,
        stream: &StreamName,
        event: &Event,
        key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let (body, _span) = herald::hop::sent_body("herald", stream.as_str(), event);
        let (name, body, key) = (stream.clone(), vec![body], key.to_owned());
        self.writer()
            .run("append", stream.as_str(), move |c| {
                let wrap = |e: StoreError| herald::queue::QueueError::store("append", name.as_str(), false, e);
                let new = c
                    .prepare_cached("INSERT OR IGNORE INTO herald_event_keys (key, global_position) VALUES (?1, 0)")
                    .and_then(|mut s| s.execute([&key]))
                    .map_err(|e| wrap(backend("append", e)))?;
                if new == 0 {
                    return Ok(None);
                }
                let done = append_in(c, &name, &body, WriteCondition::Any).map_err(wrap)?;
                c.prepare_cached("UPDATE herald_event_keys SET global_position = ?2 WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key, done.global_position]))
                    .map_err(|e| wrap(backend("append", e)))?;
                Ok(Some(done))
            })
            .await
            .map_err(from_queue)
    }

    async fn append_once_all(&self, writes: &[KeyedWrite]) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // Each event continues the current trace (a write whose key was taken before has a
        // publish span too: it was sent, and found already there).
        let mut spans = Vec::new();
        let writes: Vec<(StreamName, String, String)> = writes
            .iter()
            .map(|w| {
                let (body, span) = herald::hop::sent_body("herald", w.stream.as_str(), &w.event);
                spans.push(span);
                (w.stream.clone(), body, w.key.clone())
            })
            .collect();
        // One writer transaction for the batch: each key, then its event, as append_once.
        self.writer()
            .run("append", "*", move |c| {
                let wrap = |e: StoreError| herald::queue::QueueError::store("append", "*", false, e);
                let mut out = Vec::with_capacity(writes.len());
                for (name, body, key) in writes {
                    let new = c
                        .prepare_cached("INSERT OR IGNORE INTO herald_event_keys (key, global_position) VALUES (?1, 0)")
                        .and_then(|mut s| s.execute([&key]))
                        .map_err(|e| wrap(backend("append", e)))?;
                    if new == 0 {
                        out.push(false);
                        continue;
                    }
                    let done = append_in(c, &name, &[body], WriteCondition::Any).map_err(wrap)?;
                    c.prepare_cached("UPDATE herald_event_keys SET global_position = ?2 WHERE key = ?1")
                        .and_then(|mut s| s.execute(params![key, done.global_position]))
                        .map_err(|e| wrap(backend("append", e)))?;
                    out.push(true);
                }
                Ok(out)
            })
            .await
            .map_err(from_queue)
    }

    async fn count_after(&self, category: &str, after: i64) -> Result<u64, StoreError> {
        let category = StreamName::category_name(category)?.to_owned();
        self.writer()
            .run_lease("count events", "*", move |c| {
                c.prepare_cached(
                    "SELECT count(*) FROM herald_events WHERE category = ?1 AND global_position > ?2",
                )
                .and_then(|mut s| s.query_row(params![category, after], |r| r.get::<_, i64>(0)))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| herald::queue::QueueError::store("count events", "*", false, backend("count events", e)))
            })
            .await
            .map_err(from_queue)
    }

    async fn read_category(
        &self,
        category: &str,
        from: i64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let category = StreamName::category_name(category)?.to_owned();
        self.writer()
            .run("read category", "*", move |c| {
                Ok(select(
                    c,
                    &format!("SELECT {COLUMNS} FROM herald_events WHERE category = ?1 AND global_position >= ?2 ORDER BY global_position LIMIT ?3"),
                    params![category, from, limit(max)],
                ))
            })
            .await
            .map_err(from_queue)?
    }

    async fn read_all(&self, from: i64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.writer()
            .run("read all", "*", move |c| {
                Ok(select(
                    c,
                    &format!("SELECT {COLUMNS} FROM herald_events WHERE global_position >= ?1 ORDER BY global_position LIMIT ?2"),
                    params![from, limit(max)],
                ))
            })
            .await
            .map_err(from_queue)?
    }

    async fn streams(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.writer()
            .run("streams", "*", |c| {
                Ok(c.prepare_cached("SELECT stream, max(position) FROM herald_events GROUP BY stream ORDER BY stream")
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<rusqlite::Result<Vec<(String, i64)>>>()
                    })
                    .map_err(|e| backend("list streams", e)))
            })
            .await
            .map_err(from_queue)?
    }

    async fn checkpoint(
        &self,
        consumer: &str,
        source: &str,
    ) -> Result<Option<(i64, u64)>, StoreError> {
        let (consumer, source) = (consumer.to_owned(), source.to_owned());
        self.writer()
            .run("read checkpoint", "*", move |c| {
                Ok(c.prepare_cached("SELECT position, epoch FROM herald_checkpoints WHERE consumer = ?1 AND source = ?2")
                    .and_then(|mut s| {
                        s.query_row(params![consumer, source], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })
                        .optional()
                    })
                    .map(|row| row.map(|(p, e)| (p, u64::try_from(e).unwrap_or(0))))
                    .map_err(|e| backend("read checkpoint", e)))
            })
            .await
            .map_err(from_queue)?
    }

    async fn save_checkpoint(
        &self,
        consumer: &str,
        source: &str,
        position: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let (consumer, source) = (consumer.to_owned(), source.to_owned());
        let e = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.writer()
            .run("save checkpoint", "*", move |c| {
                let wrap = |e: StoreError| herald::queue::QueueError::store("save checkpoint", "*", false, e);
                let current: Option<i64> = c
                    .prepare_cached(
                        "SELECT max(epoch) FROM (SELECT epoch FROM herald_checkpoints WHERE consumer = ?1 AND source = ?2
                         UNION ALL SELECT epoch FROM herald_allocations WHERE grp = ?1 AND source = ?2)",
                    )
                    .and_then(|mut s| s.query_row(params![consumer, source], |r| r.get(0)))
                    .map_err(|e| wrap(backend("save checkpoint", e)))?;
                if let Some(current) = current.filter(|cur| *cur > e) {
                    return Err(wrap(StoreError::stale_epoch(&consumer, &source, epoch, u64::try_from(current).unwrap_or(0))));
                }
                c.prepare_cached(
                    "INSERT INTO herald_checkpoints (consumer, source, position, epoch) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (consumer, source) DO UPDATE SET position = excluded.position, epoch = excluded.epoch",
                )
                .and_then(|mut s| s.execute(params![consumer, source, position, e]))
                .map(drop)
                .map_err(|e| wrap(backend("save checkpoint", e)))
            })
            .await
            .map_err(from_queue)
    }
}

/// The append itself, inside the writer's transaction.
pub(crate) fn append_in(
    c: &Connection,
    stream: &StreamName,
    bodies: &[String],
    condition: WriteCondition,
) -> Result<Appended, StoreError> {
    let last: Option<i64> = c
        .prepare_cached("SELECT max(position) FROM herald_events WHERE stream = ?1")
        .and_then(|mut s| s.query_row([stream.as_str()], |r| r.get(0)).optional())
        .map_err(|e| backend("append", e))?
        .flatten();
    if !condition_holds(condition, last) {
        return Err(StoreError::wrong_position(stream, condition, last));
    }
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64;
    let mut position = last.unwrap_or(-1);
    let mut global = 0;
    for body in bodies {
        position += 1;
        c.prepare_cached(
            "INSERT INTO herald_events (stream, category, position, recorded_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![stream.as_str(), stream.category(), position, now, body]))
        .map_err(|e| backend("append", e))?;
        global = c.last_insert_rowid();
    }
    Ok(Appended {
        position,
        global_position: global,
    })
}
