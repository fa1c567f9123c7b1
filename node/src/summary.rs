//! What the `caldera` binary prints on stdout, as JSON (one object per line).

use crate::primary::ServeSummary;
use caldera_engine::{Engine, Event, EventBody};
use serde::Serialize;

/// Serializes a `u64` as 16 hexadecimal digits (state hashes).
///
/// # Errors
/// As the serializer.
pub fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:016x}"))
}

/// `caldera serve` / a promoted standby's exit summary.
#[derive(Debug, Serialize)]
pub struct ServeLine {
    /// Commands the engine processed.
    pub commands: u64,
    /// Engine's last sequence.
    pub last_seq: u64,
    /// Final state hash.
    #[serde(serialize_with = "hex")]
    pub state_hash: u64,
    /// Resting orders.
    pub live_orders: u32,
    /// Engine-thread allocations while serving (expected: 0).
    pub engine_allocations: u64,
    /// Core the engine thread was pinned to.
    pub pinned_core: Option<usize>,
    /// Frames read.
    pub frames_in: u64,
    /// Requests decoded.
    pub requests: u64,
    /// Requests the gateway rejected.
    pub gateway_rejects: u64,
    /// Events routed.
    pub events: u64,
    /// Reports sent.
    pub reports: u64,
    /// Report frames sent.
    pub report_frames: u64,
    /// Reports with no session to deliver to.
    pub undeliverable: u64,
    /// Times the gateway paused reading (inbound ring full).
    pub ring_full_pauses: u64,
    /// Market-data messages published.
    pub md_published: u64,
    /// Sequence recovered at start.
    pub recovered_seq: u64,
    /// Journal batches appended.
    pub journal_batches: u64,
    /// Last durable sequence.
    pub journal_durable_seq: u64,
    /// Snapshots written.
    pub snapshots: u64,
}

impl ServeLine {
    /// The line for a finished run.
    #[must_use]
    pub fn of(s: &ServeSummary) -> Self {
        let (e, g, j) = (&s.engine, &s.gateway, s.journal.as_ref());
        Self {
            commands: e.commands,
            last_seq: e.engine.last_seq(),
            state_hash: e.engine.state_hash(),
            live_orders: e.engine.live_orders(),
            engine_allocations: e.allocations,
            pinned_core: e.pinned_core,
            frames_in: g.frames_in,
            requests: g.requests,
            gateway_rejects: g.gateway_rejects,
            events: g.events,
            reports: g.reports,
            report_frames: g.report_frames,
            undeliverable: g.undeliverable,
            ring_full_pauses: g.ring_full_pauses,
            md_published: s.md_published,
            recovered_seq: s.recovered_seq,
            journal_batches: j.map_or(0, |j| j.batches),
            journal_durable_seq: j.map_or(0, |j| j.durable_seq),
            snapshots: s.snapshots,
        }
    }
}

/// One instrument's book after a replay.
#[derive(Debug, Serialize)]
pub struct BookLine {
    /// Instrument.
    pub symbol: u32,
    /// Best bid (price, quantity).
    pub best_bid: Option<(u64, u64)>,
    /// Best ask (price, quantity).
    pub best_ask: Option<(u64, u64)>,
    /// Bid levels.
    pub bid_levels: usize,
    /// Ask levels.
    pub ask_levels: usize,
}

impl BookLine {
    /// The book of `symbol` in `engine`.
    #[must_use]
    pub fn of(engine: &Engine, symbol: u32) -> Self {
        let (mut bid_levels, mut ask_levels) = (0, 0);
        engine.for_each_level(symbol, caldera_engine::Side::Buy, |_, _| bid_levels += 1);
        engine.for_each_level(symbol, caldera_engine::Side::Sell, |_, _| ask_levels += 1);
        Self {
            symbol,
            best_bid: engine.best_bid(symbol),
            best_ask: engine.best_ask(symbol),
            bid_levels,
            ask_levels,
        }
    }
}

/// `caldera replay`'s output.
#[derive(Debug, Serialize)]
pub struct ReplayLine {
    /// Last sequence.
    pub last_seq: u64,
    /// State hash.
    #[serde(serialize_with = "hex")]
    pub state_hash: u64,
    /// Resting orders.
    pub live_orders: u32,
    /// Snapshot used (0 = none).
    pub snapshot_seq: u64,
    /// Batches replayed.
    pub batches: u64,
    /// Commands replayed.
    pub commands: u64,
    /// Events covered.
    pub events: u64,
    /// Replay time.
    pub seconds: f64,
    /// Replay rate.
    pub events_per_s: f64,
    /// Books.
    pub books: Vec<BookLine>,
}

