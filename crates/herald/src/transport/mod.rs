//! The transport seam: publish an event, subscribe a `Handler` to a pattern, flush; and the
//! consume side, `Delivery` and `DeliverySource`. Typed errors say whether a retry can help.
//! The in-process bus implements `Transport` in `bus/transport.rs`; `herald-nats` implements it
//! for NATS, and the conformance suite in `herald-testkit` runs against both.

mod delivery;
mod error;

use std::future::Future;

use crate::handler::Handler;
use crate::message::event::Event;
use crate::message::pattern::Pattern;

pub use delivery::{Delivery, DeliverySource};
pub use error::{report, ErrorKind, TransportError};

/// What a successful publish proves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Receipt {
    /// Handed over; nothing persisted (in-process bus, core NATS).
    Accepted,
    /// Stored durably at this sequence (JetStream stream sequence, queue message id).
    Stored {
        /// The store's sequence number.
        sequence: u64,
    },
}

/// A way to move events between publishers and handlers.
///
/// The same [`Handler`] value runs on every transport. Contract for implementors: a handler's
/// error or panic is isolated (it never ends the subscription); a subscription is live at the
/// server when `subscribe` returns; dropping the returned guard unsubscribes.
pub trait Transport: Send + Sync + 'static {
    /// Keeps a subscription alive; dropping it unsubscribes.
    type Subscription: Send + 'static;

    /// Publishes one event.
    ///
    /// # Errors
    ///
    /// [`TransportError`]: [`is_transient`](TransportError::is_transient) says whether the
    /// same publish may succeed later.
    fn publish_event(
        &self,
        event: Event,
    ) -> impl Future<Output = Result<Receipt, TransportError>> + Send;

    /// Runs `handler` for each event whose subject matches `pattern`.
    ///
    /// # Errors
    ///
    /// [`TransportError`].
    fn subscribe_handler(
        &self,
        pattern: Pattern,
        handler: Handler,
    ) -> impl Future<Output = Result<Self::Subscription, TransportError>> + Send;

    /// Waits until what was published so far has left this process.
    ///
    /// # Errors
    ///
    /// [`TransportError`].
    fn flush(&self) -> impl Future<Output = Result<(), TransportError>> + Send;
}
