//! Test support for Herald: service URLs from the environment, delivery set checks, shared
//! fixtures, and the conformance suite every transport runs.

pub mod broker_conformance;
pub mod conformance;
pub mod delivery;
pub mod dlq_conformance;
pub mod env;
pub mod fixtures;
pub mod flow_conformance;
pub mod fuzz_corpus;
pub mod http;
pub mod nats_cluster;
pub mod nats_server;
pub mod postgres_server;
pub mod queue_conformance;
pub mod store_conformance;

pub use delivery::DeliveryCheck;
