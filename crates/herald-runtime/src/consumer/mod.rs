//! `EventProcessor` and `EventSubscriptionConsumer`: read each source from its checkpoint,
//! process one event at a time through the consume path's middleware and the core's
//! `RetryPolicy` (the `ErrorHandler` maps onto it, applied once per event), dead-letter with
//! the core's builder, checkpoint every N events or T and on stop, fenced by epoch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::consume::layer::{DeliveryContext, LocalFuture, Middleware, Stack, Terminal};
use herald::dead_letter::{DeadLetter, Origin};
use herald::store::{EventStore, StoreError, StoredEvent, StreamName};
use herald::{BoxError, BoxFuture, Failure, Outcome, RetryPolicy};
use parking_lot::Mutex;

use crate::broker::{Assignment, EventSubscriber};

mod replay;

/// Processes one event at a time (seed 003's `EventProcessor`).
pub trait EventProcessor: Send + Sync + 'static {
    /// Processes `event`. An error stops the consumer (error handlers are not built yet);
    /// the event's checkpoint is not advanced, so it is processed again on the next run.
    fn process(&self, event: StoredEvent) -> BoxFuture<Result<(), BoxError>>;
}

impl<F, Fut> EventProcessor for F
where
    F: Fn(StoredEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn process(&self, event: StoredEvent) -> BoxFuture<Result<(), BoxError>> {
        Box::pin(self(event))
    }
}

/// What a consumer does with an event its processor fails on (seed 003's `ErrorHandler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorHandler {
    /// Skip it: count it and dead-letter it (stream `deadletter-{consumer}.{source}`, with
    /// the error in `metadata.dead_letter`), and go on. The default.
    Continue,
    /// Try it again up to `max` more times, `backoff` apart (doubling); then as `Continue`.
    Retry {
        /// Further attempts.
        max: u32,
        /// The first delay.
        backoff: Duration,
    },
    /// Stop the consumer and report the error; the event comes back on the next run.
    Raise,
    /// As `Raise`, and ask the process to exit with `code` (the service manager stops
    /// everything; `herald node` exits with it).
    Exit {
        /// The exit code.
        code: i32,
    },
}

impl ErrorHandler {
    /// The retry policy it stands for: `Retry` is `max + 1` attempts, `backoff` doubling;
    /// the others make one attempt.
    pub fn retry_policy(&self) -> RetryPolicy {
        match *self {
            ErrorHandler::Retry { max, backoff } => {
                RetryPolicy::exponential(backoff, Duration::MAX).max_attempts(max.saturating_add(1))
            }
            _ => RetryPolicy::never(),
        }
    }

    /// Whether a rejected event stops the consumer (rather than being dead-lettered).
    fn stops(&self) -> bool {
        matches!(self, ErrorHandler::Raise | ErrorHandler::Exit { .. })
    }
}

/// The category dead letters are appended to.
pub const DEAD_LETTER_CATEGORY: &str = "deadletter";

/// How a consumer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// What to do when the processor fails (default [`ErrorHandler::Continue`]).
    pub error_handler: ErrorHandler,
    /// Checkpoint after this many events (default 100).
    pub checkpoint_every: u64,
    /// ... or after this long since the last checkpoint (default 1 s).
    pub checkpoint_interval: Duration,
    /// Events read per page (default 100).
    pub batch: usize,
    /// The epoch of this consumer's owner; checkpoint writes carry it (default 1).
    pub epoch: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            error_handler: ErrorHandler::Continue,
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(1),
            batch: 100,
            epoch: 1,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Events consumed (the skipped ones included).
    pub processed: u64,
    /// Checkpoints saved.
    pub checkpoints: u64,
    /// Events skipped and dead-lettered by the error handler.
    pub skipped: u64,
    /// Extra attempts made by [`ErrorHandler::Retry`].
    pub retried: u64,
    /// Sources given up because a newer owner's epoch refused a checkpoint.
    pub fenced: u64,
    /// Dead letters an operator replayed (`herald dlq replay`) that were processed again.
    pub replayed: u64,
}

impl ConsumerStats {
    fn add(&mut self, other: ConsumerStats) {
        self.processed += other.processed;
        self.checkpoints += other.checkpoints;
        self.skipped += other.skipped;
        self.retried += other.retried;
        self.fenced += other.fenced;
        self.replayed += other.replayed;
    }
}

