//! The journal stage between the engine and the gateway: encodes the engine's output into
//! journal batches as it arrives, cuts a batch at the last complete command, appends it, and
//! releases its events to the gateway only once the writer reports them durable — so no report
//! leaves before the events it reports are durable.
//!
//! Events are handed to the gateway's ring as soon as they are taken (the gateway routes only
//! events up to [`caldera_pipeline::shared::JournalSide::forwarded_seq`]), so an event is copied
//! once on its way through. Snapshots are not taken here: the engine thread serialises its own
//! state and a writer thread stores it once durable ([`crate::snapshotter`]).

use crate::metrics::Metrics;
use caldera_journal::{JournalError, JournalWriter};
use caldera_pipeline::{Agent, Idle, Output, Shared, WaitStrategy};
use caldera_schema::record::BatchBuilder;
use flatbuffers::FlatBufferBuilder;
use rtrb::{Consumer, Producer};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most engine output items taken from the ring at once.
const TAKE: usize = 1024;

/// The largest encoded journal item (a trade), for [`JournalSettings::max_batch_bytes`].
const MAX_ITEM_BYTES: usize = 128;

/// Journal stage settings.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// Writer epoch stamped on every batch.
    pub epoch: u64,
    /// Largest batch, in commands (a batch always ends at a command boundary, so one command's
    /// events are never split).
    pub max_batch_commands: usize,
    /// Largest batch, in encoded bytes, at command boundaries (Kafka: half the record limit, so
    /// that only one command's own events can ever need splitting across records).
    pub max_batch_bytes: usize,
    /// Append a heartbeat batch (no commands) after this long without an append, so standbys
    /// can tell a live, idle primary from a dead or stopped one.
    pub heartbeat: Duration,
    /// Group commit under load: after a batch of at least `max_batch_commands / 8` commands,
    /// wait up to this long for the next batch to fill before appending it (0 = append at
    /// once). Fewer, larger appends cost less CPU per request; a light load (small batches)
    /// never waits.
    pub group_commit: Duration,
}

/// What the journal stage did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct JournalStats {
    /// Batches appended.
    pub batches: u64,
    /// Events journaled.
    pub events: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// Last durable sequence.
    pub durable_seq: u64,
    /// Append failures (each retried).
    pub failures: u64,
    /// Heartbeat batches appended.
    pub heartbeats: u64,
    /// Set when a newer primary fenced this one.
    pub fenced: Option<String>,
}

/// A batch appended and not yet durable.
struct Pending {
    last: u64,
    commands: u64,
}

/// The journal thread's agent.
pub struct JournalStage {
    writer: Box<dyn JournalWriter>,
    rx: Consumer<Output>,
    tx: Producer<Output>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    settings: JournalSettings,
    stats: JournalStats,
    /// The next batch: commands and their events, as taken.
    batch: BatchBuilder,
    /// Events taken of a command whose marker has not arrived yet (the engine is still
    /// emitting it): the batch can only be cut when this is 0.
    open: usize,
    /// Events taken but not yet handed to the gateway's ring (it was full).
    backlog: VecDeque<Output>,
    fbb: FlatBufferBuilder<'static>,
    pending: VecDeque<Pending>,
    retry_at: Option<Instant>,
    _death: crate::supervisor::DeathNotice,
    appended_seq: u64,
    last_append: Instant,
    /// The last batch was large: the pipeline is under load (see `group_commit`).
    loaded: bool,
    done: bool,
}

impl JournalStage {
    /// The stage appending to `writer`; the journal holds every event up to `seq`.
    #[must_use]
    pub fn new(
        writer: Box<dyn JournalWriter>,
        seq: u64,
        rx: Consumer<Output>,
        tx: Producer<Output>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        settings: JournalSettings,
    ) -> Self {
        Self {
            _death: crate::supervisor::DeathNotice::journal(&shared),
            batch: BatchBuilder::with_capacity(settings.max_batch_commands),
            open: 0,
            backlog: VecDeque::new(),
            writer,
            rx,
            tx,
            shared,
            metrics,
            settings,
            stats: JournalStats {
                durable_seq: seq,
                ..JournalStats::default()
            },
            fbb: FlatBufferBuilder::with_capacity(1 << 20),
            pending: VecDeque::new(),
            retry_at: None,
            appended_seq: seq,
            last_append: Instant::now(),
            loaded: false,
            done: false,
        }
    }

    /// Starts the journal thread.
    ///
    /// # Errors
    /// When the OS cannot spawn the thread.
    pub fn spawn(self, wait: WaitStrategy) -> std::io::Result<JournalThread> {
        caldera_pipeline::spawn("caldera-journal", self, Idle::new(wait), None).map(JournalThread)
    }

