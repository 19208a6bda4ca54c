//! Transactions begun so that a caller dropped midway (a timeout, a worker's shutdown) never
//! leaves a pooled connection inside an open transaction.
//!
//! sqlx 0.8's `begin` counts the transaction only once the server has answered `BEGIN`:
//! dropped while waiting for that answer, it queues no `ROLLBACK`, and the connection goes
//! back to the pool inside the transaction. Every later statement on it then runs inside
//! that transaction, so an acknowledged send or append is not committed, and its locks are
//! held until the connection's next transaction ends (seen: a bench hung on a `pgmq.create`
//! waiting for such a connection's lock). Here the `BEGIN` runs in a task of its own that
//! finishes whatever happens to the caller: a transaction nobody takes any more is dropped
//! there, and sqlx rolls it back before the connection is used again.

use sqlx::{PgPool, Postgres, Transaction};

/// A transaction on a connection of `pool`, begun with `statement` (`BEGIN` when `None`; a
/// statement may do more in the same round trip, such as take a lock).
///
/// # Cancel safety
///
/// Cancel safe: dropped before it returns, the transaction it began is rolled back.
pub(crate) async fn begin(
    pool: &PgPool,
    statement: Option<String>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move {
        match statement {
            Some(s) => pool.begin_with(s).await,
            None => pool.begin().await,
        }
    })
    .await
    .map_err(|e| {
        sqlx::Error::Io(std::io::Error::other(format!(
            "beginning a transaction: {e}"
        )))
    })?
}

/// Ends `tx` by `result`: committed when it is `Ok` (a failed commit is `commit_err`'s error),
/// rolled back before the error is returned when it is not. A dropped transaction is rolled
/// back only when its connection is next used, and until then its locks stay (an append's
/// advisory lock, a dead letter's row lock). A failed rollback closes the connection, which
/// ends the transaction too.
pub(crate) async fn finish<T, E>(
    tx: Transaction<'static, Postgres>,
    result: Result<T, E>,
    commit_err: impl FnOnce(sqlx::Error) -> E,
) -> Result<T, E> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(commit_err)?;
            Ok(value)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
