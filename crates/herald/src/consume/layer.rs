//! Middleware on the consume path: a stack of [`Middleware`] around the handler of every
//! engine's delivery (the consume loop, the worker, the runtime's consumers), each of which
//! may act before and after the call, change its result, or hold it back, and hears how the
//! delivery was settled. Timeout and an observer hook are here; the retry decision and the
//! dead letter follow the stack, the same for every engine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handler::{Failure, FailureKind, Handler};
use crate::message::event::Event;
use crate::outcome::Outcome;

/// A boxed future borrowing from its caller.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a middleware sees of one delivery.
#[derive(Debug, Clone)]
pub struct DeliveryContext {
    /// The event.
    pub event: Arc<Event>,
    /// Its attempt (1 on the first delivery).
    pub attempt: u32,
    /// Where it was read from (a queue, a stream and consumer, a JetStream consumer).
    pub origin: Arc<str>,
    /// When its handling started.
    pub started: Instant,
}

impl DeliveryContext {
    /// The context of `event` on `attempt`, read from `origin`, starting now.
    pub fn new(event: Arc<Event>, attempt: u32, origin: Arc<str>) -> Self {
        DeliveryContext {
            event,
            attempt,
            origin,
            started: Instant::now(),
        }
    }
}

/// One layer of the consume path, in the shape of tower's `Layer` and axum's `from_fn`
/// middleware: it gets the delivery and the rest of the stack, and returns the handler's
/// result (its own, if it answers for the handler).
///
/// # Examples
///
/// ```
/// use herald::consume::layer::{DeliveryContext, LocalFuture, Middleware, Next};
/// use herald::Failure;
///
/// /// Logs every delivery's subject before its handler runs.
/// struct LogSubjects;
/// impl Middleware for LogSubjects {
///     fn handle<'a>(
///         &'a self,
///         ctx: &'a DeliveryContext,
///         next: Next<'a>,
///     ) -> LocalFuture<'a, Result<(), Failure>> {
///         Box::pin(async move {
///             println!("{}", ctx.event.subject);
///             next.run(ctx).await
///         })
///     }
/// }
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// Handles one delivery: usually acts, then calls `next.run(ctx)`.
    fn handle<'a>(
        &'a self,
        ctx: &'a DeliveryContext,
        next: Next<'a>,
    ) -> LocalFuture<'a, Result<(), Failure>>;

    /// Hears how the delivery ends, once the retry policy has decided (before its settle).
    fn settled(&self, ctx: &DeliveryContext, outcome: &Outcome) {
        let _ = (ctx, outcome);
    }
}

/// What a stack ends in: the handler itself, or an engine's own execution of it.
pub trait Terminal: Send + Sync {
    /// Runs the delivery.
    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> LocalFuture<'a, Result<(), Failure>>;
}

impl Terminal for Handler {
    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> LocalFuture<'a, Result<(), Failure>> {
        Box::pin(Handler::call(self, &ctx.event))
    }
}

/// The rest of the stack below a middleware.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    terminal: &'a dyn Terminal,
}

impl<'a> Next<'a> {
    /// Runs the rest of the stack, and the handler under it.
    pub fn run(self, ctx: &'a DeliveryContext) -> LocalFuture<'a, Result<(), Failure>> {
        match self.rest.split_first() {
            Some((first, rest)) => first.handle(
                ctx,
                Next {
                    rest,
                    terminal: self.terminal,
                },
            ),
            None => self.terminal.call(ctx),
        }
    }
}

/// An ordered stack of middleware; the first added is the outermost. Cheap to clone; an
/// empty stack calls the handler directly, at no cost.
#[derive(Clone, Default)]
pub struct Stack {
    layers: Vec<Arc<dyn Middleware>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Stack {
    /// An empty stack.
    pub fn new() -> Self {
        Stack::default()
    }

    /// Adds `middleware` inside the ones already added.
    pub fn push(&mut self, middleware: impl Middleware) {
        self.layers.push(Arc::new(middleware));
    }

    /// Adds a shared middleware inside the ones already added.
    pub fn push_arc(&mut self, middleware: Arc<dyn Middleware>) {
        self.layers.push(middleware);
    }

    /// Whether it has no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Runs `ctx` through the stack down to `terminal`.
    pub async fn run(&self, ctx: &DeliveryContext, terminal: &dyn Terminal) -> Result<(), Failure> {
        if self.layers.is_empty() {
            return terminal.call(ctx).await;
        }
        Next {
            rest: &self.layers,
            terminal,
        }
        .run(ctx)
        .await
    }

    /// Tells every layer how the delivery ends.
    pub fn settled(&self, ctx: &DeliveryContext, outcome: &Outcome) {
        for layer in &self.layers {
            layer.settled(ctx, outcome);
        }
    }
}

/// Fails a handler still running after its bound: the failure says `timed out after ...` and
/// the retry policy decides what follows, as for any error. The handler's future is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Timeout(pub Duration);

impl Middleware for Timeout {
    fn handle<'a>(
        &'a self,
        ctx: &'a DeliveryContext,
        next: Next<'a>,
    ) -> LocalFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            match tokio::time::timeout(self.0, next.run(ctx)).await {
                Ok(result) => result,
                Err(_) => Err(Failure {
                    kind: FailureKind::Error,
                    message: format!("timed out after {:?}", self.0),
                    requested: None,
                }),
            }
        })
    }
}

type ObserveFn = dyn Fn(&DeliveryContext, &Outcome, Duration) + Send + Sync;

/// Calls a function once per delivery with how it ended and how long it took (for metrics
/// and logs); the handler runs as it would without it.
pub struct Observe(Arc<ObserveFn>);

impl Observe {
    /// Calls `f(ctx, outcome, elapsed)` as each delivery ends.
    pub fn new(f: impl Fn(&DeliveryContext, &Outcome, Duration) + Send + Sync + 'static) -> Self {
        Observe(Arc::new(f))
    }
}

impl Middleware for Observe {
    fn handle<'a>(
        &'a self,
        ctx: &'a DeliveryContext,
        next: Next<'a>,
    ) -> LocalFuture<'a, Result<(), Failure>> {
        next.run(ctx)
    }

    fn settled(&self, ctx: &DeliveryContext, outcome: &Outcome) {
        (self.0)(ctx, outcome, ctx.started.elapsed());
    }
}
