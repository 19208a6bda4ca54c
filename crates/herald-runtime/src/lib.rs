//! Seed 003's event-processing runtime on Herald's event store ([`herald::store`]):
//! [`EventProcessor`]s run by [`EventSubscriptionConsumer`]s with fenced checkpoints, error
//! handlers, the [`ErrorHandlingService`] and [`PollingService`] around each consumer, the
//! [`ServiceManager`], brokers that share sources out ([`SingletonEventBroker`], and
//! [`DistributedEventBroker`] in a [`BrokerRole`]), and [`EventRuntime`] over them.
//!
//! ```text
//! EventRuntime ── register_subscription_consumer ─┬─> broker.register (allocation)
//!                                                 └─> ServiceManager: PollingService(ErrorHandlingService(consumer))
//! DistributedEventBroker (a node):
//!   subscriber manager ── heartbeat ──> store (claims := allocations, store clock) ──> allocations
//!   coordinator (coordinator|full) ── lease (epoch) ──> snapshot ──> plan ──> allocate under lease
//!   observer (observer|full) ── allocations ──> subscriber.assign(sources + epochs, valid until)
//! consumer pass: for each held source: read category from checkpoint ──> process ──> checkpoint(epoch)
//! ```
//!
//! # Guarantees
//!
//! - **At least once**: an event is processed before its checkpoint is saved, so a consumer
//!   that dies between the two processes the events after the last checkpoint again: after a
//!   crash **at most `checkpoint_every` events per source** (or what `checkpoint_interval`
//!   let through, whichever is first) are processed again.
//! - **Fenced ownership**: a coordinator writes allocations only under a lease whose epoch
//!   strictly increases over holders; each change of a source's owner increments the source's
//!   allocation epoch; a checkpoint carries the epoch its writer was given, and the store
//!   refuses it ([`ConsumerError::Fenced`]) once a newer epoch exists, so a paused node that
//!   lost its sources cannot move their checkpoints. The consumer then gives the source up.
//! - **One live owner**: a source is given to a node only while no other live node (store
//!   clock) claims it, and a node stops processing by itself once its last heartbeat is older
//!   than the time-to-live (measured from before it was sent), before the store would call it
//!   dead.
//! - **Poison events** are handled by the consumer's [`ErrorHandler`]: continue (the default)
//!   dead-letters the event to `deadletter-{consumer}.{source}` and goes on; nothing blocks a
//!   source silently.

pub mod broker;
mod consumer;
mod manager;
mod polling;
mod runtime;
mod service;
mod settings;
mod status;

pub use broker::{
    Assignment, BrokerError, BrokerRole, DistributedEventBroker, DistributedEventBrokerSettings,
    EventBroker, EventSubscriber, SingletonEventBroker, UnknownRole,
};
pub use consumer::{
    dead_letter_stream, ConsumerError, ConsumerSettings, ConsumerStats, ErrorHandler,
    EventConsumer, EventProcessor, EventSubscriptionConsumer, DEAD_LETTER_CATEGORY,
};
pub use manager::{Ended, ExecutionMode, IsolationMode, Registration, ServiceManager, StopReport};
pub use polling::{ErrorHandlingService, PollingService};
pub use runtime::{EventConsumerSettings, EventRuntime, RuntimeError};
pub use service::{Service, ServiceError};
pub use settings::{group_ok, node_id_ok, NodeSettings, SettingsError};
pub use status::{determine_multi_process_status, ProcessStatus, StatusCell};
