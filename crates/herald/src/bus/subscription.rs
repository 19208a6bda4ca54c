//! Subscription options, listings, and the guard that unsubscribes on drop.

use std::sync::{Arc, Weak};

use crate::message::pattern::Pattern;
use crate::message::priority::Priority;

pub use crate::route::SubscriptionId;

/// Who subscribes, and how urgently.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// The owner (a plugin's name); `unsubscribe_all(owner)` removes all of its subscriptions.
    pub owner: Arc<str>,
    /// Handler order for one event: critical first.
    pub priority: Priority,
}

/// The owner of subscriptions made without one; shared, so they cost no allocation.
fn anonymous() -> Arc<str> {
    static ANONYMOUS: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    ANONYMOUS.get_or_init(|| Arc::from("anonymous")).clone()
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            owner: anonymous(),
            priority: Priority::Normal,
        }
    }
}

impl SubscribeOptions {
    /// Options with this owner and normal priority.
    pub fn owner(owner: impl Into<Arc<str>>) -> Self {
        SubscribeOptions {
            owner: owner.into(),
            ..Default::default()
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
}

/// One live subscription, as [`Bus::subscriptions`](crate::Bus::subscriptions) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Its id.
    pub id: SubscriptionId,
    /// The pattern as written.
    pub pattern: Pattern,
    /// Its owner.
    pub owner: Arc<str>,
    /// Its priority.
    pub priority: Priority,
}

/// A live subscription. Dropping it unsubscribes; [`Subscription::detach`] keeps it alive
/// until it is removed by id, pattern and owner, or `unsubscribe_all`.
#[must_use = "dropping a Subscription unsubscribes it; call .detach() to keep it"]
#[derive(Debug)]
pub struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) bus: Weak<super::Inner>,
    pub(crate) detached: bool,
}

impl Subscription {
    /// Its id.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// Keeps the subscription after this guard is gone; returns its id.
    pub fn detach(mut self) -> SubscriptionId {
        self.detached = true;
        self.id
    }

    /// Unsubscribes now (the same as dropping the guard).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Some(inner) = self.bus.upgrade() {
            inner.routes.remove_id(self.id.0);
        }
    }
}
