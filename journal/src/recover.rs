//! Rebuilding engine state: the latest snapshot, then every journal batch after it re-run
//! through the engine (commands are journaled; see ADR 0001).

use crate::segment::{LogReader, SegmentError};
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
    let store = SnapshotStore::new(dir, 3);
    let (mut engine, snapshot_seq) = match store.latest() {
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
    let reader = replay_reader(&mut engine, dir, &mut out)?;
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
    replay_reader(engine, dir, out).map(|_| ())
}

fn replay_reader(
    engine: &mut Engine,
    dir: &Path,
    out: &mut Recovered,
) -> Result<LogReader, RecoverError> {
    let t = Instant::now();
    // From the batch holding the engine's last sequence (covered, but it and any heartbeats
    // after it carry the epoch a snapshot does not record).
    let mut reader = LogReader::open(dir, engine.last_seq().max(1))?;
    while let Some(f) = reader.next_frame()? {
        apply_frame(engine, &f.payload, f.first_seq, f.last_seq, out)?;
    }
    out.elapsed += t.elapsed();
    Ok(reader)
}

/// Applies one journal batch to `engine`, checking it reproduces the batch's sequence range.
///
/// The epoch rule (the same for every reader, so replay equals what a standby holds): the
/// history is the sequence of batches in log order, skipping any batch whose epoch is lower
/// than an epoch already seen — a fenced primary's late appends. A batch without commands only
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
