//! LISTEN/NOTIFY: one listener connection per store and a `Notify` per queue waited on, so
//! `read_with_poll` sleeps until a send instead of spinning.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The channel PGMQ's `enable_notify_insert` notifies for a queue; Herald's sends notify it
/// too, in their transaction.
pub(crate) fn channel(queue: &str) -> String {
    format!("pgmq.q_{queue}.INSERT")
}

type Waiters = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// Wakes the waiters of queues that got a NOTIFY. The task ends when this is dropped.
pub(crate) struct Listener {
    waiters: Waiters,
    listen: tokio::sync::mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts the listener task on its own connection (sqlx's `PgListener` reconnects and
    /// re-LISTENs after a failure; waiters poll meanwhile).
    pub(crate) async fn start(
        pool: &sqlx::PgPool,
        shutdown: &herald::Shutdown,
    ) -> Result<Self, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        let waiters: Waiters = Arc::default();
        let (listen, mut requests) = tokio::sync::mpsc::unbounded_channel::<String>();
        let w = waiters.clone();
        let stop = shutdown.clone();
        let task = shutdown.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    request = requests.recv() => match request {
                        Some(channel) => {
                            if let Err(e) = listener.listen(&channel).await {
                                tracing::warn!("LISTEN {channel} failed (polling instead): {e}");
                            }
                        }
                        None => return,
                    },
                    note = listener.recv() => match note {
                        Ok(note) => {
                            if let Some(n) = w.lock().get(note.channel()) {
                                n.notify_waiters();
                            }
                        }
                        Err(e) => {
                            tracing::warn!("LISTEN connection failed (polling meanwhile): {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    },
                }
            }
        });
        Ok(Listener {
            waiters,
            listen,
            task,
        })
    }

    /// The notify for `queue`, LISTENing on its channel the first time.
    pub(crate) fn notify_for(&self, queue: &str) -> Arc<Notify> {
        let channel = channel(queue);
        let mut waiters = self.waiters.lock();
        if let Some(n) = waiters.get(&channel) {
            return n.clone();
        }
        let n = Arc::new(Notify::new());
        waiters.insert(channel.clone(), n.clone());
        let _ = self.listen.send(channel);
        n
    }

    /// Wakes this process's waiters on `queue` at once (a send made here).
    pub(crate) fn wake(&self, queue: &str) {
        if let Some(n) = self.waiters.lock().get(&channel(queue)) {
            n.notify_waiters();
        }
    }
}
