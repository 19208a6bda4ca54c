//! `Delivery` and `DeliverySource`: an event that must be settled with an `Outcome`, and
//! where such events come from (a JetStream consumer, a durable queue, a memory source).

use std::future::Future;
use std::sync::Arc;

use super::error::TransportError;
use crate::message::event::Event;
use crate::outcome::Outcome;

/// One event from a source that wants to hear how it went: settle it with exactly one
/// [`Outcome`]. Dropping it unsettled leaves it to the source (JetStream and the durable
/// queues deliver it again once its ack wait or visibility timeout runs out).
pub trait Delivery: Send + 'static {
    /// The event, shared as handlers take it.
    fn event(&self) -> &Arc<Event>;

    /// Which attempt this is: 1 on the first delivery.
    fn attempt(&self) -> u32;

    /// The hop its `process` span names: by default the bus's (`herald`, the subject, no
    /// message id); a transport's own gives its system, destination and message id.
    fn hop(&self) -> crate::hop::Hop<'_> {
        crate::hop::Hop {
            system: "herald",
            destination: self.event().subject.as_str(),
            message_id: crate::hop::MessageId::None,
            attempt: self.attempt(),
        }
    }

    /// Settles the delivery.
    ///
    /// # Errors
    ///
    /// [`TransportError`] when the settle could not be made; the source then delivers the
    /// event again later (at-least-once).
    fn settle(self, outcome: Outcome) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// A stream of deliveries, read by [`Consume`](crate::Consume).
pub trait DeliverySource: Send + 'static {
    /// What it delivers.
    type Delivery: Delivery;

    /// The next delivery; `None` when the source has ended.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] for a failed read; the source may go on after one (a consume
    /// loop logs it, backs off and reads again).
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: a delivery not returned is not lost.
    fn next(
        &mut self,
    ) -> impl Future<Output = Option<Result<Self::Delivery, TransportError>>> + Send;
}
