//! Rebuilding engine state: the latest snapshot, then every journal batch after it re-run
//! through the engine (commands are journaled; see ADR 0001).

use crate::segment::{Frame, LogReader, SegmentError};
use crate::snapshots::SnapshotStore;
use caldera_engine::{Engine, EngineConfig, NullSink, SnapshotError};
use caldera_schema::record::{self, RecordError};
use std::path::Path;
use std::time::{Duration, Instant};

/// Recovery errors.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] SegmentError),
    /// A batch did not decode.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The snapshot did not restore.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The engine configuration is invalid.
    #[error("engine configuration: {0}")]
    Config(#[from] caldera_engine::ConfigError),
    /// Replaying a batch did not reproduce its sequence numbers: the journal was written by an
    /// engine with different configuration or semantics.
    #[error("replay diverged at batch {first}..={last}: the engine is at sequence {engine}")]
    Diverged {
        /// Batch first sequence.
        first: u64,
        /// Batch last sequence.
        last: u64,
        /// Engine sequence after replaying it.
        engine: u64,
    },
    /// The snapshot's configuration differs from the configured one.
    #[error("the latest snapshot was taken with a different engine configuration")]
    ConfigMismatch,
}

/// What recovery did.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Sequence of the snapshot used (0 = none).
    pub snapshot_seq: u64,
    /// Batches replayed after it.
    pub batches: u64,
    /// Commands replayed.
    pub commands: u64,
    /// Events covered by the replayed batches.
    pub events: u64,
    /// Time spent replaying.
    pub elapsed: Duration,
    /// Highest epoch seen in the journal (0 = none).
    pub last_epoch: u64,
    /// Batches skipped because a newer epoch had already started (a fenced writer's late
    /// appends; see docs/failover.md).
    pub stale_batches: u64,
    /// Heartbeat and epoch-start batches seen (no commands).
    pub heartbeats: u64,
    /// Writer clock of the last batch seen (ns since the Unix epoch).
    pub last_written_ns: u64,
    /// Records ignored because their epoch jumps more than [`MAX_EPOCH_JUMP`] past the last
    /// one (no primary writes such a record: a forged or corrupted one).
    pub rejected_epochs: u64,
    /// Kafka records that did not decode as a journal batch, skipped (no primary writes such a
    /// record; if it held history, the next batch does not follow and replay stops there).
    pub undecodable: u64,
}

/// The largest step from one epoch to the next that readers accept. A new primary starts at
/// `last_epoch + 1` (or at a configured epoch within this bound); a record beyond it is not
/// part of the history, so one forged record with `epoch = u64::MAX` cannot make every later
/// primary's records "stale". See ADR 0014.
pub const MAX_EPOCH_JUMP: u64 = 1 << 20;

/// The epoch a new primary starts after `last_epoch` (the highest in the journal), honouring
/// a `configured` minimum within [`MAX_EPOCH_JUMP`].
///
/// # Errors
/// A description when `configured` is out of bounds or the epoch would overflow.
pub fn next_epoch(last_epoch: u64, configured: u64) -> Result<u64, String> {
    let next = last_epoch
        .checked_add(1)
        .ok_or_else(|| format!("epoch {last_epoch} cannot be followed (overflow)"))?;
    if configured > last_epoch.saturating_add(MAX_EPOCH_JUMP) {
        return Err(format!(
            "journal.epoch = {configured} is more than {MAX_EPOCH_JUMP} past the journal's last epoch {last_epoch}: readers would ignore its records"
        ));
    }
    Ok(next.max(configured))
}

/// Whether a record of `epoch` may follow `last_epoch` (see [`MAX_EPOCH_JUMP`]).
#[must_use]
pub fn epoch_acceptable(last_epoch: u64, epoch: u64) -> bool {
    epoch <= last_epoch.saturating_add(MAX_EPOCH_JUMP)
}

/// What [`apply_frame`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Commands re-run; the engine advanced.
    Batch,
    /// A batch without commands: a heartbeat, or the first record of a new epoch.
    Heartbeat,
    /// Already in the engine (covered by the snapshot).
    Covered,
    /// Written by an older epoch after a newer one started: not part of the history.
    Stale,
    /// An epoch jump beyond [`MAX_EPOCH_JUMP`]: not part of the history.
    RejectedEpoch,
    /// A Kafka record that is not a journal batch: skipped.
    Undecodable,
}

/// Rebuilds the engine from `dir`: latest valid snapshot (if its configuration matches
/// `config`) plus the log after it; a fresh engine when the journal is empty.
///
/// # Errors
/// [`RecoverError`].
pub fn recover(dir: &Path, config: &EngineConfig) -> Result<(Engine, Recovered), RecoverError> {
    recover_following(dir, config).map(|(e, r, _)| (e, r))
}

/// Like [`recover`], also returning the reader positioned at the end of the log, to keep
/// following it (a standby).
///
/// # Errors
/// [`RecoverError`].
pub fn recover_following(
    dir: &Path,
    config: &EngineConfig,
) -> Result<(Engine, Recovered, LogReader), RecoverError> {
    recover_following_indexed(dir, config, None)
}

