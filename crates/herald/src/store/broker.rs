//! The broker state contract: node heartbeats, the coordinator lease with its strictly
//! increasing epoch, and the allocation of event sources to nodes, all timed by the store's
//! clock (never a node's).
//!
//! # Ownership and fencing
//!
//! - A node **heartbeats**; in the same transaction its **claims** become exactly the
//!   allocations the store holds for it, and those are returned. A node is *live* while its
//!   last heartbeat is younger than the node time-to-live, measured by the store's clock.
//! - One node at a time holds the **coordinator lease**. Taking it from another holder (or
//!   after it expired) increments its epoch; renewing it keeps the epoch.
//! - The coordinator writes **allocations** only under its lease: [`BrokerStore::allocate`]
//!   refuses every change with [`StoreError::LeaseLost`] when the lease has moved on or
//!   expired. A change that gives a source to a node is refused (skipped) while another live
//!   node still claims it, so a source is never claimed by two live nodes at once; moving a
//!   source off a live node is done in two steps (revoke, then assign once the old owner's
//!   heartbeat has dropped it).
//! - Every change of a source's owner increments the source's **allocation epoch**. A
//!   checkpoint write carries the epoch its writer was given, and the store refuses it with
//!   [`StoreError::StaleEpoch`] when the allocation (or the checkpoint) holds a newer one.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::StoreError;

/// One consumer group a node runs, and the sources (categories) it asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupInfo {
    /// The group (a consumer's name: its checkpoints are kept under it).
    pub group: String,
    /// The sources it consumes.
    pub sources: Vec<String>,
}

/// What a node says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node.
    pub node_id: String,
    /// Its role (`coordinator`, `observer`, `full`).
    pub role: String,
    /// The groups it runs a subscriber of.
    pub groups: Vec<GroupInfo>,
    /// How long the node may stay silent before it counts as dead, by its own settings
    /// (`None` from a node that did not say: a reader then uses its own time-to-live).
    pub ttl: Option<Duration>,
}

/// The `groups` column as written since nodes say their time-to-live; a bare array (older
/// rows) is read too.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum GroupsColumn {
    WithTtl {
        groups: Vec<GroupInfo>,
        ttl_ms: Option<u64>,
    },
    Bare(Vec<GroupInfo>),
}

/// The `groups` column of a node's row: its groups and its time-to-live, as JSON.
pub fn encode_groups(info: &NodeInfo) -> String {
    let ttl_ms = info
        .ttl
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    encode(&serde_json::json!({"groups": info.groups, "ttl_ms": ttl_ms}))
}

/// One source's allocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    /// The consumer group.
    pub group: String,
    /// The source (a category).
    pub source: String,
    /// The node that owns it; `None` while revoked.
    pub node_id: Option<String>,
    /// Incremented on every change of owner: checkpoint writes carry it.
    pub epoch: u64,
    /// The lease epoch of the coordinator that wrote it.
    pub coordinator_epoch: u64,
}

/// A node as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// What it said in its last heartbeat.
    pub info: NodeInfo,
    /// Whether its last heartbeat is younger than the time-to-live (store clock).
    pub live: bool,
    /// How long ago that heartbeat was (store clock).
    pub since_seen: Duration,
    /// The allocations it held at that heartbeat.
    pub claims: Vec<Allocation>,
}

/// The coordinator lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The node holding it.
    pub holder: String,
    /// Its epoch: strictly increasing over holders.
    pub epoch: u64,
    /// Whether it has not expired (store clock).
    pub live: bool,
}

/// Everything a coordinator (or `herald node status`) reads, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerSnapshot {
    /// Every node that heartbeated and did not leave, sorted by id.
    pub nodes: Vec<NodeState>,
    /// Every allocation, sorted by group then source.
    pub allocations: Vec<Allocation>,
    /// The lease, once somebody took it.
    pub lease: Option<Lease>,
}

/// One change a coordinator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationChange {
    /// The group.
    pub group: String,
    /// The source.
    pub source: String,
    /// The new owner (`None`: revoke).
    pub to: Option<String>,
    /// The allocation epoch the coordinator saw (`None`: no allocation yet); a change whose
    /// allocation moved on since is skipped.
    pub expected_epoch: Option<u64>,
}

/// Whether `change` may be applied to `current` (compare-and-set on the allocation epoch).
pub fn change_expected(change: &AllocationChange, current: Option<&Allocation>) -> bool {
    current.map(|a| a.epoch) == change.expected_epoch
}

/// A node's row: what it said, when (store clock, microseconds), and what it claimed then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// What it said.
    pub info: NodeInfo,
    /// When, on the store's clock (microseconds).
    pub last_seen: i64,
    /// The allocations it held then.
    pub claims: Vec<Allocation>,
}

/// The lease's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The holder.
    pub holder: String,
    /// Its epoch.
    pub epoch: u64,
    /// When it expires, on the store's clock (microseconds).
    pub expires_at: i64,
}

