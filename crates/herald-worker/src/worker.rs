//! The worker loop: reads the step queue in batches sized to the free handler slots (one
//! semaphore), overlaps reads with the settles in flight, and hands each step to
//! `step_run.rs`, which owns it from its one parse to its guarded settle; then drains on
//! stop. Also the worker's config, its report and `enqueue_step`. The bus carries seed 000's
//! announcements (`step.execution.received`, `step.completion.sent`, `handler.error`) for
//! observers, not the steps themselves.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::consume::layer::{Middleware, Stack};
use herald::queue::{Queue, QueueError};
use herald::{Bus, Event, RetryPolicy, Subject};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::registry::HandlerRegistry;
use crate::step::FfiStepEvent;
use crate::step_run::{fold, inc, NoSink, QueueSink, StepQueues, StepRun, WorkerCounters};
use crate::subscriber::{
    StepExecutionSubscriber, SubscriberConfig, SubscriberCounters, STEP_RECEIVED,
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
            // A read asks for the free slots; when handlers hold their slots for less time
            // than a read takes, the slots now busy are free again before it returns, so it
            // asks for a whole batch (else reads of fast steps settle at half the slots:
            // each sized by what the previous one left free).
            let free = permits.available_permits();
            let slot_us = self.counters.slot_us.load(Ordering::Relaxed);
            let quick = slot_us > 0 && slot_us < self.counters.read_us.load(Ordering::Relaxed);
            let room = if quick { max } else { free }
                .min(self.config.batch_size)
                .max(1);
            let read = self.store.read_with_poll(
                &self.queues.steps,
                self.config.visibility_timeout,
                room,
                self.config.poll_wait,
            );
            let began = Instant::now();
            let messages = tokio::select! {
                _ = &mut stop => break,
                r = read => r,
            };
            // Only full reads say how long a read takes: steps were waiting, so the first
            // try found them (a poll that waited says how long the queue was empty).
            if matches!(&messages, Ok(m) if m.len() >= room) {
                let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                fold(&self.counters.read_us, took);
            }
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
            let mut messages = messages.into_iter();
            let mut stopped = false;
            while let Some(message) = messages.next() {
                // A whole batch may hold more steps than free slots: wait for one, or stop.
                let permit = tokio::select! {
                    _ = &mut stop => None,
                    p = permits.clone().acquire_owned() => p.ok(),
                };
                let Some(permit) = permit else {
                    self.give_back(std::iter::once(message).chain(messages.by_ref()))
                        .await;
                    stopped = true;
                    break;
                };
                self.counters.pending.fetch_sub(1, Ordering::Relaxed);
                inc(&self.counters.read);
                if message.read_ct > 1 {
                    inc(&self.counters.rereads);
                }
                tasks.spawn(template.clone().run(message, permit));
            }
            if stopped {
                break;
            }
        }
        drain(&mut tasks, self.config.drain_timeout).await;
        self.report()
    }

    /// Makes steps read but not started visible again at once (the worker is stopping), so
    /// that another worker need not wait out their visibility timeout.
    async fn give_back(&self, messages: impl Iterator<Item = herald::queue::Message>) {
        for message in messages {
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
            let back = self
                .store
                .set_vt(&self.queues.steps, message.msg_id, Duration::ZERO)
                .await;
            if let Err(e) = back {
                tracing::warn!(
                    "step {} of {} not given back (it returns after its visibility timeout): {e}",
                    message.msg_id,
                    self.queues.steps
                );
            }
        }
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
