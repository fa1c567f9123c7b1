//! The hot standby: follows the journal until the primary is gone, then becomes the primary.
//!
//! One loop ([`run_standby`]) over a [`Follower`], implemented for the file journal
//! ([`file::FileFollower`]) and for Kafka (`kafka::KafkaFollower`). Both end in a
//! [`Primary`]: an engine holding every batch of the journal, a journal writer this process
//! owns, and a new epoch whose first record is already durable. The protocol (detection,
//! fencing, the epoch rule readers apply) is in docs/failover.md.

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
mod peers;

use crate::config::{Config, FsyncSetting, JournalUri};
use crate::error::NodeError;
use crate::handover::Primary;
use crate::status::{NodeStatus, Role};
use caldera_engine::Engine;
use caldera_journal::recover::Recovered;
use caldera_schema::record::{encode_batch, wall_ns};
use flatbuffers::FlatBufferBuilder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A journal a standby follows.
pub(crate) trait Follower {
    /// Applies what was written since the last call (waiting up to the follower's own poll
    /// interval); returns how many batches.
    ///
    /// # Errors
    /// The journal cannot be read, or a batch does not reproduce its sequence range.
    fn poll(&mut self) -> Result<usize, NodeError>;
    /// A last read before stopping.
    ///
    /// # Errors
    /// As [`Follower::poll`].
    fn catch_up(&mut self) -> Result<usize, NodeError> {
        self.poll()
    }
    /// The engine holding every batch applied.
    fn engine(&self) -> &Engine;
    /// What following has read so far (epoch, batches, writer clock).
    fn recovered(&self) -> &Recovered;
    /// Time since the last journal record.
    fn silence(&self) -> Duration;
    /// Whether the primary is known to be gone (file: its writer lock was handed over; Kafka:
    /// its connection dropped).
    ///
    /// # Errors
    /// When the detector itself failed.
    fn primary_gone(&mut self) -> Result<bool, NodeError>;
    /// The primary has been silent for `failover.timeout_ms`: `true` to promote now, `false`
    /// when it was fenced another way and [`Follower::primary_gone`] will tell.
    fn on_silence(&mut self) -> bool;
    /// Waits a little after a poll that applied `applied` batches.
    fn idle(&mut self, _applied: usize) {}
    /// Takes over: the new epoch is durable when this returns.
    ///
    /// # Errors
    /// The journal cannot be written, or another primary started first.
    fn promote(self: Box<Self>, cfg: &Config, detected: Instant) -> Result<Primary, NodeError>;
}

/// How a standby ended.
pub enum StandbyExit {
    /// The primary was gone: serve with this.
    Promoted(Box<Primary>),
    /// Stopped by `shutdown` while following.
    Stopped(StandbySummary),
}

/// A stopped standby's state (to compare with the primary's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StandbySummary {
    /// Last event sequence applied.
    #[serde(rename = "last_seq")]
    pub applied_seq: u64,
    /// The engine's state hash.
    #[serde(serialize_with = "crate::summary::hex")]
    pub state_hash: u64,
    /// Epoch followed.
    pub epoch: u64,
    /// Batches applied.
    pub batches: u64,
    /// Batches skipped under the epoch rule.
    pub stale_batches: u64,
}

impl StandbySummary {
    fn of(f: &dyn Follower) -> Self {
        let (engine, rec) = (f.engine(), f.recovered());
        Self {
            applied_seq: engine.last_seq(),
            state_hash: engine.state_hash(),
            epoch: rec.last_epoch,
            batches: rec.batches,
            stale_batches: rec.stale_batches,
        }
    }
}

