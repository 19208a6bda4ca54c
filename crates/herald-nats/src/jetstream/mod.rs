//! JetStream on one connection: the `JetStream` handle; streams (`stream.rs`), publish with
//! PubAck and an automatic dedupe id (`publish.rs`), durable consumers on Herald's one consume
//! loop (`consumer.rs`), a stream read back to its leader's last sequence (`read.rs`).

mod consumer;
mod publish;
mod read;
mod stream;

use crate::client::Nats;

pub use consumer::{ConsumerSpec, Deliveries, Delivery, DurableConsumer};
pub use publish::{message_id, JsAck, PendingAck};
pub use read::StoredMessage;
pub use stream::{default_streams, StreamSpec, StreamSummary};

/// JetStream on one connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JetStream {
    nats: Nats,
    ctx: async_nats::jetstream::Context,
    /// Subjects a stream was seen to capture through this handle (an ack, or
    /// `stream_for`): a later "no stream" for one of them is a cluster electing a leader.
    known: std::sync::Arc<parking_lot::Mutex<std::collections::HashSet<String>>>,
}

impl JetStream {
    pub(crate) fn new(nats: Nats) -> Self {
        let ctx = async_nats::jetstream::new(nats.client().clone());
        JetStream {
            nats,
            ctx,
            known: std::sync::Arc::default(),
        }
    }

    /// The async-nats JetStream context, for what Herald does not wrap.
    pub fn context(&self) -> &async_nats::jetstream::Context {
        &self.ctx
    }
}

impl Nats {
    /// JetStream on this connection.
    pub fn jetstream(&self) -> JetStream {
        JetStream::new(self.clone())
    }
}
