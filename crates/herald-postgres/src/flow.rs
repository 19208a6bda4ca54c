//! Flow control's read on PostgreSQL: a queue's policy in `herald.flow_policies` (cached per process
//! for [`POLICY_TTL`]), its buckets and last-served times in `herald.flow_keys`, and the read
//! that obeys it: under a transaction-scoped advisory lock on the queue (so readers in every
//! process take turns), one window query over PGMQ's `pgmq.q_{queue}` (keys and priorities
//! read from the `jsonb` bodies with `jsonb_path_query_first`), the shared plan
//! (`herald::queue::flow::plan`), and the lease of what it chose, in one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::queue::flow::{
    candidates_per_key, plan, rows_of, windows, Candidate, Hidden, KeyState, Plan, Policy,
};
use herald::queue::{Message, QueueError, QueueName};
use sqlx::{PgConnection, PgPool, Row as _};
use time::OffsetDateTime;

use crate::error::store;

/// How long a process keeps a queue's policy before looking again: a policy set elsewhere
/// applies here within this.
pub const POLICY_TTL: Duration = Duration::from_secs(1);

/// How often a read whose messages are all held back looks again.
pub(crate) const HELD_RECHECK: Duration = Duration::from_millis(25);

/// A policy looked up (or found missing), and when.
type Looked = (Instant, Option<Arc<Policy>>);

/// A stored key state: scope, key, tokens, at, served.
type StateRow = (i16, String, Option<f64>, Option<i64>, Option<i64>);

/// Policies looked up, by queue.
#[derive(Default)]
pub(crate) struct PolicyCache {
    by_queue: parking_lot::Mutex<HashMap<String, Looked>>,
}

impl PolicyCache {
    fn get(&self, queue: &str) -> Option<Option<Arc<Policy>>> {
        let map = self.by_queue.lock();
        map.get(queue)
            .filter(|(at, _)| at.elapsed() < POLICY_TTL)
            .map(|(_, p)| p.clone())
    }

    pub(crate) fn forget(&self, queue: &str) {
        self.by_queue.lock().remove(queue);
    }

    pub(crate) fn put(&self, queue: &str, policy: Option<Arc<Policy>>) {
        self.by_queue
            .lock()
            .insert(queue.to_owned(), (Instant::now(), policy));
    }
}

/// The key of a PGMQ message: `metadata.flow_key`, then the policy's two paths (bound as $P
/// and $Q), else the default key.
pub(crate) fn key_sql(p: usize, q: usize) -> String {
    format!(
        "coalesce(message #>> '{{metadata,flow_key}}', message #>> ${p}::text[], \
         message #>> ${q}::text[], '')"
    )
}

pub(crate) const PRIORITY_SQL: &str =
    "CASE WHEN jsonb_typeof(message->'metadata'->'flow_priority') = 'number' \
     THEN least(greatest((message->'metadata'->>'flow_priority')::numeric, 0), 9)::int ELSE 0 END";

pub(crate) const SEQ_SQL: &str =
    "CASE WHEN jsonb_typeof(message->'metadata'->'flow_seq') = 'number' \
     THEN least(greatest((message->'metadata'->>'flow_seq')::numeric, 0), 9e18)::int8 \
     ELSE msg_id END";

/// `queue`'s policy, read on `c`.
pub(crate) async fn policy_on(
    c: &mut PgConnection,
    queue: &str,
) -> Result<Option<Policy>, QueueError> {
    let text: Option<String> =
        sqlx::query_scalar("SELECT policy::text FROM herald.flow_policies WHERE queue = $1")
            .bind(queue)
            .fetch_optional(c)
            .await
            .map_err(|e| store("read policy", queue, e))?;
    text.map(|t| Policy::stored(queue, &t)).transpose()
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(0)
}

