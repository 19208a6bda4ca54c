//! Herald over NATS: the JSON envelope on core NATS and JetStream, queue groups,
//! request/reply, reconnection, and the same `Handler` values as the in-process bus.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use herald::{handler_fn, Event};
//! use herald_nats::Nats;
//!
//! let nats = Nats::connect("nats://127.0.0.1:4222").await?;
//! let _sub = nats
//!     .subscribe_handler("trivia.>", Some("stats"), handler_fn(|e: Arc<Event>| async move {
//!         println!("{} from {}", e.subject, e.source);
//!     }))
//!     .await?;
//! nats.publish(&Event::try_new("trivia.started", serde_json::json!({"round": 1}))?).await?;
//!
//! let js = nats.jetstream();
//! js.ensure_default_streams().await?;
//! let ack = js
//!     .publish(&Event::try_new("rosey.platform.user.joined", serde_json::json!({}))?)
//!     .await?;
//! println!("stored at {}", ack.sequence);
//! # Ok(()) }
//! ```
//!
//! # Delivery guarantees
//!
//! - **Core NATS** ([`Nats::publish`], [`Nats::subscribe`]): **at most once**. `Ok` means the
//!   event was handed to the client's buffer, not that anyone received it. A subscriber that
//!   is not connected at that moment never sees it; while the client is disconnected,
//!   publishes wait in a bounded buffer (sent on reconnect, lost if the process exits) and are
//!   refused with [`NatsError::BufferFull`] once it is full. Across a server restart some
//!   publishes are lost; the reliability test counts them.
//! - **Queue groups**: each event goes to exactly one connected member of the group.
//! - **Request/reply**: at most once; a timeout ([`NatsError::Timeout`]) does not tell whether
//!   the responder ran. [`NatsError::NoResponders`] means nobody was listening.
//! - **JetStream** ([`JetStream::publish`]): an `Ok(JsAck)` means the stream stored the event
//!   (the server's PubAck). Every publish carries a `Nats-Msg-Id` (the event id, or a hash
//!   of the envelope: [`message_id`]), so a retried publish of the same event within the
//!   stream's duplicate window is stored once. Durable consumers deliver **at least once**:
//!   an event is redelivered until it is acked (or termed, or `max_deliver` runs out), so
//!   handlers should be idempotent; a consumer's progress survives reconnects and restarts.
//! - **What an ack means on disk**: nats-server writes stored messages to its file store and
//!   syncs to disk every `sync_interval` (2 minutes by default). An acknowledged message
//!   survives a server process restart (it is in the OS page cache and the file), but an OS
//!   crash or power loss within the interval can lose it unless the server runs with
//!   `sync_interval: always` (or on a cluster with replicas, where the ack waits for a quorum).
//! - **The relay** ([`Relay`], `herald relay`): each event of the store's log **exactly once
//!   in the stream**, in global order, its body unchanged, with `Nats-Msg-Id` =
//!   `{store id}:{global position}`. One relay per stream is active, under the store's lease
//!   `relay.{stream}`; it resumes after the last event the stream holds (read from that
//!   message's id) and publishes each event with `Nats-Expected-Last-Sequence`, so a publish
//!   lost in flight (a server killed) is never overtaken by a later one and nothing stored is
//!   sent again. To subscribers it is at least once: they dedupe by the message id. What
//!   breaks it: another publisher on the stream's subjects, or the stream purged (the relay
//!   then resumes from its checkpoint and only the duplicate window drops what it sends again,
//!   so an outage longer than the window leaves copies), and a stream deleted.
//! - **The queue relay** ([`QueueRelay`]): each message exactly once in the stream within its
//!   duplicate window (archived after its ack; a relay killed in between reads it again after
//!   the visibility timeout and the server drops the copy).
//! - **The inbox** ([`Inbox`], `herald inbox`): each message appended to the store once,
//!   whatever the redeliveries; the key is stored in the append's transaction and the acks
//!   follow the commit.
//!
//! # Reconnection
//!
//! By default the client reconnects forever, about 2 s apart plus jitter, and restores its
//! subscriptions; [`Nats::watch_state`] and [`NatsBuilder::on_state_change`] follow it.

mod client;
mod config;
mod error;
mod inbox;
mod jetstream;
mod options;
mod relay;
mod request;
mod state;
mod stats;
mod subscribe;
mod trace;
mod transport;

pub use client::Nats;
pub use config::NatsConfig;
pub use error::NatsError;
pub use herald::{ConsumeOptions, ConsumeReport};
pub use inbox::{stream_for_subject, Inbox, InboxError, InboxReport};
pub use jetstream::{
    default_streams, message_id, ConsumerSpec, Deliveries, Delivery, DurableConsumer, JetStream,
    JsAck, PendingAck, StoredMessage, StreamSpec, StreamSummary,
};
pub use options::NatsBuilder;
pub use relay::{subject_for, QueueRelay, Relay, RelayError, RelayReport, RelaySettings};
pub use state::{ConnectionState, StateCallback};
pub use stats::NatsStats;
pub use subscribe::{EventStream, HandlerSubscription, Incoming};
