//! Snapshots without a second engine: the engine thread serialises its own state between two
//! commands, every `journal.snapshot_every_events`, into a buffer the snapshot writer handed it
//! (so it allocates nothing); the snapshot writer thread waits until the journal has that
//! sequence on stable storage — a snapshot is never ahead of the durable log — then writes the
//! file, applies retention, and hands the buffer back. See ADR 0007.
//!
//! The engine pauses for the serialisation (a few ms for hundreds of thousands of resting
//! orders); that is the price of not re-running every command on a shadow engine.

use caldera_engine::Engine;
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::{retain_segments, Retention};
use caldera_pipeline::{Agent, Idle, Shared, WaitStrategy};
use rtrb::{Consumer, Producer, RingBuffer};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Snapshot settings.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// The file journal's directory (snapshots go to its `snapshots/`).
    pub dir: PathBuf,
    /// Snapshot every this many events (0: only at shutdown).
    pub every_events: u64,
    /// Retention applied after each snapshot.
    pub retention: Retention,
}

/// What the engine thread sends the writer.
pub enum SnapshotMsg {
    /// A snapshot of the state after event `seq`.
    Taken {
        /// Last event sequence it covers.
        seq: u64,
        /// The serialised engine.
        bytes: Vec<u8>,
    },
    /// A snapshot was due but the buffer is too small: grow it to `room` bytes.
    NeedRoom {
        /// Bytes needed.
        room: usize,
        /// The buffer.
        buf: Vec<u8>,
    },
}

/// The engine thread's end: decides when a snapshot is due and takes it.
pub struct SnapshotTrigger {
    every: u64,
    next_at: u64,
    free: Consumer<Vec<u8>>,
    out: Producer<SnapshotMsg>,
}

impl SnapshotTrigger {
    /// Called by the engine thread between commands; allocates nothing.
    #[inline]
    pub fn after_commands(&mut self, engine: &Engine) {
        let seq = engine.last_seq();
        if seq < self.next_at {
            return;
        }
        let Ok(mut buf) = self.free.pop() else {
            return; // the writer still holds every buffer: try again after the next commands
        };
        let room = engine.snapshot_len_bound();
        let msg = if buf.capacity() >= room {
            engine.snapshot_into(&mut buf);
            self.next_at = seq + self.every;
            SnapshotMsg::Taken { seq, bytes: buf }
        } else {
            SnapshotMsg::NeedRoom { room, buf }
        };
        // The writer returns every buffer it takes, so there is always room for it.
        let _ = self.out.push(msg);
    }
}

/// The snapshot writer's agent (its own thread).
pub struct SnapshotWriter {
    settings: SnapshotSettings,
    store: SnapshotStore,
    shared: Arc<Shared>,
    rx: Consumer<SnapshotMsg>,
    free: Producer<Vec<u8>>,
    /// A snapshot waiting for its sequence to be on stable storage.
    waiting: Option<(u64, Vec<u8>)>,
    /// Snapshots written.
    pub written: u64,
    /// Last sequence a written snapshot covers.
    pub last_seq: u64,
}

/// Buffers circulating between the engine and the writer.
const BUFFERS: usize = 2;

/// The trigger for the engine stage and the writer for its thread, with buffers sized for
/// `engine`'s current state.
#[must_use]
pub fn snapshots(
    settings: SnapshotSettings,
    engine: &Engine,
    shared: Arc<Shared>,
) -> (SnapshotTrigger, SnapshotWriter) {
    let (mut free_tx, free_rx) = RingBuffer::new(BUFFERS);
    let (out_tx, out_rx) = RingBuffer::new(BUFFERS);
    let room = engine.snapshot_len_bound().max(1 << 20) * 2;
    for _ in 0..BUFFERS {
        let _ = free_tx.push(Vec::with_capacity(room));
    }
    let seq = engine.last_seq();
    let trigger = SnapshotTrigger {
        every: settings.every_events,
        next_at: seq + settings.every_events,
        free: free_rx,
        out: out_tx,
    };
    let writer = SnapshotWriter {
        store: SnapshotStore::new(&settings.dir, 3),
        settings,
        shared,
        rx: out_rx,
        free: free_tx,
        waiting: None,
        written: 0,
        last_seq: seq,
    };
    (trigger, writer)
}

impl SnapshotWriter {
    /// Starts the writer's thread.
    ///
    /// # Errors
    /// When the OS cannot spawn the thread.
    pub fn spawn(
        self,
    ) -> std::io::Result<std::thread::JoinHandle<(SnapshotWriter, Option<usize>)>> {
        // No spinning: with nothing to write it sleeps at once.
        let idle = Idle::with_phases(WaitStrategy::Park, 0, 0);
        caldera_pipeline::spawn("caldera-snaps", self, idle, None)
    }

    fn give_back(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.free.push(buf);
    }

    /// Takes what the engine sent: grows a buffer, or holds a snapshot until it is durable.
    fn receive(&mut self) -> usize {
        if self.waiting.is_some() {
            return 0;
        }
        match self.rx.pop() {
            Ok(SnapshotMsg::NeedRoom { room, mut buf }) => {
                buf.reserve(room * 2);
                self.give_back(buf);
                1
            }
            Ok(SnapshotMsg::Taken { seq, bytes }) => {
                self.waiting = Some((seq, bytes));
                1
            }
            Err(_) => 0,
        }
    }

    /// Writes the held snapshot once the journal has its sequence on stable storage.
    fn write_when_durable(&mut self) -> usize {
        let synced = self.shared.journal.synced_seq.load(Ordering::Acquire);
        if self.waiting.as_ref().is_none_or(|(seq, _)| *seq > synced) {
            return 0;
        }
        let (seq, bytes) = self.waiting.take().expect("checked");
        match self.store.write(seq, &bytes) {
            Ok(path) => {
                self.written += 1;
                self.last_seq = seq;
                tracing::info!(seq, path = %path.display(), "snapshot written");
                apply_retention(&self.settings, seq);
            }
            Err(e) => tracing::error!(error = %e, "snapshot failed"),
        }
        self.give_back(bytes);
        1
    }
}

/// Deletes the segments the snapshot at `seq` made unnecessary, within the retention limits.
pub fn apply_retention(settings: &SnapshotSettings, seq: u64) {
    if !settings.retention.is_set() {
        return;
    }
    match retain_segments(&settings.dir, &settings.retention, seq + 1) {
        Ok(d) if !d.is_empty() => {
            tracing::info!(deleted = ?d, "journal retention deleted segments")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "journal retention failed"),
    }
}

impl Agent for SnapshotWriter {
    fn do_work(&mut self) -> usize {
        self.receive() + self.write_when_durable()
    }

    fn sleep(&mut self) {
        std::thread::sleep(Duration::from_millis(5));
    }

    /// Done once fenced, or once the engine has stopped and nothing is left to write (or the
    /// journal closed without making it durable).
    fn done(&self) -> bool {
        let j = &self.shared.journal;
        j.fenced.load(Ordering::Relaxed)
            || (self.shared.engine.stopped.load(Ordering::Acquire)
                && self.rx.is_empty()
                && (self.waiting.is_none() || j.closed.load(Ordering::Acquire)))
    }
}
