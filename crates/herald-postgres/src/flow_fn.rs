//! Flow control's short read as one server-side function per queue under a policy,
//! `herald."flow_read_{queue}"` (created by `set_policy` beside the queue's triggers, its plans
//! cached by PL/pgSQL): the flow lock, the choice, the lease and the queue's virtual time in
//! one call and one transaction.
//!
//! It serves keys by start-time fair queuing: the insert trigger gives each message a tag, its
//! key's last tag or the queue's virtual time if that is later (a key idle until now starts
//! there), its key's last tag moving on by one; the function takes visible messages in tag
//! order (the `flow_index_tag` index), passing over those whose key is at its limit (its
//! messages in flight plus those taken before it in this read), and moves the virtual time
//! to the last tag taken. A read so writes one row besides its lease, where serving the least
//! recently served key first wrote each key's served time.
//!
//! Only for the policies whose plan that is: a keyed concurrency limit (or none), no rate, no
//! queue-wide limit, no weights, no ordering keys (those take the transaction path in
//! `flow.rs`, least recently served first). The function answers with one row of msg_id -1
//! when it does not apply (a priority above 0 in the queue) or when every message of its
//! window is of a key at its limit: then the caller takes the transaction path. Each statement
//! inside it runs after the lock with a snapshot of its own, as the statements of the
//! transaction path do.

use std::collections::HashMap;
use std::time::Duration;

use herald::queue::flow::Policy;
use herald::queue::{Message, QueueError};
use sqlx::{PgPool, Row as _};

use crate::error::store;

/// Whether the function gives the whole plan for `policy`.
pub(crate) fn applies(policy: &Policy) -> bool {
    !policy.ordered
        && policy.rate.is_none()
        && policy.queue_rate.is_none()
        && policy.max_in_flight.is_none()
        && policy.weights.is_empty()
}

/// How many visible messages, in tag order, a read looks at for each one it wants (and at
/// least [`WINDOW_MIN`]): those of keys at their limit are passed over; a read that finds its
/// window full of them declines.
const WINDOW: i32 = 2;

/// The smallest window, so that small reads (a worker of one or two handler slots) do not
/// decline as soon as two keys at their limit come first.
const WINDOW_MIN: i32 = 32;

/// The statement that (re)creates `queue`'s function (queue names are lowercase letters,
/// digits and `_`).
pub(crate) fn create_sql(queue: &str) -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION herald."flow_read_{queue}"(cap bigint, qty int, vt_secs float8)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, vt timestamptz, body text, ord int)
LANGUAGE plpgsql AS $f$
#variable_conflict use_column
DECLARE
  t timestamptz;
  ids bigint[];
  top float8;
  seen bigint;
