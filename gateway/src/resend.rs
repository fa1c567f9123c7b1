//! Resend on logon (docs/protocol.md, "Resend"): a session that logs on with
//! `LogonWith{account, resume_after, flags: RESEND}` gets every report of the account with an `engine_seq`
//! above `resume_after`, read from the journal on a thread of its own, then the live ones —
//! with no gap and no duplicate across the switch.
//!
//! How the switch works (a replay merge): from the logon on, the live reports of the account
//! for that session are held back, tagged with their event's sequence. A [`ResendJob`] thread
//! reads the journal from `resume_after` and hands over the account's reports in chunks, each
//! saying up to which event it has read (`through`); the gateway drops the held reports the
//! journal has covered. The reader stops once `through` reaches the last event the gateway has
//! routed (which it reads from an atomic the gateway updates every round): every event up to
//! there came from the journal, every event after it is held or still to come. The gateway
//! then sends `ResendComplete` and the held reports after `through`, and the session is live.
//!
//! The reader never resends an event the gateway has not routed yet, so a resent report, like
//! a live one, is only ever sent after its event is durable.

use caldera_engine::Event;
use caldera_pipeline::Shared;
use caldera_schema::codec::ServerReport;
use caldera_schema::map;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// The durable history of events a resend reads: the node's journal.
pub trait History: Send + Sync {
    /// A reader of the durable events with a sequence above `after`, in sequence order, the
    /// journal's epoch rule applied.
    ///
    /// # Errors
    /// [`HistoryError::Dropped`] when retention removed events after `after`;
    /// [`HistoryError::Read`] when the journal cannot be read.
    fn open(&self, after: u64) -> Result<Box<dyn HistoryReader>, HistoryError>;
}

/// Reads events from a [`History`].
pub trait HistoryReader: Send {
    /// Appends the next events (sequence order; a reader may return events at or below ones
    /// it returned before — they are skipped) to `out`. `Ok(false)`: nothing more for now.
    ///
    /// # Errors
    /// [`HistoryError`] when the journal cannot be read (the resend fails; the client may ask
    /// again).
    fn read(&mut self, out: &mut Vec<Event>) -> Result<bool, HistoryError>;
}

/// Why a resend cannot be served.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    /// Retention removed part of what was asked for: the oldest sequence still kept.
    #[error("the journal no longer holds the events before {oldest}")]
    Dropped {
        /// The oldest event sequence the journal still holds.
        oldest: u64,
    },
    /// The journal could not be read.
    #[error("reading the journal: {0}")]
    Read(String),
}

/// What a resend thread hands the gateway.
pub(crate) enum Chunk {
    /// Reports of the account (in order), and the last event sequence read so far.
    Reports {
        reports: Vec<ServerReport>,
        through: u64,
    },
    /// Every event up to `through` was read, and the gateway had routed no later one.
    Done { through: u64 },
    /// The resend cannot be served.
    Failed(HistoryError),
}

/// Reports per chunk (one report frame each).
const CHUNK: usize = crate::session::MAX_REPORTS_PER_FRAME;

/// The gateway's end of one resend.
pub(crate) struct ResendJob {
    pub(crate) session: crate::session::SessionRef,
    pub(crate) account: u32,
    pub(crate) after: u64,
    /// Reports resent so far.
    pub(crate) count: u64,
    pub(crate) rx: Receiver<Chunk>,
    cancel: Arc<AtomicBool>,
}

impl ResendJob {
    /// Starts a thread that reads `history` after `after` for `account`'s reports, up to the
    /// last event the gateway routed (`routed`).
    pub(crate) fn start(
        history: &Arc<dyn History>,
        session: crate::session::SessionRef,
        account: u32,
        after: u64,
        routed: &Arc<AtomicU64>,
        shared: &Arc<Shared>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let cancel = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            history: Arc::clone(history),
            account,
            after,
            routed: Arc::clone(routed),
            shared: Arc::clone(shared),
            tx,
            cancel: Arc::clone(&cancel),
        };
        std::thread::Builder::new()
            .name("caldera-resend".into())
            .spawn(move || reader.run())?;
        Ok(Self {
            session,
            account,
            after,
            count: 0,
            rx,
            cancel,
        })
    }
}

impl Drop for ResendJob {
    fn drop(&mut self) {
        // The thread sees it at its next step (or its next send fails).
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The resend thread.
struct Reader {
    history: Arc<dyn History>,
    account: u32,
    after: u64,
    routed: Arc<AtomicU64>,
    shared: Arc<Shared>,
    tx: SyncSender<Chunk>,
    cancel: Arc<AtomicBool>,
}

impl Reader {
    /// Hands `chunk` over (waiting while the gateway has not taken the previous ones: a slow
    /// reader of reports slows its resend, nothing else); false when the gateway dropped the
    /// job.
    fn send(&self, mut chunk: Chunk) -> bool {
        loop {
            match self.tx.try_send(chunk) {
                Ok(()) => {
                    self.shared.gateway_waker.wake();
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(c)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return false;
                    }
                    chunk = c;
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
    }

    fn run(self) {
        let mut reader = match self.history.open(self.after) {
            Ok(r) => r,
            Err(e) => {
                self.send(Chunk::Failed(e));
                return;
            }
        };
        let mut pending: VecDeque<Event> = VecDeque::new();
        let mut read = Vec::new();
        let mut reports = Vec::with_capacity(CHUNK);
        let mut through = self.after;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return;
            }
            let target = self.routed.load(Ordering::Acquire);
            while pending.front().is_some_and(|e| e.seq <= target) {
                let ev = pending.pop_front().expect("front");
                if ev.seq <= through {
                    continue;
                }
                through = ev.seq;
                let all = self.account == crate::session::ALL_ACCOUNTS;
                map::reports(&ev, |account, r| {
                    if account == self.account || (all && account != map::VENUE) {
                        reports.push(r);
                    }
                });
                if reports.len() >= CHUNK {
                    let chunk = Chunk::Reports {
                        reports: std::mem::replace(&mut reports, Vec::with_capacity(CHUNK)),
                        through,
                    };
                    if !self.send(chunk) {
                        return;
                    }
                }
            }
            if through >= target {
                if !reports.is_empty() {
                    let reports = std::mem::take(&mut reports);
                    if !self.send(Chunk::Reports { reports, through }) {
                        return;
                    }
                }
                self.send(Chunk::Done { through });
                return;
            }
            if !pending.is_empty() {
                // Read ahead of what the gateway routed: wait for it.
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            read.clear();
            match reader.read(&mut read) {
                Ok(true) => pending.extend(read.drain(..).filter(|e| e.seq > through)),
                Ok(false) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    self.send(Chunk::Failed(e));
                    return;
                }
            }
        }
    }
}
