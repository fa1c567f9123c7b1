//! Following the file journal: snapshot + replay, then tailing the segments; the kernel's
//! hand-over of the writer lock tells the primary died.

use super::{epoch_record, log_options, Follower};
use crate::config::Config;
use crate::error::NodeError;
use crate::handover::Primary;
use caldera_engine::{Engine, EngineConfig};
use caldera_journal::history::OffsetIndex;
use caldera_journal::lock::{Fence, LockError, WriterLock};
use caldera_journal::recover::{apply_frame_and_index, Recovered};
use caldera_journal::{LogReader, SegmentLog};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
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
    /// The lock holder last seen and since when (a holder is fenced only once it has held the
    /// lock for `timeout` without writing: a node that has just taken it gets the time to
    /// write its epoch record).
    holder: HolderWatch,
    /// Where the batches it replayed and followed sit (handed to the primary this becomes,
    /// whose writer adds its own): a resend starts near its sequence, not at its segment's
    /// beginning.
    index: Arc<OffsetIndex>,
}

/// Who holds the writer lock, and since when this standby has seen them hold it.
#[derive(Debug)]
pub(crate) struct HolderWatch {
    /// (PID, first seen holding the lock).
    seen: Option<(i32, Instant)>,
    /// When `/proc/locks` was last read.
    checked: Option<Instant>,
    /// How long a holder must have held the lock, silent, before it is fenced.
    pub(crate) timeout: Duration,
}

impl HolderWatch {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            seen: None,
            checked: None,
            timeout,
        }
    }

    /// Records the current holder (`None`: free or unknown) at `now`.
    pub(crate) fn observe(&mut self, holder: Option<i32>, now: Instant) {
        self.checked = Some(now);
        match (holder, self.seen) {
            (Some(p), Some((q, _))) if p == q => {}
            (Some(p), _) => self.seen = Some((p, now)),
            (None, _) => self.seen = None,
        }
    }

    /// Whether it is time to read `/proc/locks` again (every 100 ms at most).
    fn due(&self, now: Instant) -> bool {
        self.checked
            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100))
    }

    /// The holder to fence: silent for `silence` and seen holding the lock for `timeout`.
    pub(crate) fn fenceable(&self, silence: Duration, now: Instant) -> Option<i32> {
        let (pid, since) = self.seen?;
        (silence >= self.timeout && now.duration_since(since) >= self.timeout).then_some(pid)
    }
}

impl FileFollower {
    /// Recovers the engine from `dir` (snapshot + replay), positioned to keep reading.
    pub(crate) fn start(dir: &Path, engine_cfg: &EngineConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(dir)?;
        let index = Arc::new(OffsetIndex::default());
        let (engine, rec, reader) =
            caldera_journal::recover::recover_following_indexed(dir, engine_cfg, Some(&index))
                .map_err(NodeError::recover)?;
        // Recovery read the log from the snapshot on; the segments under the snapshot are
        // checked too, so damage there stops the start now rather than a future full replay
        // (and what the reader trusts at promotion really was read).
        if let Some(base) = reader.first_base() {
            caldera_journal::maintenance::check_before(dir, base).map_err(NodeError::recover)?;
        }
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
            holder: HolderWatch::new(Duration::from_millis(500)),
            index,
        };
        tracing::info!(dir = %dir.display(), snapshot_seq = f.rec.snapshot_seq, batches = f.rec.batches, last_seq = f.engine.last_seq(), epoch = f.rec.last_epoch, elapsed = ?f.rec.elapsed, "recovered from the journal");
        Ok(f)
    }

    /// A standby of `dir`: recovered, and a thread waiting for the writer lock (the kernel
    /// hands it over the instant the primary dies).
    pub(crate) fn follow(dir: &Path, cfg: &Config) -> Result<Self, NodeError> {
        let mut f = Self::start(dir, &cfg.engine_config())?;
        f.kill_silent_primary = cfg.failover.kill_silent_primary;
        f.holder.timeout = Duration::from_millis(cfg.failover.timeout_ms);
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
            apply_frame_and_index(
                &mut self.engine,
                &fr,
                &self.reader,
                &mut self.rec,
                Some(&self.index),
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
        let epoch = caldera_journal::recover::next_epoch(self.rec.last_epoch, cfg.journal.epoch)
            .map_err(NodeError::Recover)?;
        let last = self.engine.last_seq();
        log.append(last + 1, last, &epoch_record(epoch, last))
            .map_err(NodeError::recover)?;
        log.sync().map_err(NodeError::recover)?;
        log.set_offset_index(Arc::clone(&self.index), epoch);
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
            offsets: Some(self.index),
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
    /// then hands the lock over) — only once the same process has held the lock, silent, for
    /// the whole timeout, and only after checking it is the journal's writer.
    fn on_silence(&mut self) -> bool {
        if self.killed || !self.kill_silent_primary {
            return false;
        }
        let now = Instant::now();
        if self.holder.due(now) {
            self.holder.observe(WriterLock::holder_pid(&self.dir), now);
        }
        let silence = self.silence();
        let Some(pid) = self.holder.fenceable(silence, now) else {
            return false;
        };
        let silence_ms = silence.as_millis() as u64;
        match WriterLock::fence_holder(&self.dir) {
            Fence::Killed(p) => {
                tracing::warn!(
                    pid = p,
                    silence_ms,
                    "standby: the primary held the lock but was silent: killed it (SIGKILL delivered); waiting for the lock"
                );
                self.killed = true;
            }
            Fence::NoHolder => {}
            Fence::Refused(p, why) => {
                tracing::error!(
                    pid = p,
                    expected = pid,
                    silence_ms,
                    why,
                    "standby: the lock holder is silent but was not killed"
                );
                // Looked at again after another timeout.
                self.holder.observe(None, now);
            }
        }
        false
    }

    /// Polls fast while batches flow, slower when the primary is idle (only heartbeats): the
    /// lock thread detects a crash either way.
    fn idle(&mut self, applied: usize) {
        let now = Instant::now();
        if self.kill_silent_primary && self.lock_wait.is_some() && self.holder.due(now) {
            self.holder.observe(WriterLock::holder_pid(&self.dir), now);
        }
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

#[cfg(test)]
mod tests {
    use super::HolderWatch;
    use std::time::{Duration, Instant};

    #[test]
    fn a_holder_is_fenceable_only_after_holding_the_lock_for_the_whole_timeout() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = HolderWatch::new(Duration::from_millis(500));
        // The standby has heard nothing for 841 ms, but node 7 took the lock only just now
        // (it promoted itself and has not written its epoch record yet): not fenced.
        w.observe(Some(7), ms(800));
        assert_eq!(w.fenceable(Duration::from_millis(841), ms(841)), None);
        assert_eq!(w.fenceable(Duration::from_millis(1200), ms(1200)), None);
        // Silent while holding it for the whole timeout: fenced.
        w.observe(Some(7), ms(1300));
        assert_eq!(w.fenceable(Duration::from_millis(1300), ms(1300)), Some(7));
        // Not silent long enough: not fenced.
        assert_eq!(w.fenceable(Duration::from_millis(100), ms(1300)), None);
        // A new holder starts its own clock.
        w.observe(Some(8), ms(1400));
        assert_eq!(w.fenceable(Duration::from_millis(2000), ms(1500)), None);
        w.observe(None, ms(1600));
        assert_eq!(w.fenceable(Duration::from_millis(9000), ms(9000)), None);
    }
}
