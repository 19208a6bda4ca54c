//! Flow control's read on PostgreSQL: a queue's policy in `herald.flow_policies` (cached per
//! process for [`POLICY_TTL`]), its keys, buckets and last-served times in `herald.flow_keys`,
//! and the read that obeys it: under a transaction-scoped advisory lock on the queue (readers in
//! every process take turns), the short pass (`heads`) or the whole pass over `flow_index`
//! joined to `pgmq.q_{queue}`, the shared plan, and one statement that leases and stores
//! (`flow_lease`).

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
use crate::rows::micros;

/// How long a process keeps a queue's policy: a policy set elsewhere applies here within this.
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
    /// When this process last took the whole pass, by queue.
    full_pass: parking_lot::Mutex<HashMap<String, Instant>>,
    /// Queues found without their read function (a policy set by an older Herald), and when.
    no_function: parking_lot::Mutex<HashMap<String, Instant>>,
}

impl PolicyCache {
    /// Whether `queue` was found without its read function within [`POLICY_TTL`].
    fn lacks_function(&self, queue: &str) -> bool {
        self.no_function
            .lock()
            .get(queue)
            .is_some_and(|at| at.elapsed() < POLICY_TTL)
    }

    fn function_missing(&self, queue: &str) {
        let now = Instant::now();
        self.no_function.lock().insert(queue.to_owned(), now);
    }

    /// Whether a read of `queue` should take the whole pass now (none for [`FULL_PASS`]);
    /// if so, counts it as taken.
    fn full_pass_due(&self, queue: &str) -> bool {
        let mut map = self.full_pass.lock();
        match map.get(queue) {
            Some(at) if at.elapsed() < FULL_PASS => false,
            _ => {
                map.insert(queue.to_owned(), Instant::now());
                true
            }
        }
    }

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

/// The keys of `queue` held by a dead letter in `{queue}_dlq` (ordering keys only).
pub(crate) async fn held(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
) -> Result<HashSet<String>, QueueError> {
    if !policy.ordered {
        return Ok(HashSet::new());
    }
    let err = |e| store("flow read", queue, e);
    let dlq = format!("{queue}{}", herald::dlq::DLQ_SUFFIX);
    let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("pgmq.\"q_{dlq}\""))
        .fetch_one(&mut *c)
        .await
        .map_err(err)?;
    if !there {
        return Ok(HashSet::new());
    }
    let [p1, p2] = policy.key_segments();
    let sql = format!("SELECT DISTINCT {} FROM pgmq.\"q_{dlq}\"", key_sql(1, 2));
    let keys: Vec<String> = sqlx::query_scalar(&sql)
        .bind(&p1)
        .bind(&p2)
        .fetch_all(&mut *c)
        .await
        .map_err(err)?;
    Ok(keys.into_iter().collect())
}

