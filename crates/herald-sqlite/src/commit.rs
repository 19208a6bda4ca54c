//! The single writer: one thread owns the connection and applies every operation; the
//! operations waiting when it is free go into one transaction (group commit), each in a
//! savepoint, and each caller hears back only after the commit. A transaction of reads only
//! (leases: vt and read_ct) commits without its fsync; the next durable commit fsyncs the
//! WAL, reads included.

use std::sync::mpsc;

use herald::queue::QueueError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// Runs after the transaction ends: `None` if it committed, else the commit's error.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// One operation waiting for the writer.
trait Job: Send {
    /// Applies it inside the open transaction; the finish answers the caller.
    fn apply(self: Box<Self>, conn: &Connection) -> Finish;
    /// Answers the caller without applying it (no transaction could be started).
    fn fail(self: Box<Self>, error: &str);
    /// Whether its commit must be on disk before its caller hears back (everything but a
    /// read's lease).
    fn durable(&self) -> bool;
}

type Work = Box<dyn Job>;

struct Op<T, F> {
    operation: &'static str,
    queue: String,
    f: F,
    reply: oneshot::Sender<Result<T, QueueError>>,
    durable: bool,
}

impl<T, F> Job for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
{
    fn apply(self: Box<Self>, conn: &Connection) -> Finish {
        let Op {
            operation,
            queue,
            f,
            reply,
            ..
        } = *self;
        let result = in_savepoint(conn, f);
        Box::new(move |commit_error: Option<&str>| {
            let out = match (result, commit_error) {
                (Ok(value), None) => Ok(value),
                (Ok(_), Some(e)) => Err(QueueError::store(
                    operation,
                    queue,
                    true,
                    format!("commit failed: {e}"),
                )),
                (Err(e), _) => Err(e),
            };
            let _ = reply.send(out);
        })
    }

    fn fail(self: Box<Self>, error: &str) {
        let _ = self.reply.send(Err(QueueError::store(
            self.operation,
            self.queue,
            true,
            format!("cannot start a write transaction: {error}"),
        )));
    }

    fn durable(&self) -> bool {
        self.durable
    }
}

/// The handle that sends work to the writer thread. Cloning shares the thread; it ends when
/// the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Work>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(conn: Connection, max_batch: usize, name: String) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || run(conn, rx, max_batch.max(1)))?;
        Ok(Writer { tx })
    }

    /// Runs `f` inside the next transaction; returns its result once that committed.
    pub(crate) async fn run<T, F>(
        &self,
        operation: &'static str,
        queue: &str,
        f: F,
    ) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        self.submit(operation, queue, f, true).await
    }

    /// As [`Writer::run`] for a read, whose changes are only its lease (vt, read_ct): a
    /// transaction of such reads alone commits without waiting for the disk. Were it lost in
    /// a crash, its messages are visible again sooner (a redelivery); a durable commit that
    /// follows fsyncs the WAL, and this read with it.
    pub(crate) async fn run_lease<T, F>(
        &self,
        operation: &'static str,
        queue: &str,
        f: F,
    ) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        self.submit(operation, queue, f, false).await
    }

    async fn submit<T, F>(
        &self,
        operation: &'static str,
        queue: &str,
        f: F,
        durable: bool,
    ) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(Op {
            operation,
            queue: queue.to_owned(),
            f,
            reply,
            durable,
        });
        self.tx.send(work).map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }
}

/// Runs `f` in a savepoint: its changes are undone if it fails, and the others' stay.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    if let Err(e) = conn.execute_batch("SAVEPOINT op") {
        return Err(QueueError::store("savepoint", "*", true, e));
    }
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    match (result, conn.execute_batch(end)) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(QueueError::store("savepoint", "*", true, e)),
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Work>, max_batch: usize) {
    let mut batch: Vec<Work> = Vec::with_capacity(max_batch);
    let mut finishes: Vec<Finish> = Vec::with_capacity(max_batch);
    // Whether `synchronous = NORMAL` is in force (the connection opens with FULL).
    let mut relaxed = false;
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // Reads only: this commit need not reach the disk (see `run_lease`). A durable batch
        // never commits unless `synchronous = FULL` is in force: if it cannot be set back,
        // the batch fails rather than being acknowledged without its fsync.
        let lease_only = !batch.iter().any(|w| w.durable());
        if let Err(text) = set_relaxed(&conn, &mut relaxed, lease_only) {
            if !lease_only {
                for work in batch.drain(..) {
                    work.fail(&format!("cannot make the commit durable: {text}"));
                }
                continue;
            }
        }
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            // Another process held the lock past the busy timeout: fail this batch, go on.
            let text = e.to_string();
            for work in batch.drain(..) {
                work.fail(&text);
            }
            continue;
        }
        for work in batch.drain(..) {
            finishes.push(work.apply(&conn));
        }
        match conn.execute_batch("COMMIT") {
            Ok(()) => {
                for finish in finishes.drain(..) {
                    finish(None);
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                let text = e.to_string();
                tracing::warn!(
                    "SQLite commit failed, {} caller(s) told: {text}",
                    finishes.len()
                );
                for finish in finishes.drain(..) {
                    finish(Some(&text));
                }
            }
        }
    }
}

/// Sets `synchronous` to `NORMAL` when `want` (a batch of reads alone) and back to `FULL`
/// otherwise, when it is not already so; `relaxed` says which is in force. A failed
/// change leaves `relaxed` as it was, and says why.
fn set_relaxed(conn: &Connection, relaxed: &mut bool, want: bool) -> Result<(), String> {
    if *relaxed == want {
        return Ok(());
    }
    let pragma = if want {
        "PRAGMA synchronous = NORMAL"
    } else {
        "PRAGMA synchronous = FULL"
    };
    conn.execute_batch(pragma).map_err(|e| {
        tracing::warn!("SQLite {pragma} failed: {e}");
        e.to_string()
    })?;
    *relaxed = want;
    Ok(())
}