/// One journal event as `caldera journal dump|tail` prints it.
#[derive(Debug, Serialize)]
pub struct EventLine {
    /// Event sequence.
    pub seq: u64,
    /// Writer epoch of its batch.
    pub epoch: u64,
    /// The event.
    #[serde(flatten)]
    pub body: EventJson,
}

/// An event's fields (enums by name).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum EventJson {
    Accepted {
        order_id: u64,
        account: u32,
        client_order_id: u64,
        symbol: u32,
        side: String,
        order_type: String,
        tif: String,
        price: u64,
        qty: u64,
    },
    Rejected {
        account: u32,
        client_order_id: u64,
        order_id: u64,
        symbol: u32,
        request: String,
        reason: String,
    },
    Trade {
        trade_id: u64,
        symbol: u32,
        price: u64,
        qty: u64,
        aggressor: String,
        maker_order_id: u64,
        maker_account: u32,
        maker_leaves: u64,
        taker_order_id: u64,
        taker_account: u32,
        taker_leaves: u64,
    },
    Done {
        order_id: u64,
        account: u32,
        client_order_id: u64,
        symbol: u32,
        side: String,
        reason: String,
        leaves: u64,
    },
    Replaced {
        order_id: u64,
        account: u32,
        client_order_id: u64,
        symbol: u32,
        side: String,
        price: u64,
        qty: u64,
        kept_priority: bool,
    },
    BookDelta {
        symbol: u32,
        side: String,
        price: u64,
        qty: u64,
    },
    MassCancelled {
        account: u32,
        symbol: Option<u32>,
        count: u32,
    },
    InstrumentStatus {
        symbol: u32,
        halted: bool,
    },
}

fn name(v: impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

impl EventLine {
    /// The line for `e`, journaled in a batch of `epoch`.
    #[must_use]
    pub fn of(epoch: u64, e: &Event) -> Self {
        let body = match &e.body {
            EventBody::Accepted(x) => EventJson::Accepted {
                order_id: x.order_id,
                account: x.account,
                client_order_id: x.client_order_id,
                symbol: x.symbol,
                side: name(x.side),
                order_type: name(x.order_type),
                tif: name(x.tif),
                price: x.price,
                qty: x.qty,
            },
            EventBody::Rejected(x) => EventJson::Rejected {
                account: x.account,
                client_order_id: x.client_order_id,
                order_id: x.order_id,
                symbol: x.symbol,
                request: name(x.request),
                reason: name(x.reason),
            },
            EventBody::Trade(x) => EventJson::Trade {
                trade_id: x.trade_id,
                symbol: x.symbol,
                price: x.price,
                qty: x.qty,
                aggressor: name(x.aggressor),
                maker_order_id: x.maker_order_id,
                maker_account: x.maker_account,
                maker_leaves: x.maker_leaves,
                taker_order_id: x.taker_order_id,
                taker_account: x.taker_account,
                taker_leaves: x.taker_leaves,
            },
            EventBody::Done(x) => EventJson::Done {
                order_id: x.order_id,
                account: x.account,
                client_order_id: x.client_order_id,
                symbol: x.symbol,
                side: name(x.side),
                reason: name(x.reason),
                leaves: x.leaves,
            },
            EventBody::Replaced(x) => EventJson::Replaced {
                order_id: x.order_id,
                account: x.account,
                client_order_id: x.client_order_id,
                symbol: x.symbol,
                side: name(x.side),
                price: x.price,
                qty: x.qty,
                kept_priority: x.kept_priority,
            },
            EventBody::BookDelta(x) => EventJson::BookDelta {
                symbol: x.symbol,
                side: name(x.side),
                price: x.price,
                qty: x.qty,
            },
            EventBody::MassCancelled(x) => EventJson::MassCancelled {
                account: x.account,
                symbol: x.symbol,
                count: x.count,
            },
            EventBody::InstrumentStatus(x) => EventJson::InstrumentStatus {
                symbol: x.symbol,
                halted: x.halted,
            },
        };
        Self {
            seq: e.seq,
            epoch,
            body,
        }
    }
}

/// `--check`'s output for `serve` and `standby`.
#[derive(Debug, Serialize)]
pub struct CheckLine<'a> {
    /// Always true (an invalid configuration exits non-zero before printing).
    pub ok: bool,
    /// `primary` or `standby`.
    pub role: &'a str,
    /// Order-entry endpoint.
    pub order_entry: &'a str,
    /// Market-data endpoint.
    pub market_data: &'a str,
    /// Journal URI.
    pub journal: &'a str,
    /// Metrics listener.
    pub metrics: &'a str,
    /// Number of instruments.
    pub instruments: usize,
    /// Failover timeout.
    pub failover_timeout_ms: u64,
    /// Peers watched.
    pub peers: &'a [String],
    /// `curve` or `none`.
    pub auth: &'a str,
    /// Client keys listed in the entitlements (0 without authentication).
    pub entitled_keys: usize,
}
