//! Caldera's journal: every engine command and event, event-sourced in batches.
//!
//! - [`segment`]: the embedded segment log (default): CRC-checked frames, segments named by
//!   base sequence, recovery that truncates a torn or corrupt tail, fsync policy, retention.
//! - [`record`]: the `JournalBatch` FlatBuffers encoding (schema in `schema/fbs/caldera.fbs`).
//! - [`snapshots`]: engine snapshot files tagged with their last sequence.
//! - [`recover`]: start-up recovery = latest snapshot + replay of the journal after it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod kafka;
pub mod lock;
pub mod record;
pub mod recover;
pub mod segment;
pub mod snapshots;

pub use segment::{
    FsyncPolicy, LogOptions, LogReader, RecoveryReport, SegmentError, SegmentLog, TrustedPrefix,
};
