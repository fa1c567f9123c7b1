//! The seam between the node's journal stage and a journal backend: [`JournalWriter`], and
//! [`JournalError`], which says what the caller must do about a failure (retry, stop, or stop
//! because a newer primary took over).

use crate::segment::{SegmentError, SegmentLog};

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
            // The disk may come back (space freed, a transient EIO): retried (a failed write
            // was rolled back, so the retry does not build on a partial frame).
            SegmentError::Io { .. } => JournalError::Unavailable(e.to_string()),
            SegmentError::OutOfOrder { .. }
            | SegmentError::TooLarge(_)
            | SegmentError::Lock(_)
            | SegmentError::Damaged { .. }
            | SegmentError::Poisoned(_) => JournalError::Fatal(e.to_string()),
        }
    }
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
    /// The last sequence on stable storage (file: fsynced; Kafka: acknowledged). Never ahead of
    /// [`JournalWriter::durable`]; what a snapshot may cover.
    fn synced(&self) -> u64;
    /// How long the last forced sync took, once (file journal: each `fdatasync`).
    fn take_sync_time(&mut self) -> Option<std::time::Duration> {
        None
    }
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
}

impl JournalWriter for SegmentLog {
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, JournalError> {
        Ok(SegmentLog::append(self, first, last, bytes)?)
    }
    fn durable(&mut self) -> Result<u64, JournalError> {
        Ok(self.durable_seq())
    }
    fn synced(&self) -> u64 {
        self.synced_seq()
    }
    fn take_sync_time(&mut self) -> Option<std::time::Duration> {
        self.last_sync_time.take()
    }
    fn tick(&mut self) -> Result<(), JournalError> {
        Ok(SegmentLog::tick(self)?)
    }
    fn close(&mut self) -> Result<(), JournalError> {
        Ok(self.sync()?)
    }
}
