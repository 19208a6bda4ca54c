//! Turns a handler's `Err` or panic into a `Failure` record; the caller and the other handlers go on.

use std::any::Any;
use std::future::poll_fn;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use super::{AsyncFn, HandlerResult, SyncFn};
use crate::message::event::Event;
use crate::outcome::{requested, Outcome};

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
    /// What the handler asked for by returning a [`Reject`](crate::Reject) or a
    /// [`RetryAfter`](crate::RetryAfter); `None` for any other error and for a panic.
    pub requested: Option<Outcome>,
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

impl Failure {
    /// The failure record of an error a handler or processor returned: a
    /// [`Reject`](crate::Reject) or [`RetryAfter`](crate::RetryAfter) keeps what it asks for.
    pub fn from_error(e: super::BoxError) -> Failure {
        error_failure(e)
    }
}

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
            requested: None,
        }),
        Err(payload) => Err(panic_failure(payload)),
    }
}

/// A handler's result: as [`from_result`], and an error that asks for an outcome keeps it.
/// `Ok` costs a branch; a failure record is built out of line.
#[inline]
fn from_handler_result(r: std::thread::Result<HandlerResult>) -> Result<(), Failure> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error_failure(e)),
        Err(payload) => Err(panic_failure(payload)),
    }
}

#[inline]
pub(super) fn run_sync(f: &SyncFn, event: &Event) -> Result<(), Failure> {
    from_handler_result(catch_unwind(AssertUnwindSafe(|| f(event))))
}

#[cold]
#[inline(never)]
fn error_failure(e: super::BoxError) -> Failure {
    Failure {
        kind: FailureKind::Error,
        message: e.to_string(),
        requested: requested(&*e),
    }
}

#[cold]
#[inline(never)]
fn panic_failure(payload: Box<dyn Any + Send>) -> Failure {
    Failure {
        kind: FailureKind::Panic,
        message: panic_message(payload),
        requested: None,
    }
}

pub(crate) async fn run_async(f: &AsyncFn, event: Arc<Event>) -> Result<(), Failure> {
    from_handler_result(catch(|| f(event)).await)
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
    from_result(catch(make).await)
}

/// Runs the future `make` returns, catching a panic while making or polling it.
async fn catch<F, Fut>(make: F) -> std::thread::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    // Creating the future runs a closure body up to its first await: isolate that too.
    let fut = catch_unwind(AssertUnwindSafe(make))?;
    let mut fut = std::pin::pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}
