//! `impl Transport for Nats`: core NATS behind the transport seam, with typed errors.

use herald::{Event, Handler, Pattern, Receipt, Transport, TransportError};

use crate::client::Nats;
use crate::error::to_transport;
use crate::subscribe::HandlerSubscription;

impl Transport for Nats {
    type Subscription = HandlerSubscription;

    async fn publish_event(&self, event: Event) -> Result<Receipt, TransportError> {
        self.publish(&event)
            .await
            .map_err(|e| to_transport("publish to", e))?;
        Ok(Receipt::Accepted)
    }

    async fn subscribe_handler(
        &self,
        pattern: Pattern,
        handler: Handler,
    ) -> Result<HandlerSubscription, TransportError> {
        Nats::subscribe_handler(self, pattern, None, handler)
            .await
            .map_err(|e| to_transport("subscribe to", e))
    }

    async fn flush(&self) -> Result<(), TransportError> {
        Nats::flush(self)
            .await
            .map_err(|e| to_transport("flush", e))
    }
}
