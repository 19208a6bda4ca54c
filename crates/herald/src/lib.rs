//! Herald core: the event envelope, subjects and patterns, the in-process bus, and plugins.
//!
//! ```text
//!  publish / emit ──▶ route ──────────▶ dispatch ─────────────▶ handler ──▶ outcome
//!  bus/mod.rs         route/mod.rs      dispatch.rs             handler/    DispatchReport,
//!  (depth, stop,      (token trie +     (priority order,        (sync, async, BusStats
//!   history, queue)    cache, snapshot)  isolate, count)         Handle)
//! ```
//!
//! Every event is an [`Event`]: the eight-field JSON envelope that Herald writes on NATS, in
//! durable queues and in-process alike. Subjects follow the NATS token rules ([`Subject`],
//! [`Pattern`]): `*` matches one token, `>` the rest.
//!
//! A [`Handler`] (an async fn, a sync closure, or a [`Handle`] impl) runs the same on the
//! in-process [`Bus`] and on any other [`Transport`] (`herald-nats`). Plugins
//! ([`plugin`]) own their subscriptions and lose them all when unloaded.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use herald::{handler_fn, Bus, Event, Pattern, Priority, SubscribeOptions, Subject};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let stats = bus.subscribe_with(
//!     "trivia.*",
//!     SubscribeOptions::owner("stats").priority(Priority::High),
//!     handler_fn(|event: Arc<Event>| async move {
//!         println!("stats saw {} from {}", event.subject, event.source);
//!     }),
//! )?;
//!
//! let event = Event::try_new("trivia.started", json!({"round": 1}))?.with_source("trivia");
//! let report = bus.publish(event).await?;
//! assert_eq!(report.handlers_run, 1);
//! assert_eq!(bus.stats().events_published, 1);
//! assert_eq!(bus.history_matching("trivia.>", Some(1))?.len(), 1);
//! drop(stats); // unsubscribes
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery guarantee (in-process)
//!
//! [`Bus::publish`] delivers each event exactly once to each subscription that matches when
//! the publish starts, before it returns, or refuses it with an error (nothing dispatched).
//! [`Bus::emit`] either queues the event (then it is delivered the same way unless the process
//! exits first: the queue is memory) or refuses it with the event handed back.

mod bus;
pub mod consume;
pub mod dead_letter;
mod dispatch;
pub mod dlq;
#[doc(hidden)]
pub mod fuzz;
mod handler;
mod message;
pub mod observe;
mod outcome;
pub mod plugin;
pub mod queue;
pub mod retry;
mod route;
pub mod schedule;
mod shutdown;
pub mod store;
mod transport;

pub use bus::stats::BusStats;
pub use bus::subscription::{SubscribeOptions, Subscription, SubscriptionId, SubscriptionInfo};
pub use bus::{Bus, BusBuilder, EmitError, PublishError};
pub use consume::{Consume, ConsumeOptions, ConsumeReport};
pub use dispatch::{DispatchReport, HandlerFailure};
pub use handler::{
    handler_fn, isolate, sync_handler, BoxError, BoxFuture, Failure, FailureKind, Handle, Handler,
    HandlerResult, IntoHandlerResult,
};
pub use message::event::{Decoded, EnvelopeError, Event, Object, DEFAULT_SOURCE, EVENT_ID};
pub use message::hop;
pub use message::pattern::{IntoPattern, Pattern, Token};
pub use message::priority::{Priority, UnknownPriority};
pub use message::subject::{Subject, SubjectError};
pub use message::timestamp::{Timestamp, TimestampError};
pub use message::trace::{
    current as current_trace, in_context as in_trace_context,
    malformed_dropped as trace_contexts_dropped, traced, TraceContext, TraceContextError,
    TRACEPARENT, TRACESTATE,
};
pub use outcome::{Outcome, Reject, RetryAfter};
pub use plugin::{Plugin, PluginContext, PluginError, PluginManager};
pub use retry::RetryPolicy;
pub use shutdown::{DrainTimeout, Shutdown};
pub use transport::{
    report, Delivery, DeliverySource, ErrorKind, Receipt, Transport, TransportError,
};
