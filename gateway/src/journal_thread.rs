//! The journal stage between the engine and the gateway: batches the engine's output at
//! command boundaries, appends each batch to the journal, and only then forwards the events to
//! the gateway, so no report leaves before the events it reports are durable. It also keeps a
//! shadow engine (re-running the journaled commands) to write periodic snapshots without
//! touching the allocation-free engine thread.

use crate::config::WaitStrategy;
use crate::engine_thread::{Output, Shared};
use crate::wait::Waiter;
use caldera_engine::{Command, Engine, Event, NullSink};
use caldera_journal::record::encode_batch;
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::SegmentLog;
use flatbuffers::FlatBufferBuilder;
use rtrb::{Consumer, Producer};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where batches go.
pub trait JournalBackend: Send {
    /// Appends a batch of events `first..=last`; returns the last sequence that is durable.
    ///
    /// # Errors
    /// A description of the failure (the batch is retried).
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, String>;
    /// The last durable sequence (for backends that acknowledge asynchronously).
    fn durable(&mut self) -> Result<u64, String>;
    /// Called when idle (periodic fsync, delivery polling).
    ///
    /// # Errors
    /// A description of the failure.
    fn tick(&mut self) -> Result<(), String>;
    /// Flushes everything before shutdown.
    ///
    /// # Errors
    /// A description of the failure.
    fn close(&mut self) -> Result<(), String>;
    /// A snapshot covering everything up to `snapshot_seq` was written: apply retention.
    fn after_snapshot(&mut self, _snapshot_seq: u64, _retention: &Retention) {}
    /// Why this writer is fenced (a newer primary started), if it is.
    fn fenced(&self) -> Option<String> {
        None
    }
}

/// Journal retention limits (file journal).
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Keep at most this many bytes of segments.
    pub max_bytes: Option<u64>,
    /// Delete segments older than this.
    pub max_age: Option<Duration>,
}

impl JournalBackend for SegmentLog {
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, String> {
        SegmentLog::append(self, first, last, bytes).map_err(|e| e.to_string())
    }
    fn durable(&mut self) -> Result<u64, String> {
        Ok(self.durable_seq())
    }
    fn tick(&mut self) -> Result<(), String> {
        SegmentLog::tick(self).map_err(|e| e.to_string())
    }
    fn close(&mut self) -> Result<(), String> {
        self.sync().map_err(|e| e.to_string())
    }
    fn after_snapshot(&mut self, snapshot_seq: u64, r: &Retention) {
        if r.max_bytes.is_none() && r.max_age.is_none() {
            return;
        }
        match self.retain(r.max_bytes, r.max_age, snapshot_seq + 1) {
            Ok(deleted) if !deleted.is_empty() => {
                tracing::info!(?deleted, "journal retention deleted segments")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "journal retention failed"),
        }
    }
}

impl JournalBackend for caldera_journal::kafka::KafkaJournal {
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, String> {
        caldera_journal::kafka::KafkaJournal::append(self, first, last, bytes)
    }
    fn durable(&mut self) -> Result<u64, String> {
        caldera_journal::kafka::KafkaJournal::durable(self)
    }
    fn tick(&mut self) -> Result<(), String> {
        self.durable().map(|_| ())
    }
    fn close(&mut self) -> Result<(), String> {
        caldera_journal::kafka::KafkaJournal::close(self, Duration::from_secs(30))
    }
    fn fenced(&self) -> Option<String> {
        caldera_journal::kafka::KafkaJournal::fenced(self).map(str::to_string)
    }
}

/// Journal stage settings.
#[derive(Clone, Debug)]
pub struct JournalStage {
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
    /// Where append latency and counts are reported.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// What the journal stage did.
#[derive(Debug, Default, Clone)]
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

/// Starts the journal thread.
///
/// # Errors
/// When the OS cannot spawn the thread.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    backend: Box<dyn JournalBackend>,
    shadow: Engine,
    rx: Consumer<Output>,
    tx: Producer<Output>,
    shared: Arc<Shared>,
    wait: WaitStrategy,
    stage: JournalStage,
) -> std::io::Result<JoinHandle<JournalStats>> {
    std::thread::Builder::new()
        .name("caldera-journal".into())
        .spawn(move || run(backend, shadow, rx, tx, &shared, wait, &stage))
}

struct Pending {
    last: u64,
    start: usize,
    end: usize,
}

