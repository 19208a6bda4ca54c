//! The broker state contract and the count projection on the same SQLite file: each operation
//! loads the broker rows inside the writer's transaction (`BEGIN IMMEDIATE`, so processes on
//! one machine take turns), applies [`BrokerState`]'s rules on SQLite's clock, and writes back
//! what changed.

use std::time::Duration;

use herald::store::broker::{encode, encode_groups};
use herald::store::{
    Allocation, AllocationChange, BrokerSnapshot, BrokerState, BrokerStore, CountProjection,
    LeaseRow, NodeInfo, NodeRow, StoreError, COORDINATOR_LEASE,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::event_store::{backend, from_queue};
use crate::queue::SqliteStore;

fn now(c: &Connection) -> Result<i64, StoreError> {
    c.query_row(
        "SELECT CAST(unixepoch('subsec') * 1000000 AS INTEGER)",
        [],
        |r| r.get(0),
    )
    .map_err(|e| backend("read the store clock", e))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The broker's rows, with the lease `lease` as the state's lease.
fn load(c: &Connection, lease: &str) -> Result<BrokerState, StoreError> {
    let op = "read broker state";
    let mut state = BrokerState::default();
    let mut s = c
        .prepare_cached("SELECT node_id, role, groups, claims, last_seen FROM herald_nodes")
        .map_err(|e| backend(op, e))?;
    let rows = s
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| backend(op, e))?;
    for (node_id, role, groups, claims, last_seen) in rows {
        state.load_node(node_id, role, &groups, &claims, last_seen)?;
    }
    let mut s = c
        .prepare_cached(
            "SELECT grp, source, node_id, epoch, coordinator_epoch FROM herald_allocations",
        )
        .map_err(|e| backend(op, e))?;
    let rows = s
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| backend(op, e))?;
    for (group, source, node_id, epoch, coordinator_epoch) in rows {
        state.load_allocation(group, source, node_id, epoch, coordinator_epoch);
    }
    state.lease = c
        .prepare_cached("SELECT holder, epoch, expires_at FROM herald_lease WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([lease], |r| {
                Ok(LeaseRow {
                    holder: r.get(0)?,
                    epoch: to_u64(r.get(1)?),
                    expires_at: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(|e| backend(op, e))?;
    Ok(state)
}

fn put_node(c: &Connection, row: &NodeRow) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO herald_nodes (node_id, role, groups, claims, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (node_id) DO UPDATE SET role = excluded.role, groups = excluded.groups,
         claims = excluded.claims, last_seen = excluded.last_seen",
    )
    .and_then(|mut s| {
        s.execute(params![
            row.info.node_id,
            row.info.role,
            encode_groups(&row.info),
            encode(&row.claims),
            row.last_seen
        ])
    })
    .map(drop)
    .map_err(|e| backend("heartbeat", e))
}

fn put_lease(c: &Connection, name: &str, lease: Option<&LeaseRow>) -> Result<(), StoreError> {
    let Some(l) = lease else { return Ok(()) };
    c.prepare_cached(
        "INSERT INTO herald_lease (name, holder, epoch, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch,
         expires_at = excluded.expires_at",
    )
    .and_then(|mut s| s.execute(params![name, l.holder, to_i64(l.epoch), l.expires_at]))
    .map(drop)
    .map_err(|e| backend("write the lease", e))
}

fn put_allocation(c: &Connection, a: &Allocation) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO herald_allocations (grp, source, node_id, epoch, coordinator_epoch) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (grp, source) DO UPDATE SET node_id = excluded.node_id, epoch = excluded.epoch,
         coordinator_epoch = excluded.coordinator_epoch",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.group,
            a.source,
            a.node_id,
            to_i64(a.epoch),
            to_i64(a.coordinator_epoch)
        ])
    })
    .map(drop)
    .map_err(|e| backend("allocate", e))
}

impl SqliteStore {
    /// Runs `f` on the broker state (with the lease `lease`) inside the writer's transaction.
    async fn broker<T: Send + 'static>(
        &self,
        operation: &'static str,
        lease: &str,
        f: impl FnOnce(&Connection, i64, BrokerState) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let lease = lease.to_owned();
        self.writer()
            .run(operation, "*", move |c| {
                let wrap =
                    |e: StoreError| herald::queue::QueueError::store(operation, "*", false, e);
                let now = now(c).map_err(wrap)?;
                let state = load(c, &lease).map_err(wrap)?;
                f(c, now, state).map_err(wrap)
            })
            .await
            .map_err(from_queue)
    }
}

