//! Herald's durable queues on PostgreSQL: the queue contract ([`herald::queue::Queue`]) on
//! PGMQ's own tables and functions, installed as plain SQL by the `pgmq` crate (no
//! extension needed), so psql's `pgmq.send`/`pgmq.read` and Herald see the same queues.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use herald::queue::{Queue, QueueName};
//! use herald::{Event, Subject};
//! use herald_postgres::PgStore;
//!
//! let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! let steps = QueueName::new("default_steps")?;
//! store.create(&steps).await?;
//! let id = store.send(&steps, &Event::new(Subject::new("step.execution.received")?), Duration::ZERO).await?;
//! let got = store.read(&steps, Duration::from_secs(30), 10).await?;
//! store.archive(&steps, &[id]).await?;
//! # Ok(()) }
//! ```
//!
//! # What Herald adds to a plain PGMQ client
//!
//! - **Group commit**: concurrent sends, deletes, archives and settles go to one committer
//!   task, which applies all that are waiting in one transaction (sends to the same queue in
//!   one `pgmq.send_batch`) and answers each caller only after `COMMIT` returns. A failed
//!   commit fails every caller in it; an operation that fails on its own (a missing queue) is
//!   retried alone, so it fails only its caller.
//! - **Guarded settle**: PGMQ's `archive`/`delete` match on `msg_id` only; Herald's settle also
//!   matches the read count, so a consumer whose visibility timeout ran out cannot archive
//!   or answer for a message another consumer now holds.
//! - **Woken, not spinning**: `read_with_poll` LISTENs on `pgmq.q_{queue}.INSERT` (the channel
//!   PGMQ's `enable_notify_insert` uses; Herald's own sends notify it in their transaction)
//!   and looks again every 250 ms for messages sent by other clients.
//!
//! Visibility timeouts given to `read` are whole seconds on PostgreSQL (PGMQ's `read` takes
//! an integer), rounded up; `set_vt`, delays and retries keep sub-second precision.
//!
//! Acknowledged means committed: PostgreSQL's `synchronous_commit` (on by default) decides
//! whether that commit is flushed to disk before it returns.

mod broker;
mod commit;
mod dlq;
mod error;
mod event_store;
mod flow;
mod flow_fn;
mod flow_lease;
mod headers;
mod heads;
mod listen;
mod options;
mod policy;
mod queue;
mod rows;
mod schedule;
mod schema;
mod tx;

pub use flow::{FULL_PASS as FLOW_FULL_PASS, POLICY_TTL};
pub use herald::queue::flow::FlowControl;
pub use options::PgOptions;
pub use queue::{PgStore, FLOW_READ_CONNECTIONS};
