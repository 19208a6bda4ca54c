//! The worker loop: reads the step queue and owns each step from read to settle. The message
//! is parsed once (`StepRun::run`: the body into the envelope, its data into the typed step),
//! the subscriber's execution runs it directly (resolve, timeout, isolation), and the guarded
//! settle stores it with the read count it was read with: the result goes to the completion
//! queue and the step is archived in one transaction. Retryable failures come back after a
//! backoff until `max_retries`, then the step is dead-lettered with its last error (its
//! original body kept); bad input is dead-lettered at once with its reason. The bus carries
//! seed 000's announcements (`step.execution.received`, `step.completion.sent`,
//! `handler.error`) for observers, not the steps themselves.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::consume::layer::{DeliveryContext, LocalFuture, Middleware, Stack, Terminal};
use herald::queue::consume::dead_letter;
use herald::queue::{Message, Queue, QueueError, QueueName, Settled, Settlement};
use herald::{BoxError, BoxFuture, Bus, Event, Failure, Outcome, RetryPolicy, Subject};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::registry::HandlerRegistry;
use crate::step::{FfiStepEvent, StepExecutionResult};
use crate::subscriber::{
    Processed, StepExecutionSubscriber, SubscriberConfig, SubscriberCounters, STEP_COMPLETED,
    STEP_RECEIVED,
};

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Queues are `{namespace}_steps`, `{namespace}_step_results`, `{namespace}_steps_dlq`.
    pub namespace: String,
    /// Written into every result.
    pub worker_id: String,
    /// How long a read step stays hidden from other workers (default 30 s). A handler that
    /// runs longer may see its step taken by another worker; only one result is stored.
    pub visibility_timeout: Duration,
    /// Steps read at a time at most (default 10).
    pub batch_size: usize,
    /// How long one read waits for a first step (default 1 s).
    pub poll_wait: Duration,
    /// Handlers running at once (default 10).
    pub max_concurrent_handlers: usize,
    /// A handler still running after this fails with `timeout` (default 30 s).
    pub handler_timeout: Duration,
    /// The first retry's delay; doubled each attempt, at most 60 s (default 1 s).
    pub retry_backoff: Duration,
    /// On stop, how long steps in flight may take to finish and settle (default 30 s).
    pub drain_timeout: Duration,
    /// Where the domain events handlers declare go (none by default).
    pub domain_events: Option<Arc<dyn crate::events::DomainEventSink>>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("namespace", &self.namespace)
            .field("worker_id", &self.worker_id)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_concurrent_handlers", &self.max_concurrent_handlers)
            .field("handler_timeout", &self.handler_timeout)
            .field("domain_events", &self.domain_events.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    /// The retry policy it stands for: `retry_backoff` doubled per attempt, at most 60 s
    /// (each step's `max_retries` sets its attempts).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::exponential(self.retry_backoff, Duration::from_secs(60))
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            namespace: "default".into(),
            worker_id: format!("herald-worker-{}", std::process::id()),
            visibility_timeout: Duration::from_secs(30),
            batch_size: 10,
            poll_wait: Duration::from_secs(1),
            max_concurrent_handlers: 10,
            handler_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            domain_events: None,
        }
    }
}

/// The queues of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepQueues {
    /// Steps in.
    pub steps: QueueName,
    /// One result per step.
    pub results: QueueName,
    /// Dead letters, kept with their reason.
    pub dead_letters: QueueName,
}

impl StepQueues {
    /// The queues of `namespace`.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`] naming the namespace's queue that is not valid.
    pub fn of(namespace: &str) -> Result<Self, QueueError> {
        Ok(StepQueues {
            steps: QueueName::new(&format!("{namespace}_steps"))?,
            results: QueueName::new(&format!("{namespace}_step_results"))?,
            dead_letters: QueueName::new(&format!("{namespace}_steps_dlq"))?,
        })
    }
}

/// The worker loop's own counters (the subscriber's are beside them in [`WorkerReport`]).
#[derive(Debug, Default)]
pub(crate) struct WorkerCounters {
    /// Step messages read (each read, re-reads included).
    pub(crate) read: AtomicU64,
    /// Messages dead-lettered because they were not a step (not JSON, not an envelope, no
    /// `handler_name`).
    pub(crate) bad_input: AtomicU64,
    /// Steps dead-lettered after `max_retries` retryable failures.
    pub(crate) exhausted: AtomicU64,
    /// Re-reads: a step read again after its vt ran out or after a retry.
    pub(crate) rereads: AtomicU64,
    /// Store failures while reading (each followed by a back-off).
    pub(crate) read_errors: AtomicU64,
    /// Steps read and waiting for a handler slot.
    pub(crate) pending: AtomicU64,
    /// When the worker last read a step (ms since the Unix epoch; 0 = never).
    pub(crate) last_read_ms: AtomicU64,
}

