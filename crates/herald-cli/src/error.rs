//! `CliError`: every way a command can fail, printed by `main` as one line on stderr.

/// Every way a command can fail; printed as one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or input.
    #[error("{0}")]
    Usage(String),
    /// A malformed subject or pattern.
    #[error("{0}")]
    Subject(#[from] herald::SubjectError),
    /// A malformed envelope or data.
    #[error("{0}")]
    Envelope(#[from] herald::EnvelopeError),
    /// A refused publish.
    #[error("{0}")]
    Publish(#[from] herald::PublishError),
    /// A plugin failure.
    #[error("{0}")]
    Plugin(#[from] herald::plugin::PluginError),
    /// A bad config: the key path, the file, what is wrong (exit code 78, EX_CONFIG).
    #[error("{0}")]
    Config(String),
    /// A service asked the process to exit with this code (an exit error handler).
    #[error("{1}")]
    Exit(i32, String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<herald::queue::QueueError> for CliError {
    fn from(e: herald::queue::QueueError) -> Self {
        CliError::Other(report(&e))
    }
}

impl From<herald::queue::flow::FlowError> for CliError {
    fn from(e: herald::queue::flow::FlowError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<herald::store::StoreError> for CliError {
    fn from(e: herald::store::StoreError) -> Self {
        CliError::Other(report(&e))
    }
}

impl From<herald_nats::NatsError> for CliError {
    fn from(e: herald_nats::NatsError) -> Self {
        CliError::Other(report(&e))
    }
}

pub(crate) use herald::report;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_error_reads_as_one_line_with_its_cause_once() {
        let e = herald_nats::NatsError::Publish {
            subject: "a.b".into(),
            source: "connection reset".into(),
        };
        assert_eq!(
            CliError::from(e).to_string(),
            "publish to a.b failed: connection reset"
        );
    }
}