/// Something that processes what its sources hold now and returns (seed 003's
/// `EventConsumer`): what `ErrorHandlingService` and `PollingService` run.
pub trait EventConsumer: Send + Sync + 'static {
    /// Its name.
    fn name(&self) -> String;

    /// One pass over its sources.
    fn consume_once(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<ConsumerStats, ConsumerError>> + Send + '_>>;
}

/// Why a consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A source is not a valid category.
    #[error(transparent)]
    Source(StoreError),
    /// The processor failed on an event (its checkpoint was not advanced past it).
    #[error("{consumer} failed on {stream} at position {position}")]
    Processor {
        /// The consumer.
        consumer: String,
        /// The event's stream.
        stream: String,
        /// Its stream position.
        position: i64,
        /// The processor's error.
        #[source]
        source: BoxError,
        /// The exit code an [`ErrorHandler::Exit`] asks for.
        exit_code: Option<i32>,
    },
    /// A newer owner holds the source: this consumer's checkpoint was refused.
    #[error("{0}")]
    Fenced(StoreError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Seed 003's `EventSubscriptionConsumer`: reads its sources (categories) from their
/// checkpoints through `processor`.
pub struct EventSubscriptionConsumer<S> {
    store: S,
    name: String,
    sources: Vec<String>,
    processor: Arc<dyn EventProcessor>,
    settings: ConsumerSettings,
    /// `None` until a broker assigns: then every source at `settings.epoch`, unbounded.
    assignment: Mutex<Option<Assignment>>,
    retry: RetryPolicy,
    stack: Stack,
}

impl<S> std::fmt::Debug for EventSubscriptionConsumer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSubscriptionConsumer")
            .field("name", &self.name)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

fn store_error(e: StoreError) -> ConsumerError {
    match e {
        e @ StoreError::StaleEpoch { .. } => ConsumerError::Fenced(e),
        e => ConsumerError::Store(e),
    }
}

impl<S: EventStore> EventSubscriptionConsumer<S> {
    /// A consumer named `name` (its checkpoints are kept under it) of `sources`.
    ///
    /// # Errors
    ///
    /// [`ConsumerError::Source`] naming a source that is not a valid category.
    pub fn new(
        store: S,
        name: &str,
        sources: &[&str],
        processor: impl EventProcessor,
        settings: ConsumerSettings,
    ) -> Result<Self, ConsumerError> {
        for s in sources {
            StreamName::category_name(s).map_err(ConsumerError::Source)?;
        }
        Ok(EventSubscriptionConsumer {
            store,
            name: name.to_owned(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            processor: Arc::new(processor),
            retry: settings.error_handler.retry_policy(),
            settings,
            assignment: Mutex::new(None),
            stack: Stack::new(),
        })
    }

    /// Retries failed events under `policy` instead of the one its error handler stands for
    /// (the handler still says whether a rejected event is dead-lettered or stops it).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Adds `middleware` around the processor (events whose body is not an envelope skip
    /// the stack).
    pub fn layer(mut self, middleware: impl Middleware) -> Self {
        self.stack.push(middleware);
        self
    }

    /// Processes everything its sources hold now, from their checkpoints, checkpointing as it
    /// goes and at the end; then returns.
    ///
    /// # Errors
    ///
    /// [`ConsumerError`]: a processor failure (its source's checkpoint stays at the last
    /// event before it), fencing, or a store failure.
    pub async fn consume_all(&self) -> Result<ConsumerStats, ConsumerError> {
        let mut stats = ConsumerStats::default();
        for (source, epoch) in self.held() {
            match self.consume_source(&source, epoch, &mut stats).await {
                // A newer owner has the source: give it up and go on with the others.
                Err(ConsumerError::Fenced(e)) if self.assignment.lock().is_some() => {
                    tracing::warn!(
                        consumer = self.name.as_str(),
                        source = source.as_str(),
                        "gave the source up: {e}"
                    );
                    if let Some(a) = self.assignment.lock().as_mut() {
                        a.sources.retain(|(s, _)| *s != source);
                    }
                    stats.fenced += 1;
                }
                other => other?,
            }
        }
        Ok(stats)
    }

    /// The sources to process now, with their epochs.
    fn held(&self) -> Vec<(String, u64)> {
        match &*self.assignment.lock() {
            None => self
                .sources
                .iter()
                .map(|s| (s.clone(), self.settings.epoch))
                .collect(),
            Some(a) if a.valid_until.is_some_and(|t| Instant::now() >= t) => Vec::new(),
            Some(a) => a.sources.clone(),
        }
    }

    /// Whether `source` is still held at `epoch`.
    fn holds(&self, source: &str, epoch: u64) -> bool {
        self.assignment
            .lock()
            .as_ref()
            .is_none_or(|a| a.holds(source, epoch))
    }

    /// Its name (the group its checkpoints are kept under).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs [`EventSubscriptionConsumer::consume_all`] every `poll_interval` until `stop`
    /// completes; a stop lets the pass in progress finish (and checkpoint).
    ///
    /// # Errors
    ///
    /// As [`EventSubscriptionConsumer::consume_all`].
    pub async fn run(
        &self,
        poll_interval: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<ConsumerStats, ConsumerError> {
        tokio::pin!(stop);
        let mut total = ConsumerStats::default();
        loop {
            total.add(self.consume_all().await?);
            tokio::select! {
                _ = &mut stop => return Ok(total),
                _ = tokio::time::sleep(poll_interval) => {}
            }
        }
    }

    async fn consume_source(
        &self,
        source: &str,
        epoch: u64,
        stats: &mut ConsumerStats,
    ) -> Result<(), ConsumerError> {
        let s = &self.settings;
        let checkpoint = self
            .store
            .checkpoint(&self.name, source)
            .await
            .map_err(store_error)?;
        let mut last = checkpoint.map_or(0, |(p, _)| p);
        let (mut since, mut at) = (0u64, Instant::now());
        let mut saved = last;
        loop {
            let page = self
                .store
                .read_category(source, last + 1, s.batch)
                .await
                .map_err(store_error)?;
            if page.is_empty() {
                break;
            }
            for event in page {
                if !self.holds(source, epoch) {
                    // Withdrawn or expired: stop here; whoever holds it now goes on from the
                    // last checkpoint (this one's would be refused).
                    return Ok(());
                }
                let (position, stream, global) =
                    (event.position, event.stream.clone(), event.global_position);
                if let Err(source_error) = self.handle(source, event, false, stats).await {
                    if saved != last {
                        self.save(source, last, epoch, stats).await?;
                    }
                    let exit_code = match self.settings.error_handler {
                        ErrorHandler::Exit { code } => Some(code),
                        _ => None,
                    };
                    return Err(ConsumerError::Processor {
                        consumer: self.name.clone(),
                        stream,
                        position,
                        source: source_error,
                        exit_code,
                    });
                }
                last = global;
                stats.processed += 1;
                since += 1;
                if since >= s.checkpoint_every || at.elapsed() >= s.checkpoint_interval {
                    self.save(source, last, epoch, stats).await?;
                    saved = last;
                    (since, at) = (0, Instant::now());
                }
            }
        }
        if saved != last || (checkpoint.is_none() && last > 0) {
            self.save(source, last, epoch, stats).await?;
        }
        self.consume_replays(source, epoch, stats).await
    }

    /// Processes one event under the retry policy; `Err` only when the consumer must stop.
    /// A rejected event (a `Reject`, a permanent failure, attempts run out) is dead-lettered
    /// and skipped, unless the error handler raises.
    async fn handle(
        &self,
        source: &str,
        event: StoredEvent,
        replayed: bool,
        stats: &mut ConsumerStats,
    ) -> Result<(), BoxError> {
        let origin: Arc<str> = Arc::from(format!("{}.{source}", self.name));
        // Parsed once, for the middleware; a body that is not an envelope skips the stack.
        let envelope = event.event().ok().map(Arc::new);
        // The processor runs in the event's process span: what it publishes continues its
        // trace. A retry, and a replayed dead letter, start a new trace linked to it.
        let traced = match (&envelope, replayed) {
            (Some(e), true) => Some(herald::hop::replayed(herald::Event::clone(e))),
            _ => None,
        };
        let traced = traced.as_ref().or(envelope.as_deref());
        let mut attempt = 1u32;
        loop {
            let run = Process {
                processor: self.processor.as_ref(),
                event: &event,
            };
            let processing = traced.map_or_else(herald::hop::Processing::none, |e| {
                let hop = herald::hop::Hop {
                    system: "herald",
                    destination: event.stream.as_str(),
                    message_id: herald::hop::MessageId::Number(event.global_position),
                    attempt,
                };
                herald::hop::process(&hop, e)
            });
            let (result, ctx) = match (&envelope, self.stack.is_empty()) {
                (Some(e), false) => {
                    let ctx = DeliveryContext::new(e.clone(), attempt, origin.clone());
                    let result = processing.run(self.stack.run(&ctx, &run)).await;
                    (result, Some(ctx))
                }
                _ => (processing.run(run.process()).await, None),
            };
            let outcome = self.retry.decide(attempt, &result);
            if let Some(ctx) = &ctx {
                self.stack.settled(ctx, &outcome);
            }
            match outcome {
                Outcome::Ack => return Ok(()),
                Outcome::Retry { after } => {
                    stats.retried += 1;
                    attempt += 1;
                    tokio::time::sleep(after).await;
                }
                Outcome::Reject { reason } => {
                    if self.settings.error_handler.stops() {
                        return Err(reason.into());
                    }
                    tracing::warn!(
                        consumer = self.name.as_str(),
                        stream = event.stream.as_str(),
                        position = event.position,
                        "skipped and dead-lettered: {reason}"
                    );
                    self.dead_letter(source, &event, &reason, attempt)
                        .await
                        .map_err(|e| -> BoxError { Box::new(e) })?;
                    stats.skipped += 1;
                    return Ok(());
                }
            }
        }
    }

    /// Appends the core's dead letter of `event` to `deadletter-{consumer}.{source}`.
    async fn dead_letter(
        &self,
        source: &str,
        event: &StoredEvent,
        reason: &str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let origin = Origin::Stream {
            consumer: self.name.clone(),
            source: source.to_owned(),
            stream: event.stream.clone(),
            position: event.position,
            global_position: event.global_position,
        };
        let letter = DeadLetter::new(origin, event.body.clone(), reason)
            .attempts(attempts)
            .to_event();
        let stream = StreamName::new(&dead_letter_stream(&self.name, source))?;
        self.store
            .append(&stream, &[letter], herald::store::WriteCondition::Any)
            .await
            .map(drop)
    }

    async fn save(
        &self,
        source: &str,
        position: i64,
        epoch: u64,
        stats: &mut ConsumerStats,
    ) -> Result<(), ConsumerError> {
        self.store
            .save_checkpoint(&self.name, source, position, epoch)
            .await
            .map_err(store_error)?;
        stats.checkpoints += 1;
        Ok(())
    }
}

/// The stream a consumer's dead letters of `source` go to: `deadletter-{consumer}.{source}`,
/// any character a stream id does not take written as `_`.
pub fn dead_letter_stream(consumer: &str, source: &str) -> String {
    let id: String = format!("{consumer}.{source}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{DEAD_LETTER_CATEGORY}-{id}")
}

/// The processor's call on one event: the end of the consume path's stack.
struct Process<'p> {
    processor: &'p dyn EventProcessor,
    event: &'p StoredEvent,
}

impl Process<'_> {
    async fn process(&self) -> Result<(), Failure> {
        self.processor
            .process(self.event.clone())
            .await
            .map_err(Failure::from_error)
    }
}

impl Terminal for Process<'_> {
    fn call<'a>(&'a self, _ctx: &'a DeliveryContext) -> LocalFuture<'a, Result<(), Failure>> {
        Box::pin(self.process())
    }
}

impl<S: EventStore> EventSubscriber for EventSubscriptionConsumer<S> {
    fn group(&self) -> String {
        self.name.clone()
    }

    fn sources(&self) -> Vec<String> {
        self.sources.clone()
    }

    fn assign(&self, assignment: Assignment) {
        *self.assignment.lock() = Some(assignment);
    }

    fn assignment(&self) -> Assignment {
        self.assignment
            .lock()
            .clone()
            .unwrap_or_else(|| Assignment {
                sources: self
                    .sources
                    .iter()
                    .map(|s| (s.clone(), self.settings.epoch))
                    .collect(),
                valid_until: None,
            })
    }
}

impl<S: EventStore> EventConsumer for EventSubscriptionConsumer<S> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn consume_once(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<ConsumerStats, ConsumerError>> + Send + '_>> {
        Box::pin(self.consume_all())
    }
}
