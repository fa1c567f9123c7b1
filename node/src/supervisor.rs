//! Supervision of the pipeline threads: a thread that died, or stopped making progress with
//! work waiting, makes the node unready and ends the process, so a standby takes over instead
//! of clients waiting on a node that looks healthy (its journal would keep heartbeating).
//!
//! The [`Supervisor`] agent runs on its own thread and checks, every 50 ms:
//! - the engine and journal threads are alive (each stage marks, when it is dropped without
//!   having finished — a panic unwinding it — that it died);
//! - the engine has made progress within `failover.stall_ms` whenever the gateway has handed it
//!   commands it has not finished (unless the journal is holding, below: the engine may then
//!   wait on its full output ring);
//! - the journal has released something within `failover.stall_ms` whenever the engine has
//!   finished commands it has not released, unless the journal already reports itself failed
//!   (it then holds and retries by design, and the node is already unready).
//!
//! What a failure does is [`halt`]: role `failed` (`/readyz` answers 503), an error log line,
//! and exit code [`EXIT_STALLED`], [`EXIT_THREAD_DIED`] or [`EXIT_JOURNAL_FAILED`] without
//! releasing anything more (nothing unreleased was acknowledged).

use crate::status::Role;
use crate::Metrics;
use caldera_pipeline::{Agent, Idle, Shared, WaitStrategy};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code: the journal failed in a way retrying cannot heal (an fsync error, a write that
/// could not be rolled back, a delivery the broker refused for good).
pub const EXIT_JOURNAL_FAILED: i32 = 4;
/// Exit code: a pipeline thread stopped making progress with work waiting.
pub const EXIT_STALLED: i32 = 5;
/// Exit code: a pipeline thread died (panicked).
pub const EXIT_THREAD_DIED: i32 = 6;

/// Marks the node failed (unready), logs why, and ends the process with `code`. Nothing
/// more is released: what clients were not told is not acknowledged.
pub fn halt(metrics: &Metrics, code: i32, why: &str) -> ! {
    metrics.node.set_role(Role::Failed);
    tracing::error!(
        code,
        why,
        "node failed: exiting so that a standby takes over"
    );
    eprintln!("caldera: node failed (exit {code}): {why}");
    std::process::exit(code)
}

/// Held by a stage: when it is dropped before its thread finished (a panic unwinding the
/// thread), it marks the thread dead for the [`Supervisor`].
pub struct DeathNotice {
    shared: Arc<Shared>,
    journal: bool,
}

impl DeathNotice {
    /// For the engine stage (finished = `engine.stopped`).
    #[must_use]
    pub fn engine(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::clone(shared),
            journal: false,
        }
    }

    /// For the journal stage (finished = closed or fenced).
    #[must_use]
    pub fn journal(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::clone(shared),
            journal: true,
        }
    }
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        let (e, j) = (&self.shared.engine, &self.shared.journal);
        if self.journal {
            if !j.closed.load(Ordering::Acquire) && !j.fenced.load(Ordering::Acquire) {
                j.died.store(true, Ordering::Release);
            }
        } else if !e.stopped.load(Ordering::Acquire) && !j.fenced.load(Ordering::Acquire) {
            // A fenced node drops an engine it no longer runs (on the gateway's thread: ADR
            // 0017) on its way to exit code 3; that is not a death.
            e.died.store(true, Ordering::Release);
        }
    }
}

/// Progress of one stage: how long its counter has stood still while work was waiting.
#[derive(Debug, Default)]
struct Progress {
    done: u64,
    stuck_since: Option<Instant>,
}

impl Progress {
    /// Records `done` (the stage's counter) with `waiting` work; returns how long it has been
    /// stuck with work waiting.
    fn observe(&mut self, done: u64, waiting: bool, now: Instant) -> Duration {
        if done != self.done || !waiting {
            self.done = done;
            self.stuck_since = None;
            return Duration::ZERO;
        }
        now - *self.stuck_since.get_or_insert(now)
    }
}

/// The supervision agent (see the module documentation).
pub struct Supervisor {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    stall: Duration,
    engine: Progress,
    journal: Progress,
}