impl LeaseRow {
    /// The row after `holder` takes or renews the lease whose row is `current` for `ttl`;
    /// `None` while another holder's lease is live. Taking it from another holder, or after
    /// it expired (even by the same holder), increments the epoch; renewing keeps it.
    pub fn take(current: Option<&LeaseRow>, now: i64, holder: &str, ttl: Duration) -> Option<Self> {
        let epoch = match current {
            None => 1,
            Some(l) if l.holder == holder && l.expires_at > now => l.epoch,
            Some(l) if l.expires_at > now => return None,
            Some(l) => l.epoch + 1,
        };
        Some(LeaseRow {
            holder: holder.to_owned(),
            epoch,
            expires_at: now.saturating_add(micros(ttl)),
        })
    }

    /// Ends the lease now if `holder` holds it at `epoch`; whether it did.
    pub fn release(&mut self, now: i64, holder: &str, epoch: u64) -> bool {
        if self.holder == holder && self.epoch == epoch && self.expires_at > now {
            self.expires_at = now;
            true
        } else {
            false
        }
    }
}

/// The coordinator's lease, by name: the broker's state carries it. Other names (a relay's
/// `relay.{stream}`) are leases of their own, with epochs of their own, in the same table.
pub const COORDINATOR_LEASE: &str = "coordinator";

/// The broker's rules over its state, in one place: every backend loads the rows it needs
/// inside its transaction, applies one of these, and writes back what changed. Times are
/// microseconds on the store's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerState {
    /// Nodes by id.
    pub nodes: BTreeMap<String, NodeRow>,
    /// Allocations by (group, source).
    pub allocations: BTreeMap<(String, String), Allocation>,
    /// The lease.
    pub lease: Option<LeaseRow>,
}

/// A broker column's JSON (node groups, claims), as every SQL backend stores it.
pub fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads a broker column's JSON back.
///
/// # Errors
///
/// [`StoreError::Backend`] naming `what` when the column does not hold it.
pub fn decode<T: serde::de::DeserializeOwned>(
    json: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Backend {
        operation: what,
        transient: false,
        source: Box::new(e),
    })
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn since(now: i64, then: i64) -> Duration {
    Duration::from_micros(u64::try_from(now.saturating_sub(then)).unwrap_or(0))
}

impl BrokerState {
    /// Adds a node as SQL backends store it: groups and claims as JSON.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a JSON column does not hold what it should.
    pub fn load_node(
        &mut self,
        node_id: String,
        role: String,
        groups: &str,
        claims: &str,
        last_seen: i64,
    ) -> Result<(), StoreError> {
        let (groups, ttl) = match decode(groups, "read node groups")? {
            GroupsColumn::WithTtl { groups, ttl_ms } => (groups, ttl_ms.map(Duration::from_millis)),
            GroupsColumn::Bare(groups) => (groups, None),
        };
        let row = NodeRow {
            info: NodeInfo {
                node_id: node_id.clone(),
                role,
                groups,
                ttl,
            },
            last_seen,
            claims: decode(claims, "read node claims")?,
        };
        self.nodes.insert(node_id, row);
        Ok(())
    }

    /// Adds an allocation as SQL backends store it (epochs as signed integers).
    pub fn load_allocation(
        &mut self,
        group: String,
        source: String,
        node_id: Option<String>,
        epoch: i64,
        coordinator_epoch: i64,
    ) {
        self.allocations.insert(
            (group.clone(), source.clone()),
            Allocation {
                group,
                source,
                node_id,
                epoch: u64::try_from(epoch).unwrap_or(0),
                coordinator_epoch: u64::try_from(coordinator_epoch).unwrap_or(0),
            },
        );
    }

    /// The allocations held for `node_id`.
    pub fn allocations_of(&self, node_id: &str) -> Vec<Allocation> {
        self.allocations
            .values()
            .filter(|a| a.node_id.as_deref() == Some(node_id))
            .cloned()
            .collect()
    }

    /// A heartbeat at `now`: the node's row, its claims = its allocations; returns the row.
    pub fn heartbeat(&mut self, now: i64, node: &NodeInfo) -> &NodeRow {
        let claims = self.allocations_of(&node.node_id);
        self.nodes
            .entry(node.node_id.clone())
            .and_modify(|row| {
                row.info = node.clone();
                row.last_seen = now;
                row.claims.clone_from(&claims);
            })
            .or_insert_with(|| NodeRow {
                info: node.clone(),
                last_seen: now,
                claims,
            })
    }

    /// Takes or renews the lease; `Some(epoch)` when `holder` has it afterwards.
    pub fn acquire_lease(&mut self, now: i64, holder: &str, ttl: Duration) -> Option<u64> {
        let row = LeaseRow::take(self.lease.as_ref(), now, holder, ttl)?;
        let epoch = row.epoch;
        self.lease = Some(row);
        Some(epoch)
    }

    /// Ends the lease now if `holder` holds it at `epoch`; whether it did.
    pub fn release_lease(&mut self, now: i64, holder: &str, epoch: u64) -> bool {
        self.lease
            .as_mut()
            .is_some_and(|l| l.release(now, holder, epoch))
    }

