//! `FlowControl` for `PgStore`: a queue's policy set (and this process's cache told), read
//! back, cleared with its key states, and what its reads hold back now.

use std::sync::Arc;

use herald::queue::flow::{FlowControl, FlowStatus, Policy};
use herald::queue::{QueueError, QueueName};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::error::store;
use crate::flow::{planned, policy_on, PRIORITY_SQL, SEQ_SQL};
use crate::queue::PgStore;

/// A PostgreSQL text array literal of checked path segments (letters, digits, `_`).
fn segments(path: &[String]) -> String {
    format!("{{{}}}", path.join(","))
}

/// Keeps `herald.flow_index` for `queue` under `policy`: the two statement triggers that
/// index each inserted message's key, place and priority and forget deleted ones (only queues
/// with a policy have them, so other queues pay nothing), the queue's read function
/// (`flow_fn`), and the index rebuilt for the messages already there, their keys registered.
/// The triggers' `CREATE` locks the queue's table until the commit, so no send or settle falls
/// between the rebuild and the triggers.
async fn index_keys(c: &mut PgConnection, queue: &str, policy: &Policy) -> Result<(), QueueError> {
    let err = |e| store("set policy", queue, e);
    let [p1, p2] = policy.key_segments();
    let (p1, p2) = (segments(&p1), segments(&p2));
    unindex_keys(c, queue).await?;
    for sql in [
        crate::flow_fn::create_sql(queue),
        format!(
            "CREATE TRIGGER herald_flow_insert AFTER INSERT ON pgmq.\"q_{queue}\"
               REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
               EXECUTE FUNCTION herald.flow_index_insert('{queue}', '{p1}', '{p2}')"
        ),
        format!(
            "CREATE TRIGGER herald_flow_delete AFTER DELETE ON pgmq.\"q_{queue}\"
               REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
               EXECUTE FUNCTION herald.flow_index_delete('{queue}')"
        ),
    ] {
        sqlx::query(&sql).execute(&mut *c).await.map_err(err)?;
    }
    // The keys of the messages already there are registered too (as the insert trigger does
    // for later sends), so that the first read's short pass finds them; their fair-queuing
    // tags start again from 0 (the queue's virtual time is reset with the policy): each
    // message's place among its key's, each key's last tag one past its last message's.
    sqlx::query("UPDATE herald.flow_keys SET tag = NULL WHERE queue = $1 AND scope = 1")
        .bind(queue)
        .execute(&mut *c)
        .await
        .map_err(err)?;
    sqlx::query(&format!(
        "WITH i AS (
           INSERT INTO herald.flow_index (queue, msg_id, flow_key, flow_seq, flow_prio, flow_tag)
           SELECT $1, x.msg_id, x.k, x.s, x.p,
                  row_number() OVER (PARTITION BY x.k ORDER BY x.s, x.msg_id) - 1
           FROM (SELECT msg_id, {key} AS k, {SEQ_SQL} AS s, {PRIORITY_SQL} AS p
                 FROM pgmq.\"q_{queue}\") x
           RETURNING flow_key, flow_tag)
         INSERT INTO herald.flow_keys (queue, scope, key, tag)
         SELECT $1, 1::int2, i.flow_key, max(i.flow_tag) + 1 FROM i GROUP BY i.flow_key ORDER BY 3
         ON CONFLICT (queue, scope, key) DO UPDATE SET tag = excluded.tag",
        key = crate::flow::key_sql(2, 3),
    ))
    .bind(queue)
    .bind(policy.key_segments()[0].clone())
    .bind(policy.key_segments()[1].clone())
    .execute(&mut *c)
    .await
    .map_err(err)?;
    Ok(())
}

