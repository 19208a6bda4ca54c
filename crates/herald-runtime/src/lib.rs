//! Seed 003's event-processing runtime on Herald's event store ([`herald::store`]). Built so
//! far: [`EventProcessor`] and [`EventSubscriptionConsumer`], which reads its sources (event
//! categories) from their checkpoints, processes one event at a time, and checkpoints every N
//! events or T (defaults 100 and 1 s) and when it stops, in the same store, fenced by its
//! owner's epoch.
//!
//! # Guarantees
//!
//! - **At least once**: an event is processed before its checkpoint is saved, so a consumer
//!   that dies between the two processes the events after the last checkpoint again.
//! - **Fenced**: a checkpoint carries the epoch of the owner that wrote it; a write with an
//!   older epoch (a paused node that lost its sources) is refused, and the consumer stops with
//!   [`ConsumerError::Fenced`].
//!
//! An [`ErrorHandler`] decides what a processor failure does: continue (skip, count,
//! dead-letter), retry with backoff, or raise (stop).
//!
//! Not built yet: the polling service and service manager, brokers, `EventRuntime`.

mod consumer;

pub use consumer::{
    ConsumerError, ConsumerSettings, ConsumerStats, ErrorHandler, EventProcessor,
    EventSubscriptionConsumer, DEAD_LETTER_CATEGORY,
};
