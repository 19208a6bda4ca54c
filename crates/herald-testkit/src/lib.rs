//! Test support for Herald: service URLs from the environment, delivery set checks, and the
//! conformance suite every transport runs.

pub mod conformance;
pub mod delivery;
pub mod env;
pub mod nats_server;

pub use delivery::DeliveryCheck;
