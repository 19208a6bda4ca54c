//! Herald's embedded default: the durable queue contract ([`herald::queue::Queue`]) and the
//! event store ([`herald::store::EventStore`]) in one SQLite file, with PGMQ's semantics (visibility timeout, read count, delete, archive) and
//! no server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use herald::queue::{Queue, QueueName};
//! use herald::{Event, Subject};
//! use herald_sqlite::SqliteStore;
//!
//! let store = SqliteStore::open("sqlite://.herald/herald.db").await?;
//! let steps = QueueName::new("default_steps")?;
//! store.create(&steps).await?;
//! let step = Event::new(Subject::new("step.execution.received")?);
//! let id = store.send(&steps, &step, Duration::ZERO).await?;
//! let got = store.read(&steps, Duration::from_secs(30), 10).await?;
//! store.archive(&steps, &[id]).await?;
//! # Ok(()) }
//! ```
//!
//! # Durability and concurrency
//!
//! - The file runs in WAL mode with `synchronous = FULL`: every commit fsyncs the WAL, so an
//!   acknowledged send, settle, delete or archive survives a process crash **and** an OS crash
//!   or power loss. (`NORMAL` would survive only a process crash.) The one exception is a
//!   transaction of reads alone: a read only leases its messages (vt, read_ct), so it commits
//!   with `NORMAL`; lost in a power cut, its messages are visible again sooner (a redelivery,
//!   which at-least-once allows), and the next durable commit fsyncs the WAL, reads included.
//! - One writer thread per store owns the connection and runs every operation. Operations
//!   that arrive while it commits are applied together in the next transaction (group
//!   commit: one fsync for all of them), each inside a savepoint so that one failing
//!   operation fails only its caller; each caller gets its answer only after the commit, and a
//!   failed commit fails every caller in it.
//! - Several processes may open one file: each write transaction starts with
//!   `BEGIN IMMEDIATE`, waits up to the busy timeout (5 s) for another process's writer, and
//!   reports a transient [`QueueError::Store`](herald::queue::QueueError) after that.
//! - `read_with_poll` is woken by this store's own sends at once, and looks for other
//!   processes' sends every 50 ms.

mod broker;
mod commit;
mod dlq;
mod error;
mod event_store;
mod flow;
mod heads;
mod options;
mod policy;
mod queue;
mod rows;
mod schedule;
mod schema;

pub use herald::queue::flow::FlowControl;
pub use options::{SqliteOptions, DEFAULT_PATH};
pub use queue::SqliteStore;
