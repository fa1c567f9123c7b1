//! The journal stage between the engine and the gateway: batches the engine's output at
//! command boundaries, appends each batch to the journal, and only then forwards the events to
//! the gateway, so no report leaves before the events it reports are durable. It also keeps a
//! shadow engine (re-running the journaled commands) to write periodic snapshots without
//! touching the allocation-free engine thread.

use crate::metrics::Metrics;
use caldera_engine::{Command, Engine, Event, NullSink};
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::{JournalError, JournalWriter, Retention};
use caldera_pipeline::{Agent, Output, Shared, WaitStrategy};
use caldera_schema::record::encode_batch;
use flatbuffers::FlatBufferBuilder;
use rtrb::{Consumer, Producer};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Journal stage settings.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// Writer epoch stamped on every batch.
    pub epoch: u64,
    /// Snapshot directory (the journal directory for the file journal), if snapshots are on.
    pub snapshots: Option<SnapshotStore>,
    /// Write a snapshot every this many events (0 = only at shutdown).
    pub snapshot_every_events: u64,
    /// Largest batch, in engine output items.
    pub max_batch_items: usize,
    /// Retention applied after each snapshot.
    pub retention: Retention,
    /// Append a heartbeat batch (no commands) after this long without an append, so standbys
    /// can tell a live, idle primary from a dead or stopped one.
    pub heartbeat: Duration,
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
    /// Snapshots written.
    pub snapshots: u64,
    /// Last durable sequence.
    pub durable_seq: u64,
    /// Append failures (each retried).
    pub failures: u64,
    /// Heartbeat batches appended.
    pub heartbeats: u64,
    /// Set when a newer primary fenced this one.
    pub fenced: Option<String>,
}

/// A batch appended and not yet durable: `items[start..end]`, events up to `last`.
struct Pending {
    last: u64,
    start: usize,
    end: usize,
}

/// The journal thread's agent.
pub struct JournalStage {
    writer: Box<dyn JournalWriter>,
    shadow: Engine,
    rx: Consumer<Output>,
    tx: Producer<Output>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    settings: JournalSettings,
    stats: JournalStats,
    /// The engine's output taken so far and not yet forwarded.
    items: Vec<Output>,
    commands: Vec<Command>,
    events: Vec<Event>,
    fbb: FlatBufferBuilder<'static>,
    /// `items[..forward_from]` are forwarded.
    forward_from: usize,
    /// `items[..journaled_upto]` are appended.
    journaled_upto: usize,
    pending: VecDeque<Pending>,
    /// Whether `items[journaled_upto..]` holds a command (a place to cut a batch).
    boundary: bool,
    last_snapshot: u64,
    retry_at: Option<Instant>,
    appended_seq: u64,
    last_append: Instant,
    done: bool,
}

impl JournalStage {
    /// The stage appending to `writer`, with `shadow` (a copy of the engine) for snapshots.
    #[must_use]
    pub fn new(
        writer: Box<dyn JournalWriter>,
        shadow: Engine,
        rx: Consumer<Output>,
        tx: Producer<Output>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        settings: JournalSettings,
    ) -> Self {
        let seq = shadow.last_seq();
        Self {
            items: Vec::with_capacity(settings.max_batch_items * 2),
            commands: Vec::with_capacity(settings.max_batch_items),
            events: Vec::with_capacity(settings.max_batch_items),
            writer,
            shadow,
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
            forward_from: 0,
            journaled_upto: 0,
            pending: VecDeque::new(),
            boundary: false,
            last_snapshot: seq,
            retry_at: None,
            appended_seq: seq,
            last_append: Instant::now(),
            done: false,
        }
    }

    /// Starts the journal thread.
    ///
    /// # Errors
    /// When the OS cannot spawn the thread.
    pub fn spawn(self, wait: WaitStrategy) -> std::io::Result<JournalThread> {
        caldera_pipeline::spawn("caldera-journal", self, wait, None).map(JournalThread)
    }

    /// Takes what the engine produced. The cap applies only once a command boundary is pending:
    /// one command can emit any number of events (a mass cancel of 100K orders), and a batch
    /// can only end at one.
    fn take_output(&mut self) -> usize {
        let mut took = 0;
        while self.items.len() < self.settings.max_batch_items * 2 || !self.boundary {
            match self.rx.pop() {
                Ok(it) => {
                    self.boundary |= matches!(it, Output::Command(_));
                    self.items.push(it);
                    took += 1;
                }
                Err(_) => break,
            }
        }
        took
    }

