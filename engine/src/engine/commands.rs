//! The commands: new order, cancel, replace, mass cancel, halt and resume.

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::matching::{MatchEnd, Taker};
use super::{Engine, OrderNode};
use crate::book::NIL;
use crate::command::{Cancel, MassCancel, NewOrder, OrderRef, Replace};
use crate::event::{
    Accepted, BookDelta, Done, DoneReason, EventBody, EventSink, InstrumentStatus, MassCancelled,
    RejectReason, Rejected, Replaced, RequestKind,
};
use crate::fixed_map::OrderKey;
use crate::types::{AccountId, OrderType, SymbolId, TimeInForce};

impl Engine {
    pub(super) fn new_order<S: EventSink + ?Sized>(&mut self, o: &NewOrder, sink: &mut S) {
        let rejected = |reason| Rejected {
            account: o.account,
            client_order_id: o.client_order_id,
            order_id: 0,
            symbol: o.symbol,
            request: RequestKind::New,
            reason,
        };
        let Some(b) = self.symbols.get(&o.symbol) else {
            return self.reject(sink, rejected(RejectReason::UnknownSymbol));
        };
        let b = b as usize;
        if let Some(original) = self.dedupe.get(o.account, o.client_order_id) {
            return self.reject(
                sink,
                Rejected {
                    order_id: original,
                    ..rejected(RejectReason::DuplicateClientOrderId)
                },
            );
        }
        if let Err(reason) = self.validate_new(b, o) {
            return self.reject(sink, rejected(reason));
        }
        self.next_order_id += 1;
        let order_id = self.next_order_id;
        self.remember(o.account, o.client_order_id, order_id);
        self.emit(
            sink,
            EventBody::Accepted(Accepted {
                order_id,
                account: o.account,
                client_order_id: o.client_order_id,
                symbol: o.symbol,
                side: o.side,
                order_type: o.order_type,
                tif: o.tif,
                price: o.price,
                qty: o.qty,
            }),
        );
        let limit = (o.order_type == OrderType::Limit).then_some(o.price);
        let mut taker = Taker {
            order_id,
            account: o.account,
            client_order_id: o.client_order_id,
            side: o.side,
            limit,
            remaining: o.qty,
            stp: o.stp,
        };
        let end = self.match_taker(b, &mut taker, sink);
        let done = |reason, leaves| Done {
            order_id,
            account: o.account,
            client_order_id: o.client_order_id,
            symbol: o.symbol,
            side: o.side,
            reason,
            leaves,
        };
        match end {
            MatchEnd::Filled => self.emit(sink, EventBody::Done(done(DoneReason::Filled, 0))),
            MatchEnd::SelfTradeStopped => self.emit(
                sink,
                EventBody::Done(done(DoneReason::SelfTradePrevented, taker.remaining)),
            ),
            MatchEnd::Exhausted => {
                if o.order_type == OrderType::Limit && o.tif == TimeInForce::Gtc {
                    let h = self.free_head; // availability checked in validate_new
                    self.free_head = self.orders[h as usize].next;
                    self.live_orders += 1;
                    self.orders[h as usize] = OrderNode {
                        id: order_id,
                        client_order_id: o.client_order_id,
                        price: o.price,
                        leaves: taker.remaining,
                        account: o.account,
                        account_slot: NIL,
                        book: b as u32,
                        prev: NIL,
                        next: NIL,
                        acct_prev: NIL,
                        acct_next: NIL,
                        side: o.side,
                        stp: o.stp,
                        post_only: o.post_only,
                    };
                    self.by_id.insert(OrderKey(order_id), h);
                    self.by_client.insert((o.account, o.client_order_id), h);
                    self.link_account(h);
                    self.link_level(h, sink);
                } else {
                    self.emit(
                        sink,
                        EventBody::Done(done(DoneReason::Expired, taker.remaining)),
                    );
                }
            }
        }
    }

    pub(super) fn find(&self, account: AccountId, target: OrderRef) -> Option<u32> {
        match target {
            OrderRef::Id(id) => self
                .by_id
                .get(&OrderKey(id))
                .filter(|h| self.orders[*h as usize].account == account),
            OrderRef::Client(c) => self.by_client.get(&(account, c)),
        }
    }

    pub(super) fn target_reject(
        account: AccountId,
        target: OrderRef,
        request: RequestKind,
    ) -> Rejected {
        let (order_id, client_order_id) = match target {
            OrderRef::Id(id) => (id, 0),
            OrderRef::Client(c) => (0, c),
        };
        Rejected {
            account,
            client_order_id,
            order_id,
            symbol: 0,
            request,
            reason: RejectReason::UnknownOrder,
        }
    }

    pub(super) fn cancel<S: EventSink + ?Sized>(&mut self, c: &Cancel, sink: &mut S) {
        match self.find(c.account, c.target) {
            Some(h) => self.remove_resting(h, DoneReason::Cancelled, sink),
            None => {
                self.reject(
                    sink,
                    Self::target_reject(c.account, c.target, RequestKind::Cancel),
                );
            }
        }
    }

