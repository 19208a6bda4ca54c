//! Flow control's short pass on SQLite: the first keys able to give, in the order the plan
//! serves them (least recently served first, from `herald_flow_keys`, where every key is
//! registered as its messages' columns are filled), each with its best visible message from
//! one probe of the flow index: a read's cost grows with its size, not with the queue's.
//!
//! It is exact when the plan's order between keys is their last-served time alone (every
//! message of the queue has one priority and no key has a weight); the caller falls back to
//! the whole pass when it is not, when fewer keys can give than the read wants, or when the
//! plan takes fewer (a rate or a queue limit held some back). Keys it finds with no message
//! left are forgotten here (unless a bucket of theirs is still refilling): a key that comes
//! back starts as never served.

use std::collections::HashSet;

use herald::queue::flow::{Candidate, Hidden, KeyWindow, Policy};
use herald::queue::QueueError;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::store;

/// A registered key: its name, last served, bucket tokens and time.
type KeyRow = (String, Option<i64>, Option<f64>, Option<i64>);

/// The windows of the first `qty` keys able to give (below their concurrency, not held, their
/// head visible for ordering keys), least recently served first, each with its best visible
/// message; `None` when fewer than `qty` can. `hidden` and `held` as the whole pass reads them.
pub(crate) fn windows(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    qty: usize,
    now: i64,
    hidden: &Hidden,
    held: &HashSet<String>,
) -> Result<Option<Vec<KeyWindow>>, QueueError> {
    let err = |e| store("flow read", queue, e);
    let mut keys = c
        .prepare_cached(
            "SELECT key, served, tokens, at FROM herald_flow_keys INDEXED BY herald_flow_keys_served
             WHERE queue = ?1 AND scope = 1 ORDER BY served",
        )
        .map_err(err)?;
    let mut head = c
        .prepare_cached(
            "SELECT msg_id, flow_seq, flow_prio, enqueued_at
             FROM herald_messages INDEXED BY herald_messages_flow_seq
             WHERE queue = ?1 AND flow_key = ?2 AND vt <= ?3 ORDER BY flow_seq LIMIT 1",
        )
        .map_err(err)?;
    let mut rows = keys.query([queue]).map_err(err)?;
    let mut out = Vec::with_capacity(qty);
    let mut drained = Vec::new();
    while out.len() < qty {
        let Some(row) = rows.next().map_err(err)? else {
            break;
        };
        let (key, served, tokens, at): KeyRow = (
            row.get(0).map_err(err)?,
            row.get(1).map_err(err)?,
            row.get(2).map_err(err)?,
            row.get(3).map_err(err)?,
        );
        if held.contains(&key) {
            continue;
        }
        let (in_flight, hidden_head) = hidden.get(&key).copied().unwrap_or((0, i64::MAX));
        let full = if policy.ordered {
            in_flight > 0
        } else {
            policy.concurrency.is_some_and(|limit| in_flight >= limit)
        };
        if full {
            continue;
        }
        let best = head
            .query_row(params![queue, key, now], |r| {
                Ok(Candidate {
                    msg_id: r.get(0)?,
                    seq: r.get(1)?,
                    priority: r.get(2)?,
                    enqueued_us: r.get(3)?,
                })
            })
            .optional()
            .map_err(err)?;
        let Some(best) = best else {
            if !hidden.contains_key(&key) {
                drained.push(key);
            }
            continue;
        };
        if policy.ordered && hidden_head < best.seq {
            continue;
        }
        out.push(KeyWindow {
            head_seq: hidden_head.min(best.seq),
            key,
            candidates: vec![best],
            in_flight,
            visible: 1,
            served_us: served,
            bucket: tokens.zip(at),
            held: false,
        });
    }
    drop(rows);
    forget(c, queue, policy, now, &drained)?;
    Ok((out.len() >= qty).then_some(out))
}

/// Forgets the registrations of `keys` (which have no message left) whose bucket, if any, is
/// full by `now`.
fn forget(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    now: i64,
    keys: &[String],
) -> Result<(), QueueError> {
    if keys.is_empty() {
        return Ok(());
    }
    let (per_us, burst) = policy
        .rate
        .as_ref()
        .map_or((0.0, 0.0), |r| (r.per_micro(), f64::from(r.burst)));
    let list = serde_json::to_string(keys).unwrap_or_default();
    c.prepare_cached(
        "DELETE FROM herald_flow_keys WHERE queue = ?1 AND scope = 1
           AND key IN (SELECT value FROM json_each(?2))
           AND (tokens IS NULL OR at IS NULL OR tokens + (?3 - at) * ?4 >= ?5)",
    )
    .and_then(|mut s| s.execute(params![queue, list, now, per_us, burst]))
    .map_err(|e| store("flow read", queue, e))?;
    Ok(())
}
