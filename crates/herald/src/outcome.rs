//! `Outcome`: how a delivery is settled (ack, retry after a delay, reject with a reason), made
//! from a handler's result; `Reject` and `RetryAfter` are the errors a handler returns to ask
//! for the last two.

use std::time::Duration;

/// How one delivery is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: never deliver it again.
    Ack,
    /// Not now: deliver it again after `after`.
    Retry {
        /// The delay before the next attempt.
        after: Duration,
    },
    /// Never: a poison message; do not deliver it again (dead-lettered where the source
    /// keeps dead letters).
    Reject {
        /// Why, as the handler said it.
        reason: String,
    },
}

/// (A handler's result becomes an `Outcome` through [`RetryPolicy::decide`](crate::RetryPolicy),
/// which reads its `Failure`, so that this module needs nothing of the handler's.)
impl Outcome {
    /// A short name for logs and counters: `ack`, `retry` or `reject`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject { .. } => "reject",
        }
    }
}

/// The error a handler returns to reject the event for good (it will not come back).
///
/// # Examples
///
/// ```
/// use herald::{sync_handler, BoxError, Event, Reject};
///
/// let handler = sync_handler(|e: &Event| -> Result<(), BoxError> {
///     if e.data.get("order").is_none() {
///         return Err(Reject::new("no order in the event").into());
///     }
///     Ok(())
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rejected: {reason}")]
pub struct Reject {
    /// Why.
    pub reason: String,
}

impl Reject {
    /// A rejection with its reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Reject {
            reason: reason.into(),
        }
    }
}

/// The error a handler returns to have the event delivered again after a delay of its choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry after {after:?}: {reason}")]
pub struct RetryAfter {
    /// The delay.
    pub after: Duration,
    /// Why.
    pub reason: String,
}

impl RetryAfter {
    /// A retry after `after`, with its reason.
    pub fn new(after: Duration, reason: impl Into<String>) -> Self {
        RetryAfter {
            after,
            reason: reason.into(),
        }
    }
}

/// What a handler's error asks for, if it is a [`Reject`] or a [`RetryAfter`] (also when
/// wrapped in a `BoxError`).
pub(crate) fn requested(e: &(dyn std::error::Error + 'static)) -> Option<Outcome> {
    if let Some(r) = e.downcast_ref::<Reject>() {
        return Some(Outcome::Reject {
            reason: r.reason.clone(),
        });
    }
    e.downcast_ref::<RetryAfter>()
        .map(|r| Outcome::Retry { after: r.after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boxed_reject_or_retry_after_is_recognised() {
        let e: crate::BoxError = Reject::new("no").into();
        assert_eq!(
            requested(&*e),
            Some(Outcome::Reject {
                reason: "no".into()
            })
        );
        let e: crate::BoxError = RetryAfter::new(Duration::from_millis(5), "later").into();
        assert_eq!(
            requested(&*e),
            Some(Outcome::Retry {
                after: Duration::from_millis(5)
            })
        );
        let e: crate::BoxError = "plain".into();
        assert_eq!(requested(&*e), None);
    }
}
