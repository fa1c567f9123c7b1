//! Following the file journal: snapshot + replay, then tailing the segments; the kernel's
//! hand-over of the writer lock tells the primary died.

use super::{epoch_record, log_options, Follower};
use crate::config::Config;
use crate::error::NodeError;
use crate::handover::Primary;
use caldera_engine::{Engine, EngineConfig};
use caldera_journal::lock::{LockError, WriterLock};
use caldera_journal::recover::{apply_frame, Recovered};
use caldera_journal::{LogReader, SegmentLog};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Follows a file journal.
pub(crate) struct FileFollower {
    dir: PathBuf,
    engine: Engine,
    rec: Recovered,
    reader: LogReader,
    last_record: Instant,
    /// The writer lock, handed over by a thread blocked on it (standby only).
    lock_wait: Option<mpsc::Receiver<Result<WriterLock, LockError>>>,
    lock: Option<WriterLock>,
    /// Whether a silent lock holder was already killed.
    killed: bool,
    kill_silent_primary: bool,
}

impl FileFollower {
    /// Recovers the engine from `dir` (snapshot + replay), positioned to keep reading.
    pub(crate) fn start(dir: &Path, engine_cfg: &EngineConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(dir)?;
        let (engine, rec, reader) = caldera_journal::recover::recover_following(dir, engine_cfg)
            .map_err(NodeError::recover)?;
        let f = Self {
            dir: dir.to_path_buf(),
            engine,
            rec,
            reader,
            last_record: Instant::now(),
            lock_wait: None,
            lock: None,
            killed: false,
            kill_silent_primary: false,
        };
        tracing::info!(dir = %dir.display(), snapshot_seq = f.rec.snapshot_seq, batches = f.rec.batches, last_seq = f.engine.last_seq(), epoch = f.rec.last_epoch, elapsed = ?f.rec.elapsed, "recovered from the journal");
        Ok(f)
    }

    /// A standby of `dir`: recovered, and a thread waiting for the writer lock (the kernel
    /// hands it over the instant the primary dies).
    pub(crate) fn follow(dir: &Path, cfg: &Config) -> Result<Self, NodeError> {
        let mut f = Self::start(dir, &cfg.engine_config())?;
        f.kill_silent_primary = cfg.failover.kill_silent_primary;
        let (tx, rx) = mpsc::channel();
        let lock_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("caldera-lockwait".into())
            .spawn(move || {
                let _ = tx.send(WriterLock::acquire_blocking(&lock_dir));
            })?;
        f.lock_wait = Some(rx);
        tracing::info!(dir = %dir.display(), seq = f.engine.last_seq(), epoch = f.rec.last_epoch, "standby: following the file journal");
        Ok(f)
    }

    /// Applies every complete batch written so far. Returns how many were read.
    fn read_available(&mut self) -> Result<usize, NodeError> {
        let mut n = 0;
        while let Some(fr) = self.reader.next_frame().map_err(NodeError::recover)? {
            apply_frame(
                &mut self.engine,
                &fr.payload,
                fr.first_seq,
                fr.last_seq,
                &mut self.rec,
            )
            .map_err(NodeError::recover)?;
            n += 1;
        }
        if n > 0 {
            self.last_record = Instant::now();
        }
        Ok(n)
    }

    /// With the writer lock held: repair the tail, catch up, write the epoch record.
    pub(crate) fn take_over(
        mut self,
        cfg: &Config,
        lock: WriterLock,
        detected: Instant,
    ) -> Result<Primary, NodeError> {
        // Everything the reader verified is not scanned again (promotion stays fast however
        // long the log is); what was written after it is, and a torn tail is repaired.
        let opts = caldera_journal::LogOptions {
            trusted: self.reader.trusted_prefix(),
            ..log_options(cfg)
        };
        let (mut log, report) =
            SegmentLog::open_locked(&self.dir, opts, lock).map_err(NodeError::recover)?;
        if !report.clean() {
            tracing::warn!(truncated = ?report.truncated, quarantined = ?report.quarantined, "journal damage repaired before taking over");
        }
        self.read_available()?;
        if self.engine.last_seq() != log.last_seq() {
            return Err(NodeError::Recover(format!(
                "journal ends at {} but the engine holds {}",
                log.last_seq(),
                self.engine.last_seq()
            )));
        }
        let epoch = cfg.journal.epoch.max(self.rec.last_epoch + 1);
        let last = self.engine.last_seq();
        log.append(last + 1, last, &epoch_record(epoch, last))
            .map_err(NodeError::recover)?;
        log.sync().map_err(NodeError::recover)?;
        tracing::info!(
            epoch,
            last_seq = last,
            catch_up_us = detected.elapsed().as_micros() as u64,
            "primary: epoch started (file journal)"
        );
        Ok(Primary {
            engine: self.engine,
            journal: Some(Box::new(log)),
            journal_dir: Some(self.dir),
            epoch,
        })
    }
}

impl Follower for FileFollower {
    fn poll(&mut self) -> Result<usize, NodeError> {
        self.read_available()
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn recovered(&self) -> &Recovered {
        &self.rec
    }

    fn silence(&self) -> Duration {
        self.last_record.elapsed()
    }

    fn primary_gone(&mut self) -> Result<bool, NodeError> {
        let Some(rx) = &self.lock_wait else {
            return Ok(false);
        };
        match rx.try_recv() {
            Ok(lock) => {
                self.lock = Some(lock.map_err(NodeError::recover)?);
                Ok(true)
            }
            Err(mpsc::TryRecvError::Empty) => Ok(false),
            Err(mpsc::TryRecvError::Disconnected) => {
                Err(NodeError::Recover("the lock waiter stopped".into()))
            }
        }
    }

    /// Silent but holding the lock: stopped or hung. Fence it for good (kill it; the kernel
    /// then hands the lock over).
    fn on_silence(&mut self) -> bool {
        if self.killed || !self.kill_silent_primary {
            return false;
        }
        if let Some(pid) = WriterLock::holder_pid(&self.dir) {
            if pid != std::process::id() as i32 {
                tracing::warn!(
                    pid,
                    silence_ms = self.silence().as_millis() as u64,
                    "standby: the primary holds the lock but is silent: killing it"
                );
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
                self.killed = true;
            }
        }
        false
    }

    /// Polls fast while batches flow, slower when the primary is idle (only heartbeats): the
    /// lock thread detects a crash either way.
    fn idle(&mut self, applied: usize) {
        if applied == 0 {
            let idle = self.silence() > Duration::from_millis(20);
            std::thread::sleep(Duration::from_micros(if idle { 1000 } else { 200 }));
        }
    }

    fn promote(mut self: Box<Self>, cfg: &Config, detected: Instant) -> Result<Primary, NodeError> {
        let lock = self
            .lock
            .take()
            .ok_or_else(|| NodeError::Recover("promoting without the writer lock".into()))?;
        (*self).take_over(cfg, lock, detected)
    }
}
