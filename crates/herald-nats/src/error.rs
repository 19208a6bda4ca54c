//! `NatsError`: one typed error for the NATS transport, each variant naming the operation and
//! what went wrong, and saying whether a retry can help. A wrapping variant's `Display` names
//! the operation only; its cause is its `source`, so a chained report prints it once.

use herald::{BoxError, EnvelopeError, ErrorKind, SubjectError, TransportError};

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
    #[error("cannot connect to NATS at {servers}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// The cause.
        #[source]
        source: BoxError,
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
    #[error("publish to {subject} failed")]
    Publish {
        /// The subject.
        subject: String,
        /// The cause.
        #[source]
        source: BoxError,
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
    #[error("subscribe to {pattern} failed")]
    Subscribe {
        /// The pattern.
        pattern: String,
        /// The cause.
        #[source]
        source: BoxError,
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
    #[error("request to {subject} failed")]
    Request {
        /// The subject.
        subject: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A JetStream operation (stream or consumer management, ack) failed.
    #[error("JetStream {operation} failed")]
    JetStream {
        /// What was attempted.
        operation: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Flush, drain or close failed.
    #[error("{operation} failed")]
    Connection {
        /// What was attempted.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
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

impl NatsError {
    /// Whether the same call may succeed later: the server is unreachable now, the reconnect
    /// buffer is full, a request timed out, or a connection-level operation failed. Invalid
    /// input, a refused publish (no stream) and config errors are not transient.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// The transport-level kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NatsError::Config { .. }
            | NatsError::Subject(_)
            | NatsError::Envelope(_)
            | NatsError::PayloadTooLarge { .. } => ErrorKind::Invalid,
            NatsError::NoStream { .. } | NatsError::NoResponders { .. } => ErrorKind::Refused,
            NatsError::Connect { .. }
            | NatsError::BufferFull { .. }
            | NatsError::Timeout { .. }
            | NatsError::Connection { .. } => ErrorKind::Unavailable,
            NatsError::Publish { .. }
            | NatsError::Subscribe { .. }
            | NatsError::Request { .. }
            | NatsError::JetStream { .. } => ErrorKind::Other,
        }
    }

    /// The subject, pattern or other target the error is about, when it names one.
    fn target(&self) -> String {
        match self {
            NatsError::PayloadTooLarge { subject, .. }
            | NatsError::BufferFull { subject }
            | NatsError::Publish { subject, .. }
            | NatsError::NoStream { subject }
            | NatsError::Timeout { subject, .. }
            | NatsError::NoResponders { subject }
            | NatsError::Request { subject, .. } => subject.clone(),
            NatsError::Subscribe { pattern, .. } => pattern.clone(),
            NatsError::Connect { servers, .. } => servers.clone(),
            NatsError::JetStream { operation, .. } => operation.clone(),
            NatsError::Connection { operation, .. } => (*operation).to_owned(),
            NatsError::Config { key, .. } => (*key).to_owned(),
            NatsError::Subject(e) => e.input().to_owned(),
            NatsError::Envelope(_) => String::new(),
        }
    }
}

/// Wraps a NATS error for the transport seam, keeping it as the cause (downcast with
/// [`TransportError::cause`]).
pub(crate) fn to_transport(operation: &'static str, e: NatsError) -> TransportError {
    TransportError::new(e.kind(), operation, e.target(), e)
}

impl From<NatsError> for TransportError {
    fn from(e: NatsError) -> Self {
        to_transport("nats", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_cause_is_printed_once_and_transience_follows_the_kind() {
        let e = NatsError::Publish {
            subject: "a.b".into(),
            source: "connection reset".into(),
        };
        assert_eq!(e.to_string(), "publish to a.b failed");
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("connection reset"));
        assert!(!e.is_transient());
        assert!(NatsError::BufferFull {
            subject: "a.b".into()
        }
        .is_transient());
        assert!(!NatsError::NoStream {
            subject: "a.b".into()
        }
        .is_transient());
        let t: TransportError = NatsError::Timeout {
            subject: "a.b".into(),
            timeout: std::time::Duration::from_secs(1),
        }
        .into();
        assert!(t.is_transient());
        assert!(t.cause().downcast_ref::<NatsError>().is_some());
    }
}