/// The plan of one read of `queue` under `policy` at `now` (the database's clock).
pub(crate) async fn planned(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
    qty: usize,
    now: OffsetDateTime,
    exact: bool,
) -> Result<Plan, QueueError> {
    let err = |e| store("flow read", queue, e);
    let [p1, p2] = policy.key_segments();
    let held: HashSet<String> = if policy.ordered {
        let dlq = format!("{queue}{}", herald::dlq::DLQ_SUFFIX);
        let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("pgmq.\"q_{dlq}\""))
            .fetch_one(&mut *c)
            .await
            .map_err(err)?;
        if there {
            let sql = format!("SELECT DISTINCT {} FROM pgmq.\"q_{dlq}\"", key_sql(1, 2));
            sqlx::query_scalar::<_, String>(&sql)
                .bind(&p1)
                .bind(&p2)
                .fetch_all(&mut *c)
                .await
                .map_err(err)?
                .into_iter()
                .collect()
        } else {
            HashSet::new()
        }
    } else {
        HashSet::new()
    };
    // Each key's hidden messages (in flight, waiting out a retry, delayed): few, found by
    // PGMQ's index on vt, their keys by herald.flow_index.
    let hidden: Hidden = sqlx::query_as::<_, (String, i64, i64)>(&format!(
        "SELECT f.flow_key, count(*) FILTER (WHERE m.read_ct > 0), min(f.flow_seq)
         FROM pgmq.\"q_{queue}\" m JOIN herald.flow_index f ON f.queue = $1 AND f.msg_id = m.msg_id
         WHERE m.vt > $2 GROUP BY f.flow_key"
    ))
    .bind(queue)
    .bind(now)
    .fetch_all(&mut *c)
    .await
    .map_err(err)?
    .into_iter()
    .map(|(k, n, seq)| (k, (u32::try_from(n).unwrap_or(u32::MAX), seq)))
    .collect();
    let order = if policy.ordered {
        "f.flow_seq"
    } else {
        "least(9, greatest(f.flow_prio, 0) + floor(extract(epoch FROM ($2 - m.enqueued_at)) / $3)::int) DESC, f.flow_seq"
    };
    let aging = f64::from(policy.aging_secs);
    let candidate = |r: &sqlx::postgres::PgRow| -> Result<(String, Candidate), sqlx::Error> {
        Ok((
            r.try_get(0)?,
            Candidate {
                msg_id: r.try_get(1)?,
                seq: r.try_get(2)?,
                priority: i64::from(r.try_get::<i32, _>(3)?),
                enqueued_us: r.try_get(4)?,
            },
        ))
    };
    let columns = "f.flow_key, m.msg_id, f.flow_seq, f.flow_prio, \
                   (extract(epoch FROM m.enqueued_at) * 1000000)::int8";
    // Each key's best visible message: its first by the order, one pass.
    let sql = format!(
        "SELECT DISTINCT ON (f.flow_key) {columns}
         FROM herald.flow_index f JOIN pgmq.\"q_{queue}\" m ON m.msg_id = f.msg_id
         WHERE f.queue = $1 AND m.vt <= $2 ORDER BY f.flow_key, {order}"
    );
    let mut query = sqlx::query(&sql).bind(queue).bind(now);
    if !policy.ordered {
        query = query.bind(aging);
    }
    let heads: Vec<(String, Candidate)> = query
        .fetch_all(&mut *c)
        .await
        .map_err(err)?
        .iter()
        .map(candidate)
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let per_key = candidates_per_key(policy, qty, &heads, &hidden, &held);
    let head_of: HashMap<String, i64> = heads.iter().map(|(k, c)| (k.clone(), c.seq)).collect();
    let found: Vec<(String, Candidate)> = if per_key <= 1 {
        heads
    } else {
        // $3 is the aging step, bound (and typed) even where the order does not use it.
        let sql = format!(
            "SELECT flow_key, msg_id, flow_seq, flow_prio,
                    (extract(epoch FROM enqueued_at) * 1000000)::int8 FROM (
               SELECT f.flow_key, f.flow_seq, f.flow_prio, m.msg_id, m.enqueued_at,
                 row_number() OVER (PARTITION BY f.flow_key ORDER BY {order}) AS rn
               FROM herald.flow_index f JOIN pgmq.\"q_{queue}\" m ON m.msg_id = f.msg_id
               WHERE f.queue = $1 AND m.vt <= $2 AND $3::float8 IS NOT NULL) w
             WHERE rn <= $4"
        );
        sqlx::query(&sql)
            .bind(queue)
            .bind(now)
            .bind(aging)
            .bind(i64::try_from(per_key).unwrap_or(i64::MAX))
            .fetch_all(&mut *c)
            .await
            .map_err(err)?
            .iter()
            .map(candidate)
            .collect::<Result<_, _>>()
            .map_err(err)?
    };
    // Visible counts per key are for the status only (a read does not need them).
    let visible: Option<HashMap<String, u64>> = if exact {
        Some(
            sqlx::query_as::<_, (String, i64)>(&format!(
                "SELECT f.flow_key, count(*)
                 FROM herald.flow_index f JOIN pgmq.\"q_{queue}\" m ON m.msg_id = f.msg_id
                 WHERE f.queue = $1 AND m.vt <= $2 GROUP BY f.flow_key"
            ))
            .bind(queue)
            .bind(now)
            .fetch_all(&mut *c)
            .await
            .map_err(err)?
            .into_iter()
            .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
            .collect(),
        )
    } else {
        None
    };
    let rows = rows_of(found, &head_of, &hidden, visible.as_ref());
    let states: Vec<StateRow> = sqlx::query_as(
        "SELECT scope, key, tokens, at, served FROM herald.flow_keys WHERE queue = $1",
    )
    .bind(queue)
    .fetch_all(&mut *c)
    .await
    .map_err(err)?;
    let states = states
        .into_iter()
        .map(|(scope, key, tokens, at, served)| KeyState {
            key: (scope == 1).then_some(key),
            bucket: tokens.zip(at),
            served_us: served,
        })
        .collect();
    let in_flight: i64 = if policy.max_in_flight.is_some() {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pgmq.\"q_{queue}\" WHERE vt > $1 AND read_ct > 0"
        ))
        .bind(now)
        .fetch_one(&mut *c)
        .await
        .map_err(err)?
    } else {
        0
    };
    let (windows, queue_bucket) = windows(rows, states, &held);
    Ok(plan(
        policy,
        micros(now),
        qty,
        windows,
        u32::try_from(in_flight).unwrap_or(u32::MAX),
        queue_bucket,
    ))
}

