//! `Shutdown`: one cancellation token and one task tracker through which every long-running
//! task Herald spawns is started, so that stopping means draining, with a bound, everywhere.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// The stop signal and the set of tasks that must finish before a stop is complete.
///
/// Cheap to clone: clones share one token and one tracker. A task started with
/// [`Shutdown::spawn`] is expected to watch [`Shutdown::cancelled`] and finish its current
/// work when it fires; [`Shutdown::shutdown`] fires it and waits, up to a bound, for every
/// such task to end.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use herald::Shutdown;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shutdown = Shutdown::new();
/// let signal = shutdown.clone();
/// shutdown.spawn(async move {
///     signal.cancelled().await; // a real task would work until this fires
/// });
/// let drained = shutdown.shutdown(Duration::from_secs(1)).await;
/// assert!(drained.is_ok());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// Tasks were still running when a shutdown's bound ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{running} task(s) still running after the shutdown bound of {within:?}")]
pub struct DrainTimeout {
    /// Tasks still running.
    pub running: usize,
    /// The bound that ran out.
    pub within: Duration,
}

impl Shutdown {
    /// A new, untriggered shutdown with no tasks.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Spawns `task` on the current Tokio runtime and tracks it.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Spawns `task` on `handle`'s runtime and tracks it.
    pub fn spawn_on<F>(&self, task: F, handle: &tokio::runtime::Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, handle)
    }

    /// Runs the blocking `task` on `handle`'s blocking pool and tracks it (for a loop that
    /// must block a thread, such as one polling a synchronous source; it should watch
    /// [`Shutdown::is_triggered`] between its steps).
    pub fn spawn_blocking_on<F, T>(&self, task: F, handle: &tokio::runtime::Handle) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking_on(task, handle)
    }

    /// Completes once a shutdown has been triggered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// An owned future that completes once a shutdown has been triggered (for `'static`
    /// contexts such as a spawned loop's `select!`).
    pub fn cancelled_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Whether a shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Triggers the shutdown without waiting: every task watching [`Shutdown::cancelled`]
    /// starts to finish.
    pub fn trigger(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    /// How many tracked tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits up to `within` for every tracked task to end on its own, without triggering the
    /// shutdown (for tasks that end when their input does, as subscriptions do on a drain).
    /// Tasks spawned afterwards are still tracked.
    ///
    /// # Errors
    ///
    /// [`DrainTimeout`] with the number still running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self, within: Duration) -> Result<(), DrainTimeout> {
        self.tracker.close();
        let waited = tokio::time::timeout(within, self.tracker.wait()).await;
        if !self.token.is_cancelled() {
            self.tracker.reopen();
        }
        waited.map_err(|_| DrainTimeout {
            running: self.tracker.len(),
            within,
        })
    }

    /// Triggers the shutdown and waits up to `within` for every tracked task to end.
    ///
    /// # Errors
    ///
    /// [`DrainTimeout`] with the number of tasks still running when the bound ran out (they
    /// go on; abort them through their handles if they must not).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown stays triggered; only the wait stops.
    pub async fn shutdown(&self, within: Duration) -> Result<(), DrainTimeout> {
        self.trigger();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(DrainTimeout {
                running: self.tracker.len(),
                within,
            }),
        }
    }
}