/// A snapshot of what a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    /// Step messages read (re-reads included).
    pub read: u64,
    /// Results stored: success.
    pub succeeded: u64,
    /// Results stored: failure (non-retryable, not found, or retries exhausted).
    pub failed: u64,
    /// Retryable failures sent back for another attempt.
    pub retried: u64,
    /// Stale results refused (the step had been taken by another attempt).
    pub stale: u64,
    /// Bad input dead-lettered.
    pub bad_input: u64,
    /// Steps dead-lettered after their retries ran out.
    pub exhausted: u64,
    /// Handler errors, panics and timeouts.
    pub handler_errors: u64,
    /// Re-reads (an execution that may repeat an earlier one).
    pub rereads: u64,
    /// Declared domain events published after their result was committed.
    pub domain_events_published: u64,
    /// Declared domain events whose publish failed (their steps stand).
    pub domain_events_failed: u64,
}

/// The worker: a step-queue reader, the subscriber, and the guarded settle.
pub struct Worker<Q: Queue> {
    store: Q,
    bus: Bus,
    queues: StepQueues,
    config: WorkerConfig,
    counters: Arc<WorkerCounters>,
    subscriber: StepExecutionSubscriber,
    retry: RetryPolicy,
    stack: Stack,
}

impl<Q: Queue> std::fmt::Debug for Worker<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl<Q: Queue> Worker<Q> {
    /// A worker of `config.namespace` on `store`, running `registry`'s handlers through
    /// `bus`; creates its queues when missing.
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidName`] for a namespace that makes an invalid queue name; store
    /// errors from creating the queues.
    pub async fn new(
        store: Q,
        bus: Bus,
        registry: Arc<HandlerRegistry>,
        config: WorkerConfig,
    ) -> Result<Self, QueueError> {
        let queues = StepQueues::of(&config.namespace)?;
        for q in [&queues.steps, &queues.results, &queues.dead_letters] {
            store.create(q).await?;
        }
        let counters = Arc::new(WorkerCounters::default());
        // The worker calls the subscriber's execution itself; the subscriber is never
        // subscribed, so its sink (which refuses) is never asked.
        let subscriber = StepExecutionSubscriber::new(
            bus.clone(),
            registry,
            Arc::new(NoSink),
            SubscriberConfig {
                domain_events: config.domain_events.clone(),
                worker_id: config.worker_id.clone(),
                handler_timeout: config.handler_timeout,
                max_concurrent_handlers: config.max_concurrent_handlers,
            },
        );
        let retry = config.retry_policy();
        Ok(Worker {
            store,
            bus,
            queues,
            config,
            counters,
            subscriber,
            retry,
            stack: Stack::new(),
        })
    }

    /// Retries failed steps under `policy` (its backoff, jitter and transient rule) rather
    /// than [`WorkerConfig::retry_policy`]; each step's `max_retries` still sets how many
    /// attempts it gets, and a failure its handler marks not retryable is final.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Adds `middleware` around each step's execution and settle (the consume path's
    /// stack, as every engine runs it).
    pub fn layer(mut self, middleware: impl Middleware) -> Self {
        self.stack.push(middleware);
        self
    }

    /// Its queues.
    pub fn queues(&self) -> &StepQueues {
        &self.queues
    }

    /// What it has done so far.
    pub fn report(&self) -> WorkerReport {
        self.progress().report()
    }

    /// A handle that reads the counters while [`Worker::run`] holds the worker.
    pub fn progress(&self) -> Progress {
        Progress {
            worker: self.counters.clone(),
            subscriber: self.subscriber.counters_handle(),
        }
    }
}

/// Reads a running worker's counters (see [`Worker::progress`]).
#[derive(Debug, Clone)]
pub struct Progress {
    worker: Arc<WorkerCounters>,
    subscriber: Arc<SubscriberCounters>,
}

impl Progress {
    /// The subscriber's counters.
    pub fn subscriber_counters(&self) -> &SubscriberCounters {
        &self.subscriber
    }

    /// When a step was last read (ms since the Unix epoch; 0 = never).
    pub fn last_read_ms(&self) -> u64 {
        self.worker.last_read_ms.load(Ordering::Relaxed)
    }

    /// Steps read and not yet started by a handler.
    pub fn pending(&self) -> u64 {
        self.worker.pending.load(Ordering::Relaxed)
    }

    /// What the worker has done so far.
    pub fn report(&self) -> WorkerReport {
        let (w, s): (&WorkerCounters, &SubscriberCounters) = (&self.worker, &self.subscriber);
        WorkerReport {
            read: get(&w.read),
            succeeded: get(&s.succeeded),
            failed: get(&s.failed),
            retried: get(&s.retried),
            stale: get(&s.stale),
            bad_input: get(&w.bad_input),
            exhausted: get(&w.exhausted),
            handler_errors: get(&s.handler_errors),
            rereads: get(&w.rereads),
            domain_events_published: get(&s.domain_events_published),
            domain_events_failed: get(&s.domain_events_failed),
        }
    }
}

impl<Q: Queue> Worker<Q> {
    /// Runs until `stop` completes, then stops reading and lets the steps in flight finish
    /// and settle within [`WorkerConfig::drain_timeout`] (those still running then are left
    /// unsettled: their vt runs out and another worker runs them).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, steps in flight are abandoned unsettled (and run again).
    pub async fn run(&mut self, stop: impl Future<Output = ()>) -> WorkerReport {
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent_handlers.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        tokio::pin!(stop);
        // What every step of this run shares: one sink (the store, the queues, the retry
        // policy, the counters), the middleware, the executor.
        let template = StepRun {
            bus: self.bus.clone(),
            executor: self.subscriber.executor(),
            sink: Arc::new(QueueSink {
                store: self.store.clone(),
                queues: self.queues.clone(),
                retry: self.retry.clone(),
                counters: self.counters.clone(),
            }),
            stack: Arc::new(self.stack.clone()),
            origin: Arc::from(self.queues.steps.as_str()),
        };
        let max = self.config.max_concurrent_handlers.max(1);
        let half = u32::try_from(max / 2).unwrap_or(u32::MAX);
        loop {
            while tasks.try_join_next().is_some() {}
            // A step gives its handler slot back when its handler is done, before its settle
            // commits, so that the next read overlaps the commit. Steps settling stay bounded:
            // at most as many as the handler slots again.
            while tasks.len() >= 4 * max {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tasks.join_next() => {}
                }
            }
            if tasks.len() >= 4 * max {
                break;
            }
            // With most handler slots busy, a read now would fetch a step or two and cost a
            // round trip each: wait a moment (at most 2 ms, the handlers in flight are
            // finishing) for half the slots, so that reads stay batches. A small worker (under
            // 4 slots) reads at once, ahead of its handler.
            if max >= 4 && permits.available_permits() < max / 2 {
                let freed = permits.clone().acquire_many_owned(half);
                tokio::select! {
                    _ = &mut stop => break,
                    p = tokio::time::timeout(Duration::from_millis(2), freed) => drop(p),
                }
            }
            let room = permits
                .available_permits()
                .min(self.config.batch_size)
                .max(1);
            let read = self.store.read_with_poll(
                &self.queues.steps,
                self.config.visibility_timeout,
                room,
                self.config.poll_wait,
            );
            let messages = tokio::select! {
                _ = &mut stop => break,
                r = read => r,
            };
            let messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    inc(&self.counters.read_errors);
                    tracing::warn!("reading {}: {e}", self.queues.steps);
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            self.note_read(messages.len());
            for message in messages {
                let permit = permits.clone().acquire_owned().await;
                self.counters.pending.fetch_sub(1, Ordering::Relaxed);
                let Ok(permit) = permit else {
                    break;
                };
                inc(&self.counters.read);
                if message.read_ct > 1 {
                    inc(&self.counters.rereads);
                }
                tasks.spawn(template.clone().run(message, permit));
            }
        }
        drain(&mut tasks, self.config.drain_timeout).await;
        self.report()
    }

    /// Counts `n` steps just read as pending, and when the last read found any.
    fn note_read(&self, n: usize) {
        if n > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
            self.counters.last_read_ms.store(now, Ordering::Relaxed);
        }
        self.counters.pending.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Lets the steps in flight finish and settle within `within`; aborts the rest (unsettled:
/// their vt runs out and another worker runs them).
async fn drain(tasks: &mut JoinSet<()>, within: Duration) {
    let drained =
        tokio::time::timeout(within, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "{} step(s) still running after the drain timeout: left unsettled",
            tasks.len()
        );
        tasks.abort_all();
    }
}

/// One step message, from its read to its settle.
struct StepRun<Q> {
    bus: Bus,
    executor: Arc<crate::subscriber::Inner>,
    sink: Arc<QueueSink<Q>>,
    stack: Arc<Stack>,
    origin: Arc<str>,
}

impl<Q> Clone for StepRun<Q> {
    fn clone(&self) -> Self {
        StepRun {
            bus: self.bus.clone(),
            executor: self.executor.clone(),
            sink: self.sink.clone(),
            stack: self.stack.clone(),
            origin: self.origin.clone(),
        }
    }
}

impl<Q: Queue> StepRun<Q> {
    /// Runs one step holding `slot`, its handler slot, until its handler is done.
    async fn run(self, message: Message, slot: OwnedSemaphorePermit) {
        let slot = parking_lot::Mutex::new(Some(slot));
        // The one parse: the body into the envelope, its data into the typed step.
        let event = match message.event() {
            Ok(event) => event,
            Err(e) => {
                drop(slot.lock().take());
                return self.sink.bad_input(&message, &e.to_string()).await;
            }
        };
        let step = match FfiStepEvent::from_data(&event.data) {
            Ok(step) => step,
            Err(e) => {
                drop(slot.lock().take());
                return self.sink.bad_input(&message, &e.to_string()).await;
            }
        };
        let attempt = u32::try_from(message.read_ct).unwrap_or(1).max(1);
        let event = Arc::new(event);
        // Seed 000's announcement, for observers on the bus.
        if let Ok(subject) = Subject::new(STEP_RECEIVED) {
            let mut announced = Event::clone(&event);
            announced.subject = subject;
            if let Err(e) = self.bus.publish(announced).await {
                tracing::warn!("{STEP_RECEIVED} not announced: {e}");
            }
        }
        let execution = Execution {
            run: &self,
            message: &message,
            step: &step,
            attempt,
            slot: &slot,
            settled: parking_lot::Mutex::new(None),
        };
        if self.stack.is_empty() {
            // A failure is in the step's result, already settled; nothing more to do here.
            let _ = execution.execute().await;
            return;
        }
        let ctx = DeliveryContext::new(event, attempt, self.origin.clone());
        let _ = self.stack.run(&ctx, &execution).await;
        let settled = execution.settled.lock().take();
        if let Some(outcome) = settled {
            self.stack.settled(&ctx, &outcome);
        }
    }
}

/// A step's execution and settle: the end of the worker's middleware stack.
struct Execution<'a, Q> {
    run: &'a StepRun<Q>,
    message: &'a Message,
    step: &'a FfiStepEvent,
    attempt: u32,
    /// The handler slot, given back as the settle starts.
    slot: &'a parking_lot::Mutex<Option<OwnedSemaphorePermit>>,
    settled: parking_lot::Mutex<Option<Outcome>>,
}

impl<Q: Queue> Execution<'_, Q> {
    async fn execute(&self) -> Result<(), Failure> {
        let (sink, message, step, attempt) =
            (&self.run.sink, self.message, self.step, self.attempt);
        let slot = self.slot;
        let Processed { result, settled } = self
            .run
            .executor
            .process(step, attempt, |result| {
                // The handler is done: its slot goes back before the settle commits.
                drop(slot.lock().take());
                async move { sink.store_result(message, step, attempt, result).await }
            })
            .await;
        *self.settled.lock() = settled;
        result
    }
}

impl<Q: Queue> Terminal for Execution<'_, Q> {
    fn call<'a>(&'a self, _ctx: &'a DeliveryContext) -> LocalFuture<'a, Result<(), Failure>> {
        Box::pin(self.execute())
    }
}

/// The subscriber's sink when the worker runs steps itself: never asked (the subscriber is
/// not subscribed); refuses, should it be.
struct NoSink;

impl crate::subscriber::CompletionSink for NoSink {
    fn submit(
        &self,
        _step: Arc<Event>,
        _result: StepExecutionResult,
    ) -> BoxFuture<Result<Option<Outcome>, BoxError>> {
        Box::pin(async { Err("the worker settles its steps itself".into()) })
    }
}

/// Stores results: the guarded settle of the step with its result (and dead letter).
struct QueueSink<Q> {
    store: Q,
    queues: StepQueues,
    retry: RetryPolicy,
    counters: Arc<WorkerCounters>,
}

impl<Q: Queue> QueueSink<Q> {
    async fn bad_input(&self, message: &Message, reason: &str) {
        inc(&self.counters.bad_input);
        tracing::warn!(
            queue = self.queues.steps.as_str(),
            msg_id = message.msg_id,
            "not a step, dead-lettered: {reason}"
        );
        let reject = Outcome::Reject {
            reason: reason.to_owned(),
        };
        let settlement = Settlement::for_outcome(&reject, &self.queues.dead_letters, |reason| {
            dead_letter(&self.queues.steps, message, reason)
        });
        if let Err(e) = self
            .store
            .settle(
                &self.queues.steps,
                message.msg_id,
                message.read_ct,
                settlement,
            )
            .await
        {
            tracing::warn!("dead letter not stored (the message comes back): {e}");
        }
    }

    /// How a step's attempt ends under the retry policy: success, or a failure its handler
    /// marks not retryable, is final (`Ack`: the result is stored); a retryable failure comes
    /// back while the step's `max_retries` allow (`Retry`), then is final and dead-lettered
    /// (`Reject`).
    fn outcome(&self, ffi: &FfiStepEvent, attempt: u32, result: &StepExecutionResult) -> Outcome {
        let Some(error) = result.error.as_ref().filter(|_| !result.success) else {
            return Outcome::Ack;
        };
        if !error.retryable {
            return Outcome::Ack;
        }
        let failure = Err(Failure {
            kind: herald::FailureKind::Error,
            message: format!("{}: {}", error.error_type, error.message),
            requested: None,
        });
        let attempts = ffi.execution_event.max_retries.saturating_add(1);
        match self.retry.attempts_limit() {
            Some(limit) if limit == attempts => self.retry.decide(attempt, &failure),
            _ => self
                .retry
                .clone()
                .max_attempts(attempts)
                .decide(attempt, &failure),
        }
    }

    /// The guarded settle of a step with its result, at the read count it was read with:
    /// the outcome it was settled with, or `None` when the guard refused it (stale).
    async fn store_result(
        &self,
        message: &Message,
        ffi: &FfiStepEvent,
        attempt: u32,
        result: StepExecutionResult,
    ) -> Result<Option<Outcome>, BoxError> {
        let outcome = self.outcome(ffi, attempt, &result);
        let mut settlement =
            Settlement::for_outcome(&outcome, &self.queues.dead_letters, |reason| {
                dead_letter(&self.queues.steps, message, reason)
            });
        if !matches!(outcome, Outcome::Retry { .. }) {
            // A final result (success or failure) goes to the completion queue, in the same
            // transaction as the archive (and the dead letter).
            let envelope = Event::new(Subject::new(STEP_COMPLETED)?)
                .with_data(result.to_data())
                .with_source(&result.worker_id)
                .with_correlation_id(result.correlation_id.to_string());
            settlement = settlement.and_send(self.queues.results.clone(), envelope);
        }
        match self
            .store
            .settle(
                &self.queues.steps,
                message.msg_id,
                message.read_ct,
                settlement,
            )
            .await?
        {
            Settled::Applied { .. } => {
                if matches!(outcome, Outcome::Reject { .. }) {
                    inc(&self.counters.exhausted);
                }
                Ok(Some(outcome))
            }
            Settled::Stale => Ok(None),
        }
    }
}

/// Enqueues a step on `namespace`'s step queue; returns its msg_id once committed.
///
/// # Errors
///
/// As [`Queue::send`]; [`QueueError::InvalidName`] for a bad namespace.
pub async fn enqueue_step<Q: Queue>(
    store: &Q,
    namespace: &str,
    step: &FfiStepEvent,
) -> Result<i64, QueueError> {
    let queues = StepQueues::of(namespace)?;
    store.create(&queues.steps).await?;
    store
        .send(&queues.steps, &step_event(step), Duration::ZERO)
        .await
}

/// The envelope of a step: `step.execution.received` with the step as `data`.
pub fn step_event(step: &FfiStepEvent) -> Event {
    let subject = Subject::new(STEP_RECEIVED).unwrap_or_else(|_| unreachable!());
    Event::new(subject)
        .with_data(step.to_data())
        .with_source("herald")
        .with_correlation_id(step.correlation_id.to_string())
}
