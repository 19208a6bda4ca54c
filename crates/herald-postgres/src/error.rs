//! sqlx errors as queue errors: a missing PGMQ table is `NoSuchQueue`; a lost connection, a
//! pool timeout or a serialization failure is transient; each names the operation and queue.

use herald::queue::QueueError;

/// Wraps an sqlx error.
pub(crate) fn store(operation: &'static str, queue: &str, e: sqlx::Error) -> QueueError {
    if let sqlx::Error::Database(db) = &e {
        // 42P01 undefined_table: the queue's table does not exist.
        if db.code().as_deref() == Some("42P01") {
            return QueueError::NoSuchQueue {
                queue: queue.to_owned(),
            };
        }
    }
    let transient = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization_failure, deadlock_detected, admin/crash shutdown, cannot_connect_now
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03")
        ),
        _ => false,
    };
    QueueError::store(operation, queue, transient, e)
}
