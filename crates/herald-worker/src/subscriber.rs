//! `StepExecutionSubscriber`: on the bus, takes each `step.execution.received`, resolves its
//! handler, runs it (isolated, with a timeout, under a concurrency bound), turns what happened
//! into one `StepExecutionResult`, submits it, and only once the result is stored publishes
//! `step.completion.sent`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::{
    handler_fn, BoxError, BoxFuture, Bus, Event, Failure, FailureKind, Outcome, Subject,
    Subscription,
};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::events::DomainEventSink;
use crate::registry::{HandlerRegistry, ResolveError};
use crate::step::{
    DeclaredEvent, FfiStepEvent, StepContext, StepError, StepExecutionResult, StepHandlerResult,
};

/// The subject steps arrive on.
pub const STEP_RECEIVED: &str = "step.execution.received";
/// The subject a stored result is announced on.
pub const STEP_COMPLETED: &str = "step.completion.sent";
/// The subject a handler error, panic or timeout is announced on.
pub const HANDLER_ERROR: &str = "handler.error";

/// Where results go. The worker's sink stores them on the completion queue together with
/// the step's archive, in one transaction.
///
/// A sink says what became of a result in the core's settle vocabulary: `Some(Ack)`, stored
/// (committed), the step's one result; `Some(Reject { .. })`, stored as its final failure
/// and the step dead-lettered; `Some(Retry { .. })`, not stored, the step runs again after
/// the delay; `None`, not stored, because another attempt holds the step now (this one's
/// visibility ran out).
pub trait CompletionSink: Send + Sync + 'static {
    /// Submits `result` for the step carried by `step` (the bus event).
    ///
    /// # Errors
    ///
    /// The store's error; the step is then neither settled nor answered, and comes back
    /// once its visibility timeout runs out.
    fn submit(
        &self,
        step: Arc<Event>,
        result: StepExecutionResult,
    ) -> BoxFuture<Result<Option<Outcome>, BoxError>>;
}

/// What became of one step: the handler's result (a failure record when it did not
/// succeed) and how its settle ended (`None` when refused as stale or not stored).
#[derive(Debug)]
pub(crate) struct Processed {
    pub(crate) result: Result<(), Failure>,
    pub(crate) settled: Option<Outcome>,
}

/// How the subscriber runs handlers.
#[derive(Clone)]
pub struct SubscriberConfig {
    /// Where declared domain events go (none: they are counted as failed and logged).
    pub domain_events: Option<Arc<dyn DomainEventSink>>,
    /// Written into every result.
    pub worker_id: String,
    /// A handler still running after this is a retryable `timeout` failure (default 30 s).
    pub handler_timeout: Duration,
    /// Handlers running at once (default 10).
    pub max_concurrent_handlers: usize,
}

impl std::fmt::Debug for SubscriberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberConfig")
            .field("worker_id", &self.worker_id)
            .field("handler_timeout", &self.handler_timeout)
            .field("max_concurrent_handlers", &self.max_concurrent_handlers)
            .field("domain_events", &self.domain_events.is_some())
            .finish()
    }
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            domain_events: None,
            worker_id: format!("herald-worker-{}", std::process::id()),
            handler_timeout: Duration::from_secs(30),
            max_concurrent_handlers: 10,
        }
    }
}