impl Supervisor {
    /// Supervises the pipeline sharing `shared`; `stall` is `failover.stall_ms`.
    #[must_use]
    pub fn new(shared: Arc<Shared>, metrics: Arc<Metrics>, stall: Duration) -> Self {
        Self {
            shared,
            metrics,
            stall,
            engine: Progress::default(),
            journal: Progress::default(),
        }
    }

    /// Starts the supervisor's thread.
    ///
    /// # Errors
    /// When the OS cannot spawn the thread.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<(Supervisor, Option<usize>)>> {
        caldera_pipeline::spawn(
            "caldera-supervisor",
            self,
            Idle::with_phases(WaitStrategy::Park, 0, 0),
            None,
        )
    }

    /// A stage thread that died: halts.
    fn check_alive(&self) -> usize {
        for (stage, died) in [
            ("engine", &self.shared.engine.died),
            ("journal", &self.shared.journal.died),
        ] {
            if died.load(Ordering::Acquire) {
                halt(
                    &self.metrics,
                    EXIT_THREAD_DIED,
                    &format!("the {stage} thread died (panicked)"),
                );
            }
        }
        0
    }

    /// The engine stuck with commands waiting: halts.
    fn check_engine(&mut self, now: Instant) -> usize {
        let pushed = self
            .metrics
            .gateway
            .published
            .commands
            .load(Ordering::Acquire);
        let done = self.shared.engine.commands.load(Ordering::Acquire);
        // While the journal holds and retries (a broker outage), the engine may wait on its
        // full output ring: that is the journal's state, not an engine stall.
        let holding = self.shared.journal.failed.load(Ordering::Acquire);
        let stuck = self.engine.observe(done, pushed > done && !holding, now);
        if stuck >= self.stall {
            halt(
                &self.metrics,
                EXIT_STALLED,
                &format!(
                    "the engine thread made no progress for {stuck:?} with {} commands waiting",
                    pushed - done
                ),
            );
        }
        0
    }

    /// The journal stuck with events to release (and not already failed): halts.
    fn check_journal(&mut self, now: Instant) -> usize {
        if !self.shared.journal_enabled() {
            return 0;
        }
        let j = &self.shared.journal;
        let produced = self.shared.engine.commands.load(Ordering::Acquire);
        let released = j.commands_forwarded.load(Ordering::Acquire);
        let waiting = produced > released && !j.failed.load(Ordering::Acquire);
        let stuck = self.journal.observe(released, waiting, now);
        if stuck >= self.stall {
            halt(
                &self.metrics,
                EXIT_STALLED,
                &format!(
                    "the journal thread released nothing for {stuck:?} with {} commands waiting",
                    produced - released
                ),
            );
        }
        0
    }
}

impl Agent for Supervisor {
    fn do_work(&mut self) -> usize {
        let now = Instant::now();
        self.check_alive() + self.check_engine(now) + self.check_journal(now)
    }

    fn sleep(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Done at shutdown (the stages then stop on purpose) or once fenced.
    fn done(&self) -> bool {
        self.shared.gateway.stop.load(Ordering::Acquire)
            || self.shared.journal.fenced.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;
    use std::time::{Duration, Instant};

    #[test]
    fn progress_counts_stuck_time_only_while_work_waits_and_nothing_moves() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Progress::default();
        assert_eq!(p.observe(0, false, ms(0)), Duration::ZERO);
        assert_eq!(p.observe(0, true, ms(10)), Duration::ZERO);
        assert_eq!(p.observe(0, true, ms(60)), Duration::from_millis(50));
        // Progress resets it.
        assert_eq!(p.observe(5, true, ms(70)), Duration::ZERO);
        assert_eq!(p.observe(5, true, ms(80)), Duration::ZERO);
        assert_eq!(p.observe(5, true, ms(180)), Duration::from_millis(100));
        // No work waiting resets it too.
        assert_eq!(p.observe(5, false, ms(190)), Duration::ZERO);
        assert_eq!(p.observe(5, true, ms(200)), Duration::ZERO);
    }
}
