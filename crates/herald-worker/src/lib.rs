//! Seed 000's worker on Herald: a [`StepHandler`] per kind of step, a [`HandlerRegistry`]
//! (with link-time discovery), the [`StepExecutionSubscriber`] on the bus, and a [`Worker`]
//! that reads steps from a durable queue and stores exactly one result per step.
//!
//! ```text
//!  {ns}_steps ──read──▶ Worker ──publish──▶ bus: step.execution.received
//!                                                   │
//!                           StepExecutionSubscriber ◀┘ resolve, run (timeout, isolation)
//!                                   │
//!                                   ▼ CompletionSink (one transaction, guarded by read_ct)
//!        archive the step + send the result to {ns}_step_results  (or retry later, or
//!        dead-letter to {ns}_steps_dlq) ──then──▶ bus: step.completion.sent
//! ```
//!
//! # Guarantees
//!
//! - **Exactly one stored result per step**: the result is sent and the step archived in one
//!   transaction, guarded by the read count the step was read with. A step whose visibility
//!   timeout ran out while its handler ran, and that another worker took, cannot get a second
//!   result: the late settle is refused and counted (`stale`).
//! - **At-least-once execution**: a worker that dies before its settle commits leaves the
//!   step to come back after its visibility timeout, and the handler runs again. Handlers
//!   should be idempotent; re-reads are counted (`rereads`).
//! - `step.completion.sent` is published only after the result is committed.
//! - Bad input (a body that is not JSON, not an envelope, or a step without
//!   `execution_event.handler_name`) is dead-lettered with its reason, counted, and the
//!   worker goes on.

pub mod events;
mod handler;
pub mod observe;
mod registry;
mod settings;
mod step;
mod step_run;
mod subscriber;
mod worker;

#[doc(hidden)]
pub use inventory;

pub use handler::{step_handler_fn, FnHandler, StepFuture, StepHandler};
pub use registry::{HandlerFactory, HandlerRegistration, HandlerRegistry, ResolveError};
pub use settings::{SettingsError, WorkerSettings};
pub use step::{
    DeclaredEvent, EventCondition, FfiStepEvent, StepContext, StepError, StepExecutionEvent,
    StepExecutionResult, StepHandlerResult, StepParseError,
};
pub use step_run::StepQueues;
pub use subscriber::{
    CompletionSink, StepExecutionSubscriber, SubscriberConfig, SubscriberCounters,
    SubscriberSnapshot, HANDLER_ERROR, STEP_COMPLETED, STEP_RECEIVED,
};
pub use worker::{enqueue_step, step_event, Progress, Worker, WorkerConfig, WorkerReport};
