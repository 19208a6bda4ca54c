//! `TransportError`: what failed at the transport seam, typed, and whether a retry can help.

use crate::bus::PublishError;
use crate::handler::BoxError;
use crate::message::subject::SubjectError;

/// What kind of failure a [`TransportError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was refused before anything was sent (a bad subject, pattern, size or
    /// config). Retrying the same input cannot help.
    Invalid,
    /// The transport refused it on purpose (stopped, a publish loop, no stream captures the
    /// subject). Retrying cannot help until something else changes.
    Refused,
    /// The transport is not reachable now (disconnected, a full reconnect buffer, a
    /// timeout, a busy store). A retry can help.
    Unavailable,
    /// Anything else; not known to be transient.
    Other,
}

/// A failure at the transport seam: the operation, what it was about, its kind and its cause.
///
/// Its `Display` names the operation and target only; the cause is its
/// [`source`](std::error::Error::source), so a chained report prints it once.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {target} failed")]
pub struct TransportError {
    kind: ErrorKind,
    operation: &'static str,
    target: String,
    #[source]
    source: BoxError,
}

impl TransportError {
    /// A failure of `operation` (`publish`, `subscribe`, `flush`, `settle`, `read`) about
    /// `target` (a subject, pattern or queue), caused by `source`.
    pub fn new(
        kind: ErrorKind,
        operation: &'static str,
        target: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        TransportError {
            kind,
            operation,
            target: target.into(),
            source: source.into(),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The subject, pattern or queue it was about.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the same call may succeed later ([`ErrorKind::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// The cause, to downcast to the transport's own error type.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

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

impl From<SubjectError> for TransportError {
    fn from(e: SubjectError) -> Self {
        TransportError::new(ErrorKind::Invalid, "parse", e.input().to_owned(), e)
    }
}

/// An error and its causes on one line, each once: `outer: cause: root cause`.
pub fn report(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_printed_once_in_a_chained_report() {
        let e = TransportError::new(ErrorKind::Unavailable, "publish to", "a.b", "disconnected");
        assert_eq!(e.to_string(), "publish to a.b failed");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disconnected"));
        assert!(e.is_transient());
        let refused: TransportError = PublishError::Stopped {
            subject: "a.b".into(),
        }
        .into();
        assert!(!refused.is_transient());
        assert_eq!(refused.kind(), ErrorKind::Refused);
        assert_eq!(refused.target(), "a.b");
    }
}
