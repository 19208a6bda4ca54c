//! The broker state contract and the count projection on PostgreSQL: each operation takes a
//! transaction-level advisory lock (`herald.broker`), so machines take turns, loads the broker
//! rows, applies [`BrokerState`]'s rules on the database's clock (`clock_timestamp()`), and
//! writes back what changed. A client paused inside one of these transactions is cut off by
//! `idle_in_transaction_session_timeout` (1 s), so it cannot hold the cluster up.

use std::time::Duration;

use herald::store::broker::{encode, encode_groups};
use herald::store::{
    Allocation, AllocationChange, BrokerSnapshot, BrokerState, BrokerStore, CountProjection,
    LeaseRow, NodeInfo, NodeRow, StoreError, COORDINATOR_LEASE,
};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::event_store::backend;
use crate::queue::PgStore;

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

type NodeColumns = (String, String, String, String, i64);
type AllocationColumns = (String, String, Option<String>, i64, i64);

/// The broker's rows, with the lease `lease` as the state's lease.
async fn load(c: &mut PgConnection, lease: &str) -> Result<BrokerState, StoreError> {
    let op = "read broker state";
    let mut state = BrokerState::default();
    let nodes: Vec<NodeColumns> = sqlx::query_as(
        "SELECT node_id, role, groups::text, claims::text, last_seen FROM herald.nodes",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(|e| backend(op, e))?;
    for (node_id, role, groups, claims, last_seen) in nodes {
        state.load_node(node_id, role, &groups, &claims, last_seen)?;
    }
    let allocations: Vec<AllocationColumns> = sqlx::query_as(
        "SELECT grp, source, node_id, epoch, coordinator_epoch FROM herald.allocations",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(|e| backend(op, e))?;
    for (group, source, node_id, epoch, coordinator_epoch) in allocations {
        state.load_allocation(group, source, node_id, epoch, coordinator_epoch);
    }
    let lease: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT holder, epoch, expires_at FROM herald.lease WHERE name = $1")
            .bind(lease)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| backend(op, e))?;
    state.lease = lease.map(|(holder, epoch, expires_at)| LeaseRow {
        holder,
        epoch: to_u64(epoch),
        expires_at,
    });
    Ok(state)
}

async fn put_node(c: &mut PgConnection, row: &NodeRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO herald.nodes (node_id, role, groups, claims, last_seen) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)
         ON CONFLICT (node_id) DO UPDATE SET role = EXCLUDED.role, groups = EXCLUDED.groups,
         claims = EXCLUDED.claims, last_seen = EXCLUDED.last_seen",
    )
    .bind(&row.info.node_id)
    .bind(&row.info.role)
    .bind(encode_groups(&row.info))
    .bind(encode(&row.claims))
    .bind(row.last_seen)
    .execute(c)
    .await
    .map(drop)
    .map_err(|e| backend("heartbeat", e))
}

async fn put_lease(
    c: &mut PgConnection,
    name: &str,
    lease: Option<&LeaseRow>,
) -> Result<(), StoreError> {
    let Some(l) = lease else { return Ok(()) };
    sqlx::query(
        "INSERT INTO herald.lease (name, holder, epoch, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = EXCLUDED.epoch,
         expires_at = EXCLUDED.expires_at",
    )
    .bind(name)
    .bind(&l.holder)
    .bind(to_i64(l.epoch))
    .bind(l.expires_at)
    .execute(c)
    .await
    .map(drop)
    .map_err(|e| backend("write the lease", e))
}

async fn put_allocation(c: &mut PgConnection, a: &Allocation) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO herald.allocations (grp, source, node_id, epoch, coordinator_epoch) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (grp, source) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = EXCLUDED.epoch,
         coordinator_epoch = EXCLUDED.coordinator_epoch",
    )
    .bind(&a.group)
    .bind(&a.source)
    .bind(&a.node_id)
    .bind(to_i64(a.epoch))
    .bind(to_i64(a.coordinator_epoch))
    .execute(c)
    .await
    .map(drop)
    .map_err(|e| backend("allocate", e))
}

