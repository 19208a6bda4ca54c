//! Flow control's read on SQLite: a queue's policy in `herald_flow_policies`, its buckets and
//! last-served times in `herald_flow_keys`, and the read that obeys it: one window query over
//! the queue's messages (keys and priorities read from the bodies with `json_extract`), the
//! shared plan (`herald::queue::flow::plan`), then the lease of what it chose, all in the
//! writer's one transaction, so every reader of the file sees one order.

use std::collections::HashSet;
use std::time::Duration;

use herald::queue::flow::{
    candidates_per_key, plan, rows_of, windows, Candidate, Hidden, KeyState, Plan, Policy,
};
use herald::queue::{Message, QueueError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::store;
use crate::rows::{message, now_micros};

/// The key of a message body: `metadata.flow_key`, then the policy's two paths (bound as ?P
/// and ?Q), else the default key.
fn key_sql(p: usize, q: usize) -> String {
    format!(
        "CAST(coalesce(json_extract(message, '$.metadata.flow_key'), json_extract(message, ?{p}), \
         json_extract(message, ?{q}), '') AS TEXT)"
    )
}

/// The policy of `queue`, if it has one.
pub(crate) fn policy_in(c: &Connection, queue: &str) -> Result<Option<Policy>, QueueError> {
    let text: Option<String> = c
        .prepare_cached("SELECT policy FROM herald_flow_policies WHERE queue = ?1")
        .and_then(|mut s| s.query_row([queue], |r| r.get(0)).optional())
        .map_err(|e| store("read policy", queue, e))?;
    text.map(|t| Policy::stored(queue, &t)).transpose()
}

/// Reads the flow key, priority and place of the queue's messages sent since the last look,
/// from their bodies, into their columns, and registers the keys they bring. A look is a read
/// under the queue's policy, or `set_policy`, which looks at every message already there. The
/// messages are those above the queue's watermark: the highest msg_id of the whole table when
/// it last looked (msg_ids grow in commit order and are never reused (`AUTOINCREMENT`), as one
/// writer at a time holds the file). The scan walks the rowid range above the watermark only
/// (`NOT INDEXED`: the queue index would walk every message of the queue instead). `op` names
/// the caller's operation in an error.
pub(crate) fn materialize(
    c: &Connection,
    op: &'static str,
    queue: &str,
    p1: &str,
    p2: &str,
) -> Result<(), QueueError> {
    let err = |e| store(op, queue, e);
    let mark: i64 = c
        .prepare_cached(
            "SELECT coalesce(max(served), 0) FROM herald_flow_keys WHERE queue = ?1 AND scope = 2",
        )
        .and_then(|mut s| s.query_row([queue], |r| r.get(0)))
        .map_err(err)?;
    let top: i64 = c
        .prepare_cached("SELECT coalesce(max(msg_id), 0) FROM herald_messages")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(err)?;
    if top <= mark {
        return Ok(());
    }
    let filled = c
        .prepare_cached(&format!(
            "UPDATE herald_messages NOT INDEXED SET flow_key = {key},
               flow_prio = coalesce(CAST(json_extract(message, '$.metadata.flow_priority') AS INTEGER), 0),
               flow_seq = coalesce(CAST(json_extract(message, '$.metadata.flow_seq') AS INTEGER), msg_id)
             WHERE msg_id > ?4 AND queue = ?1 AND flow_key IS NULL",
            key = key_sql(2, 3),
        ))
        .and_then(|mut s| s.execute(params![queue, p1, p2, mark]))
        .map_err(err)?;
    if filled > 0 {
        // Each key the new messages bring is registered: the short pass reads keys from here.
        c.prepare_cached(
            "INSERT OR IGNORE INTO herald_flow_keys (queue, scope, key)
             SELECT DISTINCT ?1, 1, flow_key FROM herald_messages NOT INDEXED
             WHERE msg_id > ?2 AND queue = ?1 AND flow_key IS NOT NULL",
        )
        .and_then(|mut s| s.execute(params![queue, mark]))
        .map_err(err)?;
    }
    c.prepare_cached(
        "INSERT INTO herald_flow_keys (queue, scope, key, served) VALUES (?1, 2, '', ?2)
         ON CONFLICT (queue, scope, key) DO UPDATE SET served = max(served, excluded.served)",
    )
    .and_then(|mut s| s.execute(params![queue, top]))
    .map_err(err)?;
    Ok(())
}

/// The facts of one read: each key's window, the queue's in-flight count, the plan; `exact`
/// counts each key's visible messages too (for the status: what is held back).
pub(crate) fn planned(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    qty: usize,
    now: i64,
    exact: bool,
) -> Result<Plan, QueueError> {
    let err = |e| store("flow read", queue, e);
    let [p1, p2] = policy.key_paths();
    materialize(c, "flow read", queue, &p1, &p2)?;
    let held: HashSet<String> = if policy.ordered {
        let dlq = format!("{queue}{}", herald::dlq::DLQ_SUFFIX);
        let sql = format!(
            "SELECT DISTINCT {} FROM herald_messages WHERE queue = ?1",
            key_sql(2, 3)
        );
        c.prepare_cached(&sql)
            .and_then(|mut s| s.query_map(params![dlq, p1, p2], |r| r.get(0))?.collect())
            .map_err(err)?
    } else {
        HashSet::new()
    };
    // Each key's hidden messages (in flight, waiting out a retry, delayed): few, found by
    // the ready index (named: left to itself, SQLite walks the flow index, every keyed
    // message of the queue, twice the time at 2,000 messages).
    let hidden: Hidden = c
        .prepare_cached(
            "SELECT flow_key, sum(read_ct > 0), min(flow_seq)
             FROM herald_messages INDEXED BY herald_messages_ready
             WHERE queue = ?1 AND vt > ?2 AND flow_key IS NOT NULL GROUP BY flow_key",
        )
        .and_then(|mut s| {
            s.query_map(params![queue, now], |r| {
                Ok((
                    r.get(0)?,
                    (
                        u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                        r.get(2)?,
                    ),
                ))
            })?
            .collect()
        })
        .map_err(err)?;
    let ceiling = ceiling(c, queue)?;
    if !exact && ceiling == 0 && policy.weights.is_empty() {
        if let Some(windows) = crate::heads::windows(c, queue, policy, qty, now, &hidden, &held)? {
            let (in_flight, queue_bucket) = queue_facts(c, queue, policy, now)?;
            let plan = plan(policy, now, qty, windows, in_flight, queue_bucket, 0);
            if plan.take.len() >= qty {
                return Ok(plan);
            }
        }
    }
    let aging = i64::from(policy.aging_secs) * 1_000_000;
    let candidate = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, Candidate)> {
        Ok((
            r.get(0)?,
            Candidate {
                msg_id: r.get(1)?,
                seq: r.get(2)?,
                priority: r.get(3)?,
                enqueued_us: r.get(4)?,
            },
        ))
    };
    // Each key's best visible message, in one grouped pass over the flow index (no sort; each
    // row's `vt` and `enqueued_at` from the table, ahead of the body in its record): the
    // highest effective priority, then the lowest place (SQLite gives the other columns of
    // the row that holds the max); for ordering keys, the lowest place.
    let best = if policy.ordered {
        "max(-flow_seq + 0 * ?3)"
    } else {
        "max(min(9, max(0, flow_prio) + (?2 - enqueued_at) / ?3) * 1000000000000000 - flow_seq)"
    };
    let heads: Vec<(String, Candidate)> = c
        .prepare_cached(&format!(
            "SELECT flow_key, msg_id, flow_seq, flow_prio, enqueued_at, {best}
             FROM herald_messages INDEXED BY herald_messages_flow_seq
             WHERE queue = ?1 AND flow_key IS NOT NULL AND vt <= ?2 GROUP BY flow_key"
        ))
        .and_then(|mut s| {
            s.query_map(params![queue, now, aging], candidate)?
                .collect()
        })
        .map_err(err)?;
    let per_key = candidates_per_key(policy, qty, &heads, &hidden, &held);
    let head_of: std::collections::HashMap<String, i64> =
        heads.iter().map(|(k, c)| (k.clone(), c.seq)).collect();
    let found: Vec<(String, Candidate)> = if per_key <= 1 {
        heads
    } else {
        let order = if policy.ordered {
            // ?4 (the aging step) unused here, but bound all the same.
            "flow_seq + 0 * ?4"
        } else {
            "min(9, max(0, flow_prio) + (?2 - enqueued_at) / ?4) DESC, flow_seq"
        };
        c.prepare_cached(&format!(
            "SELECT flow_key, msg_id, flow_seq, flow_prio, enqueued_at FROM (
               SELECT flow_key, msg_id, flow_seq, flow_prio, enqueued_at,
                 row_number() OVER (PARTITION BY flow_key ORDER BY {order}) AS rn
               FROM herald_messages INDEXED BY herald_messages_flow_seq
               WHERE queue = ?1 AND flow_key IS NOT NULL AND vt <= ?2)
             WHERE rn <= ?3"
        ))
        .and_then(|mut s| {
            let n = i64::try_from(per_key).unwrap_or(i64::MAX);
            s.query_map(params![queue, now, n, aging], candidate)?
                .collect()
        })
        .map_err(err)?
    };
    // Visible counts per key are for the status only (a read does not need them).
    let visible: Option<std::collections::HashMap<String, u64>> = if exact {
        Some(
            c.prepare_cached(
                "SELECT flow_key, count(*) FROM herald_messages INDEXED BY herald_messages_flow_seq
                 WHERE queue = ?1 AND flow_key IS NOT NULL AND vt <= ?2 GROUP BY flow_key",
            )
            .and_then(|mut s| {
                s.query_map(params![queue, now], |r| {
                    Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
                })?
                .collect()
            })
            .map_err(err)?,
        )
    } else {
        None
    };
    let rows = rows_of(found, &head_of, &hidden, visible.as_ref());
    let states: Vec<KeyState> = c
        .prepare_cached(
            "SELECT scope, key, tokens, at, served FROM herald_flow_keys
             WHERE queue = ?1 AND scope IN (0, 1)",
        )
        .and_then(|mut s| {
            s.query_map([queue], |r| {
                let scope: i64 = r.get(0)?;
                let tokens: Option<f64> = r.get(2)?;
                let at: Option<i64> = r.get(3)?;
                Ok(KeyState {
                    key: (scope == 1).then(|| r.get(1)).transpose()?,
                    bucket: tokens.zip(at),
                    served_us: r.get(4)?,
                })
            })?
            .collect()
        })
        .map_err(err)?;
    let in_flight = queue_in_flight(c, queue, policy, now)?;
    let (windows, queue_bucket) = windows(rows, states, &held);
    Ok(plan(
        policy,
        now,
        qty,
        windows,
        in_flight,
        queue_bucket,
        ceiling,
    ))
}

