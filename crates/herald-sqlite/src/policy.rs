//! `FlowControl` for `SqliteStore`: a queue's policy set (its messages' keys read again under
//! it), read back, cleared, and what its reads hold back now.

use herald::queue::flow::{FlowControl, FlowStatus, Policy};
use herald::queue::{QueueError, QueueName};
use rusqlite::params;

use crate::error::store;
use crate::flow::{materialize, planned, policy_in};
use crate::queue::SqliteStore;
use crate::rows::{exists, now_micros};

/// What a read with room for everything would hold back now.
const STATUS_WINDOW: usize = 1_000;

impl FlowControl for SqliteStore {
    async fn set_policy(&self, queue: &QueueName, policy: &Policy) -> Result<(), QueueError> {
        let text = policy.to_json();
        let policy = policy.clone();
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
                .execute([q])?;
                c.prepare_cached("DELETE FROM herald_flow_keys WHERE queue = ?1 AND scope = 2")?
                    .execute([q])
            })
            .map_err(|e| store("set policy", q, e))?;
            // ... here, in the policy's transaction, not by the first read under it: a queue
            // filled before its policy costs its first read nothing extra.
            let [p1, p2] = policy.key_paths();
            materialize(c, "set policy", q, &p1, &p2)
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
            let plan = planned(c, q, &policy, STATUS_WINDOW, now_micros(), true)?;
            Ok(FlowStatus {
                queue: q.to_owned(),
                policy: true,
                waiting: plan.waiting,
            })
        })
        .await
    }
}
