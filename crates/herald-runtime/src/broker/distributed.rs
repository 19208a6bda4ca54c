//! `DistributedEventBroker`: a node of a cluster sharing sources out through the store. Its
//! subscriber manager heartbeats (and learns its allocations in the same transaction); its
//! coordinator, when the role has one, takes the lease and writes allocations under it; its
//! observer, when the role has one, hands the allocations to the local subscribers, valid until
//! the node's heartbeat could have expired.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::store::broker::COORDINATOR_LEASE;
use herald::store::{Allocation, BrokerStore, GroupInfo, NodeInfo, StoreError};
use herald::{BoxFuture, Shutdown};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::plan::plan;
use super::{Assignment, BrokerError, BrokerRole, EventBroker, EventSubscriber};
use crate::service::{Service, ServiceError};
use crate::status::{determine_multi_process_status, ProcessStatus, StatusCell};

/// Timings of a distributed broker, as seed 003's project names them (its defaults); small
/// values are fine for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistributedEventBrokerSettings {
    /// The node's role (default full).
    pub role: BrokerRole,
    /// How often a node heartbeats and learns its allocations (10 s).
    pub subscriber_manager_heartbeat_interval: Duration,
    /// How often dead nodes are purged from the store (1 min).
    pub subscriber_manager_purge_interval: Duration,
    /// How long a silent node is kept before it is purged (10 min).
    pub subscriber_manager_subscriber_max_age: Duration,
    /// A node silent for this long (store clock) is dead: its sources move, and a node that
    /// could not heartbeat for this long stops processing by itself. Also the coordinator
    /// lease's time-to-live (60 s).
    pub coordinator_subscriber_max_time_since_last_seen: Duration,
    /// How often the coordinator renews its lease and rebalances (20 s).
    pub coordinator_distribution_interval: Duration,
    /// A coordinator gives the lease up after leading this long, so leadership moves (15 min).
    pub coordinator_leadership_max_duration: Duration,
    /// How often a node that is not coordinator tries to take the lease (5 s).
    pub coordinator_leadership_attempt_interval: Duration,
    /// How often the observer re-applies the allocations it learnt (20 s).
    pub observer_synchronisation_interval: Duration,
}

impl Default for DistributedEventBrokerSettings {
    fn default() -> Self {
        DistributedEventBrokerSettings {
            role: BrokerRole::Full,
            subscriber_manager_heartbeat_interval: Duration::from_secs(10),
            subscriber_manager_purge_interval: Duration::from_secs(60),
            subscriber_manager_subscriber_max_age: Duration::from_secs(600),
            coordinator_subscriber_max_time_since_last_seen: Duration::from_secs(60),
            coordinator_distribution_interval: Duration::from_secs(20),
            coordinator_leadership_max_duration: Duration::from_secs(900),
            coordinator_leadership_attempt_interval: Duration::from_secs(5),
            observer_synchronisation_interval: Duration::from_secs(20),
        }
    }
}

impl DistributedEventBrokerSettings {
    /// Settings scaled for tests and demos: heartbeat every `heartbeat`, dead after 4
    /// heartbeats, rebalance every heartbeat.
    pub fn fast(role: BrokerRole, heartbeat: Duration) -> Self {
        DistributedEventBrokerSettings {
            role,
            subscriber_manager_heartbeat_interval: heartbeat,
            subscriber_manager_purge_interval: heartbeat * 50,
            subscriber_manager_subscriber_max_age: heartbeat * 600,
            coordinator_subscriber_max_time_since_last_seen: heartbeat * 4,
            coordinator_distribution_interval: heartbeat,
            coordinator_leadership_max_duration: heartbeat * 900,
            coordinator_leadership_attempt_interval: heartbeat,
            observer_synchronisation_interval: heartbeat,
        }
    }

