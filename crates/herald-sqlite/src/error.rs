//! SQLite errors as queue errors: a busy or locked database is transient, anything else is
//! not; each names the operation and the queue.

use herald::queue::QueueError;

/// Wraps a rusqlite error.
pub(crate) fn store(operation: &'static str, queue: &str, e: rusqlite::Error) -> QueueError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    QueueError::store(operation, queue, transient, e)
}
