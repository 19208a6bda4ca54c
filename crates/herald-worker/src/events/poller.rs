//! Seed 001's `InProcessDomainEventPoller`: a thread of its own that polls the fast path
//! every `polling_interval_ms` when idle and publishes each event on the bus as
//! `domain.event.received` (its data: the `InProcessDomainEvent`). Starting it twice is an
//! error; `stop` joins within a timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use herald::{Bus, Event, Subject};
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
    /// The thread did not end within the timeout (it ends after its current event).
    #[error("InProcessDomainEventPoller did not stop within {0:?}")]
    StopTimeout(Duration),
    /// The thread could not be spawned.
    #[error("cannot start the poller thread: {0}")]
    Spawn(String),
}

/// The fast path's poller.
pub struct InProcessDomainEventPoller {
    bus: Bus,
    source: PollHandle,
    interval: Duration,
    running: Arc<AtomicBool>,
    emitted: Arc<AtomicU64>,
    done: Option<mpsc::Receiver<()>>,
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
            running: Arc::new(AtomicBool::new(false)),
            emitted: Arc::new(AtomicU64::new(0)),
            done: None,
        }
    }

    /// Starts the thread.
    ///
    /// # Errors
    ///
    /// [`PollerError::AlreadyRunning`], [`PollerError::NoRuntime`], [`PollerError::Spawn`].
    pub fn start(&mut self) -> Result<(), PollerError> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(PollerError::AlreadyRunning);
        }
        let handle = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) => {
                self.running.store(false, Ordering::SeqCst);
                return Err(PollerError::NoRuntime);
            }
        };
        let (tx, rx) = mpsc::channel();
        let (bus, source, interval) = (self.bus.clone(), self.source.clone(), self.interval);
        let (running, emitted) = (self.running.clone(), self.emitted.clone());
        let spawned = std::thread::Builder::new()
            .name("herald-domain-event-poller".into())
            .spawn(move || {
                let subject = Subject::new(DOMAIN_EVENT_RECEIVED).ok();
                while running.load(Ordering::SeqCst) {
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
                    match handle.block_on(bus.publish(envelope)) {
                        Ok(_) => {
                            emitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!("domain event not emitted: {e}"),
                    }
                }
                let _ = tx.send(());
            });
        match spawned {
            Ok(_) => {
                self.done = Some(rx);
                Ok(())
            }
            Err(e) => {
                self.running.store(false, Ordering::SeqCst);
                Err(PollerError::Spawn(e.to_string()))
            }
        }
    }

    /// Stops the thread and waits up to `timeout` for it to end.
    ///
    /// # Errors
    ///
    /// [`PollerError::StopTimeout`] when it is still running then.
    pub fn stop(&mut self, timeout: Duration) -> Result<(), PollerError> {
        self.running.store(false, Ordering::SeqCst);
        if let Some(done) = self.done.take() {
            match done.recv_timeout(timeout) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(PollerError::StopTimeout(timeout))
                }
            }
        }
        Ok(())
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Events published on the bus so far.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

impl Drop for InProcessDomainEventPoller {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
    }
}
