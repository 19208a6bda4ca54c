//! Message rows as PGMQ's tables give them (`msg_id, read_ct, enqueued_at, vt, message`),
//! read as `Message`s; shared by the queue verbs and the flow-control read.

use herald::queue::{Message, QueueError};
use herald::Timestamp;
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

use crate::error::store;

/// Microseconds since the epoch of `t` (flow control's clock, as stored in `herald.flow_keys`).
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(0)
}

pub(crate) fn message(row: &PgRow) -> Result<Message, sqlx::Error> {
    let body: String = row.try_get("body")?;
    let enqueued: OffsetDateTime = row.try_get("enqueued_at")?;
    let vt: OffsetDateTime = row.try_get("vt")?;
    Ok(Message {
        msg_id: row.try_get("msg_id")?,
        read_ct: row.try_get("read_ct")?,
        enqueued_at: Timestamp::from_datetime(enqueued),
        vt: Timestamp::from_datetime(vt),
        body: body.into_bytes(),
    })
}

pub(crate) fn messages(
    rows: Vec<PgRow>,
    operation: &'static str,
    queue: &str,
) -> Result<Vec<Message>, QueueError> {
    rows.iter()
        .map(message)
        .collect::<Result<_, _>>()
        .map_err(|e| store(operation, queue, e))
}

pub(crate) const COLUMNS: &str = "msg_id, read_ct, enqueued_at, vt, message::text AS body";
