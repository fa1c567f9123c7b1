//! Caldera's journal: every engine command and event, event-sourced in batches.
//!
//! - [`segment`]: the embedded segment log (default): CRC-checked frames, segments named by
//!   base sequence, recovery that truncates a torn or corrupt tail, fsync policy, retention.
//! - [`snapshots`]: engine snapshot files tagged with their last sequence.
//! - [`history`]: the journal read as a stream of events after a sequence (the epoch rule,
//!   split batches reassembled): resend, `journal dump` and `journal tail`.
//! - [`recover`]: start-up recovery = latest snapshot + replay of the journal after it.
//! - [`lock`]: the file journal's single-writer lock.
//! - [`maintenance`]: `verify` (find every damaged frame) and `truncate_at` (the operator's
//!   repair), for a journal no node is writing.
//! - [`writer`]: the [`JournalWriter`] seam the node's journal stage appends to, and the typed
//!   [`JournalError`] (retry, stop, or fenced).
//! - `kafka` (feature `kafka`): the Kafka journal (writer, reader, recovery).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fault;
pub mod history;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod lock;
pub mod maintenance;
pub mod recover;
pub mod segment;
pub mod snapshots;
pub mod writer;

pub use segment::{
    retain_segments, FsyncPolicy, LogOptions, LogReader, RecoveryReport, Retention, SegmentError,
    SegmentLog, TrustedPrefix,
};
pub use writer::{JournalError, JournalWriter};
