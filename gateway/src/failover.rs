//! Becoming the primary, and the hot standby that follows the journal until it must.
//!
//! Both `caldera serve` and a standby's promotion end in [`Primary`]: an engine holding every
//! batch of the journal, a journal writer this process owns, and a new epoch whose first record
//! is already durable. The protocol (detection, fencing, the epoch rule readers apply) is in
//! docs/failover.md.

use crate::config::{Config, FsyncSetting, JournalUri};
use crate::journal_thread::JournalBackend;
use crate::server::ServeError;
use caldera_engine::{Engine, EngineConfig};
use caldera_journal::kafka::{self, KafkaJournal, KafkaReader};
use caldera_journal::lock::WriterLock;
use caldera_journal::record::{encode_batch, wall_ns};
use caldera_journal::recover::{apply_frame, Recovered};
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::{LogReader, SegmentLog};
use flatbuffers::FlatBufferBuilder;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An engine and the journal it may write: what a primary serves with.
pub struct Primary {
    /// The engine, holding every batch of the journal.
    pub engine: Engine,
    /// The journal writer and (file journal) the snapshot store; `None` without a journal.
    pub backend: Option<(Box<dyn JournalBackend>, Option<SnapshotStore>)>,
    /// This primary's epoch (its first record is already in the journal).
    pub epoch: u64,
    /// A copy of `engine` for the journal stage's snapshots, if one is at hand (a standby
    /// keeps one in step so promotion copies nothing); otherwise `engine` is cloned.
    pub shadow: Option<Engine>,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Starting up / recovering.
    Starting = 0,
    /// Following the journal.
    Standby = 1,
    /// Serving clients and writing the journal.
    Primary = 2,
    /// Fenced by a newer primary; stopping.
    Fenced = 3,
}

/// What a node is doing, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct NodeStatus {
    role: AtomicU8,
    /// Current epoch (the one followed, or the one written).
    pub epoch: AtomicU64,
    /// Last sequence applied (standby) or recovered (primary at start).
    pub applied_seq: AtomicU64,
    /// Standby: age of the newest applied batch when it was applied (write → apply), ms.
    pub lag_ms: AtomicU64,
    /// Standby: time since the last journal record, ms.
    pub silence_ms: AtomicU64,
    /// Standby: batches applied.
    pub batches_applied: AtomicU64,
    /// Batches skipped under the epoch rule (a fenced writer's late appends).
    pub stale_batches: AtomicU64,
    /// Last promotion: detection → serving, µs.
    pub promotion_us: AtomicU64,
}

impl NodeStatus {
    /// Current role.
    #[must_use]
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Primary,
            3 => Role::Fenced,
            _ => Role::Starting,
        }
    }

    /// Sets the role.
    pub fn set_role(&self, r: Role) {
        self.role.store(r as u8, Ordering::Relaxed);
    }

    /// Publishes a standby's progress after a poll that applied `applied` batches.
    fn follow(&self, engine: &Engine, rec: &Recovered, applied: usize, silence: Duration) {
        if applied > 0 && rec.last_written_ns > 0 {
            let lag = wall_ns().saturating_sub(rec.last_written_ns) / 1_000_000;
            self.lag_ms.store(lag, Ordering::Relaxed);
        }
        self.epoch.store(rec.last_epoch, Ordering::Relaxed);
        self.applied_seq.store(engine.last_seq(), Ordering::Relaxed);
        self.batches_applied.store(rec.batches, Ordering::Relaxed);
        self.stale_batches
            .store(rec.stale_batches, Ordering::Relaxed);
        self.silence_ms
            .store(silence.as_millis() as u64, Ordering::Relaxed);
    }
}

fn jerr(e: impl std::fmt::Display) -> ServeError {
    ServeError::Journal(e.to_string())
}

fn log_options(cfg: &Config) -> caldera_journal::LogOptions {
    let j = &cfg.journal;
    caldera_journal::LogOptions {
        segment_bytes: j.segment_bytes,
        fsync: match j.fsync {
            FsyncSetting::Always => caldera_journal::FsyncPolicy::Always,
            FsyncSetting::Interval => caldera_journal::FsyncPolicy::EveryMs(j.fsync_interval_ms),
            FsyncSetting::Never => caldera_journal::FsyncPolicy::Never,
        },
        ..Default::default()
    }
}

