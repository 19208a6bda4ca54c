//! Flow control on SQLite: a queue's policy in `herald_flow_policies`, its buckets and
//! last-served times in `herald_flow_keys`, and the read that obeys it: one window query over
//! the queue's messages (keys and priorities read from the bodies with `json_extract`), the
//! shared plan (`herald::queue::flow::plan`), then the lease of what it chose, all in the
//! writer's one transaction, so every reader of the file sees one order.

use std::collections::HashSet;
use std::time::Duration;

use herald::queue::flow::{
    plan, window_size, windows, Candidate, FlowControl, FlowStatus, KeyState, Plan, Policy, Row,
};
use herald::queue::{Message, QueueError, QueueName};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::store;
use crate::queue::{exists, message, now_micros, SqliteStore};

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
    text.map(|t| {
        Policy::from_json(&t).map_err(|e| {
            QueueError::store(
                "read policy",
                queue,
                false,
                format!("the stored policy is not readable: {e}"),
            )
        })
    })
    .transpose()
}

/// The facts of one read: each key's window, the queue's in-flight count, the plan.
fn planned(
    c: &Connection,
    queue: &str,
    policy: &Policy,
    qty: usize,
    now: i64,
) -> Result<Plan, QueueError> {
    let err = |e| store("flow read", queue, e);
    let [p1, p2] = policy.key_paths();
    // Each message's key, priority and place are read from its body once, by the first read
    // under the policy that sees it (a new policy clears them): later reads scan columns.
    c.prepare_cached(&format!(
        "UPDATE herald_messages SET flow_key = {key},
           flow_prio = coalesce(CAST(json_extract(message, '$.metadata.flow_priority') AS INTEGER), 0),
           flow_seq = coalesce(CAST(json_extract(message, '$.metadata.flow_seq') AS INTEGER), msg_id)
         WHERE queue = ?1 AND flow_key IS NULL",
        key = key_sql(2, 3),
    ))
    .and_then(|mut s| s.execute(params![queue, p1, p2]))
    .map_err(err)?;
    let order = if policy.ordered {
        // ?4 (the aging step) unused here, but bound all the same.
        "flow_seq + 0 * ?4"
    } else {
        "min(9, max(0, flow_prio) + (?2 - enqueued_at) / ?4) DESC, flow_seq"
    };
    let sql = format!(
        "WITH k AS (
           SELECT msg_id, vt, enqueued_at, flow_key, flow_prio, flow_seq,
             sum(read_ct > 0 AND vt > ?2) OVER w AS in_flight,
             min(flow_seq) OVER w AS head_seq,
             sum(vt <= ?2) OVER w AS visible
           FROM herald_messages WHERE queue = ?1 WINDOW w AS (PARTITION BY flow_key)
         ), r AS (
           SELECT *, row_number() OVER (PARTITION BY flow_key ORDER BY {order}) AS rn
           FROM k WHERE vt <= ?2
         )
         SELECT flow_key, msg_id, flow_seq, flow_prio, enqueued_at, in_flight, head_seq, visible
         FROM r WHERE rn <= ?3",
    );
    let per_key = i64::try_from(window_size(policy, qty)).unwrap_or(i64::MAX);
    let aging = i64::from(policy.aging_secs) * 1_000_000;
    let rows: Vec<Row> = c
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params![queue, now, per_key, aging], |r| {
                Ok(Row {
                    key: r.get(0)?,
                    candidate: Candidate {
                        msg_id: r.get(1)?,
                        seq: r.get(2)?,
                        priority: r.get(3)?,
                        enqueued_us: r.get(4)?,
                    },
                    in_flight: u32::try_from(r.get::<_, i64>(5)?).unwrap_or(u32::MAX),
                    head_seq: r.get(6)?,
                    visible: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                })
            })?
            .collect()
        })
        .map_err(err)?;
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
    let states: Vec<KeyState> = c
        .prepare_cached(
            "SELECT scope, key, tokens, at, served FROM herald_flow_keys WHERE queue = ?1",
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
    let in_flight: i64 = if policy.max_in_flight.is_some() {
        c.prepare_cached(
            "SELECT count(*) FROM herald_messages WHERE queue = ?1 AND vt > ?2 AND read_ct > 0",
        )
        .and_then(|mut s| s.query_row(params![queue, now], |r| r.get(0)))
        .map_err(err)?
    } else {
        0
    };
    let (windows, queue_bucket) = windows(rows, states, &held);
    Ok(plan(
        policy,
        now,
        qty,
        windows,
        u32::try_from(in_flight).unwrap_or(u32::MAX),
        queue_bucket,
    ))
}

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
    let plan = planned(c, queue, policy, qty, now)?;
    let err = |e| store("flow read", queue, e);
    let until = now + i64::try_from(vt.as_micros()).unwrap_or(i64::MAX / 2);
    let mut out = Vec::with_capacity(plan.take.len());
    {
        let mut lease = c
            .prepare_cached(
                "UPDATE herald_messages SET read_ct = read_ct + 1, vt = ?3
                 WHERE queue = ?1 AND msg_id = ?2
                 RETURNING msg_id, read_ct, enqueued_at, vt, message",
            )
            .map_err(err)?;
        for t in &plan.take {
            out.push(
                lease
                    .query_row(params![queue, t.msg_id, until], message)
                    .map_err(err)?,
            );
        }
    }
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
    let mut served = c
        .prepare_cached(
            "INSERT INTO herald_flow_keys (queue, scope, key, served) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (queue, scope, key) DO UPDATE SET served = excluded.served",
        )
        .map_err(err)?;
    for key in &plan.served {
        served.execute(params![queue, key, now]).map_err(err)?;
    }
    Ok((out, plan.next_token_us))
}

