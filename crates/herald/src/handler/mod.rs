//! Stage 4, HANDLER: what runs for an event (async fn, closure, or a `Handle` impl), and how
//! an error or a panic in it is turned into a failure record instead of spreading.

mod isolate;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::message::event::Event;

pub(crate) use isolate::run_async;
pub use isolate::{isolate, Failure, FailureKind};

/// A boxed error, as handlers return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler returns.
pub type HandlerResult = Result<(), BoxError>;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Converts what a handler function returns into a [`HandlerResult`]: `()` is success,
/// `Result<(), E>` is success or failure.
pub trait IntoHandlerResult {
    /// The conversion.
    fn into_handler_result(self) -> HandlerResult;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> HandlerResult {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> HandlerResult {
        self.map_err(Into::into)
    }
}

/// A handler written as a type: implement this for structs that hold state.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use herald::{Event, Handle, Handler, HandlerResult};
///
/// struct Printer;
/// impl Handle for Printer {
///     async fn handle(&self, event: Arc<Event>) -> HandlerResult {
///         println!("{}", event.subject);
///         Ok(())
///     }
/// }
/// let handler = Handler::from_handle(Printer);
/// ```
pub trait Handle: Send + Sync + 'static {
    /// Handles one event. The event is shared and read-only.
    fn handle(&self, event: Arc<Event>) -> impl Future<Output = HandlerResult> + Send;
}

type SyncFn = dyn Fn(&Event) -> HandlerResult + Send + Sync;
pub(crate) type AsyncFn = dyn Fn(Arc<Event>) -> BoxFuture<HandlerResult> + Send + Sync;

#[derive(Clone)]
enum Kind {
    Sync(Arc<SyncFn>),
    Async(Arc<AsyncFn>),
}

/// A type-erased handler, cheap to clone. The same value runs on the in-process bus and on
/// any transport (NATS) that accepts a `Handler`.
///
/// Build one with [`handler_fn`] (async), [`sync_handler`] (plain closure, dispatched with no
/// allocation and no await) or [`Handler::from_handle`].
#[derive(Clone)]
pub struct Handler(Kind);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_sync() {
            "Handler(sync)"
        } else {
            "Handler(async)"
        })
    }
}

/// An async handler from a closure or `async fn` taking `Arc<Event>`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use herald::{handler_fn, Event};
/// let h = handler_fn(|event: Arc<Event>| async move {
///     println!("got {}", event.subject);
/// });
/// ```
pub fn handler_fn<F, Fut, R>(f: F) -> Handler
where
    F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoHandlerResult,
{
    Handler(Kind::Async(Arc::new(move |event| {
        let fut = f(event);
        Box::pin(async move { fut.await.into_handler_result() })
    })))
}

/// A synchronous handler from a closure taking `&Event`. It runs inline in the publisher's
/// task, so it must not block for long.
///
/// # Examples
///
/// ```
/// use herald::{sync_handler, Event};
/// let h = sync_handler(|event: &Event| println!("got {}", event.subject));
/// ```
pub fn sync_handler<F, R>(f: F) -> Handler
where
    F: Fn(&Event) -> R + Send + Sync + 'static,
    R: IntoHandlerResult,
{
    Handler(Kind::Sync(Arc::new(move |event| {
        f(event).into_handler_result()
    })))
}

impl Handler {
    /// Wraps a [`Handle`] implementation.
    pub fn from_handle<H: Handle>(h: H) -> Handler {
        let h = Arc::new(h);
        Handler(Kind::Async(Arc::new(move |event| {
            let h = h.clone();
            Box::pin(async move { h.handle(event).await })
        })))
    }

    /// Whether this handler is synchronous.
    pub fn is_sync(&self) -> bool {
        matches!(self.0, Kind::Sync(_))
    }

    /// Runs the handler once, isolated: an error or a panic comes back as a [`Failure`],
    /// never as an unwind into the caller.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the handler at its current await point.
    pub async fn call(&self, event: &Arc<Event>) -> Result<(), Failure> {
        match &self.0 {
            Kind::Sync(f) => isolate::run_sync(f.as_ref(), event),
            Kind::Async(f) => isolate::run_async(f.as_ref(), event.clone()).await,
        }
    }

    /// Starts the handler: a synchronous one runs inline and is done; an async one is
    /// handed back for the caller to run with [`run_async`], one future fewer than
    /// [`Handler::call`] (what a dispatch awaits).
    #[inline]
    pub(crate) fn start(&self, event: &Event) -> Start<'_> {
        match &self.0 {
            Kind::Sync(f) => Start::Done(isolate::run_sync(f.as_ref(), event)),
            Kind::Async(f) => Start::Async(f.as_ref()),
        }
    }
}

/// What [`Handler::start`] gives back.
pub(crate) enum Start<'a> {
    /// A synchronous handler ran.
    Done(Result<(), Failure>),
    /// An async handler, to run with [`run_async`].
    Async(&'a AsyncFn),
}

impl<H: Handle> From<H> for Handler {
    fn from(h: H) -> Self {
        Handler::from_handle(h)
    }
}
