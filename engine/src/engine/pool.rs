//! The order pool and the price levels: linking, unlinking and releasing resting orders.

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::{Engine, OrderNode, FREE_NODE};
use crate::book::NIL;
use crate::event::{BookDelta, Done, DoneReason, EventBody, EventSink};
use crate::fixed_map::OrderKey;
use crate::types::{AccountId, ClientOrderId, OrderId, Qty, SymbolId};

impl Engine {
    /// Appends the order to the back of its price level and reports the level.
    pub(super) fn link_level<S: EventSink + ?Sized>(&mut self, h: u32, sink: &mut S) {
        let delta = self.link_level_quiet(h);
        self.emit(sink, EventBody::BookDelta(delta));
    }

    /// Appends the order to the back of its price level; returns the level's new state.
    pub(super) fn link_level_quiet(&mut self, h: u32) -> BookDelta {
        let (b, side, price, leaves) = {
            let o = &self.orders[h as usize];
            (o.book as usize, o.side, o.price, o.leaves)
        };
        let book = &mut self.books[b];
        let i = book.index(price);
        let bs = &mut book.sides[side.index()];
        let qty = bs.add_qty(i, leaves);
        let level = &mut bs.levels[i as usize];
        let tail = level.tail;
        level.tail = h;
        if tail == NIL {
            level.head = h;
            bs.mark_non_empty(i);
        } else {
            self.orders[tail as usize].next = h;
        }
        let o = &mut self.orders[h as usize];
        o.prev = tail;
        o.next = NIL;
        BookDelta {
            symbol: book.spec.id,
            side,
            price,
            qty,
        }
    }

    /// Removes the order from its level (quantity included); returns the level's new quantity.
    pub(super) fn unlink_level(&mut self, h: u32) -> Qty {
        let o = self.orders[h as usize];
        let book = &mut self.books[o.book as usize];
        let i = book.index(o.price);
        let bs = &mut book.sides[o.side.index()];
        let qty = bs.sub_qty(i, o.leaves);
        let level = &mut bs.levels[i as usize];
        if o.prev == NIL {
            level.head = o.next;
        }
        if o.next == NIL {
            level.tail = o.prev;
        }
        let emptied = level.head == NIL;
        if emptied {
            bs.mark_empty(i);
        }
        if o.prev != NIL {
            self.orders[o.prev as usize].next = o.next;
        }
        if o.next != NIL {
            self.orders[o.next as usize].prev = o.prev;
        }
        qty
    }

    /// Drops the order from the indices and returns its node to the pool.
    pub(super) fn release(&mut self, h: u32) {
        let o = self.orders[h as usize];
        self.unlink_account(h);
        self.by_id.remove(&OrderKey(o.id));
        self.by_client.remove(&(o.account, o.client_order_id));
        self.orders[h as usize] = FREE_NODE;
        self.orders[h as usize].next = self.free_head;
        self.free_head = h;
        self.live_orders -= 1;
    }

    /// Removes a resting order entirely: `Done` then the level's `BookDelta`.
    pub(super) fn remove_resting<S: EventSink + ?Sized>(
        &mut self,
        h: u32,
        reason: DoneReason,
        sink: &mut S,
    ) {
        let o = self.orders[h as usize];
        let level_qty = self.unlink_level(h);
        self.release(h);
        let symbol = self.books[o.book as usize].spec.id;
        self.emit(
            sink,
            EventBody::Done(Done {
                order_id: o.id,
                account: o.account,
                client_order_id: o.client_order_id,
                symbol,
                side: o.side,
                reason,
                leaves: o.leaves,
            }),
        );
        self.emit(
            sink,
            EventBody::BookDelta(BookDelta {
                symbol,
                side: o.side,
                price: o.price,
                qty: level_qty,
            }),
        );
    }

    pub(crate) fn symbol_index(&self, symbol: SymbolId) -> Option<u32> {
        self.symbols.get(&symbol)
    }

    /// Places a resting order directly (snapshot restore). The caller guarantees validity.
    pub(crate) fn restore_order(&mut self, node: OrderNode) -> Option<u32> {
        let h = self.free_head;
        if h == NIL {
            return None;
        }
        self.free_head = self.orders[h as usize].next;
        self.live_orders += 1;
        self.orders[h as usize] = node;
        if !self.by_id.insert(OrderKey(node.id), h)
            || !self
                .by_client
                .insert((node.account, node.client_order_id), h)
        {
            return None;
        }
        self.link_level_quiet(h);
        Some(h)
    }

    pub(crate) fn has_client_id(&self, account: AccountId, c: ClientOrderId) -> bool {
        self.by_client.contains(&(account, c))
    }

    pub(crate) fn has_order_id(&self, id: OrderId) -> bool {
        self.by_id.contains(&OrderKey(id))
    }

    pub(crate) fn account_slot_of(&self, account: AccountId) -> Option<u32> {
        self.account_slots.get(&account)
    }

    pub(crate) fn account_slots_contains(&self, account: AccountId) -> bool {
        self.account_slots.contains(&account)
    }
}
