//! A lock-free latency histogram with fixed buckets: any thread records with relaxed atomic
//! increments, no allocation; the metrics endpoint reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets; one more bucket catches everything above. Fine below
/// a millisecond, where the pipeline's own latency lives.
pub const BUCKETS: [f64; 22] = [
    5e-6, 10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3, 2.5e-3,
    5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5,
];

/// Counts per bucket and the sum of observations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Per-bucket counts (not cumulative; the last is above every bound) and the sum in ns.
    #[must_use]
    pub fn read(&self) -> ([u64; BUCKETS.len() + 1], u64) {
        (
            std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            self.sum_ns.load(Ordering::Relaxed),
        )
    }
}
