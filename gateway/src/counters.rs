//! What the gateway counts, for the node's metrics endpoint and exit summary. Written by the
//! gateway thread only (one cache-padded group), read by anyone.

use caldera_pipeline::{CachePadded, Histogram};
use caldera_schema::wire;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one gateway run (owned by the gateway thread; published to [`GatewayCounters`]).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GatewayStats {
    /// Frames read from clients.
    pub frames_in: u64,
    /// Requests decoded.
    pub requests: u64,
    /// Commands pushed to the engine.
    pub commands: u64,
    /// Requests rejected by the gateway (never reached the engine).
    pub gateway_rejects: u64,
    /// Events received from the engine.
    pub events: u64,
    /// Report frames sent.
    pub report_frames: u64,
    /// Reports sent.
    pub reports: u64,
    /// Reports for accounts with no logged-on session, or sessions that disconnected.
    pub undeliverable: u64,
    /// Times the gateway stopped reading because the inbound ring was full.
    pub ring_full_pauses: u64,
    /// Sessions ended, by [`crate::SessionEnd`] (disconnected, idle, backlog).
    pub sessions_ended: [u64; 3],
    /// Resends (`LogonWith{RESEND}`) completed.
    pub resends: u64,
    /// Reports resent from the journal.
    pub resent_reports: u64,
    /// Mass cancels sent for cancel-on-disconnect sessions that ended or logged out.
    pub disconnect_cancels: u64,
}

/// The gateway's published counters and gauges.
#[derive(Debug, Default)]
pub struct Published {
    /// Frames read from clients.
    pub frames_in: AtomicU64,
    /// Order-entry requests decoded.
    pub requests: AtomicU64,
    /// Commands sent to the engine.
    pub commands: AtomicU64,
    /// Engine events received (durable).
    pub events: AtomicU64,
    /// Reports sent.
    pub reports: AtomicU64,
    /// Reports with no session to deliver to.
    pub undeliverable: AtomicU64,
    /// Times the gateway paused reading because the inbound ring was full.
    pub ring_full_pauses: AtomicU64,
    /// Resends completed.
    pub resends: AtomicU64,
    /// Reports resent from the journal.
    pub resent_reports: AtomicU64,
    /// Cancel-on-disconnect mass cancels sent.
    pub disconnect_cancels: AtomicU64,
    /// Sessions known.
    pub sessions: AtomicU64,
    /// Sessions ended, by [`crate::SessionEnd`].
    pub sessions_ended: [AtomicU64; 3],
    /// Inbound ring (gateway → engine) slots in use.
    pub inbound_ring_used: AtomicU64,
    /// Outbound ring (journal/engine → gateway) slots in use.
    pub outbound_ring_used: AtomicU64,
    /// Engine's last sequence.
    pub engine_seq: AtomicU64,
    /// Last sequence durable and released to the gateway.
    pub durable_seq: AtomicU64,
    /// The journal cannot make events durable (requests are being rejected).
    pub journal_unavailable: AtomicBool,
    /// The endpoints are bound and the gateway is serving.
    pub serving: AtomicBool,
}

/// Everything the gateway reports, shared with the metrics endpoint.
#[derive(Debug)]
pub struct GatewayCounters {
    /// Counters and gauges, published every few milliseconds.
    pub published: CachePadded<Published>,
    /// Rejects by wire reason code (engine 1–17, gateway 100–111), counted as they happen.
    pub rejects: CachePadded<Rejects>,
    /// Request read from the socket → its events durable and ready to report (sampled).
    pub request_to_durable: CachePadded<Histogram>,
    /// Where a request waits, by stage (sampled): see [`Stage`].
    pub stages: CachePadded<[Histogram; Stage::ALL.len()]>,
}

/// The stages of a request's way through the node, timed on a sample of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Read from the socket → the engine has processed it (inbound ring, engine wake-up, engine).
    Engine = 0,
    /// Engine done → durable and released (outbound ring, journal batching, write, fsync).
    Journal = 1,
    /// Released → its reports handed to ZeroMQ (routing, report encoding).
    Report = 2,
    /// Read from the socket → its reports handed to ZeroMQ (the node's whole share).
    Total = 3,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [Stage::Engine, Stage::Journal, Stage::Report, Stage::Total];

    /// Its label value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Stage::Engine => "engine",
            Stage::Journal => "journal",
            Stage::Report => "report",
            Stage::Total => "total",
        }
    }
}

impl Default for GatewayCounters {
    fn default() -> Self {
        Self {
            published: CachePadded::default(),
            rejects: CachePadded(Rejects(std::array::from_fn(|_| AtomicU64::new(0)))),
            request_to_durable: CachePadded::default(),
            stages: CachePadded::default(),
        }
    }
}

/// Reject counters indexed by wire reason code.
#[derive(Debug)]
pub struct Rejects(pub [AtomicU64; 128]);

impl GatewayCounters {
    /// Counts a reject by its wire reason.
    pub fn reject(&self, reason: wire::RejectReason) {
        if let Some(c) = self.rejects.0 .0.get(usize::from(reason.0)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the gateway is bound and serving.
    #[must_use]
    pub fn serving(&self) -> bool {
        self.published.serving.load(Ordering::Relaxed)
    }
}
