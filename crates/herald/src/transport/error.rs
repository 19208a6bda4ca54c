//! `TransportError`: what failed at the transport seam, typed, and whether a retry can help.

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
        // Many libraries' errors (sqlx, async-nats, std::io wrappers) already print their
        // source in their own message: a cause whose text is there already is not repeated.
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    collapse_repeats(&line)
}

/// `a: b: b: c` -> `a: b: c`, and `a: b: c: b: c` -> `a: b: c`: a run of `: `-separated
/// clauses said twice in a row is said once (an error whose message embeds its source, and a
/// source whose message embeds its own, repeat a cause however the chain is walked).
fn collapse_repeats(line: &str) -> String {
    let mut parts: Vec<&str> = line.split(": ").collect();
    let mut i = 0;
    while i < parts.len() {
        let mut removed = false;
        let mut k = 1;
        while i + 2 * k <= parts.len() {
            if parts[i..i + k] == parts[i + k..i + 2 * k] {
                parts.drain(i + k..i + 2 * k);
                removed = true;
                break;
            }
            k += 1;
        }
        if !removed {
            i += 1;
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Echo(&'static str, Option<Box<Echo>>);

    impl std::fmt::Display for Echo {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Echo {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_report_names_each_cause_once_even_when_an_error_prints_its_source() {
        // As async-nats and sqlx do: the outer message already holds the inner one.
        let inner = Echo("Connection refused (os error 111)", None);
        let outer = Echo(
            "IO error: Connection refused (os error 111)",
            Some(Box::new(inner)),
        );
        let top = Echo("cannot connect to nats://h:1", Some(Box::new(outer)));
        assert_eq!(
            report(&top),
            "cannot connect to nats://h:1: IO error: Connection refused (os error 111)"
        );
        // async-nats's JetStream errors: the kind's text, then the same text as the source.
        let js = "jetstream error: replicas > 1 not supported (code 500)";
        let doubled = Echo(
            "jetstream error: replicas > 1 not supported (code 500): jetstream error: replicas > 1 not supported (code 500)",
            None,
        );
        let top = Echo("JetStream create stream R5 failed", Some(Box::new(doubled)));
        assert_eq!(
            report(&top),
            format!("JetStream create stream R5 failed: {js}")
        );
    }

    #[test]
    fn the_cause_is_printed_once_in_a_chained_report() {
        let e = TransportError::new(ErrorKind::Unavailable, "publish to", "a.b", "disconnected");
        assert_eq!(e.to_string(), "publish to a.b failed");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disconnected"));
        assert!(e.is_transient());
        let refused: TransportError = crate::bus::PublishError::Stopped {
            subject: "a.b".into(),
        }
        .into();
        assert!(!refused.is_transient());
        assert_eq!(refused.kind(), ErrorKind::Refused);
        assert_eq!(refused.target(), "a.b");
    }
}
