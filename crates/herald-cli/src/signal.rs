//! The CLI's one signal helper: the process's SIGINT and SIGTERM, as a future naming the one
//! that arrived. Libraries take a stop future and install no handler of their own.

use std::future::Future;

/// A future that completes when SIGINT or SIGTERM arrives, with its name; never, when they
/// cannot be watched (the reason is logged). The handlers are registered when this is called,
/// not when the future is first polled, so a signal that arrives while the caller is busy
/// before its first await is not lost.
pub(crate) fn terminated() -> impl Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let watched = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match watched {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot watch SIGINT/SIGTERM: {e}");
                std::future::pending().await
            }
        }
    }
}
