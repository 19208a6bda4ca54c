//! The one consume loop: deliveries -> middleware stack -> isolated handler -> retry policy
//! -> settle, with a bound on handlers in flight, a stop signal, and a bounded drain.
//! JetStream's durable consumer and the durable queues' `QueueSource` run on it; the worker
//! and the runtime's consumers run the same stack and policy in their own read loops.

pub mod layer;
pub mod memory;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use self::layer::{DeliveryContext, Middleware, Stack};
use crate::handler::{Failure, Handler};
use crate::message::event::Event;
use crate::outcome::Outcome;
use crate::retry::RetryPolicy;
use crate::transport::{Delivery, DeliverySource};

/// How a consume loop runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeOptions {
    /// Handlers running at once (default 64; values below 1 are taken as 1).
    pub max_in_flight: usize,
    /// How failures are retried and when they are rejected (default: every failure comes
    /// back after 1 s, unless its handler asked for another delay with
    /// [`RetryAfter`](crate::RetryAfter); no limit on attempts but the source's own).
    pub retry: RetryPolicy,
    /// After the stop signal, how long handlers in flight may take to finish and settle
    /// (default 30 s). Those still running then are aborted, unsettled: their source
    /// delivers them again.
    pub drain_timeout: Duration,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            max_in_flight: 64,
            retry: RetryPolicy::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a consume loop did, one count per delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Handled and acknowledged.
    pub acked: u64,
    /// Failed and settled for a later retry.
    pub retried: u64,
    /// Rejected for good (poison).
    pub rejected: u64,
    /// Handled, but the settle itself failed (the source delivers them again).
    pub settle_failed: u64,
    /// Still running when the drain bound ran out: aborted, unsettled.
    pub abandoned: u64,
    /// Reads from the source that failed (each followed by a short back-off).
    pub source_errors: u64,
}

impl ConsumeReport {
    /// Counts one delivery: the outcome it was settled with, or `None` when the settle
    /// failed.
    fn tally(&mut self, done: Result<Option<Outcome>, tokio::task::JoinError>) {
        match done {
            Ok(Some(Outcome::Ack)) => self.acked += 1,
            Ok(Some(Outcome::Retry { .. })) => self.retried += 1,
            Ok(Some(Outcome::Reject { .. })) => self.rejected += 1,
            Ok(None) => self.settle_failed += 1,
            Err(e) if e.is_cancelled() => self.abandoned += 1,
            Err(e) => {
                // Handlers are isolated, so only a settle implementation could panic here.
                tracing::warn!("consume task failed: {e}");
                self.settle_failed += 1;
            }
        }
    }
}

type FailureHook = Arc<dyn Fn(&Event, &Failure) + Send + Sync>;

/// A consume loop over one [`DeliverySource`]: each delivery runs the handler (isolated: an
/// error or panic is a failure, never a crash), its result becomes an [`Outcome`], and the
/// delivery is settled with it.
///
/// Delivery is at least once: an event whose settle is lost (a crash, a disconnect) comes
/// back, so handlers should be idempotent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use herald::consume::memory::MemorySource;
/// use herald::{sync_handler, Consume, ConsumeOptions, Event, Subject};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let source = MemorySource::new();
/// source.push(Event::new(Subject::new("orders.placed").unwrap()));
/// source.close(); // the loop ends once the source is empty
/// let report = Consume::new(source.clone(), sync_handler(|_: &Event| {}))
///     .run(std::future::pending())
///     .await;
/// assert_eq!(report.acked, 1);
/// # }
/// ```
pub struct Consume<S> {
    source: S,
    handler: Handler,
    options: ConsumeOptions,
    on_failure: Option<FailureHook>,
    stack: Stack,
    origin: Arc<str>,
}

impl<S: DeliverySource> Consume<S> {
    /// A loop running `handler` for each delivery of `source`, with the default options.
    pub fn new(source: S, handler: impl Into<Handler>) -> Self {
        Consume {
            source,
            handler: handler.into(),
            options: ConsumeOptions::default(),
            on_failure: None,
            stack: Stack::new(),
            origin: Arc::from("consume"),
        }
    }

    /// Adds `middleware` around the handler, inside the ones added before.
    pub fn layer(mut self, middleware: impl Middleware) -> Self {
        self.stack.push(middleware);
        self
    }

    /// Sets the whole middleware stack.
    pub fn stack(mut self, stack: Stack) -> Self {
        self.stack = stack;
        self
    }

    /// Names where the deliveries come from, for the middleware's [`DeliveryContext`].
    pub fn origin(mut self, origin: impl Into<Arc<str>>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: ConsumeOptions) -> Self {
        self.options = options;
        self
    }

    /// Calls `hook` for each failed handler call (after it is logged), to count it.
    pub fn on_failure(mut self, hook: impl Fn(&Event, &Failure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Runs until the source ends or `stop` completes, then drains: no new reads, handlers in
    /// flight finish and settle within [`ConsumeOptions::drain_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped, handlers in flight are aborted unsettled, and their source
    /// delivers them again.
    pub async fn run(self, stop: impl Future<Output = ()>) -> ConsumeReport {
        let Consume {
            mut source,
            handler,
            options,
            on_failure,
            stack,
            origin,
        } = self;
        let (stack, options) = (Arc::new(stack), Arc::new(options));
        let limit = Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1)));
        let drain_timeout = options.drain_timeout;
        let mut tasks: JoinSet<Option<Outcome>> = JoinSet::new();
        let mut report = ConsumeReport::default();
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                _ = &mut stop => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                _ = &mut stop => break,
                n = source.next() => n,
            };
            while let Some(done) = tasks.try_join_next() {
                report.tally(done);
            }
            let delivery = match next {
                None => break,
                Some(Err(e)) => {
                    // A failed read (a disconnect, a busy store): log it, and do not spin
                    // while the cause lasts.
                    report.source_errors += 1;
                    tracing::warn!("{e}");
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
                Some(Ok(d)) => d,
            };
            let (handler, on_failure) = (handler.clone(), on_failure.clone());
            let (stack, options, origin) = (stack.clone(), options.clone(), origin.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let event = delivery.event().clone();
                let ctx = DeliveryContext::new(event.clone(), delivery.attempt(), origin);
                // A traced delivery's handler runs in its process span and context.
                let processing = crate::hop::process(&delivery.hop(), &event);
                let result = processing.run(stack.run(&ctx, &handler)).await;
                if let Err(f) = &result {
                    tracing::warn!(
                        subject = event.subject.as_str(),
                        attempt = delivery.attempt(),
                        "{f}"
                    );
                    if let Some(hook) = &on_failure {
                        hook(&event, f);
                    }
                }
                let outcome = options.retry.decide(ctx.attempt, &result);
                stack.settled(&ctx, &outcome);
                match delivery.settle(outcome.clone()).await {
                    Ok(()) => Some(outcome),
                    Err(e) => {
                        tracing::warn!("{e}");
                        None
                    }
                }
            });
        }
        drain(&mut tasks, &mut report, drain_timeout).await;
        report
    }
}

/// Waits up to `within` for the tasks in flight, then aborts the rest.
async fn drain(tasks: &mut JoinSet<Option<Outcome>>, report: &mut ConsumeReport, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => report.tally(done),
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(
                    running = tasks.len(),
                    "drain bound of {within:?} ran out: aborting handlers in flight"
                );
                tasks.abort_all();
                while let Some(done) = tasks.join_next().await {
                    report.tally(done);
                }
                return;
            }
        }
    }
}
