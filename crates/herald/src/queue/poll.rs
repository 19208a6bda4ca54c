//! `read_with_wakeup`: the one `read_with_poll` loop every backend shares: read; if nothing
//! is visible, sleep until a send wakes it or a short recheck interval passes (for senders
//! that cannot wake it, and delayed messages); give up at the deadline.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Message, QueueError};

/// Reads with `read` until it returns messages or `max_wait` has passed, waiting on `wake`
/// (notified by sends) or at most `recheck` between reads. It never spins.
///
/// # Errors
///
/// The first error `read` returns.
pub async fn read_with_wakeup<F, Fut>(
    wake: &Notify,
    max_wait: Duration,
    recheck: Duration,
    read: F,
) -> Result<Vec<Message>, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Message>, QueueError>>,
{
    read_with_wakeup_by(wake, max_wait, || async move { Ok(recheck) }, read).await
}

/// [`read_with_wakeup`] where the time to the next recheck is asked after each empty read:
/// a backend whose every insert notifies `wake` (PostgreSQL's trigger) asks when its next
/// hidden message becomes visible, and sleeps until then, a send, or the deadline.
///
/// # Errors
///
/// The first error `read` or `recheck` returns.
pub async fn read_with_wakeup_by<F, Fut, R, RFut>(
    wake: &Notify,
    max_wait: Duration,
    mut recheck: R,
    mut read: F,
) -> Result<Vec<Message>, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Message>, QueueError>>,
    R: FnMut() -> RFut,
    RFut: Future<Output = Result<Duration, QueueError>>,
{
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        // Registered before the read, so a send between the read and the wait still wakes us.
        let sent = wake.notified();
        tokio::pin!(sent);
        sent.as_mut().enable();
        let got = read().await?;
        let now = tokio::time::Instant::now();
        if !got.is_empty() || now >= deadline {
            return Ok(got);
        }
        let nap = deadline.min(now + recheck().await?);
        tokio::select! {
            _ = sent => {}
            _ = tokio::time::sleep_until(nap) => {}
        }
    }
}
