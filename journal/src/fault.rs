//! Fault injection for tests, compiled into debug builds only: a write cut short, a failed
//! fsync. Set from a test ([`crate::SegmentLog::inject`]) or, for a whole node process, from
//! the `CALDERA_FAULT` environment variable, e.g. `CALDERA_FAULT=journal-write@5` (the 5th
//! append's write stops half-way and fails) or `journal-fsync@3` (the 3rd fsync fails); the
//! Kafka writer reads `kafka-unknown-offset@N` (the first acknowledgement and every Nth after
//! it arrive without their offset). Release builds ignore them: [`Faults`] is empty there.

use std::fs::File;
use std::io::Write;

/// The `N` of fault `name@N` in `CALDERA_FAULT` (a comma-separated list), in debug builds;
/// always `None` in release builds. Every fault hook of a node reads its setting here.
#[must_use]
pub fn injected(name: &str) -> Option<u64> {
    #[cfg(debug_assertions)]
    {
        let spec = std::env::var("CALDERA_FAULT").ok()?;
        spec.split(',').find_map(|item| {
            let (what, n) = item.split_once('@')?;
            (what.trim() == name)
                .then(|| n.trim().parse().ok())
                .flatten()
        })
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        None
    }
}

/// One-shot faults of a segment log.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    #[cfg(debug_assertions)]
    short_write_at: Option<u64>,
    #[cfg(debug_assertions)]
    fail_sync_at: Option<u64>,
    #[cfg(debug_assertions)]
    writes: u64,
    #[cfg(debug_assertions)]
    syncs: u64,
}

impl Faults {
    /// From `CALDERA_FAULT` (debug builds; none in release builds).
    #[must_use]
    pub fn from_env() -> Self {
        #[cfg(debug_assertions)]
        {
            let f = Faults {
                short_write_at: injected("journal-write"),
                fail_sync_at: injected("journal-fsync"),
                ..Faults::default()
            };
            if f.short_write_at.is_some() || f.fail_sync_at.is_some() {
                tracing::warn!(?f, "CALDERA_FAULT: journal faults will be injected");
            }
            f
        }
        #[cfg(not(debug_assertions))]
        Faults::default()
    }

    /// The `n`th write from now (1 = the next) writes half the frame, then fails.
    #[cfg(debug_assertions)]
    #[must_use]
    pub fn short_write_at(mut self, n: u64) -> Self {
        self.short_write_at = Some(self.writes + n);
        self
    }

    /// The `n`th fsync from now (1 = the next) fails.
    #[cfg(debug_assertions)]
    #[must_use]
    pub fn fail_sync_at(mut self, n: u64) -> Self {
        self.fail_sync_at = Some(self.syncs + n);
        self
    }

    /// Counts a write; `Some(())` when this one is to be cut short.
    #[inline]
    pub(crate) fn take_write(&mut self) -> Option<()> {
        #[cfg(debug_assertions)]
        {
            self.writes += 1;
            if self.short_write_at == Some(self.writes) {
                return Some(());
            }
        }
        None
    }

    /// Counts an fsync; `true` when this one is to fail.
    #[inline]
    pub(crate) fn take_sync(&mut self) -> bool {
        #[cfg(debug_assertions)]
        {
            self.syncs += 1;
            if self.fail_sync_at == Some(self.syncs) {
                return true;
            }
        }
        false
    }
}

/// Writes half of `head ++ payload` for real, then fails as a full disk would.
pub(crate) fn short_write(file: &mut File, head: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(head.len() + payload.len());
    frame.extend_from_slice(head);
    frame.extend_from_slice(payload);
    file.write_all(&frame[..frame.len() / 2])?;
    Err(std::io::Error::other(
        "injected: no space left on device after a short write",
    ))
}
