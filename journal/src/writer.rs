//! The seam between the node's journal stage and a journal backend: [`JournalWriter`], and
//! [`JournalError`], which says what the caller must do about a failure (retry, stop, or stop
//! because a newer primary took over).

use crate::segment::{SegmentError, SegmentLog};
use std::time::Duration;

/// Why a batch could not be made durable, and what the writer's caller must do about it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The backend cannot make batches durable right now (a stalled or unreachable broker, an
    /// I/O error that may clear): hold the batch and its reports, refuse new requests, retry.
    /// Service resumes by itself when the backend recovers.
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    /// Retrying cannot help (a batch the backend can never take, a delivery the broker refused
    /// for good): stop acknowledging; the operator or a standby must take over.
    #[error("journal failed: {0}")]
    Fatal(String),
    /// A newer primary started an epoch: release nothing more and stop (exit code 3).
    #[error("fenced: {0}")]
    Fenced(String),
}

impl JournalError {
    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, JournalError::Unavailable(_))
    }
}

impl From<SegmentError> for JournalError {
    fn from(e: SegmentError) -> Self {
        match e {
            // The disk may come back (space freed, a transient EIO): retried.
            SegmentError::Io { .. } => JournalError::Unavailable(e.to_string()),
            SegmentError::OutOfOrder { .. } | SegmentError::TooLarge(_) | SegmentError::Lock(_) => {
                JournalError::Fatal(e.to_string())
            }
        }
    }
}

/// Journal retention limits (file journal): applied after each snapshot, never to what the
/// snapshot still needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Keep at most this many bytes of segments.
    pub max_bytes: Option<u64>,
    /// Delete segments older than this.
    pub max_age: Option<Duration>,
}

/// Where the journal stage appends batches: the embedded segment log or Kafka.
pub trait JournalWriter: Send {
    /// Appends a batch of events `first..=last` (encoded `JournalBatch` bytes); returns the last
    /// sequence that is durable.
    ///
    /// # Errors
    /// [`JournalError`]: retry [`JournalError::Unavailable`], stop otherwise.
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, JournalError>;
    /// The last durable sequence (backends that acknowledge asynchronously make progress here).
    ///
    /// # Errors
    /// As [`JournalWriter::append`].
    fn durable(&mut self) -> Result<u64, JournalError>;
    /// Called when idle (periodic fsync, delivery polling).
    ///
    /// # Errors
    /// As [`JournalWriter::append`].
    fn tick(&mut self) -> Result<(), JournalError>;
    /// Makes everything appended durable before shutdown.
    ///
    /// # Errors
    /// As [`JournalWriter::append`].
    fn close(&mut self) -> Result<(), JournalError>;
    /// A snapshot covering everything up to `snapshot_seq` was written: apply retention.
    fn after_snapshot(&mut self, _snapshot_seq: u64, _retention: &Retention) {}
}

impl JournalWriter for SegmentLog {
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, JournalError> {
        Ok(SegmentLog::append(self, first, last, bytes)?)
    }
    fn durable(&mut self) -> Result<u64, JournalError> {
        Ok(self.durable_seq())
    }
    fn tick(&mut self) -> Result<(), JournalError> {
        Ok(SegmentLog::tick(self)?)
    }
    fn close(&mut self) -> Result<(), JournalError> {
        Ok(self.sync()?)
    }
    fn after_snapshot(&mut self, snapshot_seq: u64, r: &Retention) {
        if r.max_bytes.is_none() && r.max_age.is_none() {
            return;
        }
        match self.retain(r.max_bytes, r.max_age, snapshot_seq + 1) {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(?deleted, "journal retention deleted segments");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "journal retention failed"),
        }
    }
}