    /// Takes what the engine produced: events and commands go into the batch being built, and
    /// events on to the gateway's ring. Stops at the batch limit — but never inside a command,
    /// which may emit any number of events (a mass cancel of 100K orders).
    fn take_output(&mut self) -> usize {
        let mut took = self.hand_over_backlog();
        let limit = self.settings.max_batch_commands;
        let max_bytes = self.settings.max_batch_bytes;
        // Stop at the limits, or while the gateway's ring is full (back-pressure to the engine),
        // but always finish a command whose events have started.
        while (self.batch.commands() < limit
            && self.batch.encoded_bound() < max_bytes
            && self.backlog.is_empty())
            || self.open > 0
        {
            // Never far past the byte limit: at most what fits, in the largest items (a command
            // in progress continues in later rounds of this loop).
            let room = max_bytes.saturating_sub(self.batch.encoded_bound()) / MAX_ITEM_BYTES;
            let n = if self.open > 0 {
                self.rx.slots().min(TAKE)
            } else {
                self.rx.slots().min(TAKE).min(room.max(1))
            };
            let Ok(chunk) = self.rx.read_chunk(n) else {
                break;
            };
            if n == 0 {
                break;
            }
            let (a, b) = chunk.as_slices();
            for item in a.iter().chain(b) {
                match item {
                    Output::Event(e) => {
                        self.batch.push_event(e);
                        self.open += 1;
                    }
                    Output::Command(c) => {
                        self.batch.push_command(c);
                        self.open = 0;
                    }
                }
            }
            // On to the gateway's ring in one run (one publication of its tail, of only the
            // slots filled), in order behind any backlog; what does not fit waits in the
            // backlog.
            let mut forward = a
                .iter()
                .chain(b)
                .filter(|item| matches!(item, Output::Event(_)))
                .copied();
            if self.backlog.is_empty() {
                let room = self.tx.slots().min(n);
                if let Ok(run) = self.tx.write_chunk_uninit(room) {
                    run.fill_from_iter(&mut forward);
                }
            }
            self.backlog.extend(forward);
            chunk.commit_all();
            took += n;
        }
        took
    }

    fn hand_over_backlog(&mut self) -> usize {
        let mut n = 0;
        while !self.backlog.is_empty() {
            let (front, _) = self.backlog.as_slices();
            let (pushed, _) = self.tx.push_partial_slice(front);
            if pushed.is_empty() {
                self.shared.gateway_waker.wake();
                break;
            }
            let k = pushed.len();
            self.backlog.drain(..k);
            n += k;
        }
        n
    }

