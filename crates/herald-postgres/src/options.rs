//! How a PostgreSQL store connects: its options, what each pooled connection sets, and the
//! URL as errors show it.

use std::time::Duration;

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// `postgres://...`
    pub url: String,
    /// Pool connections (default 10); reads of queues under a flow policy open up to
    /// [`FLOW_READ_CONNECTIONS`](crate::FLOW_READ_CONNECTIONS) more, their own.
    pub max_connections: u32,
    /// Writes applied in one group commit at most (default 512).
    pub max_batch: usize,
    /// How long a connect may take (default 5 s).
    pub connect_timeout: Duration,
}

impl PgOptions {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            max_connections: 10,
            max_batch: 512,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What every connection of a store's pool sets once connected. Herald notifies a queue's
/// channel itself, in the statement that inserts, so the insert trigger (for senders outside
/// Herald) skips its connections. JIT is off: Herald's statements touch a few rows by index,
/// but a generic plan's estimate over a large queue (a third of it for `vt > $1`) passes
/// `jit_above_cost`; compiling took 18 of a flow read's 19 ms at 10,000 waiting steps.
pub(crate) const CONNECTION_SETTINGS: &str = "SET herald.self_notify = 'on'; SET jit = off";

/// The URL with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
