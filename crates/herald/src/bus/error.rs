//! Why the bus refuses: `PublishError` (nothing dispatched) and `EmitError` (the event comes
//! back inside it).

use crate::message::event::{EnvelopeError, Event};
use crate::transport::{ErrorKind, TransportError};

/// Why a publish was refused. Nothing was dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The bus is stopped.
    #[error("bus is stopped: publish to {subject} refused")]
    Stopped {
        /// The refused event's subject.
        subject: String,
    },
    /// The publish would run deeper than the maximum dispatch depth (a publish loop).
    #[error("dispatch depth {depth} exceeds the maximum {max}: publish to {subject} refused (a handler publishing in a loop?)")]
    DepthExceeded {
        /// The depth this publish would have run at.
        depth: u32,
        /// The configured maximum.
        max: u32,
        /// The refused event's subject.
        subject: String,
    },
    /// The event could not be made (a malformed subject, data that is not an object).
    #[error(transparent)]
    Invalid(#[from] EnvelopeError),
}

/// Why an emit was refused. The event comes back inside the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The queue holds `capacity` events already.
    #[error("emit queue full ({capacity} events): event on {} refused", .event.subject)]
    Full {
        /// The refused event.
        event: Box<Event>,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The bus is stopped.
    #[error("bus is stopped: emit on {} refused", .event.subject)]
    Stopped {
        /// The refused event.
        event: Box<Event>,
    },
    /// The emit was made beyond the maximum dispatch depth.
    #[error("dispatch depth {depth} exceeds the maximum {max}: emit on {} refused", .event.subject)]
    DepthExceeded {
        /// The refused event.
        event: Box<Event>,
        /// The depth it would have run at.
        depth: u32,
        /// The maximum.
        max: u32,
    },
    /// `emit` was called outside a Tokio runtime, so no dispatcher can run.
    #[error("emit needs a Tokio runtime for its dispatcher task: event on {} refused", .event.subject)]
    NoRuntime {
        /// The refused event.
        event: Box<Event>,
    },
}

impl EmitError {
    /// Gives back the refused event.
    pub fn into_event(self) -> Event {
        match self {
            EmitError::Full { event, .. }
            | EmitError::Stopped { event }
            | EmitError::DepthExceeded { event, .. }
            | EmitError::NoRuntime { event } => *event,
        }
    }
}

/// The bus as a transport (`bus/transport.rs`) reports a refused publish as a
/// [`TransportError`]; the conversion lives here, beside the error, so the transport contract
/// knows nothing of the bus.
impl From<PublishError> for TransportError {
    fn from(e: PublishError) -> Self {
        let (kind, subject) = match &e {
            PublishError::Stopped { subject } | PublishError::DepthExceeded { subject, .. } => {
                (ErrorKind::Refused, subject.clone())
            }
            PublishError::Invalid(_) => (ErrorKind::Invalid, String::new()),
        };
        TransportError::new(kind, "publish to", subject, e)
    }
}
