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

mod builder;
pub(crate) mod depth;
mod emit;
mod error;
pub(crate) mod history;
pub(crate) mod stats;
pub(crate) mod subscription;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::dispatch::{self, DispatchReport};
use crate::handler::Handler;
use crate::message::event::Event;
use crate::message::pattern::IntoPattern;
use crate::message::subject::SubjectError;
use crate::route::Routes;
use crate::shutdown::{DrainTimeout, Shutdown};
use emit::Queue;
use history::History;
use stats::{BusStats, Counters};

pub use builder::BusBuilder;
pub use error::{EmitError, PublishError};
use subscription::{SubscribeOptions, Subscription, SubscriptionId, SubscriptionInfo};

tokio::task_local! {
    /// Set on the dispatcher task, which must never wait for room in its own queue.
    static ON_DISPATCHER: ();
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
    shutdown: Shutdown,
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
    /// The returned guard **is** the subscription: dropping it unsubscribes. Bind it for as
    /// long as the handler should run, or call [`Subscription::detach`] to keep the handler
    /// until [`Bus::unsubscribe_all`] or [`Bus::unsubscribe_id`] removes it. Beware
    /// `let _ = bus.subscribe(..)`: `_` drops the guard at once, so nothing is subscribed
    /// (`let _guard = ..` keeps it).
    ///
    /// # Examples
    ///
    /// ```
    /// use herald::{sync_handler, Bus, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let guard = bus.subscribe("orders.*", sync_handler(|e: &Event| println!("{}", e.subject)))?;
    /// bus.subscribe("audit.>", sync_handler(|_: &Event| {}))?.detach(); // lives on
    /// assert_eq!(bus.subscriptions().len(), 2);
    /// drop(guard); // unsubscribes
    /// assert_eq!(bus.subscriptions().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
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

    /// Subscribes with an owner and a priority. The guard works as [`Bus::subscribe`]'s.
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
        let id = self
            .inner
            .routes
            .insert(pattern, options.owner, options.priority, handler.into());
        Ok(Subscription {
            id,
            bus: Arc::downgrade(&self.inner),
            detached: false,
        })
    }

    /// Removes `owner`'s subscriptions made with exactly `pattern` (the same text, and a glob
    /// only if it was subscribed as one); returns how many. An unknown pair, or a pattern
    /// that does not parse (nothing can be subscribed with it), is a no-op.
    pub fn unsubscribe(&self, pattern: impl IntoPattern, owner: &str) -> usize {
        let Ok(pattern) = pattern.into_pattern() else {
            return 0;
        };
        self.inner
            .routes
            .remove_where(|e| e.pattern == pattern && &*e.owner == owner)
    }

    /// Removes one subscription by id; returns whether it existed.
    pub fn unsubscribe_id(&self, id: SubscriptionId) -> bool {
        self.inner.routes.remove_id(id.0)
    }

    /// Removes every subscription of `owner` on this bus, however it was made (through a
    /// plugin context or directly); returns how many.
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

    /// Seed 002's view of the subscriptions: pattern -> owners (in subscription order), for
    /// one owner or for all.
    pub fn subscriptions_by_pattern(&self, owner: Option<&str>) -> BTreeMap<String, Vec<Arc<str>>> {
        let mut out: BTreeMap<String, Vec<Arc<str>>> = BTreeMap::new();
        for e in self.inner.routes.all().iter() {
            if owner.is_none_or(|o| &*e.owner == o) {
                out.entry(e.pattern.to_string())
                    .or_default()
                    .push(e.owner.clone());
            }
        }
        out
    }

    /// Publishes an event made from a subject and JSON data in one call (source `herald`,
    /// normal priority); see [`Bus::publish`].
    ///
    /// # Errors
    ///
    /// [`PublishError::Invalid`] for a malformed subject or `data` that is not a JSON
    /// object (nothing recorded or dispatched); otherwise as [`Bus::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`Bus::publish`].
    pub async fn publish_json(
        &self,
        subject: &str,
        data: serde_json::Value,
    ) -> Result<DispatchReport, PublishError> {
        let event = Event::try_new(subject, data)?;
        self.publish(event).await
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
    pub async fn publish(&self, mut event: Event) -> Result<DispatchReport, PublishError> {
        // Published from a handler that processes a traced delivery: the trace goes on, in
        // a publish span that lasts until the handlers have run. Untraced, no span is made
        // or held.
        if crate::hop::publishes(&event) {
            // Boxed: an untraced publish's future stays the shared publish's own (a second
            // inline await of it measured 7% slower on publish-and-wait, 2 async handlers).
            let span = publish_span(&mut event);
            return Box::pin(self.publish_in(span, Arc::new(event))).await;
        }
        self.publish_shared(Arc::new(event)).await
    }

    /// Publishes `event` in its publish `span`, which ends when the handlers have run.
    async fn publish_in(
        &self,
        span: tracing::Span,
        event: Arc<Event>,
    ) -> Result<DispatchReport, PublishError> {
        let report = self.publish_shared(event).await;
        drop(span);
        report
    }

    /// [`Bus::publish`] for an event that is already shared, published as it is: a shared
    /// event cannot be stamped, so this opens no publish span and does not continue the
    /// current trace (an event with its own context keeps it; its handlers run in their
    /// process span). [`Bus::publish`] does both.
    ///
    /// # Errors
    ///
    /// As [`Bus::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`Bus::publish`].
    pub async fn publish_shared(&self, event: Arc<Event>) -> Result<DispatchReport, PublishError> {
        let depth = depth::here() + 1;
        self.admit_publish(&event)?;
        self.inner.deliver(event, depth).await
    }

    /// Refuses (and counts) a publish on a stopped bus.
    #[inline]
    fn admit_publish(&self, event: &Event) -> Result<(), PublishError> {
        if !self.inner.running.load(Ordering::Acquire) {
            self.inner.counters.add_refused_stopped();
            return Err(PublishError::Stopped {
                subject: event.subject.to_string(),
            });
        }
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

    /// Stops the bus as [`Bus::stop`] does, then triggers its [`Shutdown`] and waits up to
    /// `within` for every task started through it (the emit dispatcher, and whatever else
    /// shares that `Shutdown`) to drain.
    ///
    /// # Errors
    ///
    /// [`DrainTimeout`] when tasks were still running at the bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bus stays stopped and the shutdown triggered.
    pub async fn shutdown(&self, within: Duration) -> Result<(), DrainTimeout> {
        self.inner.running.store(false, Ordering::Release);
        match tokio::time::timeout(within, self.flush()).await {
            Ok(()) => self.inner.shutdown.shutdown(within).await,
            Err(_) => {
                self.inner.shutdown.trigger();
                Err(DrainTimeout {
                    running: self.inner.shutdown.running(),
                    within,
                })
            }
        }
    }

    /// The [`Shutdown`] this bus starts its tasks through.
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// How many events the emit queue holds at most (its saturation is
    /// `stats().queued / queue_capacity()`).
    pub fn queue_capacity(&self) -> usize {
        self.inner.queue.capacity()
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

    /// The last events whose subject matches `pattern`, newest first; `count` as in
    /// [`Bus::history`].
    ///
    /// # Errors
    ///
    /// [`SubjectError`] when the pattern is malformed.
    pub fn history_matching(
        &self,
        pattern: impl IntoPattern,
        count: Option<usize>,
    ) -> Result<Vec<Arc<Event>>, SubjectError> {
        let pattern = pattern.into_pattern()?;
        Ok(self.inner.history.query(count, Some(&pattern)))
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
        depth::here()
    }
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
        let matched = {
            // This thread's counters, held only where the task cannot move to another
            // thread: a stripe is written only by the thread that owns it.
            let hot = self.counters.hot();
            hot.add_published();
            self.history.record(&event);
            let matched = self.routes.lookup(&event.subject);
            if matched.entries.is_empty() {
                return Ok(DispatchReport::default());
            }
            if matched.all_sync {
                let processing = crate::hop::process(&bus_hop(&event.subject), &event);
                let report = processing.run_sync(|| {
                    depth::with_depth(depth, || dispatch::dispatch_sync(&matched, &event))
                });
                hot.add_dispatched(report.handlers_run);
                return Ok(self.counted(report));
            }
            matched
        };
        // A traced event's handlers run in its process context and span (set with the depth).
        // Boxed when traced: an untraced dispatch's future stays as small as it was (an
        // event with metadata but no trace allocates nothing either).
        let processing = crate::hop::process(&bus_hop(&event.subject), &event);
        let report = if processing.is_none() {
            depth::at_depth(depth, dispatch::dispatch(&matched, &event)).await
        } else {
            let dispatch = dispatch::dispatch(&matched, &event);
            Box::pin(depth::traced_at_depth(depth, processing, dispatch)).await
        };
        // Looked up again: the async dispatch may have moved this task to another thread.
        self.counters.hot().add_dispatched(report.handlers_run);
        Ok(self.counted(report))
    }

    /// Counts a report's failures; returns it.
    #[inline]
    fn counted(&self, report: DispatchReport) -> DispatchReport {
        if !report.is_ok() {
            self.counters.record_failures(&report);
        }
        report
    }
}

/// The publish span of `event` on the bus (see [`crate::hop::publish`]).
#[inline]
fn publish_span(event: &mut Event) -> tracing::Span {
    if !crate::hop::publishes(event) {
        return tracing::Span::none();
    }
    let subject = event.subject.clone();
    crate::hop::publish(&bus_hop(&subject), event)
}

/// The hop of an event on the bus: its subject, no message id.
fn bus_hop(subject: &crate::Subject) -> crate::hop::Hop<'_> {
    crate::hop::Hop {
        system: "herald",
        destination: subject.as_str(),
        message_id: crate::hop::MessageId::None,
        attempt: 1,
    }
}
