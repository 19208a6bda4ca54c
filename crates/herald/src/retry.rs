//! `RetryPolicy`: the one rule every engine applies to a failed delivery (how many attempts,
//! the backoff with its cap and jitter, which failures are worth another attempt), turning a
//! handler's result into the [`Outcome`] its source settles with.

use std::sync::Arc;
use std::time::Duration;

use crate::handler::Failure;
use crate::outcome::Outcome;

type TransientFn = Arc<dyn Fn(&Failure) -> bool + Send + Sync>;

/// How failed deliveries are retried, the same for JetStream's durable consumer, the queue
/// source, the worker and the runtime's consumers.
///
/// A handler's result becomes an [`Outcome`] through [`RetryPolicy::decide`]:
///
/// - `Ok` acks;
/// - a [`Reject`](crate::Reject), or a failure the policy does not count as transient,
///   rejects at once, with the failure's message as its reason (the source dead-letters it
///   where it keeps dead letters);
/// - a [`RetryAfter`](crate::RetryAfter) retries after the delay the handler asked for, and
///   any other failure (an error, a panic, a timeout) after the policy's backoff, while
///   attempts are left;
/// - once the attempts run out, it rejects with the reason `retries exhausted after N
///   attempt(s); last error: ...`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use herald::{Outcome, RetryPolicy};
///
/// let policy = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60))
///     .max_attempts(5);
/// assert_eq!(policy.delay(1), Duration::from_secs(1));
/// assert_eq!(policy.delay(3), Duration::from_secs(4));
/// assert_eq!(policy.decide(1, &Ok(())), Outcome::Ack);
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: Option<u32>,
    first: Duration,
    factor: u32,
    cap: Duration,
    jitter: f64,
    transient: Option<TransientFn>,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("first", &self.first)
            .field("factor", &self.factor)
            .field("cap", &self.cap)
            .field("jitter", &self.jitter)
            .field("transient", &self.transient.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl PartialEq for RetryPolicy {
    /// Equal when every setting is, and neither has a custom transient rule (two closures
    /// cannot be compared).
    fn eq(&self, other: &Self) -> bool {
        self.max_attempts == other.max_attempts
            && self.first == other.first
            && self.factor == other.factor
            && self.cap == other.cap
            && self.jitter == other.jitter
            && self.transient.is_none()
            && other.transient.is_none()
    }
}

impl Default for RetryPolicy {
    /// Every failure retried after 1 s, with no limit on attempts (the source's own limit,
    /// such as JetStream's `max_deliver`, applies).
    fn default() -> Self {
        RetryPolicy::fixed(Duration::from_secs(1))
    }
}

impl RetryPolicy {
    /// The same `delay` before every retry, no limit on attempts, no jitter.
    pub fn fixed(delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: None,
            first: delay,
            factor: 1,
            cap: delay,
            jitter: 0.0,
            transient: None,
        }
    }

    /// `first` before the first retry, doubled for each one after it, at most `cap`; no
    /// limit on attempts, no jitter.
    pub fn exponential(first: Duration, cap: Duration) -> Self {
        RetryPolicy {
            max_attempts: None,
            first,
            factor: 2,
            cap: cap.max(first),
            jitter: 0.0,
            transient: None,
        }
    }

    /// No retry: the first failure rejects.
    pub fn never() -> Self {
        RetryPolicy::fixed(Duration::ZERO).max_attempts(1)
    }

    /// At most `n` attempts in all (the first included; at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }

    /// No limit on attempts.
    pub fn unlimited(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// Takes up to `fraction` (0 to 1) off each delay at random, so that deliveries that
    /// failed together do not come back together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Only failures for which `rule` says `true` are retried; the others reject at once.
    /// By default every failure is (a [`Reject`](crate::Reject) never is).
    pub fn transient_if(mut self, rule: impl Fn(&Failure) -> bool + Send + Sync + 'static) -> Self {
        self.transient = Some(Arc::new(rule));
        self
    }

    /// The attempt limit, if any.
    pub fn attempts_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Whether another attempt may follow attempt number `attempt` (from 1).
    pub fn retries_left(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt < max)
    }

    /// Whether `failure` is worth another attempt.
    pub fn is_transient(&self, failure: &Failure) -> bool {
        if matches!(failure.requested, Some(Outcome::Reject { .. })) {
            return false;
        }
        self.transient.as_ref().is_none_or(|rule| rule(failure))
    }

    /// The delay after attempt number `attempt` (from 1) failed, before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let steps = attempt.saturating_sub(1).min(32);
        let factor = self.factor.max(1).saturating_pow(steps);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// [`RetryPolicy::delay`] with the jitter taken off.
    pub fn delay_with_jitter(&self, attempt: u32) -> Duration {
        let delay = self.delay(attempt);
        if self.jitter <= 0.0 {
            return delay;
        }
        let cut = self.jitter * rand::random::<f64>();
        delay.mul_f64(1.0 - cut)
    }

    /// How a delivery on attempt number `attempt` (from 1) ends, given its handler's result.
    pub fn decide(&self, attempt: u32, result: &Result<(), Failure>) -> Outcome {
        let failure = match result {
            Ok(()) => return Outcome::Ack,
            Err(failure) => failure,
        };
        if let Some(Outcome::Reject { reason }) = &failure.requested {
            return Outcome::Reject {
                reason: reason.clone(),
            };
        }
        // With no retry to speak of, the reason is the failure itself.
        if !self.is_transient(failure) || self.max_attempts == Some(1) {
            return Outcome::Reject {
                reason: failure.message.clone(),
            };
        }
        if !self.retries_left(attempt) {
            return Outcome::Reject {
                reason: exhausted(attempt, &failure.message),
            };
        }
        match &failure.requested {
            Some(Outcome::Retry { after }) => Outcome::Retry { after: *after },
            _ => Outcome::Retry {
                after: self.delay_with_jitter(attempt),
            },
        }
    }
}

