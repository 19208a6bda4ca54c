//! Seed 001's `InProcessDomainEventPoller`: a blocking loop, started through `Shutdown` on
//! the runtime's blocking pool, that polls the fast path every `polling_interval_ms` when idle
//! and publishes each event on the bus as `domain.event.received` (its data: the
//! `InProcessDomainEvent`). Starting it twice is an error; `stop` waits within a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::{Bus, Event, Shutdown, Subject};
use serde_json::Value;

use super::fast::PollHandle;

/// The bus subject the poller publishes on.
pub const DOMAIN_EVENT_RECEIVED: &str = "domain.event.received";

/// Why the poller could not start or stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollerError {
    /// `start` on a running poller.
    #[error("InProcessDomainEventPoller already running")]
    AlreadyRunning,
    /// Not inside a Tokio runtime (the poller publishes through the runtime's handle).
    #[error("InProcessDomainEventPoller needs a Tokio runtime")]
    NoRuntime,
    /// The loop did not end within the timeout (it ends after its current event).
    #[error("InProcessDomainEventPoller did not stop within {0:?}")]
    StopTimeout(Duration),
}

/// The fast path's poller.
pub struct InProcessDomainEventPoller {
    bus: Bus,
    source: PollHandle,
    interval: Duration,
    running: Option<Shutdown>,
    emitted: Arc<AtomicU64>,
}

impl std::fmt::Debug for InProcessDomainEventPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessDomainEventPoller")
            .field("running", &self.is_running())
            .finish()
    }
}

impl InProcessDomainEventPoller {
    /// A poller reading `source` and publishing on `bus`, polling every
    /// `polling_interval_ms` when idle (seed default 50).
    pub fn new(bus: Bus, source: PollHandle, polling_interval_ms: u64) -> Self {
        InProcessDomainEventPoller {
            bus,
            source,
            interval: Duration::from_millis(polling_interval_ms.max(1)),
            running: None,
            emitted: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the polling loop on the runtime's blocking pool, through its own
    /// [`Shutdown`] (which [`InProcessDomainEventPoller::stop`] triggers and drop triggers).
    ///
    /// # Errors
    ///
    /// [`PollerError::AlreadyRunning`], [`PollerError::NoRuntime`].
    pub fn start(&mut self) -> Result<(), PollerError> {
        if self.is_running() {
            return Err(PollerError::AlreadyRunning);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(PollerError::NoRuntime);
        };
        let shutdown = Shutdown::new();
        let (bus, source, interval) = (self.bus.clone(), self.source.clone(), self.interval);
        let (stop, emitted, rt) = (shutdown.clone(), self.emitted.clone(), handle.clone());
        shutdown.spawn_blocking_on(
            move || {
                let subject = Subject::new(DOMAIN_EVENT_RECEIVED).ok();
                while !stop.is_triggered() {
                    let Some(event) = source.poll_in_process_events() else {
                        std::thread::sleep(interval);
                        continue;
                    };
                    let (Some(subject), Ok(Value::Object(data))) =
                        (subject.clone(), serde_json::to_value(&event))
                    else {
                        continue;
                    };
                    let envelope = Event::new(subject)
                        .with_data(data)
                        .with_source(&event.source);
                    match rt.block_on(bus.publish(envelope)) {
                        Ok(_) => {
                            emitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!("domain event not emitted: {e}"),
                    }
                }
            },
            &handle,
        );
        self.running = Some(shutdown);
        Ok(())
    }

    /// Stops the loop and waits up to `timeout` for it to end (it ends after its current
    /// event).
    ///
    /// # Errors
    ///
    /// [`PollerError::StopTimeout`] when it is still running then.
    pub fn stop(&mut self, timeout: Duration) -> Result<(), PollerError> {
        let Some(shutdown) = self.running.take() else {
            return Ok(());
        };
        shutdown.trigger();
        let deadline = std::time::Instant::now() + timeout;
        while shutdown.running() > 0 {
            if std::time::Instant::now() >= deadline {
                return Err(PollerError::StopTimeout(timeout));
            }
            // Called from inside the runtime as often as from outside: a plain wait, which
            // needs no runtime.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Events published on the bus so far.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

impl Drop for InProcessDomainEventPoller {
    fn drop(&mut self) {
        if let Some(shutdown) = &self.running {
            shutdown.trigger();
        }
    }
}