    /// Appends one batch: everything up to the last complete command. Returns 1 if it did.
    fn append_ready(&mut self) -> usize {
        if self.retry_at.is_some_and(|t| Instant::now() < t) || !self.boundary {
            return 0;
        }
        // Only scan for a command when one is pending (scanning every time while one huge
        // command streams in would be quadratic).
        let Some(cut) = self.items[self.journaled_upto..]
            .iter()
            .rposition(|i| matches!(i, Output::Command(_)))
        else {
            return 0;
        };
        let end = self.journaled_upto + cut + 1;
        self.commands.clear();
        self.events.clear();
        for it in &self.items[self.journaled_upto..end] {
            match it {
                Output::Command(c) => self.commands.push(*c),
                Output::Event(e) => self.events.push(*e),
            }
        }
        let first = self.events.first().map_or(0, |e| e.seq);
        let last = self.events.last().map_or(0, |e| e.seq);
        let bytes = encode_batch(
            &mut self.fbb,
            self.settings.epoch,
            &self.commands,
            &self.events,
            first,
            last,
        );
        let t = Instant::now();
        let appended = self.writer.append(first, last, bytes);
        self.metrics.journal.append.observe(t.elapsed());
        match appended {
            Ok(_) => {
                self.metrics.journal.appends.fetch_add(1, Ordering::Relaxed);
                self.stats.batches += 1;
                self.stats.events += self.events.len() as u64;
                self.stats.bytes += bytes.len() as u64;
                self.pending.push_back(Pending {
                    last,
                    start: self.journaled_upto,
                    end,
                });
                self.journaled_upto = end;
                self.appended_seq = last;
                self.last_append = Instant::now();
                // The cut was at the last command: nothing after it is a command.
                self.boundary = false;
                self.retry_at = None;
                if self.shared.journal.failed.swap(false, Ordering::SeqCst) {
                    tracing::info!("journal recovered; acknowledging again");
                }
                self.apply_to_shadow(last);
                1
            }
            Err(e) => {
                self.stats.failures += 1;
                if !self.shared.journal.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, retryable = e.is_retryable(), "journal append failed: holding reports and retrying");
                }
                self.retry_at = Some(Instant::now() + Duration::from_millis(100));
                0
            }
        }
    }

    /// Keeps the shadow engine in step (snapshots) and checks determinism.
    fn apply_to_shadow(&mut self, last: u64) {
        for c in &self.commands {
            self.shadow.process(c, &mut NullSink);
        }
        if self.shadow.last_seq() != last {
            tracing::error!(
                shadow = self.shadow.last_seq(),
                journal = last,
                "shadow engine diverged from the engine"
            );
        }
    }

    /// Forwards the events of every batch that is durable to the gateway.
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
            Err(e) => {
                if !self.shared.journal.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "journal delivery failed: holding reports");
                }
                self.stats.durable_seq
            }
        };
        let mut forwarded = 0;
        while self.pending.front().is_some_and(|p| p.last <= durable) {
            let p = self.pending.pop_front().expect("front");
            let mut commands = 0u64;
            for it in &self.items[p.start.max(self.forward_from)..p.end] {
                match it {
                    Output::Command(_) => commands += 1,
                    Output::Event(_) => push_waiting(&mut self.tx, *it, &self.shared),
                }
            }
            self.forward_from = p.end;
            self.shared
                .journal
                .commands_forwarded
                .fetch_add(commands, Ordering::Release);
            self.stats.durable_seq = p.last;
            self.shared
                .journal
                .forwarded_seq
                .store(p.last, Ordering::Release);
            self.shared.gateway_waker.wake();
            forwarded += 1;
        }
        if self.pending.is_empty()
            && self.forward_from == self.journaled_upto
            && self.journaled_upto > 0
        {
            self.items.drain(..self.journaled_upto);
            self.journaled_upto = 0;
            self.forward_from = 0;
        }
        Ok(forwarded)
    }

    /// Writes a snapshot from the shadow engine every `snapshot_every_events`.
    fn maybe_snapshot(&mut self) {
        let every = self.settings.snapshot_every_events;
        if every > 0 && self.shadow.last_seq() - self.last_snapshot >= every {
            self.write_snapshot();
            self.last_snapshot = self.shadow.last_seq();
        }
    }

    fn write_snapshot(&mut self) {
        let Some(store) = &self.settings.snapshots else {
            return;
        };
        match store.write(self.shadow.last_seq(), &self.shadow.snapshot()) {
            Ok(path) => {
                self.stats.snapshots += 1;
                tracing::info!(seq = self.shadow.last_seq(), path = %path.display(), "snapshot written");
                self.writer
                    .after_snapshot(self.shadow.last_seq(), &self.settings.retention);
            }
            Err(e) => tracing::error!(error = %e, "snapshot failed"),
        }
    }

    /// Appends a heartbeat batch after `heartbeat` without an append.
    fn maybe_heartbeat(&mut self) {
        if self.last_append.elapsed() < self.settings.heartbeat || self.retry_at.is_some() {
            return;
        }
        let next = self.appended_seq + 1;
        let bytes = encode_batch(&mut self.fbb, self.settings.epoch, &[], &[], next, next - 1);
        match self.writer.append(next, next - 1, bytes) {
            Ok(_) => {
                self.stats.heartbeats += 1;
                self.metrics.journal.appends.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat append failed"),
        }
        self.last_append = Instant::now();
    }

    /// Idle housekeeping of the writer (periodic fsync, delivery polling).
    fn tick(&mut self) {
        if let Err(e) = self.writer.tick() {
            if !self.shared.journal.failed.swap(true, Ordering::SeqCst) {
                tracing::error!(error = %e, "journal not durable: rejecting new requests until it recovers");
            }
        }
    }

    /// The engine has stopped and everything it produced is durable and forwarded.
    fn drained(&self) -> bool {
        self.shared.engine.stopped.load(Ordering::SeqCst)
            && self.rx.is_empty()
            && self.items.is_empty()
            && self.pending.is_empty()
    }

    /// Makes everything durable and writes the final snapshot.
    fn close(&mut self) {
        if let Err(e) = self.writer.close() {
            tracing::error!(error = %e, "journal close failed");
        }
        if self.shadow.last_seq() != self.last_snapshot {
            self.write_snapshot();
        }
        tracing::info!(stats = ?self.stats, "journal thread stopped");
    }

    fn fenced(&mut self, why: String) {
        // A newer primary exists. Nothing more may be released: stop here, holding everything
        // not yet forwarded (readers skip this writer's late records).
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

/// Pushes to the gateway's ring, waiting for room (never drops).
fn push_waiting(tx: &mut Producer<Output>, mut item: Output, shared: &Shared) {
    loop {
        match tx.push(item) {
            Ok(()) => return,
            Err(rtrb::PushError::Full(back)) => {
                item = back;
                shared.gateway_waker.wake();
                std::thread::yield_now();
            }
        }
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
        self.maybe_snapshot();
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