    /// Appends the batch of complete commands built so far. Returns 1 if it did.
    fn append_ready(&mut self) -> usize {
        if self.batch.commands() == 0
            || self.open > 0
            || self.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return 0;
        }
        if self.loaded
            && self.batch.commands() < self.settings.max_batch_commands
            && self.last_append.elapsed() < self.settings.group_commit
        {
            return 0;
        }
        let (first, last) = self.batch.seq_range().unwrap_or((0, 0));
        let bytes = self
            .batch
            .finish(&mut self.fbb, self.settings.epoch, first, last);
        let t = Instant::now();
        let appended = self.writer.append(first, last, bytes);
        self.metrics.journal.append.observe(t.elapsed());
        if let Some(sync) = self.writer.take_sync_time() {
            self.metrics.journal.fsync.observe(sync);
        }
        match appended {
            Ok(_) => {
                self.metrics.journal.appends.fetch_add(1, Ordering::Relaxed);
                self.stats.batches += 1;
                self.stats.events += self.batch.events() as u64;
                self.stats.bytes += bytes.len() as u64;
                self.pending.push_back(Pending {
                    last,
                    commands: self.batch.commands() as u64,
                });
                self.loaded = self.batch.commands() >= 32;
                self.batch.clear();
                self.appended_seq = last;
                self.last_append = Instant::now();
                self.retry_at = None;
                if self.shared.journal.failed.swap(false, Ordering::SeqCst) {
                    tracing::info!("journal recovered; acknowledging again");
                }
                1
            }
            Err(e) => {
                self.stats.failures += 1;
                if !e.is_retryable() && !matches!(e, JournalError::Fenced(_)) {
                    crate::supervisor::halt(
                        &self.metrics,
                        crate::supervisor::EXIT_JOURNAL_FAILED,
                        &e.to_string(),
                    );
                }
                if !self.shared.journal.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, retryable = e.is_retryable(), "journal append failed: holding reports and retrying");
                }
                self.retry_at = Some(Instant::now() + Duration::from_millis(100));
                0
            }
        }
    }

    /// Releases every batch that is durable to the gateway.
    ///
    /// # Errors
    /// The reason this writer is fenced: nothing more may be released.
    fn forward_durable(&mut self) -> Result<usize, String> {
        let durable = match self.writer.durable() {
            Ok(d) => {
                if self.retry_at.is_none()
                    && self.shared.journal.failed.load(Ordering::Relaxed)
                    && self.pending.front().is_none_or(|p| p.last <= d)
                {
                    self.shared.journal.failed.store(false, Ordering::SeqCst);
                    tracing::info!("journal caught up; acknowledging again");
                }
                d
            }
            Err(JournalError::Fenced(why)) => return Err(why),
            Err(e @ JournalError::Fatal(_)) => crate::supervisor::halt(
                &self.metrics,
                crate::supervisor::EXIT_JOURNAL_FAILED,
                &e.to_string(),
            ),
            Err(e) => {
                if !self.shared.journal.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "journal delivery failed: holding reports");
                }
                self.stats.durable_seq
            }
        };
        self.shared
            .journal
            .synced_seq
            .store(self.writer.synced(), Ordering::Release);
        let mut commands = 0;
        let mut released = 0;
        while self.pending.front().is_some_and(|p| p.last <= durable) {
            let p = self.pending.pop_front().expect("front");
            commands += p.commands;
            self.stats.durable_seq = p.last;
            released += 1;
        }
        if released > 0 {
            self.shared
                .journal
                .released_ns
                .store(self.shared.now_ns(), Ordering::Relaxed);
            self.shared
                .journal
                .commands_forwarded
                .fetch_add(commands, Ordering::Release);
            self.shared
                .journal
                .forwarded_seq
                .store(self.stats.durable_seq, Ordering::Release);
            self.shared.gateway_waker.wake();
        }
        Ok(released)
    }

    /// Appends a heartbeat batch after `heartbeat` without an append.
    fn maybe_heartbeat(&mut self) {
        if self.last_append.elapsed() < self.settings.heartbeat || self.retry_at.is_some() {
            return;
        }
        let next = self.appended_seq + 1;
        let bytes =
            BatchBuilder::default().finish(&mut self.fbb, self.settings.epoch, next, next - 1);
        match self.writer.append(next, next - 1, bytes) {
            Ok(_) => {
                self.stats.heartbeats += 1;
                self.metrics.journal.appends.fetch_add(1, Ordering::Relaxed);
            }
            Err(e @ JournalError::Fatal(_)) => crate::supervisor::halt(
                &self.metrics,
                crate::supervisor::EXIT_JOURNAL_FAILED,
                &e.to_string(),
            ),
            Err(e) => tracing::warn!(error = %e, "heartbeat append failed"),
        }
        self.last_append = Instant::now();
    }

    /// Idle housekeeping of the writer (periodic fsync, delivery polling).
    fn tick(&mut self) {
        let ticked = self.writer.tick();
        if let Some(sync) = self.writer.take_sync_time() {
            self.metrics.journal.fsync.observe(sync);
        }
        if let Err(e @ JournalError::Fatal(_)) = &ticked {
            crate::supervisor::halt(
                &self.metrics,
                crate::supervisor::EXIT_JOURNAL_FAILED,
                &e.to_string(),
            );
        }
        if let Err(e) = ticked {
            if !self.shared.journal.failed.swap(true, Ordering::SeqCst) {
                tracing::error!(error = %e, "journal not durable: rejecting new requests until it recovers");
            }
        }
    }

    /// The engine has stopped and everything it produced is durable and released.
    fn drained(&self) -> bool {
        self.shared.engine.stopped.load(Ordering::SeqCst)
            && self.rx.is_empty()
            && self.open == 0
            && self.batch.commands() == 0
            && self.backlog.is_empty()
            && self.pending.is_empty()
    }

    fn close(&mut self) {
        if let Err(e) = self.writer.close() {
            tracing::error!(error = %e, "journal close failed");
        }
        self.shared
            .journal
            .synced_seq
            .store(self.writer.synced(), Ordering::Release);
        self.shared.journal.closed.store(true, Ordering::Release);
        tracing::info!(stats = ?self.stats, "journal thread stopped");
    }

    fn fenced(&mut self, why: String) {
        // A newer primary exists. Nothing more may be released: stop here, holding everything
        // not yet released (readers skip this writer's late records).
        tracing::error!(
            why,
            "fenced: this primary stops without releasing anything more"
        );
        self.stats.fenced = Some(why);
        self.shared.journal.fenced.store(true, Ordering::SeqCst);
        self.shared.gateway_waker.wake();
        self.done = true;
    }
}

impl Agent for JournalStage {
    fn on_start(&mut self) {
        self.shared.journal_parker.register_current();
    }

    fn do_work(&mut self) -> usize {
        let mut work = self.take_output();
        work += self.append_ready();
        match self.forward_durable() {
            Ok(n) => work += n,
            Err(why) => {
                self.fenced(why);
                return 0;
            }
        }
        if work > 0 {
            return work;
        }
        self.maybe_heartbeat();
        self.tick();
        if self.drained() {
            self.close();
            self.done = true;
        }
        0
    }

    fn sleep(&mut self) {
        let rx = &self.rx;
        self.shared
            .journal_parker
            .park_unless(|| !rx.is_empty(), Duration::from_millis(1));
    }

    fn done(&self) -> bool {
        self.done
    }
}

/// The running journal thread.
pub struct JournalThread(std::thread::JoinHandle<(JournalStage, Option<usize>)>);

impl JournalThread {
    /// Waits for the thread to stop (after the engine stopped and everything was released).
    ///
    /// # Errors
    /// When the thread panicked.
    pub fn join(self) -> Result<JournalStats, crate::NodeError> {
        let (stage, _) = self
            .0
            .join()
            .map_err(|_| crate::NodeError::Panicked("journal"))?;
        Ok(stage.stats)
    }
}
