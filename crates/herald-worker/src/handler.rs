//! `StepHandler`: what runs a step (seed 000's abstract class, as a trait), and
//! `step_handler_fn` for handlers written as closures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::step::{StepContext, StepHandlerResult};

/// A boxed future of a step's result.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = StepHandlerResult> + Send + 'a>>;

/// Runs one kind of step. A fresh instance is made for each step
/// ([`HandlerRegistry::resolve`](crate::HandlerRegistry::resolve)), so `&self` state is per
/// step.
///
/// # Examples
///
/// ```
/// use herald_worker::{StepContext, StepFuture, StepHandler, StepHandlerResult};
///
/// struct Double;
/// impl StepHandler for Double {
///     fn name(&self) -> &str { "double" }
///     fn call(&self, ctx: StepContext) -> StepFuture<'_> {
///         Box::pin(async move {
///             let n = ctx.input_data.get("n").and_then(|v| v.as_i64()).unwrap_or(0);
///             let mut out = serde_json::Map::new();
///             out.insert("n".into(), (n * 2).into());
///             StepHandlerResult::success(out)
///         })
///     }
/// }
/// ```
pub trait StepHandler: Send + Sync + 'static {
    /// Its registered name.
    fn name(&self) -> &str;

    /// Runs the step. An error is a [`StepHandlerResult::failure`]; a panic is caught by the
    /// subscriber and becomes a retryable `handler_error`.
    fn call(&self, context: StepContext) -> StepFuture<'_>;

    /// Its version (default `1.0.0`).
    fn version(&self) -> &str {
        "1.0.0"
    }

    /// What it can do (default `["process"]`).
    fn capabilities(&self) -> Vec<String> {
        vec!["process".to_owned()]
    }

    /// A JSON schema for its `step_config` (default none).
    fn config_schema(&self) -> Option<Value> {
        None
    }
}

type StepFn = dyn Fn(StepContext) -> StepFuture<'static> + Send + Sync;

/// A handler made from a name and an async closure.
#[derive(Clone)]
pub struct FnHandler {
    name: Arc<str>,
    f: Arc<StepFn>,
}

impl StepHandler for FnHandler {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, context: StepContext) -> StepFuture<'_> {
        (self.f)(context)
    }
}

/// A handler from an async closure.
///
/// # Examples
///
/// ```
/// use herald_worker::{step_handler_fn, StepContext, StepHandlerResult};
///
/// let noop = step_handler_fn("noop", |_ctx: StepContext| async {
///     StepHandlerResult::success(serde_json::Map::new())
/// });
/// ```
pub fn step_handler_fn<F, Fut>(name: &str, f: F) -> FnHandler
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StepHandlerResult> + Send + 'static,
{
    FnHandler {
        name: Arc::from(name),
        f: Arc::new(move |ctx| Box::pin(f(ctx))),
    }
}
