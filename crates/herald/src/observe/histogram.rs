//! `Histogram`: counts values in log-spaced buckets (8 per doubling, so a percentile is
//! within about 9% of the true value), with an exact count, sum and maximum; recording is
//! lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per doubling.
const SUB: u32 = 8;
/// Doublings covered: 1 to 2^40 (microseconds: about 12 days).
const DOUBLINGS: u32 = 40;
const BUCKETS: usize = (SUB * DOUBLINGS) as usize + 1;

/// A histogram of non-negative integer values (for example microseconds).
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let log = 63 - v.leading_zeros();
    let frac = if log >= 3 {
        ((v >> (log - 3)) & 0x7) as u32
    } else {
        ((v << (3 - log)) & 0x7) as u32
    };
    ((log.min(DOUBLINGS - 1) * SUB + frac) as usize + 1).min(BUCKETS - 1)
}

/// The upper edge of a bucket.
fn upper(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let i = (i - 1) as u32;
    let (log, frac) = (i / SUB, i % SUB);
    2f64.powi(log as i32) * (1.0 + f64::from(frac + 1) / f64::from(SUB))
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram::default()
    }

    /// Records one value.
    pub fn record(&self, v: u64) {
        self.buckets[bucket(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum.load(Ordering::Relaxed) as f64 / n as f64
        }
    }

    /// The largest value recorded.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The `q` quantile (0..=1): the upper edge of the bucket holding it, never above the
    /// maximum (0 when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return upper(i).min(self.max() as f64);
            }
        }
        self.max() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_error_and_never_above_the_max() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile(q);
            assert!((got - exact).abs() / exact < 0.13, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), 10_000.0);
        assert_eq!(h.count(), 10_000);
        assert!((h.mean() - 5_000.5).abs() < 1e-9);
        assert_eq!(Histogram::new().quantile(0.99), 0.0);
    }
}