/// The plan of one read of `queue` under `policy` at `now` (the database's clock) by the whole
/// pass: every key's best visible message, its hidden messages and its state (`held`: the keys
/// a dead letter holds, from [`held`]); also registers in `herald.flow_keys` any key found
/// that is not there yet (the short pass reads keys from there).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn planned(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
    qty: usize,
    now: OffsetDateTime,
    exact: bool,
    ceiling: i64,
    held: &HashSet<String>,
) -> Result<Plan, QueueError> {
    let err = |e| store("flow read", queue, e);
    // Each key's hidden messages (in flight, waiting out a retry, delayed): few, found by
    // PGMQ's index on vt, each one's key by herald.flow_index's primary key (the lateral's
    // OFFSET 0 keeps the planner from hashing every row of herald.flow_index instead).
    let hidden: Hidden = sqlx::query_as::<_, (String, i64, i64)>(&format!(
        "SELECT f.flow_key, count(*) FILTER (WHERE m.read_ct > 0), min(f.flow_seq)
         FROM pgmq.\"q_{queue}\" m CROSS JOIN LATERAL (
           SELECT x.flow_key, x.flow_seq FROM herald.flow_index x
           WHERE x.queue = $1 AND x.msg_id = m.msg_id OFFSET 0) f
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
    let per_key = candidates_per_key(policy, qty, &heads, &hidden, held);
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
    // Keys the short pass cannot see yet (sent before the policy, or whose registration a
    // concurrent clean-up removed): registered now.
    let known: HashSet<&str> = states
        .iter()
        .filter(|s| s.0 == 1)
        .map(|s| s.1.as_str())
        .collect();
    let missing: Vec<&str> = head_of
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !missing.is_empty() {
        sqlx::query(
            "INSERT INTO herald.flow_keys (queue, scope, key)
             SELECT $1, 1, k FROM unnest($2::text[]) AS u(k) ORDER BY k ON CONFLICT DO NOTHING",
        )
        .bind(queue)
        .bind(&missing)
        .execute(&mut *c)
        .await
        .map_err(err)?;
    }
    let states = states
        .into_iter()
        .map(|(scope, key, tokens, at, served)| KeyState {
            key: (scope == 1).then_some(key),
            bucket: tokens.zip(at),
            served_us: served,
        })
        .collect();
    let in_flight = queue_in_flight(c, queue, policy, now).await?;
    let (windows, queue_bucket) = windows(rows, states, held);
    Ok(plan(
        policy,
        micros(now),
        qty,
        windows,
        in_flight,
        queue_bucket,
        ceiling,
    ))
}

/// The queue's messages in flight, counted only when a queue-wide limit needs them.
async fn queue_in_flight(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<u32, QueueError> {
    if policy.max_in_flight.is_none() {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pgmq.\"q_{queue}\" WHERE vt > $1 AND read_ct > 0"
    ))
    .bind(now)
    .fetch_one(c)
    .await
    .map_err(|e| store("flow read", queue, e))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The queue-wide facts a plan needs: the messages in flight (under `max_in_flight`) and the
/// queue's bucket (under `queue_rate`).
async fn queue_facts(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<(u32, Option<(f64, i64)>), QueueError> {
    let in_flight = queue_in_flight(c, queue, policy, now).await?;
    let bucket = if policy.queue_rate.is_some() {
        sqlx::query_as::<_, (Option<f64>, Option<i64>)>(
            "SELECT tokens, at FROM herald.flow_keys WHERE queue = $1 AND scope = 0",
        )
        .bind(queue)
        .fetch_optional(c)
        .await
        .map_err(|e| store("flow read", queue, e))?
        .and_then(|(t, a)| t.zip(a))
    } else {
        None
    };
    Ok((in_flight, bucket))
}

/// The highest priority sent among `queue`'s messages (0 when none is above 0), through the
/// partial index of those above 0.
pub(crate) async fn ceiling(c: &mut PgConnection, queue: &str) -> Result<i64, QueueError> {
    let n: i32 = sqlx::query_scalar(CEILING_SQL)
        .bind(queue)
        .fetch_one(c)
        .await
        .map_err(|e| store("flow read", queue, e))?;
    Ok(i64::from(n))
}

pub(crate) const CEILING_SQL: &str = "SELECT coalesce(max(flow_prio), 0) FROM herald.flow_index \
                           WHERE queue = $1 AND flow_prio > 0";

/// The statement that begins a flow read's transaction, in one round trip: the queue's flow
/// lock (readers in every process take turns), a commit that skips the WAL flush (a read is a
/// lease), generic plans (planning each anew cost more than running them), no JIT. The facts a
/// plan reads come from the statements after it, whose snapshots see every read that held the
/// lock before. (Queue names are lowercase letters, digits and `_`.)
fn begin_locked(queue: &str) -> String {
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtext('herald.flow.{queue}')); \
         SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_generic_plan; \
         SET LOCAL jit = off"
    )
}

/// The database's clock and the queue's priority ceiling.
async fn clock(c: &mut PgConnection, queue: &str) -> Result<(OffsetDateTime, i64), QueueError> {
    let (now, ceiling): (OffsetDateTime, i32) =
        sqlx::query_as(&format!("SELECT clock_timestamp(), ({CEILING_SQL})"))
            .bind(queue)
            .fetch_one(c)
            .await
            .map_err(|e| store("flow read", queue, e))?;
    Ok((now, i64::from(ceiling)))
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
/// the next token comes if a rate held messages back. The read function (`flow_fn`) where
/// it applies, else the short pass (`heads`) where it gives the whole pass's answer; the
/// whole pass when neither does, and at least once per [`FULL_PASS`] per queue and process
/// (it registers keys the short pass cannot see and forgets drained ones). Under a policy
/// the function serves, that pass is not needed (the function reads the tags the triggers
/// keep, not the registered keys): the drained keys alone are forgotten at that pace.
pub(crate) async fn read(
    pool: &PgPool,
    cache: &PolicyCache,
    queue: &QueueName,
    policy: &Policy,
    vt: Duration,
    qty: usize,
) -> Result<(Vec<Message>, Option<i64>), QueueError> {
    let q = queue.as_str();
    let err = |e| store("flow read", q, e);
    let full = cache.full_pass_due(q);
    // The read function where it applies; declined there (a priority in use, or its window
    // all of keys at their limit), the whole pass, which is exact.
    let mut try_short = !full && policy.weights.is_empty();
    if policy.weights.is_empty() && crate::flow_fn::applies(policy) && !cache.lacks_function(q) {
        if full {
            // The whole pass took 20-40 ms at 6,000 waiting (every reader of the queue
            // waiting on the flow lock meanwhile); forgetting the drained keys, 1-2 ms.
            forget(pool, q, policy).await?;
        }
        match crate::flow_fn::read(pool, q, policy, vt, qty).await? {
            crate::flow_fn::Answer::Read(messages) => return Ok((messages, None)),
            crate::flow_fn::Answer::Declined => try_short = false,
            crate::flow_fn::Answer::Missing => cache.function_missing(q),
        }
    }
    let mut tx = crate::tx::begin(pool, Some(begin_locked(q)))
        .await
        .map_err(err)?;
    // Rolled back before an error is returned: a dropped transaction keeps the flow lock
    // (every reader of the queue waiting) until its connection is next used.
    let result = async {
        let held = held(&mut tx, q, policy).await?;
        let mut short = None;
        if try_short {
            let found = crate::heads::windows(&mut tx, q, policy, qty, &held).await?;
            if let Some(windows) = found.windows {
                let now = found.now;
                let (in_flight, queue_bucket) = queue_facts(&mut tx, q, policy, now).await?;
                let plan = plan(
                    policy,
                    micros(now),
                    qty,
                    windows,
                    in_flight,
                    queue_bucket,
                    0,
                );
                short = (plan.take.len() >= qty).then_some((now, plan));
            }
        }
        let (now, mut plan) = match short {
            Some(found) => found,
            None => {
                let (now, ceiling) = clock(&mut tx, q).await?;
                if full {
                    forget_drained(&mut tx, q, policy, now).await?;
                }
                let plan = planned(&mut tx, q, policy, qty, now, false, ceiling, &held).await?;
                (now, plan)
            }
        };
        if policy.ordered {
            // A dead letter committed between `held` and the plan's statements (each has its own
            // snapshot) holds its key all the same: read again, it puts back what the plan took.
            let since = self::held(&mut tx, q, policy).await?;
            plan.take.retain(|t| !since.contains(&t.key));
        }
        let out = crate::flow_lease::lease(&mut tx, q, &plan, now, vt).await?;
        Ok((out, plan.next_token_us))
    }
    .await;
    crate::tx::finish(tx, result, err).await
}

/// How often (per queue and process) a read takes the whole pass even when the short one
/// would do.
pub const FULL_PASS: Duration = Duration::from_secs(1);

/// [`forget_drained`] in a transaction of its own under the flow lock.
async fn forget(pool: &PgPool, q: &str, policy: &Policy) -> Result<(), QueueError> {
    let err = |e| store("flow read", q, e);
    let mut tx = crate::tx::begin(pool, Some(begin_locked(q)))
        .await
        .map_err(err)?;
    let result = async {
        let (now, _) = clock(&mut tx, q).await?;
        forget_drained(&mut tx, q, policy, now).await
    }
    .await;
    crate::tx::finish(tx, result, err).await
}

/// Forgets the state of `queue`'s keys that have no message left, unless a bucket of theirs
/// is still refilling (a drained key that comes back starts as never served).
async fn forget_drained(
    c: &mut PgConnection,
    queue: &str,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<(), QueueError> {
    let (per_us, burst) = policy
        .rate
        .as_ref()
        .map_or((0.0, 0.0), |r| (r.per_micro(), f64::from(r.burst)));
    // The rows locked in key order first, as every writer of herald.flow_keys takes them (a
    // send's trigger updates its keys' last tags): in another order a send of several keys
    // draining now could deadlock with this.
    sqlx::query(
        "WITH d AS (
           SELECT k.key FROM herald.flow_keys k WHERE k.queue = $1 AND k.scope = 1
             AND (k.tokens IS NULL OR k.at IS NULL OR k.tokens + ($2 - k.at) * $3 >= $4)
             AND NOT EXISTS (SELECT 1 FROM herald.flow_index f
                             WHERE f.queue = $1 AND f.flow_key = k.key)
           ORDER BY k.key FOR UPDATE OF k)
         DELETE FROM herald.flow_keys k USING d
         WHERE k.queue = $1 AND k.scope = 1 AND k.key = d.key",
    )
    .bind(queue)
    .bind(micros(now))
    .bind(per_us)
    .bind(burst)
    .execute(c)
    .await
    .map_err(|e| store("flow read", queue, e))?;
    Ok(())
}
