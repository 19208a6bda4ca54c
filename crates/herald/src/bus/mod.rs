//! The in-process bus: stages publish -> route -> dispatch -> handler wired together behind
//! a cheap, cloneable handle.
//!
//! # Semantics
//!
//! - [`Bus::publish`] returns after every matching handler has run, with a
//!   [`DispatchReport`]. Handlers of one event run one after another: all `critical`
//!   subscriptions first, then `high`, `normal`, `low`; equal priorities in subscription order
//!   (one global order, whatever the patterns). A handler subscribed twice runs twice.
//! - [`Bus::emit`] is fire-and-forget through a bounded queue drained by one dispatcher task,
//!   `critical` events first, equal priorities in emit order. A full queue refuses the event
//!   with [`EmitError::Full`] (the event comes back) and counts it: nothing is dropped silently.
//! - A handler's error **or panic** is caught, counted, logged with owner and subject, and
//!   reported; the other handlers, the publisher and later publishes go on. No lock is held
//!   while a handler runs, and the locks Herald uses cannot be poisoned.
//! - A publish made by a handler runs one level deeper. The outermost publish is depth 1; a
//!   publish beyond the maximum depth (default 16) is refused with
//!   [`PublishError::DepthExceeded`] and counted. An event emitted by a handler carries its
//!   depth through the queue, so emit loops are stopped too. (A handler that spawns a new task
//!   to publish starts a fresh chain: depth is tracked per task.)
//! - A publish in progress keeps the handler list it started with: (un)subscribing from a
//!   handler takes effect from the next publish.
//! - A stopped bus refuses `publish` and `emit` with a typed error and counts the refusal.

pub(crate) mod history;
mod queue;
pub(crate) mod stats;
pub(crate) mod subscription;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::dispatch::{self, DispatchReport};
use crate::handler::Handler;
use crate::message::event::Event;
use crate::message::subject::{IntoPattern, Pattern, SubjectError};
use crate::route::{Entry, Routes};
use history::History;
use queue::Queue;
use stats::{BusStats, Counters};
use subscription::{SubscribeOptions, Subscription, SubscriptionId, SubscriptionInfo};

tokio::task_local! {
    static DEPTH: u32;
    /// Set on the dispatcher task, which must never wait for room in its own queue.
    static ON_DISPATCHER: ();
}

/// Why a publish was refused. Nothing was dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The bus is stopped.
    #[error("bus is stopped: publish to {subject} refused")]
    Stopped {
        /// The refused event's subject.
        subject: String,
    },
    /// The publish would run deeper than the maximum dispatch depth (a publish loop).
    #[error("dispatch depth {depth} exceeds the maximum {max}: publish to {subject} refused (a handler publishing in a loop?)")]
    DepthExceeded {
        /// The depth this publish would have run at.
        depth: u32,
        /// The configured maximum.
        max: u32,
        /// The refused event's subject.
        subject: String,
    },
}

/// Why an emit was refused. The event comes back inside the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The queue holds `capacity` events already.
    #[error("emit queue full ({capacity} events): event on {} refused", .event.subject)]
    Full {
        /// The refused event.
        event: Box<Event>,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The bus is stopped.
    #[error("bus is stopped: emit on {} refused", .event.subject)]
    Stopped {
        /// The refused event.
        event: Box<Event>,
    },
    /// The emit was made beyond the maximum dispatch depth.
    #[error("dispatch depth {depth} exceeds the maximum {max}: emit on {} refused", .event.subject)]
    DepthExceeded {
        /// The refused event.
        event: Box<Event>,
        /// The depth it would have run at.
        depth: u32,
        /// The maximum.
        max: u32,
    },
    /// `emit` was called outside a Tokio runtime, so no dispatcher can run.
    #[error("emit needs a Tokio runtime for its dispatcher task: event on {} refused", .event.subject)]
    NoRuntime {
        /// The refused event.
        event: Box<Event>,
    },
}

impl EmitError {
    /// Gives back the refused event.
    pub fn into_event(self) -> Event {
        match self {
            EmitError::Full { event, .. }
            | EmitError::Stopped { event }
            | EmitError::DepthExceeded { event, .. }
            | EmitError::NoRuntime { event } => *event,
        }
    }
}