/// Takes the queue's flow lock for this transaction and reads the database's clock.
async fn locked_now(c: &mut PgConnection, queue: &str) -> Result<OffsetDateTime, QueueError> {
    sqlx::query_scalar(
        "SELECT clock_timestamp() FROM (SELECT pg_advisory_xact_lock(hashtext('herald.flow.' || $1))) l",
    )
    .bind(queue)
    .fetch_one(c)
    .await
    .map_err(|e| store("flow read", queue, e))
}

impl PolicyCache {
    /// `queue`'s policy, from the cache when it is fresh, else from `pool`.
    pub(crate) async fn policy(
        &self,
        pool: &PgPool,
        queue: &str,
    ) -> Result<Option<Arc<Policy>>, QueueError> {
        if let Some(p) = self.get(queue) {
            return Ok(p);
        }
        let mut c = pool
            .acquire()
            .await
            .map_err(|e| store("read policy", queue, e))?;
        let p = policy_on(&mut c, queue).await?.map(Arc::new);
        self.put(queue, p.clone());
        Ok(p)
    }
}

/// Reads up to `qty` messages of `queue` under `policy`, hiding each for `vt`; also says when
/// the next token comes if a rate held messages back.
pub(crate) async fn read(
    pool: &PgPool,
    queue: &QueueName,
    policy: &Policy,
    vt: Duration,
    qty: usize,
) -> Result<(Vec<Message>, Option<i64>), QueueError> {
    let q = queue.as_str();
    let err = |e| store("flow read", q, e);
    let mut tx = pool.begin().await.map_err(err)?;
    // As a plain read: a lease only, committed without waiting for the WAL flush.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    let now = locked_now(&mut tx, q).await?;
    let plan = planned(&mut tx, q, policy, qty, now, false).await?;
    let ids: Vec<i64> = plan.take.iter().map(|t| t.msg_id).collect();
    let mut out = if ids.is_empty() {
        Vec::new()
    } else {
        let rows = sqlx::query(&format!(
            "UPDATE pgmq.\"q_{q}\" SET read_ct = read_ct + 1, vt = $2 + make_interval(secs => $3)
             WHERE msg_id = ANY($1)
             RETURNING msg_id, read_ct, enqueued_at, vt, message::text AS body"
        ))
        .bind(&ids)
        .bind(now)
        .bind(vt.as_secs_f64())
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        crate::rows::messages(rows, "flow read", q)?
    };
    // Handed out in the plan's order (priority, fairness), as it chose them.
    let rank: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    out.sort_by_key(|m| rank.get(&m.msg_id).copied().unwrap_or(usize::MAX));
    let at = micros(now);
    let (keys, tokens): (Vec<String>, Vec<f64>) = plan.buckets.iter().cloned().unzip();
    let mut scopes: Vec<i16> = vec![1; keys.len()];
    let (mut keys, mut tokens) = (keys, tokens);
    if let Some(t) = plan.queue_bucket {
        keys.push(String::new());
        tokens.push(t);
        scopes.push(0);
    }
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO herald.flow_keys (queue, scope, key, tokens, at)
             SELECT $1, s, k, t, $5 FROM unnest($2::int2[], $3::text[], $4::float8[]) AS u(s, k, t)
             ON CONFLICT (queue, scope, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
        )
        .bind(q)
        .bind(&scopes)
        .bind(&keys)
        .bind(&tokens)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    if !plan.served.is_empty() {
        sqlx::query(
            "INSERT INTO herald.flow_keys (queue, scope, key, served)
             SELECT $1, 1, k, $3 FROM unnest($2::text[]) AS u(k)
             ON CONFLICT (queue, scope, key) DO UPDATE SET served = excluded.served",
        )
        .bind(q)
        .bind(&plan.served)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    Ok((out, plan.next_token_us))
}
