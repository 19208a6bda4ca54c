//! Delivery checks by sets, not counts: what was acknowledged against what arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The comparison of acknowledged ids with received ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCheck {
    /// Acknowledged but never received.
    pub missing: BTreeSet<String>,
    /// Received more than once, with how many times.
    pub duplicated: BTreeMap<String, usize>,
    /// Received but never acknowledged.
    pub unexpected: BTreeSet<String>,
    /// Distinct ids acknowledged.
    pub acknowledged: usize,
    /// Messages received (duplicates included).
    pub received: usize,
}

impl DeliveryCheck {
    /// Compares the ids the publisher had acknowledged with the ids that arrived.
    pub fn compare<A, R>(acknowledged: A, received: R) -> Self
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: Into<String>,
    {
        let acked: BTreeSet<String> = acknowledged.into_iter().map(Into::into).collect();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut count = 0;
        for id in received_iter(received) {
            count += 1;
            *seen.entry(id).or_default() += 1;
        }
        DeliveryCheck {
            missing: acked
                .iter()
                .filter(|id| !seen.contains_key(*id))
                .cloned()
                .collect(),
            duplicated: seen
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, n)| (id.clone(), *n))
                .collect(),
            unexpected: seen
                .keys()
                .filter(|id| !acked.contains(*id))
                .cloned()
                .collect(),
            acknowledged: acked.len(),
            received: count,
        }
    }

    /// Exactly once: nothing missing, duplicated or unexpected.
    pub fn is_exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }

    /// At least once: nothing missing or unexpected (duplicates allowed).
    pub fn is_at_least_once(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// Panics with the report unless delivery was exactly once.
    ///
    /// # Panics
    ///
    /// When anything is missing, duplicated or unexpected.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.is_exactly_once(),
            "delivery was not exactly once: {self}"
        );
    }

    /// Panics with the report unless delivery was at least once.
    ///
    /// # Panics
    ///
    /// When anything is missing or unexpected.
    pub fn assert_at_least_once(&self) {
        assert!(
            self.is_at_least_once(),
            "delivery was not at least once: {self}"
        );
    }
}

impl DeliveryCheck {
    /// Panics unless every acknowledged id arrived exactly once. Ids that were not
    /// acknowledged may have arrived: a publish whose answer was lost (a crash after the
    /// commit) is not a false acknowledgement.
    ///
    /// # Panics
    ///
    /// When an acknowledged id is missing or any id arrived twice.
    pub fn assert_no_acknowledged_lost(&self) {
        assert!(
            self.missing.is_empty() && self.duplicated.is_empty(),
            "acknowledged ids lost or duplicated: {self}"
        );
    }
}

fn received_iter<R>(r: R) -> impl Iterator<Item = String>
where
    R: IntoIterator,
    R::Item: Into<String>,
{
    r.into_iter().map(Into::into)
}

impl fmt::Display for DeliveryCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sample = |s: &mut dyn Iterator<Item = &String>| {
            s.take(5).cloned().collect::<Vec<_>>().join(", ")
        };
        write!(
            f,
            "acknowledged {}, received {}, missing {} [{}], duplicated {} [{}], unexpected {} [{}]",
            self.acknowledged,
            self.received,
            self.missing.len(),
            sample(&mut self.missing.iter()),
            self.duplicated.len(),
            sample(&mut self.duplicated.keys()),
            self.unexpected.len(),
            sample(&mut self.unexpected.iter()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryCheck;

    #[test]
    fn compare_names_missing_duplicated_and_unexpected_ids() {
        let c = DeliveryCheck::compare(["a", "b", "c"], ["a", "a", "c", "z"]);
        assert_eq!(c.missing.iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(c.duplicated.get("a"), Some(&2));
        assert_eq!(c.unexpected.iter().collect::<Vec<_>>(), ["z"]);
        assert!(!c.is_exactly_once());
        assert!(DeliveryCheck::compare(["a"], ["a"]).is_exactly_once());
    }
}
