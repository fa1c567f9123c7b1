//! Read-only queries: best prices, levels, resting orders, index lookups.

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::{Engine, OrderView};
use crate::book::NIL;
use crate::fixed_map::OrderKey;
use crate::types::{AccountId, OrderId, Price, Qty, Side, SymbolId};

impl Engine {
    /// Best bid (price, total quantity) of an instrument.
    #[must_use]
    pub fn best_bid(&self, symbol: SymbolId) -> Option<(Price, Qty)> {
        self.best(symbol, Side::Buy)
    }

    /// Best ask (price, total quantity) of an instrument.
    #[must_use]
    pub fn best_ask(&self, symbol: SymbolId) -> Option<(Price, Qty)> {
        self.best(symbol, Side::Sell)
    }

    pub(super) fn best(&self, symbol: SymbolId, side: Side) -> Option<(Price, Qty)> {
        let book = &self.books[self.symbols.get(&symbol)? as usize];
        let s = book.side(side);
        (s.best != NIL).then(|| (book.price(s.best), s.levels[s.best as usize].qty))
    }

    /// Whether an instrument is halted (`None` if unknown).
    #[must_use]
    pub fn is_halted(&self, symbol: SymbolId) -> Option<bool> {
        Some(self.books[self.symbols.get(&symbol)? as usize].halted)
    }

    /// Visits the levels of one side best-first: `(price, total quantity)`. Allocation-free.
    pub fn for_each_level(&self, symbol: SymbolId, side: Side, mut f: impl FnMut(Price, Qty)) {
        let Some(b) = self.symbols.get(&symbol) else {
            return;
        };
        let book = &self.books[b as usize];
        let s = book.side(side);
        let mut i = s.best;
        while i != NIL {
            f(book.price(i), s.levels[i as usize].qty);
            i = s.next_worse(i);
        }
    }

    /// Visits the resting orders of one side best level first, FIFO within a level.
    pub fn for_each_order(&self, symbol: SymbolId, side: Side, mut f: impl FnMut(&OrderView)) {
        let Some(b) = self.symbols.get(&symbol) else {
            return;
        };
        let book = &self.books[b as usize];
        let s = book.side(side);
        let mut i = s.best;
        while i != NIL {
            let mut h = s.levels[i as usize].head;
            while h != NIL {
                f(&self.view(h));
                h = self.orders[h as usize].next;
            }
            i = s.next_worse(i);
        }
    }

    /// Visits the resting orders of `account`, oldest first. Allocation-free.
    pub fn for_each_account_order(&self, account: AccountId, mut f: impl FnMut(&OrderView)) {
        let Some(slot) = self.account_slots.get(&account) else {
            return;
        };
        let mut h = self.accounts[slot as usize].head;
        while h != NIL {
            f(&self.view(h));
            h = self.orders[h as usize].acct_next;
        }
    }

    /// Resting orders of `account`.
    #[must_use]
    pub fn account_orders(&self, account: AccountId) -> u32 {
        self.account_live_orders(account)
    }

    /// A resting order by engine id.
    #[must_use]
    pub fn order(&self, order_id: OrderId) -> Option<OrderView> {
        self.by_id.get(&OrderKey(order_id)).map(|h| self.view(h))
    }

    pub(super) fn view(&self, h: u32) -> OrderView {
        let o = &self.orders[h as usize];
        OrderView {
            order_id: o.id,
            account: o.account,
            client_order_id: o.client_order_id,
            symbol: self.books[o.book as usize].spec.id,
            side: o.side,
            price: o.price,
            leaves: o.leaves,
            post_only: o.post_only,
            stp: o.stp,
        }
    }
}
