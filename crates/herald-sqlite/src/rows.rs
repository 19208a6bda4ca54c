//! Rows as the SQLite queue tables hold them: times in microseconds since the epoch, a
//! message row as a `Message`, and the check that a queue exists. Shared by the queue verbs,
//! the flow-control read and the dead-letter places.

use herald::queue::{Message, QueueError};
use herald::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::error::store;

pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

pub(crate) fn now_micros() -> i64 {
    micros(OffsetDateTime::now_utc())
}

fn from_micros(us: i64) -> Timestamp {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Timestamp::from_datetime(t)
}

pub(crate) fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    let body: String = row.get(4)?;
    Ok(Message {
        msg_id: row.get(0)?,
        read_ct: row.get(1)?,
        enqueued_at: from_micros(row.get(2)?),
        vt: from_micros(row.get(3)?),
        body: body.into_bytes(),
    })
}

/// Fails with `NoSuchQueue` unless `queue` exists.
pub(crate) fn exists(conn: &Connection, queue: &str) -> Result<(), QueueError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM herald_queues WHERE name = ?1")
        .and_then(|mut s| s.query_row([queue], |_| Ok(())).optional())
        .map_err(|e| store("look up", queue, e))?;
    found.ok_or_else(|| QueueError::NoSuchQueue {
        queue: queue.to_owned(),
    })
}