    /// Checks that they hold together.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Settings`] naming the setting: the heartbeat and the distribution
    /// interval must be shorter than the time-to-live, and none may be zero.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let ttl = self.coordinator_subscriber_max_time_since_last_seen;
        for (name, v) in [
            (
                "subscriber_manager_heartbeat_interval",
                self.subscriber_manager_heartbeat_interval,
            ),
            (
                "coordinator_distribution_interval",
                self.coordinator_distribution_interval,
            ),
        ] {
            if v.is_zero() || v >= ttl {
                return Err(BrokerError::Settings(format!(
                    "{name} ({v:?}) must be above zero and below coordinator_subscriber_max_time_since_last_seen ({ttl:?})"
                )));
            }
        }
        if self.coordinator_leadership_attempt_interval.is_zero()
            || self.observer_synchronisation_interval.is_zero()
            || self.subscriber_manager_purge_interval.is_zero()
        {
            return Err(BrokerError::Settings(
                "intervals must be above zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// What a node's broker has done, for status and tests.
#[derive(Debug, Default)]
pub struct BrokerCounters {
    /// Heartbeats committed.
    pub(crate) heartbeats: AtomicU64,
    /// Heartbeats that failed.
    pub(crate) heartbeat_failures: AtomicU64,
    /// The lease epoch held now (0: not coordinator).
    pub(crate) lease_epoch: AtomicU64,
    /// Terms as coordinator begun.
    pub(crate) terms: AtomicU64,
    /// Allocation changes written.
    pub(crate) allocations_written: AtomicU64,
    /// Writes refused because the lease had moved on.
    pub(crate) lease_lost: AtomicU64,
}

/// The distributed broker's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerSnapshot {
    /// Heartbeats committed.
    pub heartbeats: u64,
    /// Heartbeats that failed.
    pub heartbeat_failures: u64,
    /// The lease epoch held now (0: not coordinator).
    pub lease_epoch: u64,
    /// Terms as coordinator begun.
    pub terms: u64,
    /// Allocation changes written.
    pub allocations_written: u64,
    /// Writes refused because the lease had moved on.
    pub lease_lost: u64,
}

impl BrokerCounters {
    /// The counts now, as plain numbers.
    pub fn snapshot(&self) -> BrokerSnapshot {
        BrokerSnapshot {
            heartbeats: self.heartbeats.load(std::sync::atomic::Ordering::Relaxed),
            heartbeat_failures: self
                .heartbeat_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            lease_epoch: self.lease_epoch.load(std::sync::atomic::Ordering::Relaxed),
            terms: self.terms.load(std::sync::atomic::Ordering::Relaxed),
            allocations_written: self
                .allocations_written
                .load(std::sync::atomic::Ordering::Relaxed),
            lease_lost: self.lease_lost.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A node of a distributed broker (seed 003's `DistributedEventBroker`, with `BrokerRole`).
pub struct DistributedEventBroker<S> {
    node_id: String,
    settings: DistributedEventBrokerSettings,
    store: S,
    subscribers: Mutex<Vec<Arc<dyn EventSubscriber>>>,
    coordinator: StatusCell,
    observer: StatusCell,
    manager: StatusCell,
    counters: BrokerCounters,
}

impl<S> std::fmt::Debug for DistributedEventBroker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedEventBroker")
            .field("node_id", &self.node_id)
            .field("role", &self.settings.role)
            .finish_non_exhaustive()
    }
}

type Learnt = (Instant, Vec<Allocation>);

impl<S: BrokerStore> DistributedEventBroker<S> {
    /// Node `node_id` on `store`.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Settings`] when the settings do not hold together.
    pub fn new(
        node_id: &str,
        store: S,
        settings: DistributedEventBrokerSettings,
    ) -> Result<Self, BrokerError> {
        settings.validate()?;
        Ok(DistributedEventBroker {
            node_id: node_id.to_owned(),
            settings,
            store,
            subscribers: Mutex::new(Vec::new()),
            coordinator: StatusCell::default(),
            observer: StatusCell::default(),
            manager: StatusCell::default(),
            counters: BrokerCounters::default(),
        })
    }

    /// Its role.
    pub fn role(&self) -> BrokerRole {
        self.settings.role
    }

    /// Its node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The coordinator's status (initialised for ever when the role has none).
    pub fn coordinator_status(&self) -> ProcessStatus {
        self.coordinator.get()
    }

    /// The observer's status (initialised for ever when the role has none).
    pub fn observer_status(&self) -> ProcessStatus {
        self.observer.get()
    }

    /// Its counters.
    pub fn counters(&self) -> &BrokerCounters {
        &self.counters
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.node_id.clone(),
            role: self.settings.role.as_str().to_owned(),
            ttl: Some(
                self.settings
                    .coordinator_subscriber_max_time_since_last_seen,
            ),
            groups: self
                .subscribers
                .lock()
                .iter()
                .map(|s| GroupInfo {
                    group: s.group(),
                    sources: s.sources(),
                })
                .collect(),
        }
    }

    /// Heartbeats every interval; each answer goes to the observer.
    async fn maintain(&self, learnt: watch::Sender<Option<Learnt>>, stop: Shutdown) {
        let s = &self.settings;
        let mut last_purge = Instant::now();
        self.manager.set(ProcessStatus::Running);
        while !stop.is_triggered() {
            let sent = Instant::now();
            match self.store.heartbeat(&self.info()).await {
                Ok(allocations) => {
                    self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    learnt.send_replace(Some((sent, allocations)));
                }
                Err(e) => {
                    self.counters
                        .heartbeat_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        node = self.node_id.as_str(),
                        "heartbeat failed: {}",
                        herald::report(&e)
                    );
                }
            }
            if last_purge.elapsed() >= s.subscriber_manager_purge_interval {
                last_purge = Instant::now();
                if let Err(e) = self
                    .store
                    .purge_nodes(s.subscriber_manager_subscriber_max_age)
                    .await
                {
                    tracing::warn!("purging nodes failed: {}", herald::report(&e));
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(s.subscriber_manager_heartbeat_interval) => {}
            }
        }
        if let Err(e) = self.store.leave(&self.node_id).await {
            tracing::warn!("leaving failed: {}", herald::report(&e));
        }
        self.manager.set(ProcessStatus::Stopped);
    }

    /// Hands what the heartbeats learnt to the local subscribers.
    async fn observe(&self, mut learnt: watch::Receiver<Option<Learnt>>, stop: Shutdown) {
        self.observer.set(ProcessStatus::Running);
        let ttl = self
            .settings
            .coordinator_subscriber_max_time_since_last_seen;
        loop {
            let current = learnt.borrow_and_update().clone();
            if let Some((sent, allocations)) = current {
                for sub in self.subscribers.lock().iter() {
                    let group = sub.group();
                    let mut sources: Vec<(String, u64)> = allocations
                        .iter()
                        .filter(|a| a.group == group)
                        .map(|a| (a.source.clone(), a.epoch))
                        .collect();
                    sources.sort();
                    sub.assign(Assignment {
                        sources,
                        valid_until: Some(sent + ttl),
                    });
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                changed = learnt.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(self.settings.observer_synchronisation_interval) => {}
            }
        }
        for sub in self.subscribers.lock().iter() {
            sub.assign(Assignment::default());
        }
        self.observer.set(ProcessStatus::Stopped);
    }

    /// Takes the lease when it can; while held, renews it and rebalances every interval.
    async fn coordinate(&self, stop: Shutdown) {
        let s = &self.settings;
        let ttl = s.coordinator_subscriber_max_time_since_last_seen;
        self.coordinator.set(ProcessStatus::Running);
        let mut term: Option<(u64, Instant)> = None;
        while !stop.is_triggered() {
            let wait = match self.coordinate_once(&mut term, ttl).await {
                Ok(()) if term.is_some() => s.coordinator_distribution_interval,
                Ok(()) => s.coordinator_leadership_attempt_interval,
                Err(e) => {
                    if matches!(e, StoreError::LeaseLost { .. }) {
                        self.counters.lease_lost.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(
                        node = self.node_id.as_str(),
                        "coordinating failed: {}",
                        herald::report(&e)
                    );
                    term = None;
                    self.counters.lease_epoch.store(0, Ordering::Relaxed);
                    s.coordinator_leadership_attempt_interval
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if let Some((epoch, _)) = term {
            if let Err(e) = self
                .store
                .release_lease(COORDINATOR_LEASE, &self.node_id, epoch)
                .await
            {
                tracing::warn!("releasing the lease failed: {}", herald::report(&e));
            }
        }
        self.counters.lease_epoch.store(0, Ordering::Relaxed);
        self.coordinator.set(ProcessStatus::Stopped);
    }

    async fn coordinate_once(
        &self,
        term: &mut Option<(u64, Instant)>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if let Some((epoch, since)) = *term {
            if since.elapsed() >= self.settings.coordinator_leadership_max_duration {
                // Led long enough: let another node take over.
                self.store
                    .release_lease(COORDINATOR_LEASE, &self.node_id, epoch)
                    .await?;
                *term = None;
                self.counters.lease_epoch.store(0, Ordering::Relaxed);
                return Ok(());
            }
        }
        let Some(epoch) = self
            .store
            .acquire_lease(COORDINATOR_LEASE, &self.node_id, ttl)
            .await?
        else {
            *term = None;
            self.counters.lease_epoch.store(0, Ordering::Relaxed);
            return Ok(());
        };
        if term.map(|(e, _)| e) != Some(epoch) {
            *term = Some((epoch, Instant::now()));
            self.counters.terms.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                node = self.node_id.as_str(),
                epoch,
                "coordinator lease taken"
            );
        }
        self.counters.lease_epoch.store(epoch, Ordering::Relaxed);
        let snapshot = self.store.snapshot(ttl).await?;
        let changes = plan(&snapshot);
        if !changes.is_empty() {
            let n = self
                .store
                .allocate(&self.node_id, epoch, ttl, &changes)
                .await?;
            self.counters
                .allocations_written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl<S: BrokerStore> Service for DistributedEventBroker<S> {
    fn name(&self) -> String {
        format!(
            "distributed broker {} ({})",
            self.node_id, self.settings.role
        )
    }

    fn execute(self: Arc<Self>, stop: Shutdown) -> BoxFuture<Result<(), ServiceError>> {
        Box::pin(async move {
            let (tx, rx) = watch::channel(None);
            let role = self.settings.role;
            let coordinate = async {
                if role.coordinates() {
                    self.coordinate(stop.clone()).await;
                }
            };
            let observe = async {
                if role.observes() {
                    self.observe(rx, stop.clone()).await;
                }
            };
            tokio::join!(self.maintain(tx, stop.clone()), coordinate, observe);
            Ok(())
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<S: BrokerStore> EventBroker for DistributedEventBroker<S> {
    fn register(&self, subscriber: Arc<dyn EventSubscriber>) -> Result<(), BrokerError> {
        if self.settings.role == BrokerRole::Coordinator {
            return Err(BrokerError::CoordinatorOnly {
                node_id: self.node_id.clone(),
            });
        }
        // Nothing is held until the observer hands out an allocation.
        subscriber.assign(Assignment {
            sources: Vec::new(),
            valid_until: Some(Instant::now()),
        });
        self.subscribers.lock().push(subscriber);
        Ok(())
    }

    fn subscribers(&self) -> Vec<Arc<dyn EventSubscriber>> {
        self.subscribers.lock().clone()
    }

    fn status(&self) -> ProcessStatus {
        match self.settings.role {
            BrokerRole::Coordinator => self.coordinator.get(),
            BrokerRole::Observer => self.observer.get(),
            BrokerRole::Full => {
                determine_multi_process_status(&[self.coordinator.get(), self.observer.get()])
            }
        }
    }
}
