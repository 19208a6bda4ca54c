//! One step from its read to its settle: the one parse (body -> envelope -> typed step), the
//! announcement on the bus, the middleware stack around the subscriber's execution, and the
//! guarded settle of its outcome (`QueueSink`: result, retry or dead letter, at the read
//! count it was read with). Also the namespace's queues and the loop's counters, which the
//! worker loop (`worker.rs`) reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald::consume::layer::{DeliveryContext, LocalFuture, Stack, Terminal};
use herald::queue::consume::dead_letter;
use herald::queue::{Message, Queue, QueueError, QueueName, Settled, Settlement};
use herald::{BoxError, BoxFuture, Bus, Event, Failure, Outcome, RetryPolicy, Subject};
use tokio::sync::OwnedSemaphorePermit;

use crate::step::{FfiStepEvent, StepExecutionResult};
use crate::subscriber::{Processed, STEP_COMPLETED, STEP_RECEIVED};

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
    /// How long a step holds its handler slot, a moving average (µs; 0 = none yet).
    pub(crate) slot_us: AtomicU64,
    /// How long a full read takes, a moving average (µs; 0 = none yet).
    pub(crate) read_us: AtomicU64,
}

/// Folds `sample` into the moving average `avg` (weight 1/8; the first sample sets it).
pub(crate) fn fold(avg: &AtomicU64, sample: u64) {
    let old = avg.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        old.saturating_mul(7).saturating_add(sample) / 8
    };
    avg.store(new.max(1), Ordering::Relaxed);
}

/// A step's handler slot: given back once (when its handler is done, or when the step ends),
/// and how long it was held goes into the counters' average.
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    since: std::time::Instant,
    counters: Arc<WorkerCounters>,
}

impl Slot {
    fn release(&mut self) {
        if self.permit.take().is_some() {
            let held = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
            fold(&self.counters.slot_us, held);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One step message, from its read to its settle.
pub(crate) struct StepRun<Q> {
    pub(crate) bus: Bus,
    pub(crate) executor: Arc<crate::subscriber::Inner>,
    pub(crate) sink: Arc<QueueSink<Q>>,
    pub(crate) stack: Arc<Stack>,
    pub(crate) origin: Arc<str>,
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
    pub(crate) async fn run(self, message: Message, slot: OwnedSemaphorePermit) {
        let slot = parking_lot::Mutex::new(Slot {
            permit: Some(slot),
            since: std::time::Instant::now(),
            counters: self.sink.counters.clone(),
        });
        // The one parse: the body into the envelope, its data into the typed step.
        let event = match message.event() {
            Ok(event) => event,
            Err(e) => {
                slot.lock().release();
                return self.sink.bad_input(&message, &e.to_string()).await;
            }
        };
        let step = match FfiStepEvent::from_data(&event.data) {
            Ok(step) => step,
            Err(e) => {
                slot.lock().release();
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
        // The handler runs in the step's process span: what it publishes continues its
        // trace (a retry starts a new trace linked to the step's).
        let processing = herald::hop::process(
            &herald::hop::Hop {
                system: self.sink.store.system(),
                destination: self.sink.queues.steps.as_str(),
                message_id: herald::hop::MessageId::Number(message.msg_id),
                attempt,
            },
            &event,
        );
        if self.stack.is_empty() {
            // A failure is in the step's result, already settled; nothing more to do here.
            let _ = processing.run(execution.execute()).await;
            return;
        }
        let ctx = DeliveryContext::new(event, attempt, self.origin.clone());
        let _ = processing.run(self.stack.run(&ctx, &execution)).await;
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
    slot: &'a parking_lot::Mutex<Slot>,
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
                slot.lock().release();
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
pub(crate) struct NoSink;

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
pub(crate) struct QueueSink<Q> {
    pub(crate) store: Q,
    pub(crate) queues: StepQueues,
    pub(crate) retry: RetryPolicy,
    pub(crate) counters: Arc<WorkerCounters>,
}

impl<Q: Queue> QueueSink<Q> {
    /// The guarded settle of `message` on the step queue, at the read count it was read with.
    async fn settle(
        &self,
        message: &Message,
        settlement: Settlement,
    ) -> Result<Settled, QueueError> {
        self.store
            .settle(
                &self.queues.steps,
                message.msg_id,
                message.read_ct,
                settlement,
            )
            .await
    }

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
        if let Err(e) = self.settle(message, settlement).await {
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
        let mut span = tracing::Span::none();
        if !matches!(outcome, Outcome::Retry { .. }) {
            // A final result (success or failure) goes to the completion queue, in the same
            // transaction as the archive (and the dead letter).
            let mut envelope = Event::new(Subject::new(STEP_COMPLETED)?)
                .with_data(result.to_data())
                .with_source(&result.worker_id)
                .with_correlation_id(result.correlation_id.to_string());
            // The result continues the step's trace, in a publish span that ends with the
            // settle's commit.
            span = herald::hop::publish(
                &herald::hop::Hop {
                    system: self.store.system(),
                    destination: self.queues.results.as_str(),
                    message_id: herald::hop::MessageId::None,
                    attempt: 0,
                },
                &mut envelope,
            );
            settlement = settlement.and_send(self.queues.results.clone(), envelope);
        }
        let settled = self.settle(message, settlement).await?;
        drop(span);
        match settled {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_average_starts_at_its_first_sample_and_moves_an_eighth() {
        let avg = AtomicU64::new(0);
        fold(&avg, 800);
        assert_eq!(avg.load(Ordering::Relaxed), 800);
        fold(&avg, 0);
        assert_eq!(avg.load(Ordering::Relaxed), 700);
        for _ in 0..200 {
            fold(&avg, 16);
        }
        assert_eq!(avg.load(Ordering::Relaxed), 16);
    }
}
