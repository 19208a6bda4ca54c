//! Connection state: a watchable value, a reconnect counter and the user's state callback,
//! all fed by async-nats connection events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Connecting for the first time.
    Connecting,
    /// Connected to a server.
    Connected,
    /// The connection dropped.
    Disconnected,
    /// Trying to reconnect (subscriptions are restored once it succeeds).
    Reconnecting,
    /// Closed by `close()` or `drain()`; final.
    Closed,
}

/// A callback for state changes.
pub type StateCallback = Arc<dyn Fn(ConnectionState) + Send + Sync>;

pub(crate) struct StateCell {
    tx: watch::Sender<ConnectionState>,
    connects: AtomicU64,
    slow_consumers: AtomicU64,
    callback: Option<StateCallback>,
}

impl StateCell {
    pub(crate) fn new(callback: Option<StateCallback>) -> Arc<Self> {
        let (tx, _) = watch::channel(ConnectionState::Connecting);
        Arc::new(StateCell {
            tx,
            connects: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            callback,
        })
    }

    pub(crate) fn set(&self, state: ConnectionState) {
        if *self.tx.borrow() == ConnectionState::Closed {
            return;
        }
        let previous = self.tx.send_replace(state);
        if previous == state {
            return;
        }
        if state == ConnectionState::Connected {
            self.connects.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(state = ?state, "NATS connection state");
        if let Some(cb) = &self.callback {
            cb(state);
        }
    }

    pub(crate) fn get(&self) -> ConnectionState {
        *self.tx.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.tx.subscribe()
    }

    /// Counts one slow-consumer event; returns the total so far.
    pub(crate) fn add_slow_consumer(&self) -> u64 {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Slow-consumer events: a subscription's buffer overflowed and the client dropped
    /// messages for it.
    pub(crate) fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    /// Successful reconnects (connections after the first).
    pub(crate) fn reconnects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed).saturating_sub(1)
    }
}
