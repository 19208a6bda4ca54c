//! Flow control's short pass on PostgreSQL: the first keys able to give, in the order the
//! plan serves them (least recently served first), each with its best visible message, read
//! through `herald.flow_keys` (every key a send brings is registered there by the insert
//! trigger) in one statement whose cost grows with the read's size, not with the queue's.
//!
//! It is exact when the plan's order between keys is their last-served time alone: every
//! message of the queue has one priority (the ceiling is 0) and no key has a weight. The
//! caller falls back to the whole pass (`flow::planned`) when it is not, when it finds fewer
//! keys than the read wants, or when the plan takes fewer than that (a rate or a queue limit
//! held some back): then every key is looked at, as before.

use std::collections::HashSet;

use herald::queue::flow::{Candidate, KeyWindow, Policy};
use herald::queue::QueueError;
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;

use crate::error::store;

/// What the short pass found: the database's clock, read in the same statement, and the first
/// keys able to give (`None` when fewer than the read wants, or when the queue's priority
/// ceiling is above 0 and the pass does not apply).
pub(crate) struct Short {
    pub(crate) now: OffsetDateTime,
    pub(crate) windows: Option<Vec<KeyWindow>>,
}

/// The windows of the first `qty` keys able to give (below their concurrency, not held, their
/// head visible for ordering keys), least recently served first, each with its best visible
/// message. Only for a policy without weights (the caller's check): the ceiling is checked
/// here.
pub(crate) async fn windows(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
    qty: usize,
    held: &HashSet<String>,
) -> Result<Short, QueueError> {
    let err = |e| store("flow read", queue, e);
    // Under an ordering key nothing may be in flight; otherwise the key's concurrency.
    let cap: i64 = if policy.ordered {
        1
    } else {
        policy.concurrency.map_or(i64::MAX, i64::from)
    };
    let held: Vec<String> = held.iter().cloned().collect();
    let sql = format!(
        "WITH t AS MATERIALIZED (
           SELECT clock_timestamp() AS now, ({ceiling}) AS ceiling),
         hid AS MATERIALIZED (
           SELECT f.flow_key, count(*) FILTER (WHERE m.read_ct > 0) AS n, min(f.flow_seq) AS s
           FROM pgmq.\"q_{queue}\" m CROSS JOIN LATERAL (
             SELECT x.flow_key, x.flow_seq FROM herald.flow_index x
             WHERE x.queue = $1 AND x.msg_id = m.msg_id OFFSET 0) f
           WHERE m.vt > (SELECT now FROM t) GROUP BY f.flow_key),
         r AS (
           SELECT k.key, k.served, k.tokens, k.at, coalesce(h.n, 0) AS n, h.s,
                  c.msg_id, c.flow_seq, c.flow_prio, c.enq
           FROM herald.flow_keys k
           LEFT JOIN LATERAL (SELECT hid.n, hid.s FROM hid WHERE hid.flow_key = k.key) h ON true
           CROSS JOIN LATERAL (
             SELECT m.msg_id, f.flow_seq, f.flow_prio,
                    (extract(epoch FROM m.enqueued_at) * 1000000)::int8 AS enq
             FROM herald.flow_index f JOIN pgmq.\"q_{queue}\" m ON m.msg_id = f.msg_id
             WHERE f.queue = $1 AND f.flow_key = k.key AND m.vt <= (SELECT now FROM t)
             ORDER BY f.flow_seq LIMIT 1) c
           WHERE k.queue = $1 AND k.scope = 1 AND coalesce(h.n, 0) < $2
             AND NOT (k.key = ANY($3))
             AND (NOT $4 OR h.s IS NULL OR h.s > c.flow_seq)
           ORDER BY k.served NULLS FIRST LIMIT $5)
         SELECT t.now, t.ceiling, r.* FROM t LEFT JOIN r ON true",
        ceiling = crate::flow::CEILING_SQL,
    );
    let rows = sqlx::query(&sql)
        .bind(queue)
        .bind(cap)
        .bind(&held)
        .bind(policy.ordered)
        .bind(i64::try_from(qty).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await
        .map_err(err)?;
    // One row at least (the clock's), with no key when none can give.
    let (now, ceiling): (OffsetDateTime, i32) = match rows.first() {
        Some(r) => (r.try_get(0).map_err(err)?, r.try_get(1).map_err(err)?),
        None => {
            return Err(QueueError::store(
                "flow read",
                queue,
                false,
                "the short pass returned no row".to_owned(),
            ))
        }
    };
    let ceiling = i64::from(ceiling);
    let found = rows
        .iter()
        .filter(|r| matches!(r.try_get::<Option<String>, _>(2), Ok(Some(_))));
    if ceiling > 0 || found.clone().count() < qty {
        return Ok(Short { now, windows: None });
    }
    let mut windows = Vec::with_capacity(qty);
    for r in found {
        let window = (|| -> Result<KeyWindow, sqlx::Error> {
            let tokens: Option<f64> = r.try_get(4)?;
            let at: Option<i64> = r.try_get(5)?;
            let seq: i64 = r.try_get(9)?;
            let hidden_head: Option<i64> = r.try_get(7)?;
            Ok(KeyWindow {
                key: r.try_get(2)?,
                served_us: r.try_get(3)?,
                bucket: tokens.zip(at),
                in_flight: u32::try_from(r.try_get::<i64, _>(6)?).unwrap_or(u32::MAX),
                head_seq: hidden_head.map_or(seq, |h| h.min(seq)),
                visible: 1,
                held: false,
                candidates: vec![Candidate {
                    msg_id: r.try_get(8)?,
                    seq,
                    priority: i64::from(r.try_get::<i32, _>(10)?),
                    enqueued_us: r.try_get(11)?,
                }],
            })
        })()
        .map_err(err)?;
        windows.push(window);
    }
    Ok(Short {
        now,
        windows: Some(windows),
    })
}