/// Settings for a new bus.
#[derive(Debug, Clone)]
pub struct BusBuilder {
    history: usize,
    max_depth: u32,
    queue_capacity: usize,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            history: 100,
            max_depth: 16,
            queue_capacity: 10_000,
        }
    }
}

impl BusBuilder {
    /// How many events the history ring keeps (default 100; 0 keeps none).
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// The maximum dispatch depth (default 16; values below 1 are taken as 1).
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// The emit queue's capacity (default 10,000; values below 1 are taken as 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Builds a running bus.
    pub fn build(self) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                routes: Routes::default(),
                history: History::new(self.history),
                counters: Counters::default(),
                running: AtomicBool::new(true),
                max_depth: self.max_depth,
                queue: Queue::new(self.queue_capacity),
                dispatcher: Mutex::new(()),
                next_id: AtomicU64::new(1),
            }),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) routes: Routes,
    history: History,
    counters: Counters,
    running: AtomicBool,
    max_depth: u32,
    queue: Arc<Queue>,
    /// Serialises starting the dispatcher task.
    dispatcher: Mutex<()>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue.ready.notify_one();
    }
}

/// The in-process event bus. `Send + Sync`, and cheap to clone: clones share one bus.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use herald::{handler_fn, sync_handler, Bus, Event, Subject};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bus = Bus::new();
/// let _all = bus.subscribe(">", sync_handler(|e: &Event| println!("saw {}", e.subject))).unwrap();
/// let _trivia = bus
///     .subscribe("trivia.*", handler_fn(|e: Arc<Event>| async move {
///         println!("trivia event {}", e.event_type);
///     }))
///     .unwrap();
/// let report = bus.publish(Event::new(Subject::new("trivia.started").unwrap())).await.unwrap();
/// assert_eq!(report.handlers_run, 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("stats", &self.stats()).finish()
    }
}

impl Bus {
    /// A running bus with the default settings (history 100, depth 16, queue 10,000).
    pub fn new() -> Bus {
        BusBuilder::default().build()
    }

    /// Settings for a new bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// Subscribes `handler` to `pattern` as owner `anonymous` with normal priority.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] when the pattern is malformed.
    pub fn subscribe<P>(
        &self,
        pattern: P,
        handler: impl Into<Handler>,
    ) -> Result<Subscription, SubjectError>
    where
        P: IntoPattern,
    {
        self.subscribe_with(pattern, SubscribeOptions::default(), handler)
    }

    /// Subscribes with an owner and a priority.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] when the pattern is malformed.
    pub fn subscribe_with<P>(
        &self,
        pattern: P,
        options: SubscribeOptions,
        handler: impl Into<Handler>,
    ) -> Result<Subscription, SubjectError>
    where
        P: IntoPattern,
    {
        let pattern = pattern.into_pattern()?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.routes.insert(Entry {
            id,
            pattern,
            owner: options.owner,
            priority: options.priority,
            handler: handler.into(),
        });
        Ok(Subscription {
            id: SubscriptionId(id),
            bus: Arc::downgrade(&self.inner),
            detached: false,
        })
    }

    /// Removes `owner`'s subscriptions made with exactly `pattern` (as written); returns how
    /// many. An unknown pair is a no-op.
    pub fn unsubscribe(&self, pattern: &str, owner: &str) -> usize {
        self.inner
            .routes
            .remove_where(|e| e.pattern.as_str() == pattern && &*e.owner == owner)
    }

    /// Removes one subscription by id; returns whether it existed.
    pub fn unsubscribe_id(&self, id: SubscriptionId) -> bool {
        self.inner.routes.remove_id(id.0)
    }

    /// Removes every subscription of `owner`; returns how many.
    pub fn unsubscribe_all(&self, owner: &str) -> usize {
        self.inner.routes.remove_where(|e| &*e.owner == owner)
    }