#[allow(clippy::too_many_lines)]
fn run(
    mut backend: Box<dyn JournalBackend>,
    mut shadow: Engine,
    mut rx: Consumer<Output>,
    mut tx: Producer<Output>,
    shared: &Shared,
    wait: WaitStrategy,
    stage: &JournalStage,
) -> JournalStats {
    shared.register_journal_thread();
    let mut stats = JournalStats {
        durable_seq: shadow.last_seq(),
        ..JournalStats::default()
    };
    let mut items: Vec<Output> = Vec::with_capacity(stage.max_batch_items * 2);
    let mut commands: Vec<Command> = Vec::with_capacity(stage.max_batch_items);
    let mut events: Vec<Event> = Vec::with_capacity(stage.max_batch_items);
    let mut fbb = FlatBufferBuilder::with_capacity(1 << 20);
    let mut waiter = Waiter::new(wait);
    let mut forward_from = 0usize; // items[..forward_from] are already forwarded
    let mut pending: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
    let mut journaled_upto = 0usize; // items[..journaled_upto] are appended
    let mut last_snapshot = shadow.last_seq();
    let mut retry_at: Option<Instant> = None;
    // Whether items[journaled_upto..] holds a command (a place to cut a batch).
    let mut boundary = false;
    let mut appended_seq = shadow.last_seq();
    let mut last_append = Instant::now();
    loop {
        // 1. Take what the engine produced.
        // The cap only applies once a command boundary is pending: one command can emit any
        // number of events (a mass cancel of 100K orders), and a batch can only end at one.
        let mut took = 0;
        while items.len() < stage.max_batch_items * 2 || !boundary {
            match rx.pop() {
                Ok(it) => {
                    boundary |= matches!(it, Output::Command(_));
                    items.push(it);
                    took += 1;
                }
                Err(_) => break,
            }
        }
        // 2. Append one batch: everything up to the last complete command.
        let mut worked = took > 0;
        if retry_at.is_none_or(|t| Instant::now() >= t) {
            // Only scan for a command when one is pending (scanning every time while one huge
            // command streams in would be quadratic).
            let cut = if boundary {
                items[journaled_upto..]
                    .iter()
                    .rposition(|i| matches!(i, Output::Command(_)))
            } else {
                None
            };
            if let Some(cut) = cut {
                let end = journaled_upto + cut + 1;
                commands.clear();
                events.clear();
                for it in &items[journaled_upto..end] {
                    match it {
                        Output::Command(c) => commands.push(*c),
                        Output::Event(e) => events.push(*e),
                    }
                }
                let (first, last) = (
                    events.first().map_or(0, |e| e.seq),
                    events.last().map_or(0, |e| e.seq),
                );
                let bytes = encode_batch(&mut fbb, stage.epoch, &commands, &events, first, last);
                let t = Instant::now();
                let appended = backend.append(first, last, bytes);
                stage.metrics.journal_append.observe(t.elapsed());
                match appended {
                    Ok(_) => {
                        stage
                            .metrics
                            .journal_appends
                            .fetch_add(1, Ordering::Relaxed);
                        stats.batches += 1;
                        stats.events += events.len() as u64;
                        stats.bytes += bytes.len() as u64;
                        pending.push_back(Pending {
                            last,
                            start: journaled_upto,
                            end,
                        });
                        journaled_upto = end;
                        appended_seq = last;
                        last_append = Instant::now();
                        // The cut was at the last command: nothing after it is a command.
                        boundary = false;
                        retry_at = None;
                        if shared.journal_failed.swap(false, Ordering::SeqCst) {
                            tracing::info!("journal recovered; acknowledging again");
                        }
                        // Keep the shadow engine in step (snapshots) and check determinism.
                        for c in &commands {
                            shadow.process(c, &mut NullSink);
                        }
                        if shadow.last_seq() != last {
                            tracing::error!(
                                shadow = shadow.last_seq(),
                                journal = last,
                                "shadow engine diverged from the engine"
                            );
                        }
                        worked = true;
                    }
                    Err(e) => {
                        stats.failures += 1;
                        if !shared.journal_failed.swap(true, Ordering::SeqCst) {
                            tracing::error!(error = %e, "journal append failed: holding reports and retrying");
                        }
                        retry_at = Some(Instant::now() + Duration::from_millis(100));
                    }
                }
            }
        }
        // 3. Forward what is durable.
        let durable = backend.durable();
        if let Some(why) = backend.fenced() {
            // A newer primary exists. Nothing more may be released: stop here, holding
            // everything not yet forwarded (readers skip this writer's late records).
            tracing::error!(
                why,
                "fenced: this primary stops without releasing anything more"
            );
            stats.fenced = Some(why);
            shared.fenced.store(true, Ordering::SeqCst);
            shared.notify_gateway();
            return stats;
        }
        let durable = match durable {
            Ok(d) => {
                if retry_at.is_none()
                    && shared.journal_failed.load(Ordering::Relaxed)
                    && pending.front().is_none_or(|p| p.last <= d)
                {
                    shared.journal_failed.store(false, Ordering::SeqCst);
                    tracing::info!("journal caught up; acknowledging again");
                }
                d
            }
            Err(e) => {
                if !shared.journal_failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "journal delivery failed: holding reports");
                }
                stats.durable_seq
            }
        };
        while pending.front().is_some_and(|p| p.last <= durable) {
            let p = pending.pop_front().expect("front");
            let mut forwarded_commands = 0u64;
            for it in &items[p.start.max(forward_from)..p.end] {
                if let Output::Command(_) = it {
                    forwarded_commands += 1;
                }
                if let Output::Event(_) = it {
                    let mut item = *it;
                    loop {
                        match tx.push(item) {
                            Ok(()) => break,
                            Err(rtrb::PushError::Full(back)) => {
                                item = back;
                                shared.notify_gateway();
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            }
            forward_from = p.end;
            shared
                .commands_forwarded
                .fetch_add(forwarded_commands, Ordering::Release);
            stats.durable_seq = p.last;
            shared.forwarded_seq.store(p.last, Ordering::Release);
            shared.notify_gateway();
            worked = true;
        }
        if pending.is_empty() && forward_from == journaled_upto && journaled_upto > 0 {
            items.drain(..journaled_upto);
            journaled_upto = 0;
            forward_from = 0;
        }
        // 4. Snapshots.
        if stage.snapshot_every_events > 0
            && shadow.last_seq() - last_snapshot >= stage.snapshot_every_events
        {
            if let Some(store) = &stage.snapshots {
                if write_snapshot(store, &shadow, &mut stats) {
                    backend.after_snapshot(shadow.last_seq(), &stage.retention);
                }
                last_snapshot = shadow.last_seq();
            }
        }
        if worked {
            waiter.reset();
            continue;
        }
        if last_append.elapsed() >= stage.heartbeat && retry_at.is_none() {
            let bytes = encode_batch(
                &mut fbb,
                stage.epoch,
                &[],
                &[],
                appended_seq + 1,
                appended_seq,
            );
            match backend.append(appended_seq + 1, appended_seq, bytes) {
                Ok(_) => {
                    stats.heartbeats += 1;
                    stage
                        .metrics
                        .journal_appends
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat append failed"),
            }
            last_append = Instant::now();
        }
        if let Err(e) = backend.tick() {
            if !shared.journal_failed.swap(true, Ordering::SeqCst) {
                tracing::error!(error = %e, "journal not durable: rejecting new requests until it recovers");
            }
        }
        if shared.engine_stopped.load(Ordering::SeqCst)
            && rx.is_empty()
            && items.is_empty()
            && pending.is_empty()
        {
            break;
        }
        waiter.wait(|| {
            shared.journal_sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if rx.is_empty() {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            shared.journal_sleeping.store(false, Ordering::SeqCst);
        });
    }
    if let Err(e) = backend.close() {
        tracing::error!(error = %e, "journal close failed");
    }
    if let Some(store) = &stage.snapshots {
        if shadow.last_seq() != last_snapshot && write_snapshot(store, &shadow, &mut stats) {
            backend.after_snapshot(shadow.last_seq(), &stage.retention);
        }
    }
    tracing::info!(?stats, "journal thread stopped");
    stats
}

fn write_snapshot(store: &SnapshotStore, shadow: &Engine, stats: &mut JournalStats) -> bool {
    match store.write(shadow.last_seq(), &shadow.snapshot()) {
        Ok(path) => {
            stats.snapshots += 1;
            tracing::info!(seq = shadow.last_seq(), path = %path.display(), "snapshot written");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "snapshot failed");
            false
        }
    }
}
