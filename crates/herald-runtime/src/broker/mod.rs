//! Brokers (seed 003): who processes which event source. An [`EventSubscriber`] asks for sources
//! and is given an [`Assignment`]; [`SingletonEventBroker`] gives every source to the local
//! subscribers; [`DistributedEventBroker`] shares them out between nodes with a coordinator
//! elected by a lease, in a [`BrokerRole`].

mod distributed;
pub mod plan;

use std::sync::Arc;
use std::time::Instant;

use herald::store::StoreError;
use parking_lot::Mutex;

use crate::service::Service;
use crate::status::ProcessStatus;

pub use distributed::{
    BrokerCounters, BrokerSnapshot, DistributedEventBroker, DistributedEventBrokerSettings,
};

/// The sources a subscriber may process now, each with the allocation epoch its checkpoint
/// writes carry, and until when (a node that could not heartbeat stops by itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// `(source, epoch)`, sorted by source.
    pub sources: Vec<(String, u64)>,
    /// After this instant nothing may be processed until the next assignment (`None`: no
    /// limit).
    pub valid_until: Option<Instant>,
}

impl Assignment {
    /// Whether `source` is held at `epoch` now.
    pub fn holds(&self, source: &str, epoch: u64) -> bool {
        self.valid_until.is_none_or(|t| Instant::now() < t)
            && self.sources.iter().any(|(s, e)| s == source && *e == epoch)
    }
}

/// Something a broker gives sources to (seed 003's `EventSubscriber`).
pub trait EventSubscriber: Send + Sync + 'static {
    /// Its group: the sources of a group are shared out among its subscribers on all nodes.
    fn group(&self) -> String;
    /// The sources it asks for.
    fn sources(&self) -> Vec<String>;
    /// Replaces what it holds.
    fn assign(&self, assignment: Assignment);
    /// What it holds.
    fn assignment(&self) -> Assignment;
}

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A coordinator-only broker runs no subscribers.
    #[error("node {node_id} is a coordinator-only broker: it does not take subscribers (run it as observer or full)")]
    CoordinatorOnly {
        /// The node.
        node_id: String,
    },
    /// The broker settings do not hold together.
    #[error("broker settings: {0}")]
    Settings(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a distributed node coordinates, observes, or both (seed 003's `BrokerRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerRole {
    /// Allocates sources only; runs no subscribers.
    Coordinator,
    /// Processes what it is given; never coordinates.
    Observer,
    /// Both (the default).
    Full,
}

impl BrokerRole {
    /// `coordinator`, `observer` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerRole::Coordinator => "coordinator",
            BrokerRole::Observer => "observer",
            BrokerRole::Full => "full",
        }
    }

    /// Whether it runs the coordinator.
    pub fn coordinates(self) -> bool {
        matches!(self, BrokerRole::Coordinator | BrokerRole::Full)
    }

    /// Whether it runs the observer.
    pub fn observes(self) -> bool {
        matches!(self, BrokerRole::Observer | BrokerRole::Full)
    }
}

impl std::fmt::Display for BrokerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown broker role {0:?}: expected coordinator, observer or full")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for BrokerRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "coordinator" => Ok(BrokerRole::Coordinator),
            "observer" => Ok(BrokerRole::Observer),
            "full" => Ok(BrokerRole::Full),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A broker: a service that gives sources to the subscribers registered with it.
pub trait EventBroker: Service {
    /// Registers `subscriber`.
    ///
    /// # Errors
    ///
    /// [`BrokerError::CoordinatorOnly`] on a coordinator-only broker.
    fn register(&self, subscriber: Arc<dyn EventSubscriber>) -> Result<(), BrokerError>;

    /// The subscribers registered.
    fn subscribers(&self) -> Vec<Arc<dyn EventSubscriber>>;

    /// Its status.
    fn status(&self) -> ProcessStatus;
}

/// Every source to every local subscriber (seed 003's `SingletonEventBroker`): one process
/// owns all sources; its checkpoint writes carry `epoch`.
pub struct SingletonEventBroker {
    epoch: u64,
    subscribers: Mutex<Vec<Arc<dyn EventSubscriber>>>,
    status: crate::status::StatusCell,
}

impl std::fmt::Debug for SingletonEventBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonEventBroker")
            .field("epoch", &self.epoch)
            .field("subscribers", &self.subscribers.lock().len())
            .finish()
    }
}

impl Default for SingletonEventBroker {
    fn default() -> Self {
        SingletonEventBroker::new(1)
    }
}

impl SingletonEventBroker {
    /// A broker whose subscribers' checkpoints carry `epoch`.
    pub fn new(epoch: u64) -> Self {
        SingletonEventBroker {
            epoch,
            subscribers: Mutex::new(Vec::new()),
            status: crate::status::StatusCell::default(),
        }
    }

    fn everything(&self, s: &dyn EventSubscriber) -> Assignment {
        let mut sources: Vec<(String, u64)> = s
            .sources()
            .into_iter()
            .map(|src| (src, self.epoch))
            .collect();
        sources.sort();
        Assignment {
            sources,
            valid_until: None,
        }
    }
}

impl Service for SingletonEventBroker {
    fn name(&self) -> String {
        "singleton broker".to_owned()
    }

    fn execute(
        self: Arc<Self>,
        stop: herald::Shutdown,
    ) -> herald::BoxFuture<Result<(), crate::service::ServiceError>> {
        Box::pin(async move {
            self.status.set(ProcessStatus::Running);
            for s in self.subscribers.lock().iter() {
                s.assign(self.everything(s.as_ref()));
            }
            stop.cancelled().await;
            for s in self.subscribers.lock().iter() {
                s.assign(Assignment::default());
            }
            self.status.set(ProcessStatus::Stopped);
            Ok(())
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl EventBroker for SingletonEventBroker {
    fn register(&self, subscriber: Arc<dyn EventSubscriber>) -> Result<(), BrokerError> {
        if self.status.get() == ProcessStatus::Running {
            subscriber.assign(self.everything(subscriber.as_ref()));
        }
        self.subscribers.lock().push(subscriber);
        Ok(())
    }

    fn subscribers(&self) -> Vec<Arc<dyn EventSubscriber>> {
        self.subscribers.lock().clone()
    }

    fn status(&self) -> ProcessStatus {
        self.status.get()
    }
}
