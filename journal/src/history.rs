//! Reading the journal as a stream of events (what resend, `journal dump` and `journal tail`
//! read): batches decoded in order under the epoch rule, Kafka's split batches reassembled,
//! events never returned twice.

use crate::recover::epoch_acceptable;
use crate::segment::{list_segments, LogReader, SegmentError};
use caldera_engine::Event;
use caldera_schema::record::{self, Reassembly, RecordError};
use std::path::Path;

/// Turns journal batches into the events that are history: skips a batch of a lower epoch
/// than one seen (a fenced primary's late append) or of an impossible epoch jump, and
/// reassembles split batches ([`Reassembly`]).
#[derive(Debug, Default)]
pub struct EventStream {
    max_epoch: u64,
    reassembly: Reassembly,
    last_seq: u64,
    first_seen: Option<u64>,
}

/// What [`EventStream::push`] made of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A batch of history (its events, if any, appended).
    Taken {
        /// Its epoch.
        epoch: u64,
        /// The writer's clock at append.
        written_ns: u64,
    },
    /// Not history (the epoch rule): skipped.
    Skipped,
}

impl EventStream {
    /// A stream that returns only events with a sequence above `after`.
    #[must_use]
    pub fn after(after: u64) -> Self {
        Self {
            last_seq: after,
            ..Self::default()
        }
    }

    /// The sequence of the first event of history seen (before filtering by `after`).
    #[must_use]
    pub fn first_seen(&self) -> Option<u64> {
        self.first_seen
    }

    /// Takes one batch; appends to `out` its events that are history and were not returned
    /// before, in sequence order.
    ///
    /// # Errors
    /// [`RecordError`] when the batch does not decode.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<Pushed, RecordError> {
        let root = record::root(bytes)?;
        let epoch = root.epoch();
        if epoch < self.max_epoch || !epoch_acceptable(self.max_epoch, epoch) {
            return Ok(Pushed::Skipped);
        }
        self.max_epoch = epoch;
        let written_ns = root.written_ns();
        let from = out.len();
        self.reassembly.push(bytes, out)?;
        if self.first_seen.is_none() {
            self.first_seen = out.get(from).map(|e| e.seq);
        }
        // A new primary's epoch may repeat sequences its predecessor wrote and it re-ran: the
        // first time a sequence was history is the one that counts.
        let last = self.last_seq;
        let mut keep = from;
        for i in from..out.len() {
            if out[i].seq > last {
                out.swap(keep, i);
                keep += 1;
            }
        }
        out.truncate(keep);
        if let Some(e) = out[from..].last() {
            self.last_seq = e.seq;
        }
        Ok(Pushed::Taken { epoch, written_ns })
    }

    /// The highest epoch taken so far.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.max_epoch
    }
}

/// Why a history cannot be read from where it was asked.
#[derive(Debug, thiserror::Error)]
pub enum HistoryReadError {
    /// Retention removed part of what was asked for.
    #[error("the journal no longer holds the events before {oldest}")]
    Dropped {
        /// The oldest event sequence still held.
        oldest: u64,
    },
    /// The segment log could not be read.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// A batch did not decode.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The Kafka topic could not be read.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaJournalError),
}

/// The events of a file journal after a sequence, read while a writer appends.
pub struct FileEvents {
    reader: LogReader,
    stream: EventStream,
}

impl FileEvents {
    /// Events with a sequence above `after` from the segment log in `dir`.
    ///
    /// # Errors
    /// [`HistoryReadError::Dropped`] when retention removed the segment holding `after + 1`;
    /// [`HistoryReadError::Segment`] when the directory cannot be listed.
    pub fn open(dir: &Path, after: u64) -> Result<Self, HistoryReadError> {
        let from = after.saturating_add(1);
        if let Some((base, _)) = list_segments(dir)?.first() {
            if *base > from {
                return Err(HistoryReadError::Dropped { oldest: *base });
            }
        }
        Ok(Self {
            reader: LogReader::open(dir, from)?,
            stream: EventStream::after(after),
        })
    }

    /// Appends the events of the next batch to `out`; `Ok(false)` at the log's current end.
    ///
    /// # Errors
    /// [`HistoryReadError`] when the log is damaged or a batch does not decode.
    pub fn read(&mut self, out: &mut Vec<Event>) -> Result<bool, HistoryReadError> {
        match self.reader.next_frame()? {
            Some(f) => {
                self.stream.push(&f.payload, out)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The events of a Kafka journal after a sequence (the topic read from its beginning).
#[cfg(feature = "kafka")]
pub struct KafkaEvents {
    reader: crate::kafka::KafkaReader,
    stream: EventStream,
    after: u64,
    checked: bool,
}

#[cfg(feature = "kafka")]
impl KafkaEvents {
    /// Events with a sequence above `after` from `topic`.
    ///
    /// # Errors
    /// [`HistoryReadError::Kafka`] when the brokers or the topic are missing.
    pub fn open(
        brokers: &crate::kafka::Brokers,
        topic: &str,
        after: u64,
    ) -> Result<Self, HistoryReadError> {
        Ok(Self {
            reader: crate::kafka::KafkaReader::open(brokers, topic)?,
            stream: EventStream::after(after),
            after,
            checked: false,
        })
    }

    /// Appends the events of the next record to `out` (waiting up to `idle` for one);
    /// `Ok(false)` when none came.
    ///
    /// # Errors
    /// [`HistoryReadError::Dropped`] when the topic's first events start after `after + 1`
    /// (retention removed the rest); client and decoding errors.
    pub fn read(
        &mut self,
        out: &mut Vec<Event>,
        idle: std::time::Duration,
    ) -> Result<bool, HistoryReadError> {
        let Some(payload) = self.reader.next(idle)? else {
            return Ok(false);
        };
        self.stream.push(&payload, out)?;
        if !self.checked {
            if let Some(first) = self.stream.first_seen() {
                self.checked = true;
                if first > self.after.saturating_add(1) {
                    return Err(HistoryReadError::Dropped { oldest: first });
                }
            }
        }
        Ok(true)
    }
}