/// The epoch-start record: a batch without commands, with the new epoch.
fn epoch_record(fbb: &mut FlatBufferBuilder<'static>, epoch: u64, last_seq: u64) -> Vec<u8> {
    encode_batch(fbb, epoch, &[], &[], last_seq + 1, last_seq).to_vec()
}

/// Opens the configured journal as its only writer and rebuilds the engine from it (what
/// `caldera serve` does). Fails if another process holds a file journal.
///
/// # Errors
/// [`ServeError::Journal`] when the journal cannot be opened, replayed or written.
pub fn open_primary(cfg: &Config) -> Result<Primary, ServeError> {
    let engine_cfg = cfg.engine_config();
    match cfg.journal.parsed()? {
        JournalUri::None => {
            tracing::warn!("no journal: state is not durable");
            Ok(Primary {
                engine: Engine::new(engine_cfg).map_err(crate::config::ConfigFileError::from)?,
                backend: None,
                epoch: cfg.journal.epoch,
                shadow: None,
            })
        }
        JournalUri::File(dir) => {
            let lock = WriterLock::try_acquire(&dir).map_err(jerr)?;
            let follower = FileFollower::start(&dir, &engine_cfg)?;
            follower.promote(cfg, lock, Instant::now())
        }
        JournalUri::Kafka { brokers, topic } => {
            let idle = Duration::from_millis(cfg.journal.kafka_catchup_idle_ms);
            let follower = KafkaFollower::start(&brokers, &topic, &engine_cfg, idle)?;
            follower.promote(cfg, Instant::now())
        }
    }
}

/// How a standby ended.
pub enum StandbyExit {
    /// The primary was gone: serve with this.
    Promoted(Box<Primary>),
    /// Stopped by `shutdown` while following.
    Stopped(StandbySummary),
}

/// A stopped standby's state (to compare with the primary's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbySummary {
    /// Last event sequence applied.
    pub applied_seq: u64,
    /// The engine's state hash.
    pub state_hash: u64,
    /// Epoch followed.
    pub epoch: u64,
    /// Batches applied.
    pub batches: u64,
    /// Batches skipped under the epoch rule.
    pub stale_batches: u64,
}

