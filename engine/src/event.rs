//! Events: the engine's only output. Fixed-size, `Copy`, each stamped with a strictly increasing
//! sequence number.

use crate::types::{
    u8_enum, AccountId, ClientOrderId, OrderId, OrderType, Price, Qty, Seq, Side, SymbolId,
    TimeInForce, TradeId,
};

u8_enum!(
    /// Why a command was rejected. Codes are stable: they appear on the wire and in the journal.
    RejectReason {
        /// The instrument id is not configured.
        UnknownSymbol = 1,
        /// A limit price of 0.
        ZeroPrice = 2,
        /// The price is outside the instrument's band.
        PriceOutOfBand = 3,
        /// The price is not a multiple of the tick size.
        PriceOffTick = 4,
        /// A quantity of 0.
        ZeroQuantity = 5,
        /// The quantity is not a multiple of the lot size.
        QuantityOffLot = 6,
        /// The quantity is above the instrument's maximum order quantity.
        QuantityOverMax = 7,
        /// The account already has a live order with this client order id.
        DuplicateClientOrderId = 8,
        /// No live order of this account matches the reference.
        UnknownOrder = 9,
        /// A post-only order (or replace) would have taken liquidity.
        PostOnlyWouldTake = 10,
        /// A fill-or-kill order could not be filled completely.
        FokNotFillable = 11,
        /// The instrument is halted.
        InstrumentHalted = 12,
        /// The order pool is full; the order could not rest.
        OrderCapacityReached = 13,
        /// The account table is full; a new account could not rest an order.
        AccountCapacityReached = 14,
        /// Market orders cannot be post-only.
        InvalidOrderType = 15,
        /// Market orders must be IOC or FOK; post-only orders must be GTC.
        InvalidTimeInForce = 16,
        /// Market orders must carry price 0.
        MarketOrderHasPrice = 17,
        /// The account has `max_orders_per_account` live orders already.
        AccountOrderLimit = 18,
        /// Client order id 0 is reserved (a reject naming it would be ambiguous).
        ZeroClientOrderId = 19,
    }
);

impl RejectReason {
    /// A short human-readable explanation.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::UnknownSymbol => "unknown symbol",
            Self::ZeroPrice => "price must be greater than 0",
            Self::PriceOutOfBand => "price outside the instrument's price band",
            Self::PriceOffTick => "price is not a multiple of the tick size",
            Self::ZeroQuantity => "quantity must be greater than 0",
            Self::QuantityOffLot => "quantity is not a multiple of the lot size",
            Self::QuantityOverMax => "quantity above the instrument's maximum",
            Self::DuplicateClientOrderId => {
                "duplicate client order id (a live order, or one accepted within the dedupe window)"
            }
            Self::UnknownOrder => "no such live order for this account",
            Self::PostOnlyWouldTake => "post-only order would take liquidity",
            Self::FokNotFillable => "fill-or-kill order cannot be filled completely",
            Self::InstrumentHalted => "instrument is halted",
            Self::OrderCapacityReached => "order capacity reached",
            Self::AccountCapacityReached => "account capacity reached",
            Self::InvalidOrderType => "market orders cannot be post-only",
            Self::InvalidTimeInForce => {
                "market orders must be IOC or FOK and post-only orders must be GTC"
            }
            Self::MarketOrderHasPrice => "market orders must have price 0",
            Self::AccountOrderLimit => "the account has its maximum number of live orders",
            Self::ZeroClientOrderId => "client order id 0 is reserved",
        }
    }
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

u8_enum!(
    /// Which kind of command a reject answers.
    RequestKind {
        /// `Command::New`.
        New = 0,
        /// `Command::Cancel`.
        Cancel = 1,
        /// `Command::Replace`.
        Replace = 2,
        /// `Command::MassCancel`.
        MassCancel = 3,
        /// `Command::Halt`.
        Halt = 4,
        /// `Command::Resume`.
        Resume = 5,
    }
);

u8_enum!(
    /// Why an order left the book (or never rested).
    DoneReason {
        /// Completely filled.
        Filled = 0,
        /// Cancelled on request (cancel or mass cancel).
        Cancelled = 1,
        /// IOC or market remainder cancelled after matching.
        Expired = 2,
        /// Cancelled by self-trade prevention.
        SelfTradePrevented = 3,
    }
);

/// The order was accepted and assigned an order id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// New engine order id.
    pub order_id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Client's id.
    pub client_order_id: ClientOrderId,
    /// Instrument.
    pub symbol: SymbolId,
    /// Side.
    pub side: Side,
    /// Limit or market.
    pub order_type: OrderType,
    /// Time in force.
    pub tif: TimeInForce,
    /// Limit price (0 for market).
    pub price: Price,
    /// Quantity.
    pub qty: Qty,
}