/// The subscriber's counters.
#[derive(Debug, Default)]
pub struct SubscriberCounters {
    /// Steps taken from the bus.
    pub(crate) received: AtomicU64,
    /// Results stored that say success.
    pub(crate) succeeded: AtomicU64,
    /// Results stored that say failure.
    pub(crate) failed: AtomicU64,
    /// Handler runs that failed retryably and were sent back for a retry.
    pub(crate) retried: AtomicU64,
    /// Results refused because another attempt holds the step.
    pub(crate) stale: AtomicU64,
    /// Handler errors, panics and timeouts (each also on `handler.error`).
    pub(crate) handler_errors: AtomicU64,
    /// Steps whose handler is not registered.
    pub(crate) not_found: AtomicU64,
    /// Bus events on `step.execution.received` whose data is not a step.
    pub(crate) malformed: AtomicU64,
    /// Results the sink could not store (the step comes back after its vt).
    pub(crate) submit_failed: AtomicU64,
    /// Declared domain events published after their step's result was committed.
    pub(crate) domain_events_published: AtomicU64,
    /// Declared domain events whose publish failed (the step is not failed by it).
    pub(crate) domain_events_failed: AtomicU64,
    /// Handlers that timed out (also in `handler_errors`).
    pub(crate) timeouts: AtomicU64,
    /// Handlers running now.
    pub(crate) in_progress: AtomicU64,
    /// Handler run times, in microseconds.
    pub(crate) execution_us: herald::observe::Histogram,
}

/// The subscriber's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberSnapshot {
    /// Steps taken from the bus.
    pub received: u64,
    /// Results stored that say success.
    pub succeeded: u64,
    /// Results stored that say failure.
    pub failed: u64,
    /// Handler runs that failed retryably and were sent back for a retry.
    pub retried: u64,
    /// Results refused because another attempt holds the step.
    pub stale: u64,
    /// Handler errors, panics and timeouts (each also on `handler.error`).
    pub handler_errors: u64,
    /// Steps whose handler is not registered.
    pub not_found: u64,
    /// Bus events on `step.execution.received` whose data is not a step.
    pub malformed: u64,
    /// Results the sink could not store (the step comes back after its vt).
    pub submit_failed: u64,
    /// Declared domain events published after their step's result was committed.
    pub domain_events_published: u64,
    /// Declared domain events whose publish failed (the step is not failed by it).
    pub domain_events_failed: u64,
    /// Handlers that timed out (also in `handler_errors`).
    pub timeouts: u64,
    /// Handlers running now.
    pub in_progress: u64,
}

impl SubscriberCounters {
    /// The counts now, as plain numbers.
    pub fn snapshot(&self) -> SubscriberSnapshot {
        SubscriberSnapshot {
            received: self.received.load(std::sync::atomic::Ordering::Relaxed),
            succeeded: self.succeeded.load(std::sync::atomic::Ordering::Relaxed),
            failed: self.failed.load(std::sync::atomic::Ordering::Relaxed),
            retried: self.retried.load(std::sync::atomic::Ordering::Relaxed),
            stale: self.stale.load(std::sync::atomic::Ordering::Relaxed),
            handler_errors: self
                .handler_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            not_found: self.not_found.load(std::sync::atomic::Ordering::Relaxed),
            malformed: self.malformed.load(std::sync::atomic::Ordering::Relaxed),
            submit_failed: self
                .submit_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            domain_events_published: self
                .domain_events_published
                .load(std::sync::atomic::Ordering::Relaxed),
            domain_events_failed: self
                .domain_events_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            timeouts: self.timeouts.load(std::sync::atomic::Ordering::Relaxed),
            in_progress: self.in_progress.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Seed 000's `StepExecutionSubscriber`.
pub struct StepExecutionSubscriber {
    inner: Arc<Inner>,
    subscription: Option<Subscription>,
}

pub(crate) struct Inner {
    bus: Bus,
    registry: Arc<HandlerRegistry>,
    sink: Arc<dyn CompletionSink>,
    config: SubscriberConfig,
    permits: Semaphore,
    counters: Arc<SubscriberCounters>,
}

impl std::fmt::Debug for StepExecutionSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepExecutionSubscriber")
            .field("active", &self.is_active())
            .finish()
    }
}

impl StepExecutionSubscriber {
    /// A subscriber on `bus`, not started.
    pub fn new(
        bus: Bus,
        registry: Arc<HandlerRegistry>,
        sink: Arc<dyn CompletionSink>,
        config: SubscriberConfig,
    ) -> Self {
        let permits = Semaphore::new(config.max_concurrent_handlers.max(1));
        StepExecutionSubscriber {
            inner: Arc::new(Inner {
                bus,
                registry,
                sink,
                config,
                permits,
                counters: Arc::default(),
            }),
            subscription: None,
        }
    }