/// What a read with room for everything would hold back now.
const STATUS_WINDOW: usize = 1_000;

impl FlowControl for SqliteStore {
    async fn set_policy(&self, queue: &QueueName, policy: &Policy) -> Result<(), QueueError> {
        let text = policy.to_json();
        self.run("set policy", queue, move |c, q| {
            exists(c, q)?;
            c.prepare_cached(
                "INSERT INTO herald_flow_policies (queue, policy, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (queue) DO UPDATE SET policy = excluded.policy,
                   updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![q, text, now_micros()]))
            .and_then(|_| {
                // Keys are read again under the new policy's key path.
                c.prepare_cached(
                    "UPDATE herald_messages SET flow_key = NULL WHERE queue = ?1 AND flow_key IS NOT NULL",
                )?
                .execute([q])
            })
            .map(drop)
            .map_err(|e| store("set policy", q, e))
        })
        .await
    }

    async fn policy(&self, queue: &QueueName) -> Result<Option<Policy>, QueueError> {
        self.run("read policy", queue, |c, q| {
            exists(c, q)?;
            policy_in(c, q)
        })
        .await
    }

    async fn clear_policy(&self, queue: &QueueName) -> Result<bool, QueueError> {
        self.run("clear policy", queue, |c, q| {
            exists(c, q)?;
            let n = c
                .execute("DELETE FROM herald_flow_policies WHERE queue = ?1", [q])
                .and_then(|n| {
                    c.execute("DELETE FROM herald_flow_keys WHERE queue = ?1", [q])
                        .map(|_| n)
                })
                .map_err(|e| store("clear policy", q, e))?;
            Ok(n > 0)
        })
        .await
    }

    async fn flow_status(&self, queue: &QueueName) -> Result<FlowStatus, QueueError> {
        self.run("flow status", queue, |c, q| {
            exists(c, q)?;
            let Some(policy) = policy_in(c, q)? else {
                return Ok(FlowStatus {
                    queue: q.to_owned(),
                    ..FlowStatus::default()
                });
            };
            let plan = planned(c, q, &policy, STATUS_WINDOW, now_micros())?;
            Ok(FlowStatus {
                queue: q.to_owned(),
                policy: true,
                waiting: plan.waiting,
            })
        })
        .await
    }
}