/// A command was rejected; nothing changed except the sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Requesting account (0 for halt/resume).
    pub account: AccountId,
    /// The client order id named by the command (0 when the command named an order id).
    pub client_order_id: ClientOrderId,
    /// The order id named by the command (0 when none).
    pub order_id: OrderId,
    /// The instrument named by the command (0 when unknown from the command).
    pub symbol: SymbolId,
    /// Which command.
    pub request: RequestKind,
    /// Why.
    pub reason: RejectReason,
}

/// A trade, at the maker's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// Engine trade id.
    pub trade_id: TradeId,
    /// Instrument.
    pub symbol: SymbolId,
    /// Execution price (the resting order's price).
    pub price: Price,
    /// Executed quantity.
    pub qty: Qty,
    /// Side of the incoming (taker) order.
    pub aggressor: Side,
    /// Resting order.
    pub maker_order_id: OrderId,
    /// Resting order's account.
    pub maker_account: AccountId,
    /// Resting order's client id.
    pub maker_client_order_id: ClientOrderId,
    /// Resting order's open quantity after this trade.
    pub maker_leaves: Qty,
    /// Incoming order.
    pub taker_order_id: OrderId,
    /// Incoming order's account.
    pub taker_account: AccountId,
    /// Incoming order's client id.
    pub taker_client_order_id: ClientOrderId,
    /// Incoming order's open quantity after this trade.
    pub taker_leaves: Qty,
}

/// An order is finished: it is no longer live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    /// Order.
    pub order_id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Client's id.
    pub client_order_id: ClientOrderId,
    /// Instrument.
    pub symbol: SymbolId,
    /// Side.
    pub side: Side,
    /// Why.
    pub reason: DoneReason,
    /// Open quantity that was not filled (0 when filled).
    pub leaves: Qty,
}

/// A resting order was amended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// Order.
    pub order_id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Client's id.
    pub client_order_id: ClientOrderId,
    /// Instrument.
    pub symbol: SymbolId,
    /// Side.
    pub side: Side,
    /// New price.
    pub price: Price,
    /// New open quantity (before any matching the replace triggers).
    pub qty: Qty,
    /// True for a pure size reduction at the same price (queue position kept).
    pub kept_priority: bool,
}

/// Level-2 market data: the new total quantity at one price level (0 = level removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookDelta {
    /// Instrument.
    pub symbol: SymbolId,
    /// Side of the level.
    pub side: Side,
    /// Level price.
    pub price: Price,
    /// New total resting quantity at the level.
    pub qty: Qty,
}

/// A mass cancel finished (after one `Done` per cancelled order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MassCancelled {
    /// Account.
    pub account: AccountId,
    /// Instrument restriction, if any.
    pub symbol: Option<SymbolId>,
    /// Number of orders cancelled.
    pub count: u32,
}

/// An instrument was halted or resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentStatus {
    /// Instrument.
    pub symbol: SymbolId,
    /// True when halted.
    pub halted: bool,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventBody {
    /// See [`Accepted`].
    Accepted(Accepted),
    /// See [`Rejected`].
    Rejected(Rejected),
    /// See [`Trade`].
    Trade(Trade),
    /// See [`Done`].
    Done(Done),
    /// See [`Replaced`].
    Replaced(Replaced),
    /// See [`BookDelta`].
    BookDelta(BookDelta),
    /// See [`MassCancelled`].
    MassCancelled(MassCancelled),
    /// See [`InstrumentStatus`].
    InstrumentStatus(InstrumentStatus),
}

/// One engine output, with its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Strictly increasing, starting at 1, no gaps.
    pub seq: Seq,
    /// What happened.
    pub body: EventBody,
}

/// Receives the events the engine emits while it processes a command.
///
/// Implementations on the hot path must not allocate (a ring producer, a preallocated buffer).
pub trait EventSink {
    /// Called once per event, in sequence order.
    fn on_event(&mut self, event: &Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn on_event(&mut self, event: &Event) {
        self.push(*event);
    }
}

/// Adapts a closure into an [`EventSink`].
pub struct FnSink<F: FnMut(&Event)>(pub F);

impl<F: FnMut(&Event)> EventSink for FnSink<F> {
    #[inline]
    fn on_event(&mut self, event: &Event) {
        (self.0)(event);
    }
}

/// Discards events (replay and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    #[inline]
    fn on_event(&mut self, _event: &Event) {}
}