    fn claimed_by_other_live(&self, now: i64, ttl: Duration, change: &AllocationChange) -> bool {
        self.nodes.iter().any(|(id, row)| {
            Some(id) != change.to.as_ref()
                && since(now, row.last_seen) < ttl
                && row
                    .claims
                    .iter()
                    .any(|c| c.group == change.group && c.source == change.source)
        })
    }

    /// Applies `changes` under the lease (see [`BrokerStore::allocate`]); returns the rows
    /// that changed.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when `holder` does not hold a live lease at `epoch`.
    pub fn allocate(
        &mut self,
        now: i64,
        holder: &str,
        epoch: u64,
        node_ttl: Duration,
        changes: &[AllocationChange],
    ) -> Result<Vec<Allocation>, StoreError> {
        let held = matches!(&self.lease, Some(l) if l.holder == holder && l.epoch == epoch && l.expires_at > now);
        if !held {
            return Err(StoreError::LeaseLost {
                holder: holder.to_owned(),
                epoch,
            });
        }
        let mut written = Vec::new();
        for change in changes {
            let key = (change.group.clone(), change.source.clone());
            let current = self.allocations.get(&key);
            if !change_expected(change, current) {
                continue;
            }
            if change.to.is_some() && self.claimed_by_other_live(now, node_ttl, change) {
                continue;
            }
            let row = Allocation {
                group: change.group.clone(),
                source: change.source.clone(),
                node_id: change.to.clone(),
                epoch: current.map_or(1, |a| a.epoch + 1),
                coordinator_epoch: epoch,
            };
            self.allocations.insert(key, row.clone());
            written.push(row);
        }
        Ok(written)
    }

    /// The snapshot at `now`.
    pub fn snapshot(&self, now: i64, node_ttl: Duration) -> BrokerSnapshot {
        BrokerSnapshot {
            nodes: self
                .nodes
                .values()
                .map(|row| NodeState {
                    info: row.info.clone(),
                    live: since(now, row.last_seen) < node_ttl,
                    since_seen: since(now, row.last_seen),
                    claims: row.claims.clone(),
                })
                .collect(),
            allocations: self.allocations.values().cloned().collect(),
            lease: self.lease.as_ref().map(|l| Lease {
                holder: l.holder.clone(),
                epoch: l.epoch,
                live: l.expires_at > now,
            }),
        }
    }

    /// Removes nodes not seen for `max_age`; returns their ids.
    pub fn purge(&mut self, now: i64, max_age: Duration) -> Vec<String> {
        let old: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, row)| since(now, row.last_seen) >= max_age)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            self.nodes.remove(id);
        }
        old
    }
}

/// Broker state kept in the same store as the events and checkpoints it fences.
pub trait BrokerStore: Clone + Send + Sync + 'static {
    /// Records a heartbeat of `node` (store clock); in the same transaction its claims become
    /// the allocations held for it, which are returned.
    fn heartbeat(
        &self,
        node: &NodeInfo,
    ) -> impl Future<Output = Result<Vec<Allocation>, StoreError>> + Send;

    /// Removes `node_id` (a clean stop): its claims go, its allocations are reassigned.
    fn leave(&self, node_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes or renews the lease `name` for `ttl`: the epoch when `holder` has it, `None`
    /// while another holder's lease is live. The coordinator's is [`COORDINATOR_LEASE`];
    /// each name has its own holder and epoch.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Gives the lease `name` up if `holder` holds it at `epoch` (a clean stop).
    fn release_lease(
        &self,
        name: &str,
        holder: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Nodes, allocations and the lease; a node is live when its last heartbeat is younger
    /// than `node_ttl`.
    fn snapshot(
        &self,
        node_ttl: Duration,
    ) -> impl Future<Output = Result<BrokerSnapshot, StoreError>> + Send;

    /// Applies `changes` in one transaction under the lease `holder` holds at `epoch`;
    /// returns how many were applied. Refused whole with [`StoreError::LeaseLost`] when the
    /// lease is not live at that epoch. A change is skipped when its allocation moved on
    /// ([`change_expected`]), or when it gives the source to a node while another live node
    /// (younger than `node_ttl`) still claims it.
    fn allocate(
        &self,
        holder: &str,
        epoch: u64,
        node_ttl: Duration,
        changes: &[AllocationChange],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Forgets nodes not seen for `max_age` (their claims too).
    fn purge_nodes(
        &self,
        max_age: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// An idempotent projection kept in the store: events counted per category.
pub trait CountProjection: Clone + Send + Sync + 'static {
    /// Counts the event at `global_position` of `category` under `projection`, once: an event
    /// at or below the last one counted for that category is ignored (`false`), so processing
    /// again after a crash does not count twice.
    fn count_event(
        &self,
        projection: &str,
        category: &str,
        global_position: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// `(category, count, last global position)` for `projection`, sorted by category.
    fn counts(
        &self,
        projection: &str,
    ) -> impl Future<Output = Result<Vec<(String, i64, i64)>, StoreError>> + Send;
}