/// The reason of a dead letter whose retries ran out.
pub fn exhausted(attempts: u32, last_error: &str) -> String {
    format!("retries exhausted after {attempts} attempt(s); last error: {last_error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::FailureKind;

    fn error(requested: Option<Outcome>) -> Result<(), Failure> {
        Err(Failure {
            kind: FailureKind::Error,
            message: "boom".into(),
            requested,
        })
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_fixed_stays_fixed() {
        let p = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<u64> = (1..=8).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
        let f = RetryPolicy::fixed(Duration::from_millis(5));
        assert_eq!(f.delay(1), f.delay(40));
    }

    #[test]
    fn jitter_only_shortens_a_delay_within_its_fraction() {
        let p = RetryPolicy::fixed(Duration::from_secs(10)).jitter(0.5);
        for _ in 0..200 {
            let d = p.delay_with_jitter(1);
            assert!(
                d <= Duration::from_secs(10) && d >= Duration::from_secs(5),
                "{d:?}"
            );
        }
        assert_eq!(
            RetryPolicy::fixed(Duration::ZERO).jitter(f64::NAN).jitter,
            0.0
        );
    }

    #[test]
    fn attempts_run_out_into_a_reject_that_names_the_last_error() {
        let p = RetryPolicy::fixed(Duration::from_secs(1)).max_attempts(3);
        let retry = Outcome::Retry {
            after: Duration::from_secs(1),
        };
        assert_eq!(p.decide(1, &error(None)), retry);
        assert_eq!(p.decide(2, &error(None)), retry);
        assert_eq!(
            p.decide(3, &error(None)),
            Outcome::Reject {
                reason: "retries exhausted after 3 attempt(s); last error: boom".into()
            }
        );
    }

    #[test]
    fn a_reject_wins_a_retry_after_is_honoured_and_a_permanent_failure_rejects() {
        let p = RetryPolicy::default();
        let reject = Outcome::Reject {
            reason: "no".into(),
        };
        assert_eq!(p.decide(1, &error(Some(reject.clone()))), reject);
        let asked = Outcome::Retry {
            after: Duration::from_millis(7),
        };
        assert_eq!(p.decide(1, &error(Some(asked.clone()))), asked);
        let only_panics = p.transient_if(|f| f.kind == FailureKind::Panic);
        assert_eq!(
            only_panics.decide(1, &error(None)),
            Outcome::Reject {
                reason: "boom".into()
            }
        );
        assert_eq!(RetryPolicy::never().decide(1, &Ok(())), Outcome::Ack);
        assert!(matches!(
            RetryPolicy::never().decide(1, &error(None)),
            Outcome::Reject { .. }
        ));
    }
}
