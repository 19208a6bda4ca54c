//! `SqliteOptions`: where the file is (`sqlite://PATH`, default `.herald/herald.db`) and how
//! long a writer waits for another process's lock.

use std::path::PathBuf;
use std::time::Duration;

use herald::queue::QueueError;

/// The embedded store's default file.
pub const DEFAULT_PATH: &str = ".herald/herald.db";

/// How to open a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file (created with its directory when missing).
    pub path: PathBuf,
    /// How long a write waits for another process's write lock (default 5 s).
    pub busy_timeout: Duration,
    /// Most operations applied in one transaction (default 512).
    pub max_batch: usize,
}

impl SqliteOptions {
    /// Options for `path`, with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            max_batch: 512,
        }
    }

    /// Parses `sqlite://PATH` (`sqlite:PATH` and `sqlite://` alone, meaning the default
    /// file, are accepted too).
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] naming the URL when it is not a `sqlite:` URL.
    pub fn from_url(url: &str) -> Result<Self, QueueError> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                QueueError::store(
                    "open",
                    "*",
                    false,
                    format!("{url:?} is not a SQLite URL (expected sqlite://PATH)"),
                )
            })?;
        let path = if rest.is_empty() { DEFAULT_PATH } else { rest };
        Ok(SqliteOptions::new(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_file_and_anything_else_is_refused_by_name() {
        assert_eq!(
            SqliteOptions::from_url("sqlite:///tmp/x.db")
                .expect("url")
                .path,
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(
            SqliteOptions::from_url("sqlite://rel/x.db")
                .expect("url")
                .path,
            PathBuf::from("rel/x.db")
        );
        assert_eq!(
            SqliteOptions::from_url("sqlite://").expect("url").path,
            PathBuf::from(DEFAULT_PATH)
        );
        let err = SqliteOptions::from_url("mysql://x").expect_err("refused");
        assert!(format!("{err}: {:?}", std::error::Error::source(&err)).contains("mysql://x"));
    }
}