    /// The live subscriptions, in subscription order.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.inner
            .routes
            .all()
            .iter()
            .map(|e| SubscriptionInfo {
                id: SubscriptionId(e.id),
                pattern: e.pattern.clone(),
                owner: e.owner.clone(),
                priority: e.priority,
            })
            .collect()
    }

    /// Publishes `event` and returns once every matching handler has run.
    ///
    /// # Errors
    ///
    /// [`PublishError::Stopped`] on a stopped bus, [`PublishError::DepthExceeded`] beyond the
    /// maximum dispatch depth. Handler failures are not errors: they are in the report.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the event has been recorded and the handlers before
    /// the current one have run; the rest will not.
    pub async fn publish(&self, event: Event) -> Result<DispatchReport, PublishError> {
        self.publish_shared(Arc::new(event)).await
    }

    /// [`Bus::publish`] for an event that is already shared.
    ///
    /// # Errors
    ///
    /// As [`Bus::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`Bus::publish`].
    pub async fn publish_shared(&self, event: Arc<Event>) -> Result<DispatchReport, PublishError> {
        let depth = DEPTH.try_with(|d| *d).unwrap_or(0) + 1;
        if !self.inner.running.load(Ordering::Acquire) {
            self.inner.counters.add_refused_stopped();
            return Err(PublishError::Stopped {
                subject: event.subject.to_string(),
            });
        }
        self.inner.deliver(event, depth).await
    }

    /// Queues `event` for the dispatcher task and returns at once.
    ///
    /// # Errors
    ///
    /// [`EmitError`] with the event inside: the queue is full, the bus is stopped, the emit
    /// is beyond the maximum depth, or there is no Tokio runtime. Each refusal is counted.
    pub fn emit(&self, event: Event) -> Result<(), EmitError> {
        let (event, depth) = self.admit(event)?;
        let inner = &self.inner;
        match inner.queue.push(event, depth) {
            Ok(()) => {
                inner.counters.add_emitted();
                Ok(())
            }
            Err(event) => {
                inner.counters.add_emit_rejected();
                Err(EmitError::Full {
                    event: unshare(event),
                    capacity: inner.queue.capacity(),
                })
            }
        }
    }

    /// Like [`Bus::emit`], but waits for room when the queue is full instead of refusing:
    /// backpressure for producers that can wait, as `mpsc::Sender::send` gives.
    ///
    /// A handler running on the dispatcher task (one that handles an emitted event) would wait
    /// for itself, so there it does not wait: a full queue refuses with `Full`, as `emit` does.
    ///
    /// # Errors
    ///
    /// [`EmitError`] with the event inside; `Full` only on the dispatcher task.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped while waiting for room, the event was not queued.
    pub async fn emit_wait(&self, event: Event) -> Result<(), EmitError> {
        if ON_DISPATCHER.try_with(|_| ()).is_ok() {
            return self.emit(event);
        }
        let (event, depth) = self.admit(event)?;
        self.inner.queue.push_wait(event, depth).await;
        self.inner.counters.add_emitted();
        Ok(())
    }

    /// The checks before an event may enter the queue: running, depth, a runtime.
    fn admit(&self, event: Event) -> Result<(Arc<Event>, u32), EmitError> {
        let inner = &self.inner;
        if !inner.running.load(Ordering::Acquire) {
            inner.counters.add_refused_stopped();
            return Err(EmitError::Stopped {
                event: Box::new(event),
            });
        }
        let depth = DEPTH.try_with(|d| *d).unwrap_or(0) + 1;
        if depth > inner.max_depth {
            inner.counters.add_refused_depth();
            return Err(EmitError::DepthExceeded {
                event: Box::new(event),
                depth,
                max: inner.max_depth,
            });
        }
        if self.ensure_dispatcher().is_err() {
            return Err(EmitError::NoRuntime {
                event: Box::new(event),
            });
        }
        // One allocation: the queue holds the Arc that the handlers will share.
        Ok((Arc::new(event), depth))
    }

    fn ensure_dispatcher(&self) -> Result<(), NoRuntime> {
        // Fast path: one atomic load. The flag drops when the dispatcher ends or its runtime
        // goes away, and the next emit starts a new one on the caller's runtime.
        if self.inner.queue.alive.load(Ordering::Acquire) {
            return Ok(());
        }
        let _spawning = self.inner.dispatcher.lock();
        if self.inner.queue.alive.load(Ordering::Acquire) {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        let queue = self.inner.queue.clone();
        let weak = Arc::downgrade(&self.inner);
        queue.alive.store(true, Ordering::Release);
        handle.spawn(ON_DISPATCHER.scope((), run_dispatcher(queue, weak)));
        Ok(())
    }

    /// Waits until the emit queue is empty and its last event has been dispatched.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn flush(&self) {
        self.inner.queue.idle().await;
    }

    /// Starts a stopped bus (a new bus is already running).
    pub fn start(&self) {
        self.inner.running.store(true, Ordering::Release);
    }

    /// Stops the bus: from now on `publish` and `emit` are refused; events already queued
    /// are still dispatched, and this returns once they have been.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bus is stopped at the first poll; dropping the future only stops the
    /// wait for the queue to drain.
    pub async fn stop(&self) {
        self.inner.running.store(false, Ordering::Release);
        self.flush().await;
    }

    /// Whether the bus accepts publishes.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// The last events published, newest first. `None` returns all that are kept, `Some(0)`
    /// none.
    pub fn history(&self, count: Option<usize>) -> Vec<Arc<Event>> {
        self.inner.history.query(count, None)
    }

    /// The last events whose subject matches `pattern`, newest first.
    pub fn history_matching(&self, pattern: &Pattern, count: Option<usize>) -> Vec<Arc<Event>> {
        self.inner.history.query(count, Some(pattern))
    }

    /// Empties the history ring.
    pub fn clear_history(&self) {
        self.inner.history.clear();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BusStats {
        self.inner
            .counters
            .snapshot(self.inner.routes.len(), self.inner.queue.len())
    }

    /// The current dispatch depth: 0 outside any handler, 1 inside a handler of an outermost
    /// publish, and so on.
    pub fn current_depth() -> u32 {
        DEPTH.try_with(|d| *d).unwrap_or(0)
    }
}

