//! The transport seam: publish an event, subscribe a `Handler` to a pattern, flush. The
//! in-process bus implements it here; `herald-nats` implements it for NATS, and the
//! conformance suite in `herald-testkit` runs against both.

use std::future::Future;

use crate::bus::subscription::Subscription;
use crate::bus::Bus;
use crate::handler::{BoxError, Handler};
use crate::message::event::Event;
use crate::message::subject::Pattern;

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
    /// The transport's error, boxed.
    fn publish_event(&self, event: Event)
        -> impl Future<Output = Result<Receipt, BoxError>> + Send;

    /// Runs `handler` for each event whose subject matches `pattern`.
    ///
    /// # Errors
    ///
    /// The transport's error, boxed.
    fn subscribe_handler(
        &self,
        pattern: Pattern,
        handler: Handler,
    ) -> impl Future<Output = Result<Self::Subscription, BoxError>> + Send;

    /// Waits until what was published so far has left this process.
    ///
    /// # Errors
    ///
    /// The transport's error, boxed.
    fn flush(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

impl Transport for Bus {
    type Subscription = Subscription;

    async fn publish_event(&self, event: Event) -> Result<Receipt, BoxError> {
        self.publish(event).await?;
        Ok(Receipt::Accepted)
    }

    async fn subscribe_handler(
        &self,
        pattern: Pattern,
        handler: Handler,
    ) -> Result<Subscription, BoxError> {
        Ok(self.subscribe(pattern, handler)?)
    }

    async fn flush(&self) -> Result<(), BoxError> {
        Bus::flush(self).await;
        Ok(())
    }
}