    pub(super) fn replace<S: EventSink + ?Sized>(&mut self, r: &Replace, sink: &mut S) {
        let Some(h) = self.find(r.account, r.target) else {
            return self.reject(
                sink,
                Self::target_reject(r.account, r.target, RequestKind::Replace),
            );
        };
        let o = self.orders[h as usize];
        let b = o.book as usize;
        let symbol = self.books[b].spec.id;
        let check = || -> Result<(), RejectReason> {
            let book = &self.books[b];
            if book.halted {
                return Err(RejectReason::InstrumentHalted);
            }
            Self::check_price(book, r.price)?;
            Self::check_qty(book, r.qty)?;
            let keeps = r.price == o.price && r.qty <= o.leaves;
            if !keeps && o.post_only && self.crosses(b, o.side, Some(r.price)) {
                return Err(RejectReason::PostOnlyWouldTake);
            }
            Ok(())
        };
        if let Err(reason) = check() {
            return self.reject(
                sink,
                Rejected {
                    account: r.account,
                    client_order_id: o.client_order_id,
                    order_id: o.id,
                    symbol,
                    request: RequestKind::Replace,
                    reason,
                },
            );
        }
        let replaced = |kept_priority| {
            EventBody::Replaced(Replaced {
                order_id: o.id,
                account: o.account,
                client_order_id: o.client_order_id,
                symbol,
                side: o.side,
                price: r.price,
                qty: r.qty,
                kept_priority,
            })
        };
        if r.price == o.price && r.qty <= o.leaves {
            // Pure size reduction: keep queue position.
            let diff = o.leaves - r.qty;
            self.orders[h as usize].leaves = r.qty;
            let book = &mut self.books[b];
            let i = book.index(o.price);
            let qty = book.sides[o.side.index()].sub_qty(i, diff);
            self.emit(sink, replaced(true));
            if diff > 0 {
                self.emit(
                    sink,
                    EventBody::BookDelta(BookDelta {
                        symbol,
                        side: o.side,
                        price: o.price,
                        qty,
                    }),
                );
            }
            return;
        }
        // Price change or size increase: loses priority and may aggress at the new price.
        let old_level = self.unlink_level(h);
        self.emit(sink, replaced(false));
        self.emit(
            sink,
            EventBody::BookDelta(BookDelta {
                symbol,
                side: o.side,
                price: o.price,
                qty: old_level,
            }),
        );
        let mut taker = Taker {
            order_id: o.id,
            account: o.account,
            client_order_id: o.client_order_id,
            side: o.side,
            limit: Some(r.price),
            remaining: r.qty,
            stp: o.stp,
        };
        let end = self.match_taker(b, &mut taker, sink);
        let done = |reason, leaves| {
            EventBody::Done(Done {
                order_id: o.id,
                account: o.account,
                client_order_id: o.client_order_id,
                symbol,
                side: o.side,
                reason,
                leaves,
            })
        };
        match end {
            MatchEnd::Filled => {
                self.release(h);
                self.emit(sink, done(DoneReason::Filled, 0));
            }
            MatchEnd::SelfTradeStopped => {
                self.release(h);
                self.emit(sink, done(DoneReason::SelfTradePrevented, taker.remaining));
            }
            MatchEnd::Exhausted => {
                let n = &mut self.orders[h as usize];
                n.price = r.price;
                n.leaves = taker.remaining;
                self.link_level(h, sink);
            }
        }
    }

    pub(super) fn mass_cancel<S: EventSink + ?Sized>(&mut self, m: &MassCancel, sink: &mut S) {
        let filter = match m.symbol {
            None => None,
            Some(s) => match self.symbols.get(&s) {
                Some(b) => Some(b),
                None => {
                    return self.reject(
                        sink,
                        Rejected {
                            account: m.account,
                            client_order_id: 0,
                            order_id: 0,
                            symbol: s,
                            request: RequestKind::MassCancel,
                            reason: RejectReason::UnknownSymbol,
                        },
                    )
                }
            },
        };
        let mut count = 0u32;
        if let Some(slot) = self.account_slots.get(&m.account) {
            let mut h = self.accounts[slot as usize].head;
            while h != NIL {
                let next = self.orders[h as usize].acct_next;
                if filter.is_none_or(|b| b == self.orders[h as usize].book) {
                    self.remove_resting(h, DoneReason::Cancelled, sink);
                    count += 1;
                }
                h = next;
            }
        }
        self.emit(
            sink,
            EventBody::MassCancelled(MassCancelled {
                account: m.account,
                symbol: m.symbol,
                count,
            }),
        );
    }

    pub(super) fn set_halted<S: EventSink + ?Sized>(
        &mut self,
        symbol: SymbolId,
        halted: bool,
        sink: &mut S,
    ) {
        let Some(b) = self.symbols.get(&symbol) else {
            let request = if halted {
                RequestKind::Halt
            } else {
                RequestKind::Resume
            };
            return self.reject(
                sink,
                Rejected {
                    account: 0,
                    client_order_id: 0,
                    order_id: 0,
                    symbol,
                    request,
                    reason: RejectReason::UnknownSymbol,
                },
            );
        };
        self.books[b as usize].halted = halted;
        self.emit(
            sink,
            EventBody::InstrumentStatus(InstrumentStatus { symbol, halted }),
        );
    }
}