struct NoRuntime;

/// Gives back a refused event, which nobody else holds.
fn unshare(event: Arc<Event>) -> Box<Event> {
    Box::new(Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone()))
}

impl Inner {
    async fn deliver(&self, event: Arc<Event>, depth: u32) -> Result<DispatchReport, PublishError> {
        if depth > self.max_depth {
            self.counters.add_refused_depth();
            tracing::warn!(
                subject = event.subject.as_str(),
                depth,
                max = self.max_depth,
                "publish refused: maximum dispatch depth exceeded"
            );
            return Err(PublishError::DepthExceeded {
                depth,
                max: self.max_depth,
                subject: event.subject.to_string(),
            });
        }
        let hot = self.counters.hot();
        hot.add_published();
        self.history.record(&event);
        let matched = self.routes.lookup(&event.subject);
        if matched.entries.is_empty() {
            return Ok(DispatchReport::default());
        }
        let report = if matched.all_sync {
            DEPTH.sync_scope(depth, || {
                dispatch::dispatch_sync(&self.counters, &matched, &event)
            })
        } else {
            DEPTH
                .scope(depth, dispatch::dispatch(&self.counters, &matched, &event))
                .await
        };
        hot.add_dispatched(report.handlers_run);
        Ok(report)
    }
}

/// How many queued events the dispatcher takes per lock. A more urgent event that arrives
/// meanwhile waits for at most this many.
const BATCH: usize = 32;

/// Clears the queue's `alive` flag however the dispatcher ends (returns, or is dropped with
/// its runtime).
struct AliveGuard(Arc<Queue>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

async fn run_dispatcher(queue: Arc<Queue>, bus: Weak<Inner>) {
    let _alive = AliveGuard(queue.clone());
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let notified = queue.ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            queue.pop_batch(BATCH, &mut batch);
            if batch.is_empty() {
                break;
            }
            let Some(inner) = bus.upgrade() else {
                return;
            };
            let n = batch.len();
            for item in batch.drain(..) {
                // The emitting handler ran at depth - 1; deliver() refuses beyond the maximum.
                let _ = inner.deliver(item.event, item.depth).await;
            }
            drop(inner);
            queue.done(n);
        }
        if queue.closed.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}