/// Follows the journal as a hot standby until the primary is gone, then returns the promoted
/// [`Primary`]; [`StandbyExit::Stopped`] when `shutdown` is set first. `peer`: how to connect
/// to the other nodes' order entry (`failover.peers`; the pair's server key).
///
/// # Errors
/// [`NodeError`] when the journal cannot be read or written.
pub fn run_standby(
    cfg: &Config,
    peer: &caldera_auth::ClientCredentials,
    shutdown: &AtomicBool,
    status: &NodeStatus,
) -> Result<StandbyExit, NodeError> {
    cfg.validate()?;
    status.set_role(Role::Starting);
    let mut f = follower(cfg, peer)?;
    status.set_role(Role::Standby);
    let timeout = Duration::from_millis(cfg.failover.timeout_ms);
    let status_every = Duration::from_millis(cfg.failover.status_every_ms);
    let mut next_status = Instant::now();
    loop {
        if shutdown.load(Ordering::Relaxed) {
            f.catch_up()?;
            return Ok(StandbyExit::Stopped(StandbySummary::of(f.as_ref())));
        }
        let applied = f.poll()?;
        publish_progress(status, f.as_ref(), applied);
        let gone = f.primary_gone()?;
        if gone || (f.silence() > timeout && f.on_silence()) {
            let detected = Instant::now();
            tracing::warn!(
                silence_ms = f.silence().as_millis() as u64,
                connection_or_lock_lost = gone,
                "standby: the primary is gone: promoting"
            );
            let p = f.promote(cfg, detected)?;
            status
                .promotion_us
                .store(detected.elapsed().as_micros() as u64, Ordering::Relaxed);
            return Ok(StandbyExit::Promoted(Box::new(p)));
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + status_every;
            log_status(status, f.engine());
        }
        f.idle(applied);
    }
}

fn follower(
    cfg: &Config,
    #[allow(unused_variables)] peer: &caldera_auth::ClientCredentials,
) -> Result<Box<dyn Follower>, NodeError> {
    let engine_cfg = cfg.engine_config();
    match cfg.journal.parsed()? {
        JournalUri::None => Err(NodeError::Recover(
            "a standby needs a journal to follow (file:// or kafka://)".into(),
        )),
        JournalUri::File(dir) => Ok(Box::new(file::FileFollower::follow(&dir, cfg)?)),
        #[cfg(feature = "kafka")]
        JournalUri::Kafka { brokers, topic } => Ok(Box::new(kafka::KafkaFollower::follow(
            &cfg.journal.brokers(&brokers),
            &topic,
            &engine_cfg,
            cfg,
            peer,
        )?)),
        #[cfg(not(feature = "kafka"))]
        JournalUri::Kafka { .. } => {
            Err(crate::config::ConfigFileError::Invalid(crate::config::NO_KAFKA.into()).into())
        }
    }
}

/// Publishes a standby's progress after a poll that applied `applied` batches.
fn publish_progress(status: &NodeStatus, f: &dyn Follower, applied: usize) {
    let rec = f.recovered();
    if applied > 0 && rec.last_written_ns > 0 {
        let lag = wall_ns().saturating_sub(rec.last_written_ns) / 1_000_000;
        status.lag_ms.store(lag, Ordering::Relaxed);
    }
    status.epoch.store(rec.last_epoch, Ordering::Relaxed);
    status
        .applied_seq
        .store(f.engine().last_seq(), Ordering::Relaxed);
    status.batches_applied.store(rec.batches, Ordering::Relaxed);
    status
        .stale_batches
        .store(rec.stale_batches, Ordering::Relaxed);
    status
        .skipped_records
        .store(rec.rejected_epochs + rec.undecodable, Ordering::Relaxed);
    status
        .silence_ms
        .store(f.silence().as_millis() as u64, Ordering::Relaxed);
}

fn log_status(status: &NodeStatus, engine: &Engine) {
    tracing::info!(
        role = ?status.role(),
        epoch = status.epoch.load(Ordering::Relaxed),
        applied_seq = engine.last_seq(),
        lag_ms = status.lag_ms.load(Ordering::Relaxed),
        silence_ms = status.silence_ms.load(Ordering::Relaxed),
        stale_batches = status.stale_batches.load(Ordering::Relaxed),
        state_hash = format!("{:016x}", engine.state_hash()),
        "standby status"
    );
}

/// The file journal's options from the configuration.
pub(crate) fn log_options(cfg: &Config) -> caldera_journal::LogOptions {
    let j = &cfg.journal;
    caldera_journal::LogOptions {
        segment_bytes: j.segment_bytes,
        preallocate: j.preallocate,
        fsync: match j.fsync {
            FsyncSetting::Always => caldera_journal::FsyncPolicy::Always,
            FsyncSetting::Interval => caldera_journal::FsyncPolicy::EveryMs(j.fsync_interval_ms),
            FsyncSetting::Never => caldera_journal::FsyncPolicy::Never,
        },
        ..Default::default()
    }
}

/// The epoch-start record: a batch without commands, with the new epoch.
pub(crate) fn epoch_record(epoch: u64, last_seq: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    encode_batch(&mut fbb, epoch, &[], &[], last_seq + 1, last_seq).to_vec()
}