/// Drops `queue`'s flow triggers, its read function and its rows of `herald.flow_index`.
async fn unindex_keys(c: &mut PgConnection, queue: &str) -> Result<(), QueueError> {
    let err = |e| store("flow index", queue, e);
    for name in ["herald_flow_insert", "herald_flow_delete"] {
        sqlx::query(&format!(
            "DROP TRIGGER IF EXISTS {name} ON pgmq.\"q_{queue}\""
        ))
        .execute(&mut *c)
        .await
        .map_err(err)?;
    }
    sqlx::query(&crate::flow_fn::drop_sql(queue))
        .execute(&mut *c)
        .await
        .map_err(err)?;
    sqlx::query("DELETE FROM herald.flow_index WHERE queue = $1")
        .bind(queue)
        .execute(&mut *c)
        .await
        .map_err(err)?;
    Ok(())
}

/// What a read with room for everything would hold back now.
const STATUS_WINDOW: usize = 1_000;

async fn exists(c: &mut PgConnection, queue: &str) -> Result<(), QueueError> {
    let there: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1)")
            .bind(queue)
            .fetch_one(c)
            .await
            .map_err(|e| store("look up", queue, e))?;
    if there {
        Ok(())
    } else {
        Err(QueueError::NoSuchQueue {
            queue: queue.to_owned(),
        })
    }
}

impl FlowControl for PgStore {
    async fn set_policy(&self, queue: &QueueName, policy: &Policy) -> Result<(), QueueError> {
        let q = queue.as_str();
        let err = |e| store("set policy", q, e);
        let mut tx = crate::tx::begin(self.pool(), None).await.map_err(err)?;
        exists(&mut tx, q).await?;
        sqlx::query(
            "INSERT INTO herald.flow_policies (queue, policy) VALUES ($1, $2::jsonb)
             ON CONFLICT (queue) DO UPDATE SET policy = excluded.policy, updated_at = now(),
               tag = 0",
        )
        .bind(q)
        .bind(policy.to_json())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        index_keys(&mut tx, q, policy).await?;
        tx.commit().await.map_err(err)?;
        self.policies().put(q, Some(Arc::new(policy.clone())));
        Ok(())
    }

    async fn policy(&self, queue: &QueueName) -> Result<Option<Policy>, QueueError> {
        let q = queue.as_str();
        let mut c = self
            .pool()
            .acquire()
            .await
            .map_err(|e| store("read policy", q, e))?;
        exists(&mut c, q).await?;
        policy_on(&mut c, q).await
    }

    async fn clear_policy(&self, queue: &QueueName) -> Result<bool, QueueError> {
        let q = queue.as_str();
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| store("clear policy", q, e))?;
        exists(&mut tx, q).await?;
        let n = sqlx::query("DELETE FROM herald.flow_policies WHERE queue = $1")
            .bind(q)
            .execute(&mut *tx)
            .await
            .map_err(|e| store("clear policy", q, e))?
            .rows_affected();
        sqlx::query("DELETE FROM herald.flow_keys WHERE queue = $1")
            .bind(q)
            .execute(&mut *tx)
            .await
            .map_err(|e| store("clear policy", q, e))?;
        unindex_keys(&mut tx, q).await?;
        tx.commit().await.map_err(|e| store("clear policy", q, e))?;
        self.policies().put(q, None);
        Ok(n > 0)
    }

    async fn flow_status(&self, queue: &QueueName) -> Result<FlowStatus, QueueError> {
        let q = queue.as_str();
        let mut c = self
            .pool()
            .acquire()
            .await
            .map_err(|e| store("flow status", q, e))?;
        exists(&mut c, q).await?;
        let Some(policy) = policy_on(&mut c, q).await? else {
            return Ok(FlowStatus {
                queue: q.to_owned(),
                ..FlowStatus::default()
            });
        };
        let now: OffsetDateTime = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *c)
            .await
            .map_err(|e| store("flow status", q, e))?;
        let ceiling = crate::flow::ceiling(&mut c, q).await?;
        let held = crate::flow::held(&mut c, q, &policy).await?;
        let plan = planned(&mut c, q, &policy, STATUS_WINDOW, now, true, ceiling, &held).await?;
        Ok(FlowStatus {
            queue: q.to_owned(),
            policy: true,
            waiting: plan.waiting,
        })
    }
}
