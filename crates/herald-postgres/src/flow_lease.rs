//! Flow control's lease on PostgreSQL: what a plan of the transaction path chose, leased, and
//! its keys' buckets and served times stored, in one statement.

use std::collections::HashMap;
use std::time::Duration;

use herald::queue::flow::Plan;
use herald::queue::{Message, QueueError};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::error::store;
use crate::rows::micros;

/// A key state to store: its bucket's tokens, its served time.
type ToStore = (Option<f64>, Option<i64>);

/// Leases what `plan` chose and stores its buckets and served times, in one statement;
/// returns the messages in the plan's order (priority, fairness).
pub(crate) async fn lease(
    c: &mut PgConnection,
    q: &str,
    plan: &Plan,
    now: OffsetDateTime,
    vt: Duration,
) -> Result<Vec<Message>, QueueError> {
    let ids: Vec<i64> = plan.take.iter().map(|t| t.msg_id).collect();
    let at = micros(now);
    // One row per key state to store: its bucket, its served time, or both.
    let mut states: HashMap<(i16, &str), ToStore> = HashMap::new();
    for (key, tokens) in &plan.buckets {
        states.entry((1, key.as_str())).or_default().0 = Some(*tokens);
    }
    if let Some(t) = plan.queue_bucket {
        states.entry((0, "")).or_default().0 = Some(t);
    }
    for key in &plan.served {
        states.entry((1, key.as_str())).or_default().1 = Some(at);
    }
    if ids.is_empty() && states.is_empty() {
        return Ok(Vec::new());
    }
    let mut scopes = Vec::with_capacity(states.len());
    let mut keys = Vec::with_capacity(states.len());
    let mut tokens = Vec::with_capacity(states.len());
    let mut served = Vec::with_capacity(states.len());
    for ((scope, key), (t, s)) in states {
        scopes.push(scope);
        keys.push(key);
        tokens.push(t);
        served.push(s);
    }
    let rows = sqlx::query(&format!(
        "WITH u AS (
           UPDATE pgmq.\"q_{q}\" SET read_ct = read_ct + 1, vt = $2 + make_interval(secs => $3)
           WHERE msg_id = ANY($1)
           RETURNING msg_id, read_ct, enqueued_at, vt, message::text AS body),
         s AS (
           INSERT INTO herald.flow_keys (queue, scope, key, tokens, at, served)
           SELECT $4, x.s, x.k, x.t, CASE WHEN x.t IS NULL THEN NULL ELSE $5 END, x.v
           FROM unnest($6::int2[], $7::text[], $8::float8[], $9::int8[]) AS x(s, k, t, v)
           ORDER BY x.s, x.k
           ON CONFLICT (queue, scope, key) DO UPDATE SET
             tokens = coalesce(excluded.tokens, flow_keys.tokens),
             at = coalesce(excluded.at, flow_keys.at),
             served = coalesce(excluded.served, flow_keys.served))
         SELECT * FROM u"
    ))
    .bind(&ids)
    .bind(now)
    .bind(vt.as_secs_f64())
    .bind(q)
    .bind(at)
    .bind(&scopes)
    .bind(&keys)
    .bind(&tokens)
    .bind(&served)
    .fetch_all(&mut *c)
    .await
    .map_err(|e| store("flow read", q, e))?;
    let mut out = crate::rows::messages(rows, "flow read", q)?;
    let rank: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    out.sort_by_key(|m| rank.get(&m.msg_id).copied().unwrap_or(usize::MAX));
    Ok(out)
}
