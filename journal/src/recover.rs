//! Rebuilding engine state: the latest snapshot, then every journal batch after it re-run
//! through the engine (commands are journaled; see ADR 0001).

use crate::record::{self, RecordError};
use crate::segment::{LogReader, SegmentError};
use crate::snapshots::SnapshotStore;
use caldera_engine::{Engine, EngineConfig, NullSink, SnapshotError};
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
    /// Last epoch seen in the journal (0 = none).
    pub last_epoch: u64,
}

/// Rebuilds the engine from `dir`: latest valid snapshot (if its configuration matches
/// `config`) plus the log after it; a fresh engine when the journal is empty.
///
/// # Errors
/// [`RecoverError`].
pub fn recover(dir: &Path, config: &EngineConfig) -> Result<(Engine, Recovered), RecoverError> {
    let store = SnapshotStore::new(dir, 3);
    let (mut engine, snapshot_seq) = match store.latest() {
        Some((seq, bytes)) => {
            let e = Engine::restore(&bytes)?;
            if e.config() != config {
                return Err(RecoverError::ConfigMismatch);
            }
            (e, seq)
        }
        None => (Engine::new(config.clone())?, 0),
    };
    let mut out = Recovered {
        snapshot_seq,
        ..Recovered::default()
    };
    replay_into(&mut engine, dir, &mut out)?;
    Ok((engine, out))
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
    let t = Instant::now();
    let mut reader = LogReader::open(dir, engine.last_seq() + 1)?;
    while let Some(f) = reader.next_frame()? {
        apply_frame(engine, &f.payload, f.first_seq, f.last_seq, out)?;
    }
    out.elapsed += t.elapsed();
    Ok(())
}

/// Applies one journal batch to `engine`, checking it reproduces the batch's sequence range.
///
/// # Errors
/// [`RecoverError`] on a decoding error or divergence.
pub fn apply_frame(
    engine: &mut Engine,
    payload: &[u8],
    first: u64,
    last: u64,
    out: &mut Recovered,
) -> Result<(), RecoverError> {
    if last <= engine.last_seq() && first <= last {
        return Ok(()); // already applied (covered by the snapshot)
    }
    let batch = record::decode_commands(payload)?;
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
    out.last_epoch = out.last_epoch.max(batch.epoch);
    Ok(())
}
