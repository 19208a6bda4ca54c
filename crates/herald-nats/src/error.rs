//! `NatsError`: one typed error for the NATS transport, each variant naming the operation and what went wrong.

use herald::{EnvelopeError, SubjectError};

/// What went wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The configuration is invalid (names the key).
    #[error("invalid NATS config `{key}`: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Could not connect (or read a credentials file).
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A malformed subject or pattern, refused before anything was sent.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A malformed envelope (in a response or a message).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The payload is bigger than the server's `max_payload`; nothing was sent.
    #[error("payload of {size} bytes exceeds the server's max_payload of {max} bytes: publish to {subject} refused")]
    PayloadTooLarge {
        /// The subject.
        subject: String,
        /// The payload's size.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// Disconnected, and the reconnect buffer is full; nothing was queued.
    #[error(
        "disconnected from NATS and the reconnect buffer is full: publish to {subject} refused"
    )]
    BufferFull {
        /// The subject.
        subject: String,
    },
    /// A publish failed.
    #[error("publish to {subject} failed: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No JetStream stream captures the subject; nothing was stored.
    #[error(
        "no JetStream stream captures subject {subject}: create one with `herald streams add`"
    )]
    NoStream {
        /// The subject.
        subject: String,
    },
    /// A subscribe failed.
    #[error("subscribe to {pattern} failed: {source}")]
    Subscribe {
        /// The pattern.
        pattern: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No response within the timeout (someone is listening, or the server did not say).
    #[error("request to {subject} timed out after {timeout:?}")]
    Timeout {
        /// The subject.
        subject: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// Nobody is subscribed to the request's subject.
    #[error("no responders for request to {subject}")]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// A request failed otherwise.
    #[error("request to {subject} failed: {source}")]
    Request {
        /// The subject.
        subject: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A JetStream operation (stream or consumer management, ack) failed.
    #[error("JetStream {operation} failed: {source}")]
    JetStream {
        /// What was attempted.
        operation: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Flush, drain or close failed.
    #[error("{operation} failed: {source}")]
    Connection {
        /// What was attempted.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl NatsError {
    pub(crate) fn js(
        operation: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        NatsError::JetStream {
            operation: operation.into(),
            source: Box::new(e),
        }
    }
}