/// The highest priority sent among the queue's messages, through the partial index of those
/// above 0: between keys, heads age up to it and no higher.
fn ceiling(c: &Connection, queue: &str) -> Result<i64, QueueError> {
    c.prepare_cached(
        "SELECT coalesce(max(flow_prio), 0) FROM herald_messages INDEXED BY herald_messages_prio
         WHERE queue = ?1 AND flow_prio > 0",
    )
    .and_then(|mut s| s.query_row([queue], |r| r.get(0)))
    .map_err(|e| store("flow read", queue, e))
}

/// The queue's messages in flight, counted only when a queue-wide limit needs them.
fn queue_in_flight(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    now: i64,
) -> Result<u32, QueueError> {
    if policy.max_in_flight.is_none() {
        return Ok(0);
    }
    let n: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM herald_messages WHERE queue = ?1 AND vt > ?2 AND read_ct > 0",
        )
        .and_then(|mut s| s.query_row(params![queue, now], |r| r.get(0)))
        .map_err(|e| store("flow read", queue, e))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The queue-wide facts a plan needs: the messages in flight (under `max_in_flight`) and the
/// queue's bucket (under `queue_rate`).
fn queue_facts(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    now: i64,
) -> Result<(u32, Option<(f64, i64)>), QueueError> {
    let in_flight = queue_in_flight(c, queue, policy, now)?;
    let bucket = if policy.queue_rate.is_some() {
        c.prepare_cached("SELECT tokens, at FROM herald_flow_keys WHERE queue = ?1 AND scope = 0")
            .and_then(|mut s| {
                s.query_row([queue], |r| {
                    Ok(r.get::<_, Option<f64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
                })
                .optional()
            })
            .map_err(|e| store("flow read", queue, e))?
            .flatten()
    } else {
        None
    };
    Ok((in_flight, bucket))
}

/// The lease of a flow read: `?2` the ids (a JSON array), `?3` the new `vt`.
const LEASE_SQL: &str = "UPDATE herald_messages NOT INDEXED SET read_ct = read_ct + 1, vt = ?3
     WHERE queue = ?1 AND msg_id IN (SELECT value FROM json_each(?2))
     RETURNING msg_id, read_ct, enqueued_at, vt, message";

/// Reads up to `qty` messages of `queue` under `policy`, hiding each for `vt`; also says when
/// the next token comes if a rate held messages back.
pub(crate) fn read_in(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    vt: Duration,
    qty: usize,
) -> Result<(Vec<Message>, Option<i64>), QueueError> {
    let now = now_micros();
    let plan = planned(c, queue, policy, qty, now, false)?;
    let err = |e| store("flow read", queue, e);
    let until = now + i64::try_from(vt.as_micros()).unwrap_or(i64::MAX / 2);
    // One statement leases them all (their ids as a JSON array), handed out in the plan's
    // order (priority, fairness). Each found by its rowid (`NOT INDEXED`): given `queue = ?1`,
    // SQLite walked the queue's whole ready index instead and matched every entry against the
    // list, a read's cost growing with the queue.
    let ids: Vec<i64> = plan.take.iter().map(|t| t.msg_id).collect();
    let mut out: Vec<Message> = if ids.is_empty() {
        Vec::new()
    } else {
        let list = serde_json::to_string(&ids).unwrap_or_default();
        c.prepare_cached(LEASE_SQL)
            .and_then(|mut s| s.query_map(params![queue, list, until], message)?.collect())
            .map_err(err)?
    };
    let rank: std::collections::HashMap<i64, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    out.sort_by_key(|m| rank.get(&m.msg_id).copied().unwrap_or(usize::MAX));
    let mut bucket = c
        .prepare_cached(
            "INSERT INTO herald_flow_keys (queue, scope, key, tokens, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (queue, scope, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
        )
        .map_err(err)?;
    for (key, tokens) in &plan.buckets {
        bucket
            .execute(params![queue, 1, key, tokens, now])
            .map_err(err)?;
    }
    if let Some(tokens) = plan.queue_bucket {
        bucket
            .execute(params![queue, 0, "", tokens, now])
            .map_err(err)?;
    }
    if !plan.served.is_empty() {
        let keys = serde_json::to_string(&plan.served).unwrap_or_default();
        c.prepare_cached(
            "INSERT INTO herald_flow_keys (queue, scope, key, served)
             SELECT ?1, 1, value, ?3 FROM json_each(?2) WHERE true
             ON CONFLICT (queue, scope, key) DO UPDATE SET served = excluded.served",
        )
        .and_then(|mut s| s.execute(params![queue, keys, now]))
        .map_err(err)?;
    }
    Ok((out, plan.next_token_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lease finds each message by its rowid, whatever the queue holds: a plan that walks
    /// an index of the queue makes every flow read grow with the queue.
    #[test]
    fn the_lease_finds_each_message_by_its_rowid() {
        let c = Connection::open_in_memory().expect("open");
        crate::schema::ensure(&c).expect("schema");
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {LEASE_SQL}"))
            .and_then(|mut s| {
                s.query_map(params!["q", "[1, 2]", 0], |r| r.get::<_, String>(3))?
                    .collect()
            })
            .expect("plan");
        assert!(
            plan.iter()
                .any(|d| d.contains("herald_messages USING INTEGER PRIMARY KEY")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|d| d.contains("INDEX herald_messages_")),
            "{plan:?}"
        );
    }
}
