//! `QueueName`: a queue name PGMQ accepts (lowercase letters, digits and `_`, starting with
//! a letter or `_`, at most 47 characters), validated before any SQL sees it.

use std::fmt;
use std::sync::Arc;

use super::QueueError;

/// The longest queue name PGMQ accepts (its table and index names must fit in 63 bytes).
pub const MAX_LEN: usize = 47;

/// A validated queue name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`] naming the value: empty, longer than 47 characters, or
    /// holding anything but lowercase ASCII letters, digits and `_` (so `"q; drop table x"`
    /// and `"Q"` are refused), or starting with a digit.
    pub fn new(name: &str) -> Result<Self, QueueError> {
        let bad = |reason| QueueError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > MAX_LEN {
            return Err(bad("longer than 47 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad("only lowercase letters, digits and _ are allowed"));
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(bad("must not start with a digit"));
        }
        Ok(QueueName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The queue beside this one with `suffix` appended (`steps` -> `steps_dlq`).
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`] when the result would be too long.
    pub fn with_suffix(&self, suffix: &str) -> Result<Self, QueueError> {
        QueueName::new(&format!("{}{suffix}", self.0))
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueName({})", self.0)
    }
}

impl std::str::FromStr for QueueName {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Self, QueueError> {
        QueueName::new(s)
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgmq_names_pass_and_everything_else_is_refused_naming_the_value() {
        for ok in ["steps", "default_steps", "_x", "a1", &"a".repeat(47)] {
            assert!(QueueName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Steps",
            "a-b",
            "a b",
            "1abc",
            "x'; drop table pgmq.meta; --",
            "q\"x",
            &"a".repeat(48),
            "ünï",
        ] {
            let err = QueueName::new(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
