//! `FlowControl` for `PgStore`: a queue's policy set (and this process's cache told), read
//! back, cleared with its key states, and what its reads hold back now.

use std::sync::Arc;

use herald::queue::flow::{FlowControl, FlowStatus, Policy};
use herald::queue::{QueueError, QueueName};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::error::store;
use crate::flow::{planned, policy_on};
use crate::queue::PgStore;

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
        let mut c = self
            .pool()
            .acquire()
            .await
            .map_err(|e| store("set policy", q, e))?;
        exists(&mut c, q).await?;
        sqlx::query(
            "INSERT INTO herald.flow_policies (queue, policy) VALUES ($1, $2::jsonb)
             ON CONFLICT (queue) DO UPDATE SET policy = excluded.policy, updated_at = now()",
        )
        .bind(q)
        .bind(policy.to_json())
        .execute(&mut *c)
        .await
        .map_err(|e| store("set policy", q, e))?;
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
        let mut tx = self
            .pool()
            .begin()
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
        let plan = planned(&mut c, q, &policy, STATUS_WINDOW, now).await?;
        Ok(FlowStatus {
            queue: q.to_owned(),
            policy: true,
            waiting: plan.waiting,
        })
    }
}
