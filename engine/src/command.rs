//! Commands: the engine's only input. Fixed-size, `Copy`, no heap.

use crate::types::{
    AccountId, ClientOrderId, OrderId, OrderType, Price, Qty, SelfTradePrevention, Side, SymbolId,
    TimeInForce,
};

/// Place a new order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// Owner.
    pub account: AccountId,
    /// Client's id; must be unique among the account's live (resting) orders.
    pub client_order_id: ClientOrderId,
    /// Instrument.
    pub symbol: SymbolId,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    pub order_type: OrderType,
    /// GTC, IOC or FOK. Market orders must be IOC or FOK; post-only orders must be GTC.
    pub tif: TimeInForce,
    /// Never take liquidity: rejected if it would cross on arrival.
    pub post_only: bool,
    /// Limit price (multiple of the tick, inside the band); must be 0 for market orders.
    pub price: Price,
    /// Quantity (multiple of the lot, at most the instrument's maximum).
    pub qty: Qty,
    /// Self-trade prevention applied when this order takes liquidity.
    pub stp: SelfTradePrevention,
}

/// How a cancel or replace names its order. The order must belong to the requesting account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderRef {
    /// By engine order id.
    Id(OrderId),
    /// By the account's client order id.
    Client(ClientOrderId),
}

/// Cancel one resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// Requesting account (must own the order).
    pub account: AccountId,
    /// The order.
    pub target: OrderRef,
}

/// Change a resting order's price and/or open quantity.
///
/// Priority rule: if the price is unchanged and the new open quantity is not larger than the
/// current one, the order keeps its place in the queue (a pure size reduction). Any price change
/// or size increase loses priority: the order leaves its level, may trade as an aggressor at the
/// new price, and any remainder joins the back of the queue at the new price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replace {
    /// Requesting account (must own the order).
    pub account: AccountId,
    /// The order.
    pub target: OrderRef,
    /// New limit price (send the current price to change only the size).
    pub price: Price,
    /// New open (leaves) quantity — not including what has already been filled.
    pub qty: Qty,
}

/// Cancel every resting order of an account, optionally on one instrument only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MassCancel {
    /// Account whose orders are cancelled.
    pub account: AccountId,
    /// Restrict to one instrument.
    pub symbol: Option<SymbolId>,
}

/// The engine's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Place an order.
    New(NewOrder),
    /// Cancel an order.
    Cancel(Cancel),
    /// Replace (amend) an order.
    Replace(Replace),
    /// Cancel many orders.
    MassCancel(MassCancel),
    /// Halt an instrument: new orders and replaces are rejected, cancels still work.
    Halt(SymbolId),
    /// Resume a halted instrument.
    Resume(SymbolId),
}
