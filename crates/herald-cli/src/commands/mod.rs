//! One module per `herald` verb.

pub(crate) mod bench;
pub(crate) mod chaos;
pub(crate) mod chaos_args;
pub(crate) mod chaos_inbox;
pub(crate) mod chaos_relay;
pub(crate) mod demo;
pub(crate) mod dlq;
pub(crate) mod nats;
pub(crate) mod node;
pub(crate) mod observe;
pub(crate) mod queue;
pub(crate) mod relay;
pub(crate) mod schedule;
pub(crate) mod store;
pub(crate) mod worker;
