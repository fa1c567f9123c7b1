//! What the rings between the pipeline threads carry.

use caldera_engine::{Command, Event, Side};

/// What the engine thread emits: the events a command produced, then the command itself. The
/// journal needs both (commands are re-run on replay, events are for consumers); the gateway
/// routes the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A command the engine executed; its events precede it.
    Command(Command),
    /// An event.
    Event(Event),
}

/// A question to the engine thread that changes nothing: the live orders of an account. It
/// travels on rings of its own, never through the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrdersQuery {
    /// Whose orders.
    pub account: u32,
}

/// One row of the engine's answer to an [`OrdersQuery`]: a live order of the account, all
/// rows as of the engine's sequence `as_of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderRow {
    /// The engine's last sequence when it answered.
    pub as_of: u64,
    /// Row number, 0-based.
    pub index: u32,
    /// Rows in the answer: 0 = no live order (this row carries none); [`OrderRow::BUSY`] = the
    /// answer did not fit (ask again later).
    pub count: u32,
    /// The order (zeros when `count` is 0 or busy).
    pub order_id: u64,
    /// Its client order id.
    pub client_order_id: u64,
    /// Its price.
    pub price: u64,
    /// Its open quantity.
    pub open_qty: u64,
    /// Its instrument.
    pub symbol: u32,
    /// Its side.
    pub side: Side,
}

impl OrderRow {
    /// `count` of an answer that did not fit in the answer ring.
    pub const BUSY: u32 = u32::MAX;
}
