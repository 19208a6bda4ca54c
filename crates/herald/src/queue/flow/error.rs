//! `FlowError`: why a flow policy, a rate or a priority was refused, naming the value.

/// Why a policy (or a priority) was refused. Nothing is stored when it is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// A key path that does not parse.
    #[error("key path {path:?} does not parse: {reason} (write $.field, $.a.b[0] or meta.NAME)")]
    KeyPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rate that does not parse, or of 0.
    #[error("rate {rate:?} {reason} (write N/s, N/min or N/h with N at least 1)")]
    Rate {
        /// The rate given.
        rate: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit of 0 (concurrency, max in flight, burst, weight, aging).
    #[error("{field} must be at least 1, got 0")]
    Zero {
        /// Which limit.
        field: String,
    },
    /// A priority outside 0 to 9.
    #[error("priority {0} is out of range: 0 to 9")]
    Priority(i64),
    /// A policy that says nothing.
    #[error("a policy needs at least one rule (--concurrency, --max-in-flight, --rate, --queue-rate, --ordered, --weight)")]
    Empty,
}
