//! Seed 001's `WorkerMetrics` (all 19 fields) and `WorkerConfig` (the JSON `/config`
//! serves), with the same field names and JSON types, and how a running worker fills them.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use crate::settings::WorkerSettings;

use crate::events::DomainEventCounters;
use crate::worker::Progress;

/// Seed 001's `WorkerMetrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerMetrics {
    /// The worker.
    pub worker_id: String,
    /// Seconds since it started.
    pub uptime_seconds: f64,
    /// Results stored (succeeded + failed).
    pub steps_processed: u64,
    /// Results stored that say success.
    pub steps_succeeded: u64,
    /// Results stored that say failure.
    pub steps_failed: u64,
    /// Handlers running now.
    pub steps_in_progress: u64,
    /// Mean handler run time.
    pub avg_execution_time_ms: f64,
    /// Longest handler run time.
    pub max_execution_time_ms: f64,
    /// 95th percentile of handler run times (from a log-bucket histogram, within ~9%).
    pub p95_execution_time_ms: f64,
    /// 99th percentile.
    pub p99_execution_time_ms: f64,
    /// Steps read and waiting for a handler slot.
    pub dispatch_channel_pending: u64,
    /// Results waiting to be committed.
    pub completion_channel_pending: u64,
    /// Handler slots in use, 0..1.
    pub dispatch_channel_saturation: f64,
    /// Results waiting to be committed over the handler slots, 0..1.
    pub completion_channel_saturation: f64,
    /// Domain events published.
    pub domain_events_published: u64,
    /// Fast-path domain events lagging receivers missed (exact).
    pub domain_events_dropped: u64,
    /// Handler errors, panics and timeouts.
    pub handler_errors: u64,
    /// Handler timeouts.
    pub timeout_errors: u64,
    /// Results the store could not commit (Herald has no FFI; this is its boundary's error
    /// count).
    pub ffi_errors: u64,
}

/// Seed 001's `WorkerConfig`: what `/config` serves, and the `[worker]` config section
/// (the same fields, see [`WorkerSettings`]).
pub type WorkerConfigModel = crate::settings::WorkerSettings;

impl Progress {
    /// The metrics now, for a worker started at `started` with `max_concurrent` slots.
    pub fn metrics(
        &self,
        worker_id: &str,
        started: Instant,
        max_concurrent: usize,
        events: Option<&DomainEventCounters>,
    ) -> WorkerMetrics {
        let r = self.report();
        let s = self.subscriber_counters();
        let h = &s.execution_us;
        let ms = |us: f64| us / 1000.0;
        let in_progress = s.in_progress.load(Ordering::Relaxed);
        let slots = max_concurrent.max(1) as f64;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        WorkerMetrics {
            worker_id: worker_id.to_owned(),
            uptime_seconds: started.elapsed().as_secs_f64(),
            steps_processed: r.succeeded + r.failed,
            steps_succeeded: r.succeeded,
            steps_failed: r.failed,
            steps_in_progress: in_progress,
            avg_execution_time_ms: ms(h.mean()),
            max_execution_time_ms: ms(h.max() as f64),
            p95_execution_time_ms: ms(h.quantile(0.95)),
            p99_execution_time_ms: ms(h.quantile(0.99)),
            dispatch_channel_pending: self.pending(),
            completion_channel_pending: 0,
            dispatch_channel_saturation: (in_progress as f64 / slots).min(1.0),
            completion_channel_saturation: 0.0,
            domain_events_published: events.map_or(0, |e| get(&e.published)),
            domain_events_dropped: events.map_or(0, |e| get(&e.dropped)),
            handler_errors: r.handler_errors,
            timeout_errors: get(&s.timeouts),
            ffi_errors: get(&s.submit_failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 001's `test_metrics_model`, ported.
    #[test]
    fn test_metrics_model() {
        let data = serde_json::json!({
            "worker_id": "test-worker",
            "uptime_seconds": 100.0,
            "steps_processed": 50,
            "steps_succeeded": 45,
            "steps_failed": 5,
            "steps_in_progress": 0,
            "avg_execution_time_ms": 50.0,
            "max_execution_time_ms": 200.0,
            "p95_execution_time_ms": 100.0,
            "p99_execution_time_ms": 150.0,
            "dispatch_channel_pending": 0,
            "completion_channel_pending": 0,
            "dispatch_channel_saturation": 0.0,
            "completion_channel_saturation": 0.0,
            "domain_events_published": 10,
            "domain_events_dropped": 0,
            "handler_errors": 3,
            "timeout_errors": 2,
            "ffi_errors": 0,
        });
        let metrics: WorkerMetrics = serde_json::from_value(data.clone()).expect("validates");
        assert_eq!(metrics.steps_processed, 50);
        // And back: exactly the seed's 19 fields, with its JSON types.
        let back = serde_json::to_value(&metrics).expect("serialises");
        assert_eq!(back, data);
    }
}