BEGIN
  -- The flow lock, then, for this transaction: a commit that does not wait for the disk (a
  -- read is a lease), no JIT, and every statement below read by index, its cost growing with
  -- the read, not the queue (a queue's tables are often too new for statistics, and the
  -- planner would scan the whole queue or sort it instead; the messages in flight come from
  -- a plain scan of PGMQ's vt index, which marks the entries of rows gone, settled since,
  -- dead as it passes, where a bitmap scan would visit their pages at each read), planned
  -- once per connection (planning each of a connection's first five calls anew, as PL/pgSQL
  -- does, cost more than running them). One statement: each costs a round through SPI.
  PERFORM pg_advisory_xact_lock(hashtext('herald.flow.{queue}')),
    set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true),
    set_config('enable_sort', 'off', true), set_config('enable_seqscan', 'off', true),
    set_config('enable_bitmapscan', 'off', true),
    set_config('plan_cache_mode', 'force_generic_plan', true);
  IF EXISTS (SELECT 1 FROM herald.flow_index x WHERE x.queue = '{queue}' AND x.flow_prio > 0) THEN
    RETURN QUERY SELECT -1::bigint, 0, NULL::timestamptz, NULL::timestamptz, NULL::text, 0;
    RETURN;
  END IF;
  t := clock_timestamp();
  WITH hid AS MATERIALIZED (
      SELECT f.flow_key, count(*) FILTER (WHERE m.read_ct > 0) AS n
      FROM pgmq."q_{queue}" m CROSS JOIN LATERAL (
        SELECT x.flow_key FROM herald.flow_index x
        WHERE x.queue = '{queue}' AND x.msg_id = m.msg_id OFFSET 0) f
      WHERE m.vt > t GROUP BY f.flow_key),
    c AS MATERIALIZED (
      SELECT f.msg_id, f.flow_key, f.flow_tag
      FROM herald.flow_index f JOIN pgmq."q_{queue}" m ON m.msg_id = f.msg_id
      WHERE f.queue = '{queue}' AND m.vt <= t
      ORDER BY f.flow_tag, f.msg_id LIMIT greatest(qty * {WINDOW}, {WINDOW_MIN})),
    r AS (
      SELECT c.msg_id, c.flow_tag, count(*) OVER () AS seen,
             row_number() OVER (PARTITION BY c.flow_key ORDER BY c.flow_tag, c.msg_id)
               + coalesce(h.n, 0) <= cap AS ok
      FROM c LEFT JOIN hid h ON h.flow_key = c.flow_key),
    w AS (
      SELECT r.msg_id, r.flow_tag, r.seen FROM r WHERE r.ok
      ORDER BY r.flow_tag, r.msg_id LIMIT qty)
  SELECT array_agg(w.msg_id ORDER BY w.flow_tag, w.msg_id), max(w.flow_tag),
         coalesce(max(w.seen), (SELECT count(*) FROM c))
    INTO ids, top, seen FROM w;
  IF coalesce(cardinality(ids), 0) < qty AND seen >= greatest(qty * {WINDOW}, {WINDOW_MIN}) THEN
    RETURN QUERY SELECT -1::bigint, 0, NULL::timestamptz, NULL::timestamptz, NULL::text, 0;
    RETURN;
  END IF;
  IF ids IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY
    WITH v AS (
      UPDATE herald.flow_policies p SET tag = top WHERE p.queue = '{queue}' AND p.tag < top)
    UPDATE pgmq."q_{queue}" m SET read_ct = m.read_ct + 1, vt = t + make_interval(secs => vt_secs)
    WHERE m.msg_id = ANY(ids)
    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message::text,
              array_position(ids, m.msg_id);
END $f$"#
    )
}

/// The statement that drops `queue`'s function.
pub(crate) fn drop_sql(queue: &str) -> String {
    format!(r#"DROP FUNCTION IF EXISTS herald."flow_read_{queue}"(bigint, int, float8)"#)
}

/// What the function answered.
pub(crate) enum Answer {
    /// The messages it leased, in the plan's order.
    Read(Vec<Message>),
    /// The short read does not apply now: take the transaction path.
    Declined,
    /// The queue has no function (its policy was set by an older Herald).
    Missing,
}

/// Reads up to `qty` of `queue` (under `policy`, which [`applies`]) through its function.
pub(crate) async fn read(
    pool: &PgPool,
    queue: &str,
    policy: &Policy,
    vt: Duration,
    qty: usize,
) -> Result<Answer, QueueError> {
    let cap = policy.concurrency.map_or(i64::MAX, i64::from);
    let rows = sqlx::query(&format!(
        r#"SELECT msg_id, read_ct, enqueued_at, vt, body, ord FROM herald."flow_read_{queue}"($1, $2, $3)"#
    ))
    .bind(cap)
    .bind(i32::try_from(qty).unwrap_or(i32::MAX))
    .bind(vt.as_secs_f64())
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        // undefined_function
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42883") => {
            return Ok(Answer::Missing)
        }
        Err(e) => return Err(store("flow read", queue, e)),
    };
    if rows
        .first()
        .is_some_and(|r| matches!(r.try_get::<i64, _>(0), Ok(-1)))
    {
        return Ok(Answer::Declined);
    }
    let rank: HashMap<i64, i32> = rows
        .iter()
        .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(5).ok()?)))
        .collect();
    let mut out = crate::rows::messages(rows, "flow read", queue)?;
    out.sort_by_key(|m| rank.get(&m.msg_id).copied().unwrap_or(i32::MAX));
    Ok(Answer::Read(out))
}
