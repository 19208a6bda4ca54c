//! `BusBuilder`: the settings of a new bus (history, depth, emit queue capacity, shutdown).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;

use super::emit::Queue;
use super::history::History;
use super::stats::Counters;
use super::{Bus, Inner};
use crate::route::Routes;
use crate::shutdown::Shutdown;

/// Settings for a new bus.
#[derive(Debug, Clone)]
pub struct BusBuilder {
    history: usize,
    max_depth: u32,
    queue_capacity: usize,
    shutdown: Shutdown,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            history: 100,
            max_depth: 16,
            queue_capacity: 10_000,
            shutdown: Shutdown::new(),
        }
    }
}

impl BusBuilder {
    /// How many events the history ring keeps (default 100; 0 keeps none).
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// The maximum dispatch depth (default 16; values below 1 are taken as 1).
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// The emit queue's capacity (default 10,000; values below 1 are taken as 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// The [`Shutdown`] the bus starts its emit dispatcher through (default: its own). When
    /// it is triggered, the dispatcher drains what is queued and ends, and later emits are
    /// refused as on a stopped bus.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Builds a running bus.
    pub fn build(self) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                routes: Routes::default(),
                history: History::new(self.history),
                counters: Counters::default(),
                running: AtomicBool::new(true),
                max_depth: self.max_depth,
                queue: Queue::new(self.queue_capacity),
                dispatcher: Mutex::new(()),
                shutdown: self.shutdown,
            }),
        }
    }
}
