//! `impl Transport for Bus`: the in-process bus behind the transport seam.

use crate::bus::subscription::Subscription;
use crate::bus::Bus;
use crate::handler::Handler;
use crate::message::event::Event;
use crate::message::pattern::Pattern;
use crate::transport::{Receipt, Transport, TransportError};

impl Transport for Bus {
    type Subscription = Subscription;

    async fn publish_event(&self, event: Event) -> Result<Receipt, TransportError> {
        self.publish(event).await?;
        Ok(Receipt::Accepted)
    }

    async fn subscribe_handler(
        &self,
        pattern: Pattern,
        handler: Handler,
    ) -> Result<Subscription, TransportError> {
        Ok(self.subscribe(pattern, handler)?)
    }

    async fn flush(&self) -> Result<(), TransportError> {
        Bus::flush(self).await;
        Ok(())
    }
}