impl PgStore {
    /// A transaction holding the broker lock, the database clock's now, and the state.
    async fn broker_tx(
        &self,
        operation: &'static str,
        lease: &str,
    ) -> Result<(Transaction<'static, Postgres>, i64, BrokerState), StoreError> {
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| backend(operation, e))?;
        // A holder that stops mid-transaction (SIGSTOP, a long pause) must not stall the
        // cluster: PostgreSQL ends its session after 1 s idle in the transaction, releasing the
        // lock; a waiter gives up after 5 s and tries again at its next interval.
        let loaded = async {
            sqlx::query(
                "SELECT set_config('idle_in_transaction_session_timeout', '1s', true),
                        set_config('lock_timeout', '5s', true),
                        pg_advisory_xact_lock(hashtext('herald.broker'))",
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| backend(operation, e))?;
            let now: i64 = sqlx::query_scalar(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend(operation, e))?;
            Ok((now, load(&mut tx, lease).await?))
        }
        .await;
        match loaded {
            Ok((now, state)) => Ok((tx, now, state)),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

/// Ends a broker transaction by `result`: committed when it is `Ok`, rolled back before the
/// error is returned when not (a fenced allocation, a failed write), so the broker lock is
/// free at once rather than when the pool next uses the connection.
async fn finish<T>(
    tx: Transaction<'static, Postgres>,
    result: Result<T, StoreError>,
    operation: &'static str,
) -> Result<T, StoreError> {
    crate::tx::finish(tx, result, |e| backend(operation, e)).await
}

impl BrokerStore for PgStore {
    async fn heartbeat(&self, node: &NodeInfo) -> Result<Vec<Allocation>, StoreError> {
        let (mut tx, now, mut state) = self.broker_tx("heartbeat", COORDINATOR_LEASE).await?;
        let row = state.heartbeat(now, node);
        let result = put_node(&mut tx, row).await.map(|()| row.claims.clone());
        finish(tx, result, "heartbeat").await
    }

    async fn leave(&self, node_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM herald.nodes WHERE node_id = $1")
            .bind(node_id)
            .execute(self.pool())
            .await
            .map(drop)
            .map_err(|e| backend("leave", e))
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let (mut tx, now, mut state) = self.broker_tx("acquire the lease", name).await?;
        let epoch = state.acquire_lease(now, holder, ttl);
        let result = match epoch {
            Some(_) => put_lease(&mut tx, name, state.lease.as_ref()).await,
            None => Ok(()),
        };
        finish(tx, result.map(|()| epoch), "acquire the lease").await
    }

    async fn release_lease(&self, name: &str, holder: &str, epoch: u64) -> Result<(), StoreError> {
        let (mut tx, now, mut state) = self.broker_tx("release the lease", name).await?;
        let result = if state.release_lease(now, holder, epoch) {
            put_lease(&mut tx, name, state.lease.as_ref()).await
        } else {
            Ok(())
        };
        finish(tx, result, "release the lease").await
    }

    async fn snapshot(&self, node_ttl: Duration) -> Result<BrokerSnapshot, StoreError> {
        let (tx, now, state) = self
            .broker_tx("read broker state", COORDINATOR_LEASE)
            .await?;
        finish(tx, Ok(()), "read broker state").await?;
        Ok(state.snapshot(now, node_ttl))
    }

    async fn allocate(
        &self,
        holder: &str,
        epoch: u64,
        node_ttl: Duration,
        changes: &[AllocationChange],
    ) -> Result<usize, StoreError> {
        let (mut tx, now, mut state) = self.broker_tx("allocate", COORDINATOR_LEASE).await?;
        let result = async {
            let written = state.allocate(now, holder, epoch, node_ttl, changes)?;
            for a in &written {
                put_allocation(&mut tx, a).await?;
            }
            Ok(written.len())
        }
        .await;
        finish(tx, result, "allocate").await
    }

    async fn purge_nodes(&self, max_age: Duration) -> Result<u64, StoreError> {
        let (mut tx, now, mut state) = self.broker_tx("purge nodes", COORDINATOR_LEASE).await?;
        let gone = state.purge(now, max_age);
        let result = async {
            for id in &gone {
                sqlx::query("DELETE FROM herald.nodes WHERE node_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| backend("purge nodes", e))?;
            }
            Ok(gone.len() as u64)
        }
        .await;
        finish(tx, result, "purge nodes").await
    }
}

impl CountProjection for PgStore {
    async fn count_event(
        &self,
        projection: &str,
        category: &str,
        global_position: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO herald.counts AS c (projection, category, count, last_position) VALUES ($1, $2, 1, $3)
             ON CONFLICT (projection, category) DO UPDATE SET count = c.count + 1, last_position = EXCLUDED.last_position
             WHERE c.last_position < EXCLUDED.last_position",
        )
        .bind(projection)
        .bind(category)
        .bind(global_position)
        .execute(self.pool())
        .await
        .map_err(|e| backend("count event", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn counts(&self, projection: &str) -> Result<Vec<(String, i64, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT category, count, last_position FROM herald.counts WHERE projection = $1 ORDER BY category",
        )
        .bind(projection)
        .fetch_all(self.pool())
        .await
        .map_err(|e| backend("read counts", e))
    }
}