impl StandbySummary {
    fn of(engine: &Engine, rec: &Recovered) -> Self {
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
/// [`Primary`]; [`StandbyExit::Stopped`] when `shutdown` is set first.
///
/// # Errors
/// [`ServeError`] when the journal cannot be read or written.
pub fn run_standby(
    cfg: &Config,
    shutdown: &AtomicBool,
    status: &NodeStatus,
) -> Result<StandbyExit, ServeError> {
    cfg.validate()?;
    status.set_role(Role::Starting);
    let engine_cfg = cfg.engine_config();
    let timeout = Duration::from_millis(cfg.failover.timeout_ms);
    let status_every = Duration::from_millis(cfg.failover.status_every_ms);
    let mut next_status = Instant::now();
    match cfg.journal.parsed()? {
        JournalUri::None => Err(ServeError::Journal(
            "a standby needs a journal to follow (file:// or kafka://)".into(),
        )),
        JournalUri::File(dir) => {
            let mut f = FileFollower::start(&dir, &engine_cfg)?;
            f.shadow = Some((f.engine.clone(), f.rec.clone()));
            status.set_role(Role::Standby);
            tracing::info!(dir = %dir.display(), seq = f.engine.last_seq(), epoch = f.rec.last_epoch, "standby: following the file journal");
            // The writer lock: the kernel hands it over the instant the primary dies.
            let (lock_tx, lock_rx) = mpsc::channel();
            let lock_dir = dir.clone();
            std::thread::Builder::new()
                .name("caldera-lockwait".into())
                .spawn(move || {
                    let _ = lock_tx.send(WriterLock::acquire_blocking(&lock_dir));
                })?;
            let mut killed = false;
            loop {
                if shutdown.load(Ordering::Relaxed) {
                    f.poll()?;
                    return Ok(StandbyExit::Stopped(StandbySummary::of(&f.engine, &f.rec)));
                }
                let applied = f.poll()?;
                status.follow(&f.engine, &f.rec, applied, f.last_record.elapsed());
                match lock_rx.try_recv() {
                    Ok(lock) => {
                        let detected = Instant::now();
                        tracing::warn!(
                            silence_ms = f.last_record.elapsed().as_millis() as u64,
                            "standby: the writer lock is free (the primary is gone): promoting"
                        );
                        let lock = lock.map_err(jerr)?;
                        let p = f.promote(cfg, lock, detected)?;
                        status
                            .promotion_us
                            .store(detected.elapsed().as_micros() as u64, Ordering::Relaxed);
                        return Ok(StandbyExit::Promoted(Box::new(p)));
                    }
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Err(ServeError::Journal("the lock waiter stopped".into()));
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                if f.last_record.elapsed() > timeout && !killed && cfg.failover.kill_silent_primary
                {
                    // Silent but holding the lock: stopped or hung. Fence it for good.
                    if let Some(pid) = WriterLock::holder_pid(&dir) {
                        if pid != std::process::id() as i32 {
                            tracing::warn!(
                                pid,
                                silence_ms = f.last_record.elapsed().as_millis() as u64,
                                "standby: the primary holds the lock but is silent: killing it"
                            );
                            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                                let _ =
                                    rustix::process::kill_process(p, rustix::process::Signal::KILL);
                            }
                            killed = true;
                        }
                    }
                }
                if Instant::now() >= next_status {
                    next_status = Instant::now() + status_every;
                    log_status(status, &f.engine);
                }
                if applied == 0 {
                    // Poll fast while batches flow, slower when the primary is idle (only
                    // heartbeats): the lock thread detects a crash either way.
                    let idle = f.last_record.elapsed() > Duration::from_millis(20);
                    std::thread::sleep(Duration::from_micros(if idle { 1000 } else { 200 }));
                }
            }
        }
        JournalUri::Kafka { brokers, topic } => {
            let mut f = KafkaFollower::start(&brokers, &topic, &engine_cfg, Duration::ZERO)?;
            f.shadow = Some((f.engine.clone(), f.rec.clone()));
            // Connect the producer now: its start-up (idempotent producer id) is then not on
            // the failover path.
            f.writer = Some(f.connect_writer(cfg, 0)?);
            status.set_role(Role::Standby);
            tracing::info!(
                brokers,
                topic,
                seq = f.engine.last_seq(),
                epoch = f.rec.last_epoch,
                offset = f.reader.next_offset(),
                "standby: following the Kafka journal"
            );
            let mut peers = PeerWatch::new(&cfg.failover.peers)?;
            loop {
                if shutdown.load(Ordering::Relaxed) {
                    f.poll(Duration::from_millis(50))?;
                    return Ok(StandbyExit::Stopped(StandbySummary::of(&f.engine, &f.rec)));
                }
                let applied = f.poll(Duration::from_millis(2))?;
                status.follow(&f.engine, &f.rec, applied, f.last_record.elapsed());
                let dropped = peers.as_mut().is_some_and(PeerWatch::lost);
                if dropped || f.last_record.elapsed() > timeout {
                    let detected = Instant::now();
                    tracing::warn!(
                        silence_ms = f.last_record.elapsed().as_millis() as u64,
                        connection_dropped = dropped,
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
                    log_status(status, &f.engine);
                }
            }
        }
    }
}

/// Watches the other nodes' order-entry endpoints (`failover.peers`): only the primary binds
/// its endpoint, so a live ZeroMQ connection from here means "a primary is up", and its drop
/// (the kernel resets TCP connections of a dead process) is a crash signal that needs no
/// timeout.
struct PeerWatch {
    _probe: zmq::Socket,
    monitor: zmq::Socket,
    up: usize,
}

impl PeerWatch {
    fn new(peers: &[String]) -> Result<Option<Self>, ServeError> {
        if peers.is_empty() {
            return Ok(None);
        }
        let zerr = |e: zmq::Error| ServeError::Journal(format!("peer watch: {e}"));
        let ctx = zmq::Context::new();
        let probe = ctx.socket(zmq::DEALER).map_err(zerr)?;
        probe.set_linger(0).map_err(zerr)?;
        probe.set_reconnect_ivl(1).map_err(zerr)?;
        probe.set_reconnect_ivl_max(10).map_err(zerr)?;
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        probe
            .monitor("inproc://caldera-peer-watch", i32::from(events))
            .map_err(zerr)?;
        let monitor = ctx.socket(zmq::PAIR).map_err(zerr)?;
        monitor
            .connect("inproc://caldera-peer-watch")
            .map_err(zerr)?;
        for p in peers {
            probe.connect(p).map_err(zerr)?;
        }
        Ok(Some(Self {
            _probe: probe,
            monitor,
            up: 0,
        }))
    }

    /// Whether a connection to a primary dropped since the last call.
    fn lost(&mut self) -> bool {
        let mut lost = false;
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(ev) = frames.first().filter(|f| f.len() >= 2) else {
                continue;
            };
            let ev = u16::from_le_bytes([ev[0], ev[1]]);
            if ev == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                self.up += 1;
            } else if ev == zmq::SocketEvent::DISCONNECTED.to_raw() && self.up > 0 {
                self.up -= 1;
                lost = true;
            }
        }
        lost
    }
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

/// Follows a file journal: snapshot + replay, then tails the segments.
struct FileFollower {
    dir: PathBuf,
    engine: Engine,
    /// Kept in step with `engine` once following (the promoted primary's snapshot shadow).
    shadow: Option<(Engine, Recovered)>,
    rec: Recovered,
    reader: LogReader,
    last_record: Instant,
}

impl FileFollower {
    fn start(dir: &Path, engine_cfg: &EngineConfig) -> Result<Self, ServeError> {
        std::fs::create_dir_all(dir)?;
        let (engine, rec, reader) =
            caldera_journal::recover::recover_following(dir, engine_cfg).map_err(jerr)?;
        let f = Self {
            dir: dir.to_path_buf(),
            engine,
            shadow: None,
            rec,
            reader,
            last_record: Instant::now(),
        };
        tracing::info!(dir = %dir.display(), snapshot_seq = f.rec.snapshot_seq, batches = f.rec.batches, last_seq = f.engine.last_seq(), epoch = f.rec.last_epoch, elapsed = ?f.rec.elapsed, "recovered from the journal");
        Ok(f)
    }

    /// Applies every complete batch written so far. Returns how many were read.
    fn poll(&mut self) -> Result<usize, ServeError> {
        let mut n = 0;
        while let Some(fr) = self.reader.next_frame().map_err(jerr)? {
            apply_frame(
                &mut self.engine,
                &fr.payload,
                fr.first_seq,
                fr.last_seq,
                &mut self.rec,
            )
            .map_err(jerr)?;
            if let Some((shadow, rec)) = &mut self.shadow {
                apply_frame(shadow, &fr.payload, fr.first_seq, fr.last_seq, rec).map_err(jerr)?;
            }
            n += 1;
        }
        if n > 0 {
            self.last_record = Instant::now();
        }
        Ok(n)
    }

    /// With the writer lock held: repair the tail, catch up, write the epoch record.
    fn promote(
        mut self,
        cfg: &Config,
        lock: WriterLock,
        detected: Instant,
    ) -> Result<Primary, ServeError> {
        // Everything the reader verified is not scanned again (promotion stays fast however
        // long the log is); what was written after it is, and a torn tail is repaired.
        let opts = caldera_journal::LogOptions {
            trusted: self.reader.trusted_prefix(),
            ..log_options(cfg)
        };
        let (mut log, report) = SegmentLog::open_locked(&self.dir, opts, lock).map_err(jerr)?;
        if !report.clean() {
            tracing::warn!(truncated = ?report.truncated, quarantined = ?report.quarantined, "journal damage repaired before taking over");
        }
        self.poll()?;
        if self.engine.last_seq() != log.last_seq() {
            return Err(ServeError::Journal(format!(
                "journal ends at {} but the engine holds {}",
                log.last_seq(),
                self.engine.last_seq()
            )));
        }
        let epoch = cfg.journal.epoch.max(self.rec.last_epoch + 1);
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let last = self.engine.last_seq();
        log.append(last + 1, last, &epoch_record(&mut fbb, epoch, last))
            .map_err(jerr)?;
        log.sync().map_err(jerr)?;
        tracing::info!(
            epoch,
            last_seq = last,
            catch_up_us = detected.elapsed().as_micros() as u64,
            "primary: epoch started (file journal)"
        );
        let store = SnapshotStore::new(&self.dir, 3);
        Ok(Primary {
            engine: self.engine,
            backend: Some((Box::new(log), Some(store))),
            epoch,
            shadow: self.shadow.map(|(s, _)| s),
        })
    }
}

/// Follows a Kafka journal: the whole topic, then new records as they arrive.
struct KafkaFollower {
    brokers: String,
    topic: String,
    engine: Engine,
    /// Kept in step with `engine` once following (see [`FileFollower`]).
    shadow: Option<(Engine, Recovered)>,
    rec: Recovered,
    reader: KafkaReader,
    last_record: Instant,
    /// Offset of the record that started the current epoch.
    epoch_offset: i64,
    /// A producer connected ahead of promotion (standby).
    writer: Option<KafkaJournal>,
}

impl KafkaFollower {
    /// Reads the topic until nothing arrives for `idle` (zero: just opens the reader; a
    /// standby then catches up while following, since a live primary's heartbeats never let
    /// the topic go idle).
    fn start(
        brokers: &str,
        topic: &str,
        engine_cfg: &EngineConfig,
        idle: Duration,
    ) -> Result<Self, ServeError> {
        let (engine, rec, reader) =
            kafka::recover(brokers, topic, engine_cfg, idle).map_err(jerr)?;
        tracing::info!(brokers, topic, batches = rec.batches, last_seq = engine.last_seq(), epoch = rec.last_epoch, next_offset = reader.next_offset(), elapsed = ?rec.elapsed, "recovered from Kafka");
        Ok(Self {
            brokers: brokers.into(),
            topic: topic.into(),
            engine,
            shadow: None,
            rec,
            reader,
            last_record: Instant::now(),
            epoch_offset: -1,
            writer: None,
        })
    }

    fn poll(&mut self, wait: Duration) -> Result<usize, ServeError> {
        let mut n = 0;
        let mut wait = wait;
        while let Some(r) = self.reader.next_record(wait).map_err(jerr)? {
            let before = self.rec.last_epoch;
            kafka::apply_record(&mut self.engine, &r.payload, &mut self.rec).map_err(jerr)?;
            if let Some((shadow, rec)) = &mut self.shadow {
                kafka::apply_record(shadow, &r.payload, rec).map_err(jerr)?;
            }
            if self.rec.last_epoch != before {
                self.epoch_offset = r.offset;
            }
            n += 1;
            wait = Duration::ZERO;
            if n >= 4096 {
                break;
            }
        }
        if n > 0 {
            self.last_record = Instant::now();
        }
        Ok(n)
    }

    /// Appends the epoch record, reads up to it (anything the old primary got in before it is
    /// history and is applied; anything after it is not), and returns the primary.
    fn promote(mut self, cfg: &Config, detected: Instant) -> Result<Primary, ServeError> {
        let epoch = cfg.journal.epoch.max(self.rec.last_epoch + 1);
        let mut journal = match self.writer.take() {
            Some(mut w) => {
                w.retarget(epoch, self.reader.next_offset(), self.engine.last_seq());
                w
            }
            None => self.connect_writer(cfg, epoch)?,
        };
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let marker = epoch_record(&mut fbb, epoch, self.engine.last_seq());
        let offset = journal
            .start_epoch(&marker, Duration::from_secs(30))
            .map_err(jerr)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.reader.next_offset() <= offset {
            if Instant::now() > deadline {
                return Err(ServeError::Journal(format!(
                    "could not read back the epoch record at offset {offset}"
                )));
            }
            self.poll(Duration::from_millis(50))?;
        }
        if self.rec.last_epoch != epoch || self.epoch_offset != offset {
            return Err(ServeError::Journal(format!(
                "another primary started epoch {} (offset {}) while this one started {epoch} \
                 (offset {offset}): not taking over",
                self.rec.last_epoch, self.epoch_offset
            )));
        }
        journal.resume_after(offset, self.engine.last_seq());
        tracing::info!(
            epoch,
            offset,
            last_seq = self.engine.last_seq(),
            catch_up_us = detected.elapsed().as_micros() as u64,
            "primary: epoch started (Kafka journal)"
        );
        // Closing a consumer waits for its broker connections: not on the failover path.
        let reader = self.reader;
        let _ = std::thread::Builder::new()
            .name("caldera-reader-close".into())
            .spawn(move || drop(reader));
        Ok(Primary {
            engine: self.engine,
            backend: Some((Box::new(journal), None)),
            epoch,
            shadow: self.shadow.map(|(s, _)| s),
        })
    }

    fn connect_writer(&self, cfg: &Config, epoch: u64) -> Result<KafkaJournal, ServeError> {
        KafkaJournal::connect(
            &self.brokers,
            &self.topic,
            self.engine.last_seq(),
            self.reader.next_offset(),
            epoch,
            Duration::from_millis(cfg.journal.kafka_stall_ms),
        )
        .map_err(jerr)
    }
}