impl BrokerStore for SqliteStore {
    async fn heartbeat(&self, node: &NodeInfo) -> Result<Vec<Allocation>, StoreError> {
        let node = node.clone();
        self.broker("heartbeat", COORDINATOR_LEASE, move |c, now, mut state| {
            let row = state.heartbeat(now, &node);
            put_node(c, row)?;
            Ok(row.claims.clone())
        })
        .await
    }

    async fn leave(&self, node_id: &str) -> Result<(), StoreError> {
        let id = node_id.to_owned();
        self.writer()
            .run("leave", "*", move |c| {
                c.execute("DELETE FROM herald_nodes WHERE node_id = ?1", [id])
                    .map(drop)
                    .map_err(|e| {
                        herald::queue::QueueError::store("leave", "*", false, backend("leave", e))
                    })
            })
            .await
            .map_err(from_queue)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let (holder, lease) = (holder.to_owned(), name.to_owned());
        self.broker("acquire the lease", name, move |c, now, mut state| {
            let epoch = state.acquire_lease(now, &holder, ttl);
            if epoch.is_some() {
                put_lease(c, &lease, state.lease.as_ref())?;
            }
            Ok(epoch)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str, epoch: u64) -> Result<(), StoreError> {
        let (holder, lease) = (holder.to_owned(), name.to_owned());
        self.broker("release the lease", name, move |c, now, mut state| {
            if state.release_lease(now, &holder, epoch) {
                put_lease(c, &lease, state.lease.as_ref())?;
            }
            Ok(())
        })
        .await
    }

    async fn snapshot(&self, node_ttl: Duration) -> Result<BrokerSnapshot, StoreError> {
        self.broker(
            "read broker state",
            COORDINATOR_LEASE,
            move |_, now, state| Ok(state.snapshot(now, node_ttl)),
        )
        .await
    }

    async fn allocate(
        &self,
        holder: &str,
        epoch: u64,
        node_ttl: Duration,
        changes: &[AllocationChange],
    ) -> Result<usize, StoreError> {
        let (holder, changes) = (holder.to_owned(), changes.to_vec());
        self.broker("allocate", COORDINATOR_LEASE, move |c, now, mut state| {
            let written = state.allocate(now, &holder, epoch, node_ttl, &changes)?;
            for a in &written {
                put_allocation(c, a)?;
            }
            Ok(written.len())
        })
        .await
    }

    async fn purge_nodes(&self, max_age: Duration) -> Result<u64, StoreError> {
        self.broker(
            "purge nodes",
            COORDINATOR_LEASE,
            move |c, now, mut state| {
                let gone = state.purge(now, max_age);
                for id in &gone {
                    c.execute("DELETE FROM herald_nodes WHERE node_id = ?1", [id])
                        .map_err(|e| backend("purge nodes", e))?;
                }
                Ok(gone.len() as u64)
            },
        )
        .await
    }
}

impl CountProjection for SqliteStore {
    async fn count_event(
        &self,
        projection: &str,
        category: &str,
        global_position: i64,
    ) -> Result<bool, StoreError> {
        let (p, cat) = (projection.to_owned(), category.to_owned());
        self.writer()
            .run("count event", "*", move |c| {
                c.prepare_cached(
                    "INSERT INTO herald_counts (projection, category, count, last_position) VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (projection, category) DO UPDATE SET count = count + 1, last_position = excluded.last_position
                     WHERE last_position < excluded.last_position",
                )
                .and_then(|mut s| s.execute(params![p, cat, global_position]))
                .map(|n| n > 0)
                .map_err(|e| herald::queue::QueueError::store("count event", "*", false, backend("count event", e)))
            })
            .await
            .map_err(from_queue)
    }

    async fn counts(&self, projection: &str) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let p = projection.to_owned();
        self.writer()
            .run("read counts", "*", move |c| {
                c.prepare_cached(
                    "SELECT category, count, last_position FROM herald_counts WHERE projection = ?1 ORDER BY category",
                )
                .and_then(|mut s| {
                    s.query_map([p], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| herald::queue::QueueError::store("read counts", "*", false, backend("read counts", e)))
            })
            .await
            .map_err(from_queue)
    }
}