    /// Subscribes to `step.execution.received`.
    pub fn start(&mut self) {
        if self.subscription.is_some() {
            return;
        }
        let inner = self.inner.clone();
        let handler = handler_fn(move |event: Arc<Event>| {
            let inner = inner.clone();
            async move { inner.handle(event).await }
        });
        match self.inner.bus.subscribe_with(
            STEP_RECEIVED,
            herald::SubscribeOptions::owner("herald-worker"),
            handler,
        ) {
            Ok(sub) => self.subscription = Some(sub),
            Err(e) => tracing::error!("cannot subscribe to {STEP_RECEIVED}: {e}"),
        }
    }

    /// Unsubscribes (steps already running finish).
    pub fn stop(&mut self) {
        self.subscription = None;
    }

    /// Whether it is subscribed.
    pub fn is_active(&self) -> bool {
        self.subscription.is_some()
    }

    /// Its counters.
    pub fn counters(&self) -> &SubscriberCounters {
        &self.inner.counters
    }

    /// Its counters, shared (to read while it runs).
    pub fn counters_handle(&self) -> Arc<SubscriberCounters> {
        self.inner.counters.clone()
    }

    /// Its execution (resolve, timeout, isolation, announcements, counters), for a caller that
    /// owns the step itself: the worker calls it directly, no bus round trip in between.
    pub(crate) fn executor(&self) -> Arc<Inner> {
        self.inner.clone()
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Which attempt a step on the bus is, from its metadata's `attempt` (1 when absent).
fn attempt_of(event: &Event) -> u32 {
    event
        .metadata
        .get("attempt")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

impl Inner {
    /// A step from the bus (the standalone subscriber): bounded by its own permits, the
    /// result submitted to its sink with the event.
    async fn handle(&self, event: Arc<Event>) {
        let step = match FfiStepEvent::from_data(&event.data) {
            Ok(step) => step,
            Err(e) => {
                inc(&self.counters.received);
                inc(&self.counters.malformed);
                tracing::warn!("{STEP_RECEIVED} event is not a step, skipped: {e}");
                return;
            }
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let attempt = attempt_of(&event);
        self.process(&step, attempt, |result| {
            self.sink.submit(event.clone(), result)
        })
        .await;
    }

    /// Runs one step (its `attempt`, 1 for the first) and submits its result with
    /// `submit`; announces `step.completion.sent` and publishes the declared domain events
    /// only once the result is stored. The caller bounds how many run at once.
    pub(crate) async fn process<F, Fut>(
        &self,
        step: &FfiStepEvent,
        attempt: u32,
        submit: F,
    ) -> Processed
    where
        F: FnOnce(StepExecutionResult) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Outcome>, BoxError>>,
    {
        inc(&self.counters.received);
        let started = Instant::now();
        self.counters.in_progress.fetch_add(1, Ordering::Relaxed);
        let mut outcome = self.execute(step, attempt).await;
        self.counters.in_progress.fetch_sub(1, Ordering::Relaxed);
        self.counters
            .execution_us
            .record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let declared = std::mem::take(&mut outcome.domain_events);
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut result = if outcome.success {
            StepExecutionResult::success_result(
                step,
                outcome.result.unwrap_or_default(),
                elapsed,
                &self.config.worker_id,
                outcome.metadata,
            )
        } else {
            StepExecutionResult::failure_result(
                step,
                StepError {
                    error_type: outcome.error_type.unwrap_or_else(|| "unknown".into()),
                    message: outcome
                        .error_message
                        .unwrap_or_else(|| "Unknown error".into()),
                    retryable: outcome.retryable,
                    metadata: outcome.metadata,
                },
                elapsed,
                &self.config.worker_id,
            )
        };
        result.metadata.insert("attempt".into(), attempt.into());
        let success = result.success;
        let retryable = result.error.as_ref().is_some_and(|e| e.retryable);
        let failure = result.error.as_ref().map(|e| Failure {
            kind: FailureKind::Error,
            message: format!("{}: {}", e.error_type, e.message),
            requested: None,
        });
        let settled = submit(result.clone()).await;
        match &settled {
            Ok(Some(Outcome::Ack | Outcome::Reject { .. })) => {
                inc(if success {
                    &self.counters.succeeded
                } else {
                    &self.counters.failed
                });
                self.announce(STEP_COMPLETED, result.to_data()).await;
                // Only now, with the result committed, do its domain events go out.
                for declared in declared {
                    if declared.condition.holds(success, retryable) {
                        self.publish_declared(declared, step.correlation_id).await;
                    }
                }
            }
            Ok(Some(Outcome::Retry { .. })) => inc(&self.counters.retried),
            Ok(None) => inc(&self.counters.stale),
            Err(e) => {
                inc(&self.counters.submit_failed);
                tracing::error!(step = %step.step_uuid, "result not stored (the step comes back): {e}");
            }
        }
        Processed {
            result: failure.map_or(Ok(()), Err),
            settled: settled.ok().flatten(),
        }
    }

    /// Resolves and runs the handler; every way it can go wrong is a result.
    async fn execute(&self, step: &FfiStepEvent, attempt: u32) -> StepHandlerResult {
        let name = &step.execution_event.handler_name;
        let handler = match self.registry.resolve(name) {
            Ok(h) => h,
            Err(e @ (ResolveError::NotFound(_) | ResolveError::Construction { .. })) => {
                inc(&self.counters.not_found);
                tracing::warn!("{e}");
                return StepHandlerResult::failure(e.to_string())
                    .error_type("handler_not_found")
                    .retryable(false);
            }
        };
        let context = StepContext::new(step.clone(), attempt);
        let run = herald::isolate(|| async move {
            Ok::<StepHandlerResult, std::convert::Infallible>(handler.call(context).await)
        });
        let (error_type, message) =
            match tokio::time::timeout(self.config.handler_timeout, run).await {
                Ok(Ok(result)) => return result,
                Ok(Err(failure)) => ("handler_error", failure.message),
                Err(_) => (
                    "timeout",
                    format!(
                        "handler {name} still running after {:?}",
                        self.config.handler_timeout
                    ),
                ),
            };
        inc(&self.counters.handler_errors);
        if error_type == "timeout" {
            inc(&self.counters.timeouts);
        }
        tracing::warn!(handler = name.as_str(), step = %step.step_uuid, "{error_type}: {message}");
        let mut data = Map::new();
        data.insert("handler_name".into(), name.as_str().into());
        data.insert("step_uuid".into(), step.step_uuid.to_string().into());
        data.insert("error_type".into(), error_type.into());
        data.insert("message".into(), message.as_str().into());
        self.announce(HANDLER_ERROR, data).await;
        StepHandlerResult::failure(message).error_type(error_type)
    }

    async fn publish_declared(&self, event: DeclaredEvent, correlation_id: uuid::Uuid) {
        let event_type = event.event_type.clone();
        let result = match &self.config.domain_events {
            Some(sink) => {
                sink.clone()
                    .publish_declared(event, Some(correlation_id))
                    .await
            }
            None => {
                tracing::warn!(
                    "domain event {event_type} declared, but no publisher is configured"
                );
                inc(&self.counters.domain_events_failed);
                return;
            }
        };
        match result {
            Ok(()) => inc(&self.counters.domain_events_published),
            Err(e) => {
                inc(&self.counters.domain_events_failed);
                tracing::warn!("domain event {event_type} not published (the step stands): {e}");
            }
        }
    }

    async fn announce(&self, subject: &str, data: Map<String, Value>) {
        let Ok(subject) = Subject::new(subject) else {
            return;
        };
        let event = Event::new(subject)
            .with_data(data)
            .with_source(&self.config.worker_id);
        if let Err(e) = self.bus.publish(event).await {
            tracing::warn!("{e}");
        }
    }
}
