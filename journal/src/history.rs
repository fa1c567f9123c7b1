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

    /// A stream that continues from `at` (the state a stream that read every record before
    /// `at.next_offset` had: no split batch pending, epoch `at.epoch` the highest taken) and
    /// returns only events with a sequence above `after` (`after ≥ at.last_seq`).
    #[must_use]
    pub fn resume(at: Checkpoint, after: u64) -> Self {
        Self {
            max_epoch: at.epoch,
            last_seq: after.max(at.last_seq),
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

/// Where the history stood after one record of a log: every record before `next_offset` read
/// under the epoch rule, `epoch` the highest taken, every event up to `last_seq` returned, no
/// split batch pending (it follows a record holding commands: a whole batch or a split
/// batch's final record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// File journal: the base sequence of the segment `next_offset` is in (Kafka: 0).
    pub segment: u64,
    /// The offset of the next record (Kafka), or the byte offset of the next frame in the
    /// segment (file journal).
    pub next_offset: i64,
    /// The highest epoch taken so far.
    pub epoch: u64,
    /// The last event sequence of history so far.
    pub last_seq: u64,
}

/// Where sequences sit in a log: [`Checkpoint`]s, so that a reader of the events after a
/// sequence starts near it ([`OffsetIndex::start_for`]) instead of at the log's beginning (a
/// Kafka topic) or at the beginning of the segment holding it (a file journal's segment is up
/// to 64 MiB: a resend after a failover read ~25 MB of frames, 40–100 ms, before this). Kafka
/// offsets are not sequences, and a resend read the whole topic before this (its cost grew
/// with the topic, not with what it resends).
///
/// Filled by whoever reads or writes the whole log anyway — recovery and the standby as they
/// apply records, the primary's writer as the broker acknowledges them — and read by resends.
/// Bounded: at most `capacity` checkpoints, at least `spacing` events apart; when full, every
/// other one is dropped and the spacing doubles (a resend then reads at most about
/// `history / capacity` events it does not need).
#[derive(Debug)]
pub struct OffsetIndex {
    inner: std::sync::Mutex<IndexPoints>,
    capacity: usize,
    /// The sequence the next checkpoint must reach (the last one's + the spacing): offers
    /// before it return without taking the lock (the writer offers one per batch).
    due: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct IndexPoints {
    points: Vec<Checkpoint>,
    spacing: u64,
}

impl Default for OffsetIndex {
    fn default() -> Self {
        // 1.5 MiB at most: on a topic of a billion events, checkpoints ~16K events apart.
        Self::with_limits(65_536, 1024)
    }
}

impl OffsetIndex {
    /// An empty index of at most `capacity` (≥ 2) checkpoints, starting `spacing` (≥ 1) events
    /// apart.
    #[must_use]
    pub fn with_limits(capacity: usize, spacing: u64) -> Self {
        Self {
            inner: std::sync::Mutex::new(IndexPoints {
                points: Vec::new(),
                spacing: spacing.max(1),
            }),
            capacity: capacity.max(2),
            due: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn points(&self) -> std::sync::MutexGuard<'_, IndexPoints> {
        // The points stay ordered whatever a panicking holder did: no invariant spans a call.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes `at`, unless it is less than the spacing past the last checkpoint (or not past it
    /// in the log).
    pub fn record(&self, at: Checkpoint) {
        use std::sync::atomic::Ordering::Relaxed;
        if at.last_seq < self.due.load(Relaxed) {
            return;
        }
        let mut g = self.points();
        if let Some(last) = g.points.last() {
            if (at.segment, at.next_offset) <= (last.segment, last.next_offset)
                || at.last_seq < last.last_seq.saturating_add(g.spacing)
            {
                return;
            }
        }
        if g.points.len() >= self.capacity {
            let mut i = 0;
            g.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            g.spacing = g.spacing.saturating_mul(2);
        }
        g.points.push(at);
        self.due
            .store(at.last_seq.saturating_add(g.spacing), Relaxed);
    }

    /// The last checkpoint at or before `after` (`last_seq ≤ after`): where a reader of the
    /// events after `after` starts. `None`: from the log's beginning.
    #[must_use]
    pub fn start_for(&self, after: u64) -> Option<Checkpoint> {
        let g = self.points();
        let n = g.points.partition_point(|p| p.last_seq <= after);
        n.checked_sub(1).map(|i| g.points[i])
    }

    /// Checkpoints held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.points().points.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        Self::open_indexed(dir, after, None)
    }

    /// Like [`FileEvents::open`], starting at the last checkpoint of `index` at or before
    /// `after` when there is one (and its segment is still there), instead of at the beginning
    /// of the segment holding `after + 1`.
    ///
    /// # Errors
    /// As [`FileEvents::open`].
    pub fn open_indexed(
        dir: &Path,
        after: u64,
        index: Option<&OffsetIndex>,
    ) -> Result<Self, HistoryReadError> {
        let from = after.saturating_add(1);
        if let Some((base, _)) = list_segments(dir)?.first() {
            if *base > from {
                return Err(HistoryReadError::Dropped { oldest: *base });
            }
        }
        if let Some(at) = index.and_then(|i| i.start_for(after)) {
            let offset = u64::try_from(at.next_offset).unwrap_or(0);
            if let Some(reader) = LogReader::open_at(dir, from, at.segment, offset)? {
                return Ok(Self {
                    reader,
                    stream: EventStream::resume(at, after),
                });
            }
        }
        Ok(Self {
            reader: LogReader::open(dir, from)?,
            stream: EventStream::after(after),
        })
    }

    /// Where the reader is: the segment's base and the byte offset of its next frame
    /// (`None` before it opened one).
    #[must_use]
    pub fn position(&self) -> Option<(u64, u64)> {
        self.reader
            .trusted_prefix()
            .map(|p| (p.segment_base, p.offset))
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
    /// Events with a sequence above `after` from `topic`: from the last checkpoint of `index`
    /// at or before `after` when there is one, else from the topic's beginning.
    ///
    /// # Errors
    /// [`HistoryReadError::Kafka`] when the brokers or the topic are missing.
    pub fn open(
        brokers: &crate::kafka::Brokers,
        topic: &str,
        after: u64,
        index: Option<&OffsetIndex>,
    ) -> Result<Self, HistoryReadError> {
        let (reader, stream) = match index.and_then(|i| i.start_for(after)) {
            Some(at) => (
                crate::kafka::KafkaReader::open_at(brokers, topic, at.next_offset)?,
                EventStream::resume(at, after),
            ),
            None => (
                crate::kafka::KafkaReader::open(brokers, topic)?,
                EventStream::after(after),
            ),
        };
        Ok(Self {
            reader,
            stream,
            after,
            checked: false,
        })
    }

    /// The offset after the last record read.
    #[must_use]
    pub fn next_offset(&self) -> i64 {
        self.reader.next_offset()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(next_offset: i64, last_seq: u64) -> Checkpoint {
        Checkpoint {
            segment: 0,
            next_offset,
            epoch: 1,
            last_seq,
        }
    }

    #[test]
    fn a_reader_starts_at_the_last_checkpoint_at_or_before_its_sequence() {
        let index = OffsetIndex::with_limits(100, 10);
        assert_eq!(index.start_for(1_000), None);
        index.record(at(5, 100));
        index.record(at(6, 105)); // less than the spacing past the last one
        index.record(at(9, 130));
        index.record(at(9, 200)); // not past the last one in the log
        index.record(at(12, 160));
        assert_eq!(index.len(), 3);
        assert_eq!(index.start_for(99), None);
        assert_eq!(index.start_for(100), Some(at(5, 100)));
        assert_eq!(index.start_for(159), Some(at(9, 130)));
        assert_eq!(index.start_for(u64::MAX), Some(at(12, 160)));
    }

    #[test]
    fn a_full_index_drops_every_other_checkpoint_and_doubles_its_spacing() {
        let index = OffsetIndex::with_limits(8, 1);
        for i in 1..=10_000u64 {
            index.record(at(i as i64, i));
            assert!(index.len() <= 8);
        }
        // Still spread over the whole log, and a reader never starts after its sequence.
        assert!(index.start_for(100).is_some_and(|c| c.last_seq <= 100));
        let last = index.start_for(u64::MAX).unwrap();
        assert!(last.last_seq > 10_000 - 10_000 / 4, "{last:?}");
        for after in (0..10_000).step_by(97) {
            if let Some(c) = index.start_for(after) {
                assert!(c.last_seq <= after);
            }
        }
    }
}
