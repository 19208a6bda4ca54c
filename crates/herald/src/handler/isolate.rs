//! Turns a handler's `Err` or panic into a `Failure` record; the caller and the other handlers go on.

use std::any::Any;
use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use super::{AsyncFn, SyncFn};
use crate::message::event::Event;

/// How a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// It returned an error.
    Error,
    /// It panicked.
    Panic,
}

/// One handler failure: what kind and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Error or panic.
    pub kind: FailureKind,
    /// The error's `Display`, or the panic message.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::Error => write!(f, "handler error: {}", self.message),
            FailureKind::Panic => write!(f, "handler panicked: {}", self.message),
        }
    }
}

impl std::error::Error for Failure {}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn from_result<T, E: std::fmt::Display>(
    r: std::thread::Result<Result<T, E>>,
) -> Result<T, Failure> {
    match r {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure {
            kind: FailureKind::Error,
            message: e.to_string(),
        }),
        Err(payload) => Err(Failure {
            kind: FailureKind::Panic,
            message: panic_message(payload),
        }),
    }
}

pub(super) fn run_sync(f: &SyncFn, event: &Event) -> Result<(), Failure> {
    from_result(catch_unwind(AssertUnwindSafe(|| f(event))))
}

pub(super) async fn run_async(f: &AsyncFn, event: Arc<Event>) -> Result<(), Failure> {
    isolate(|| f(event)).await
}

/// Runs the future that `make` returns, isolated: an `Err`, or a panic while making or
/// polling the future, comes back as a [`Failure`] instead of unwinding into the caller.
/// Handlers are run this way; so is anything else that runs user code for an event (a
/// NATS responder).
///
/// # Errors
///
/// [`Failure`] of kind `Error` (the `Display` of the error) or `Panic` (the panic message).
///
/// # Cancel safety
///
/// Dropping the future stops the user code at its current await point.
pub async fn isolate<F, Fut, T, E>(make: F) -> Result<T, Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    // Creating the future runs a closure body up to its first await: isolate that too.
    let fut = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => fut,
        Err(payload) => return from_result::<T, E>(Err(payload)),
    };
    let mut fut = std::pin::pin!(fut);
    let result = poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await;
    from_result(result)
}
