//! Observability types every surface shares: seed 001's `HealthStatus`, `ComponentHealth` and
//! `HealthCheck` (same JSON field names and types), the rule that rolls components up into an
//! overall status, and a `Histogram` that gives p95/p99 with a bounded relative error.

mod histogram;
pub mod lag;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::timestamp::Timestamp;

pub use histogram::Histogram;

/// Seed 001's `HealthStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working as it should.
    Healthy,
    /// Working, but something needs attention (an optional component down, saturation).
    Degraded,
    /// Not doing its job.
    Unhealthy,
}

/// Seed 001's `ComponentHealth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// The component (`store`, `bus`, `worker`, `nats`).
    pub name: String,
    /// Its status.
    pub status: HealthStatus,
    /// Why, when not healthy (or a detail).
    #[serde(default)]
    pub message: Option<String>,
    /// When it was checked.
    pub last_check: Timestamp,
    /// Whether the service cannot work without it (Herald's addition; the store, the bus and
    /// the worker are required, NATS is optional).
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl ComponentHealth {
    /// A component's result, checked now.
    pub fn new(name: &str, status: HealthStatus, message: Option<String>, required: bool) -> Self {
        ComponentHealth {
            name: name.to_owned(),
            status,
            message,
            last_check: Timestamp::now(),
            required,
        }
    }
}

/// Seed 001's `HealthCheck`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The overall status, rolled up by [`roll_up`].
    pub status: HealthStatus,
    /// The worker.
    pub worker_id: String,
    /// Seconds since it started.
    pub uptime_seconds: f64,
    /// Each component's health.
    pub components: BTreeMap<String, ComponentHealth>,
    /// The Rust layer's details.
    pub rust: Map<String, Value>,
    /// The Python layer's details (empty without one).
    pub python: Map<String, Value>,
}

impl HealthCheck {
    /// Seed 001's `is_healthy`: the overall status is `healthy`.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// The rule that turns components into an overall status:
///
/// - **unhealthy** if any *required* component is unhealthy;
/// - else **degraded** if any component is degraded, or an *optional* one is unhealthy;
/// - else **healthy** (also with no components at all).
pub fn roll_up<'a>(components: impl IntoIterator<Item = &'a ComponentHealth>) -> HealthStatus {
    let mut status = HealthStatus::Healthy;
    for c in components {
        let effective = match (c.status, c.required) {
            (HealthStatus::Unhealthy, false) => HealthStatus::Degraded,
            (s, _) => s,
        };
        status = status.max(effective);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(status: HealthStatus, required: bool) -> ComponentHealth {
        ComponentHealth::new("x", status, None, required)
    }

    #[test]
    fn the_roll_up_rule() {
        use HealthStatus::*;
        assert_eq!(roll_up([]), Healthy);
        assert_eq!(roll_up(&[c(Healthy, true), c(Healthy, false)]), Healthy);
        assert_eq!(roll_up(&[c(Healthy, true), c(Degraded, true)]), Degraded);
        assert_eq!(roll_up(&[c(Healthy, true), c(Unhealthy, false)]), Degraded);
        assert_eq!(
            roll_up(&[c(Degraded, false), c(Unhealthy, true)]),
            Unhealthy
        );
    }

    /// Seed 001's `test_health_check_model`, ported.
    #[test]
    fn test_health_check_model() {
        let data = serde_json::json!({
            "status": "healthy",
            "worker_id": "test-worker",
            "uptime_seconds": 100.0,
            "components": {},
            "rust": {},
            "python": {},
        });
        let health: HealthCheck = serde_json::from_value(data).expect("validates");
        assert!(health.is_healthy());
    }
}