/// Like [`recover_following`], noting in `index` where the history stands after each batch it
/// replays (the batches after the snapshot): resends for those sequences then start near them
/// ([`crate::history::FileEvents::open_indexed`]).
///
/// # Errors
/// [`RecoverError`].
pub fn recover_following_indexed(
    dir: &Path,
    config: &EngineConfig,
    index: Option<&crate::history::OffsetIndex>,
) -> Result<(Engine, Recovered, LogReader), RecoverError> {
    let store = SnapshotStore::new(dir, 3);
    // A snapshot is never ahead of the log it came from: one that is (the log lost an unsynced
    // tail) is skipped.
    let log_end = crate::segment::log_end(dir)?.unwrap_or(u64::MAX);
    let (mut engine, snapshot_seq) = match store.latest_at_most(log_end) {
        Some((seq, bytes)) => match Engine::restore_seeded(
            &bytes,
            caldera_engine::DEFAULT_RESTORE_MEMORY_LIMIT,
            config.hash_seed,
        ) {
            Ok(e) if e.config() != config => return Err(RecoverError::ConfigMismatch),
            Ok(e) => (e, seq),
            // An older format or a damaged body: the log still holds the history unless
            // retention removed it (then replay reports the gap).
            Err(e) => {
                tracing::warn!(seq, error = %e, "snapshot unusable; replaying the whole journal");
                (Engine::new(config.clone())?, 0)
            }
        },
        None => (Engine::new(config.clone())?, 0),
    };
    let mut out = Recovered {
        snapshot_seq,
        ..Recovered::default()
    };
    let reader = replay_reader(&mut engine, dir, &mut out, index)?;
    Ok((engine, out, reader))
}

/// Replays every batch after the engine's last sequence from the log in `dir`.
///
/// # Errors
/// [`RecoverError`].
pub fn replay_into(
    engine: &mut Engine,
    dir: &Path,
    out: &mut Recovered,
) -> Result<(), RecoverError> {
    replay_reader(engine, dir, out, None).map(|_| ())
}

fn replay_reader(
    engine: &mut Engine,
    dir: &Path,
    out: &mut Recovered,
    index: Option<&crate::history::OffsetIndex>,
) -> Result<LogReader, RecoverError> {
    let t = Instant::now();
    // From the batch holding the engine's last sequence (covered, but it and any heartbeats
    // after it carry the epoch a snapshot does not record).
    let mut reader = LogReader::open(dir, engine.last_seq().max(1))?;
    while let Some(f) = reader.next_frame()? {
        apply_frame_and_index(engine, &f, &reader, out, index)?;
    }
    out.elapsed += t.elapsed();
    Ok(reader)
}

/// Applies one journal batch to `engine`, checking it reproduces the batch's sequence range.
///
/// The epoch rule (the same for every reader, so replay equals what a standby holds): the
/// history is the sequence of batches in log order, skipping any batch whose epoch is lower
/// than an epoch already seen — a fenced primary's late appends — or more than
/// [`MAX_EPOCH_JUMP`] above it. A batch without commands only
/// carries its epoch and clock (heartbeat, or a new primary's first record).
///
/// # Errors
/// [`RecoverError`] on a decoding error or divergence.
pub fn apply_frame(
    engine: &mut Engine,
    payload: &[u8],
    first: u64,
    last: u64,
    out: &mut Recovered,
) -> Result<Applied, RecoverError> {
    apply_batch(engine, &record::decode_commands(payload)?, first, last, out)
}

/// [`apply_frame`] for the frame `reader` just returned, then notes in `index` where the
/// history stands after it (the file journal's [`crate::kafka::apply_and_index`]): a resend of
/// the events after it can start there ([`crate::history::FileEvents::open_indexed`]).
///
/// # Errors
/// As [`apply_frame`].
pub fn apply_frame_and_index(
    engine: &mut Engine,
    frame: &Frame,
    reader: &LogReader,
    out: &mut Recovered,
    index: Option<&crate::history::OffsetIndex>,
) -> Result<Applied, RecoverError> {
    let applied = apply_frame(engine, &frame.payload, frame.first_seq, frame.last_seq, out)?;
    if let (Some(index), Some(p)) = (index, reader.trusted_prefix()) {
        index.record(crate::history::Checkpoint {
            segment: p.segment_base,
            next_offset: i64::try_from(p.offset).unwrap_or(i64::MAX),
            epoch: out.last_epoch,
            last_seq: engine.last_seq(),
        });
    }
    Ok(applied)
}

/// [`apply_frame`] for a batch already decoded (Kafka records carry their range inside).
///
/// # Errors
/// [`RecoverError::Diverged`].
pub fn apply_batch(
    engine: &mut Engine,
    batch: &record::DecodedBatch,
    first: u64,
    last: u64,
    out: &mut Recovered,
) -> Result<Applied, RecoverError> {
    if batch.epoch < out.last_epoch {
        out.stale_batches += 1;
        return Ok(Applied::Stale);
    }
    if !epoch_acceptable(out.last_epoch, batch.epoch) {
        out.rejected_epochs += 1;
        tracing::error!(
            epoch = batch.epoch,
            last_epoch = out.last_epoch,
            first,
            last,
            "journal record with an impossible epoch jump ignored (forged or corrupted)"
        );
        return Ok(Applied::RejectedEpoch);
    }
    out.last_epoch = batch.epoch;
    out.last_written_ns = batch.written_ns;
    if batch.commands.is_empty() {
        out.heartbeats += 1;
        return Ok(Applied::Heartbeat);
    }
    if last <= engine.last_seq() && first <= last {
        return Ok(Applied::Covered); // already applied (covered by the snapshot)
    }
    if first != engine.last_seq() + 1 {
        return Err(RecoverError::Diverged {
            first,
            last,
            engine: engine.last_seq(),
        });
    }
    for c in &batch.commands {
        engine.process(c, &mut NullSink);
    }
    if engine.last_seq() != last {
        return Err(RecoverError::Diverged {
            first,
            last,
            engine: engine.last_seq(),
        });
    }
    out.batches += 1;
    out.commands += batch.commands.len() as u64;
    out.events += last + 1 - first;
    Ok(Applied::Batch)
}
