//! The state the pipeline threads share, grouped by the thread that writes it, each group on
//! its own cache lines.

use crate::padded::CachePadded;
use crate::wake::{EventFdWaker, Parker};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Written by the gateway thread.
#[derive(Debug, Default)]
pub struct GatewaySide {
    /// Exit once the inbound ring is empty (set at shutdown).
    pub stop: AtomicBool,
}

/// Written by the engine thread.
#[derive(Debug, Default)]
pub struct EngineSide {
    /// Commands the engine has finished.
    pub commands: AtomicU64,
    /// The engine's last sequence number.
    pub seq: AtomicU64,
    /// The engine thread has exited.
    pub stopped: AtomicBool,
    /// When the engine last published `commands` ([`Shared::now_ns`]).
    pub done_ns: AtomicU64,
    /// The engine thread ended without stopping (a panic unwound it).
    pub died: AtomicBool,
}

/// Written by the journal thread.
#[derive(Debug, Default)]
pub struct JournalSide {
    /// Last sequence the journal made durable and forwarded to the gateway.
    pub forwarded_seq: AtomicU64,
    /// Commands whose events the journal made durable and forwarded.
    pub commands_forwarded: AtomicU64,
    /// Last sequence on stable storage (fsynced; Kafka: acknowledged): what snapshots may
    /// cover.
    pub synced_seq: AtomicU64,
    /// The journal cannot make events durable: new requests are refused until it recovers.
    pub failed: AtomicBool,
    /// A newer primary fenced this one: release nothing more and stop.
    pub fenced: AtomicBool,
    /// The journal stage has closed the writer (everything it took is on stable storage).
    pub closed: AtomicBool,
    /// When the journal last released a batch ([`Shared::now_ns`]).
    pub released_ns: AtomicU64,
    /// The journal thread ended without finishing (a panic unwound it).
    pub died: AtomicBool,
}

/// State shared by the gateway, engine and journal threads.
#[derive(Debug)]
pub struct Shared {
    /// Written by the gateway.
    pub gateway: CachePadded<GatewaySide>,
    /// Written by the engine thread.
    pub engine: CachePadded<EngineSide>,
    /// Written by the journal thread.
    pub journal: CachePadded<JournalSide>,
    /// Wakes the engine thread.
    pub engine_parker: CachePadded<Parker>,
    /// Wakes the journal thread.
    pub journal_parker: CachePadded<Parker>,
    /// Wakes the gateway thread.
    pub gateway_waker: CachePadded<EventFdWaker>,
    journal_enabled: bool,
    clock: Instant,
}

impl Shared {
    /// Shared state for a pipeline with (`journal`) or without a journal thread between the
    /// engine and the gateway, starting at engine sequence `seq`.
    ///
    /// # Errors
    /// When the gateway's eventfd cannot be created.
    pub fn new(journal: bool, seq: u64) -> std::io::Result<Self> {
        let s = Self {
            gateway: CachePadded::default(),
            engine: CachePadded::default(),
            journal: CachePadded::default(),
            engine_parker: CachePadded::default(),
            journal_parker: CachePadded::default(),
            gateway_waker: CachePadded(EventFdWaker::new()?),
            journal_enabled: journal,
            clock: Instant::now(),
        };
        s.engine.seq.store(seq, Ordering::Relaxed);
        s.journal.forwarded_seq.store(seq, Ordering::Relaxed);
        s.journal.synced_seq.store(seq, Ordering::Relaxed);
        Ok(s)
    }

    /// Nanoseconds since the pipeline started (the threads' common clock for stage timing).
    #[inline]
    #[must_use]
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `t` on the [`Shared::now_ns`] clock.
    #[must_use]
    pub fn ns_of(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.clock).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a journal thread sits between the engine and the gateway.
    #[must_use]
    pub fn journal_enabled(&self) -> bool {
        self.journal_enabled
    }

    /// Wakes whoever consumes the engine's output: the journal thread if there is one, else the
    /// gateway.
    #[inline]
    pub fn notify_downstream(&self) {
        if self.journal_enabled {
            self.journal_parker.wake();
        } else {
            self.gateway_waker.wake();
        }
    }

    /// The last sequence whose events may be reported (durable, or processed without a
    /// journal).
    #[must_use]
    pub fn releasable_seq(&self) -> u64 {
        if self.journal_enabled {
            self.journal.forwarded_seq.load(Ordering::Relaxed)
        } else {
            self.engine.seq.load(Ordering::Relaxed)
        }
    }

    /// Commands whose events may be reported (see [`Shared::releasable_seq`]).
    #[must_use]
    pub fn releasable_commands(&self) -> u64 {
        if self.journal_enabled {
            self.journal.commands_forwarded.load(Ordering::Acquire)
        } else {
            self.engine.commands.load(Ordering::Acquire)
        }
    }
}
