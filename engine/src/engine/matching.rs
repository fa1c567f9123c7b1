//! Matching: crossing checks, fill-or-kill feasibility, and the price-time sweep.

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::Engine;
use crate::book::NIL;
use crate::event::{BookDelta, Done, DoneReason, EventBody, EventSink, Trade};
use crate::types::{AccountId, ClientOrderId, OrderId, Price, Qty, SelfTradePrevention, Side};

/// Most resting orders a fill-or-kill check with self-trade prevention on walks (it must see
/// each maker's account); beyond, the order is not fillable. Bounds what such a check can cost.
/// Without self-trade prevention the check is exact and needs no bound (level sums).
pub(crate) const FOK_SCAN_LIMIT: u32 = 1024;

/// The incoming side of a match.
pub(super) struct Taker {
    pub(super) order_id: OrderId,
    pub(super) account: AccountId,
    pub(super) client_order_id: ClientOrderId,
    pub(super) side: Side,
    pub(super) limit: Option<Price>,
    pub(super) remaining: Qty,
    pub(super) stp: SelfTradePrevention,
}

pub(super) enum MatchEnd {
    /// Nothing left to fill.
    Filled,
    /// Self-trade prevention cancelled the taker's remainder.
    SelfTradeStopped,
    /// No more liquidity at an acceptable price.
    Exhausted,
}

impl Engine {
    /// Would an order on `side` at `limit` (None = market) trade on arrival?
    pub(super) fn crosses(&self, b: usize, side: Side, limit: Option<Price>) -> bool {
        match (self.books[b].best_price(side.opposite()), limit) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(best), Some(p)) => match side {
                Side::Buy => best <= p,
                Side::Sell => best >= p,
            },
        }
    }

    /// Whether a fill-or-kill order can fill completely, in bounded work whatever the book
    /// holds. The open quantity between the best price and the limit comes from the side's
    /// level, block and group sums (exact; a few hundred additions at most). With self-trade
    /// prevention off, or no resting order of the taker's account, that is the answer.
    /// Otherwise an order whose own resting orders would
    /// stop the match is not fillable, so when the quantity is there the check walks the makers
    /// in priority order — at most [`FOK_SCAN_LIMIT`] of them; an order that would need more is
    /// not fillable (`FokNotFillable`).
    pub(super) fn fillable(
        &self,
        b: usize,
        side: Side,
        limit: Option<Price>,
        qty: Qty,
        account: AccountId,
        stp: SelfTradePrevention,
    ) -> bool {
        let book = &self.books[b];
        let s = book.side(side.opposite());
        let best = s.best;
        if best == NIL {
            return false;
        }
        // The worst level index the order may trade at (buys take asks upwards, sells take
        // bids downwards); limits are validated on tick and in band.
        let last = match (side, limit) {
            (Side::Buy, None) => (s.levels.len() - 1) as u32,
            (Side::Sell, None) => 0,
            (_, Some(p)) => book.index(p),
        };
        let reachable = match side {
            Side::Buy => best <= last,
            Side::Sell => best >= last,
        };
        if !reachable || !s.holds_at_least(best, last, qty) {
            return false;
        }
        // Without own resting orders nothing can stop the match: the quantity is the answer.
        if stp == SelfTradePrevention::Allow || self.account_live_orders(account) == 0 {
            return true;
        }
        let mut i = best;
        let mut sum: Qty = 0;
        let mut budget = FOK_SCAN_LIMIT;
        while i != NIL {
            let beyond = match side {
                Side::Buy => i > last,
                Side::Sell => i < last,
            };
            if beyond {
                return false;
            }
            let mut h = s.levels[i as usize].head;
            while h != NIL {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                let o = &self.orders[h as usize];
                if o.account == account {
                    if stp != SelfTradePrevention::CancelOldest {
                        return false; // matching would stop here
                    }
                } else {
                    sum += o.leaves;
                    if sum >= qty {
                        return true;
                    }
                }
                h = o.next;
            }
            i = s.next_worse(i);
        }
        false
    }

    /// Matches an incoming order against the opposite side in price-time order.
    pub(super) fn match_taker<S: EventSink + ?Sized>(
        &mut self,
        b: usize,
        t: &mut Taker,
        sink: &mut S,
    ) -> MatchEnd {
        let opp = t.side.opposite().index();
        let symbol = self.books[b].spec.id;
        loop {
            if t.remaining == 0 {
                return MatchEnd::Filled;
            }
            let book = &self.books[b];
            let best = book.sides[opp].best;
            if best == NIL {
                return MatchEnd::Exhausted;
            }
            let price = book.price(best);
            if let Some(p) = t.limit {
                let ok = match t.side {
                    Side::Buy => price <= p,
                    Side::Sell => price >= p,
                };
                if !ok {
                    return MatchEnd::Exhausted;
                }
            }
            let h = book.sides[opp].levels[best as usize].head;
            let maker = self.orders[h as usize];
            if t.stp != SelfTradePrevention::Allow && maker.account == t.account {
                match t.stp {
                    SelfTradePrevention::CancelNewest => return MatchEnd::SelfTradeStopped,
                    SelfTradePrevention::CancelOldest => {
                        self.remove_resting(h, DoneReason::SelfTradePrevented, sink);
                        continue;
                    }
                    _ => {
                        self.remove_resting(h, DoneReason::SelfTradePrevented, sink);
                        return MatchEnd::SelfTradeStopped;
                    }
                }
            }
            let qty = t.remaining.min(maker.leaves);
            t.remaining -= qty;
            let maker_leaves = maker.leaves - qty;
            self.orders[h as usize].leaves = maker_leaves;
            let level_qty = self.books[b].sides[opp].sub_qty(best, qty);
            self.next_trade_id += 1;
            let trade_id = self.next_trade_id;
            self.emit(
                sink,
                EventBody::Trade(Trade {
                    trade_id,
                    symbol,
                    price,
                    qty,
                    aggressor: t.side,
                    maker_order_id: maker.id,
                    maker_account: maker.account,
                    maker_client_order_id: maker.client_order_id,
                    maker_leaves,
                    taker_order_id: t.order_id,
                    taker_account: t.account,
                    taker_client_order_id: t.client_order_id,
                    taker_leaves: t.remaining,
                }),
            );
            if maker_leaves == 0 {
                self.unlink_level(h);
                self.release(h);
                self.emit(
                    sink,
                    EventBody::Done(Done {
                        order_id: maker.id,
                        account: maker.account,
                        client_order_id: maker.client_order_id,
                        symbol,
                        side: maker.side,
                        reason: DoneReason::Filled,
                        leaves: 0,
                    }),
                );
            }
            self.emit(
                sink,
                EventBody::BookDelta(BookDelta {
                    symbol,
                    side: maker.side,
                    price,
                    qty: level_qty,
                }),
            );
        }
    }
}
