//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use crate::book::{Book, NIL};
use crate::command::{Cancel, Command, MassCancel, NewOrder, OrderRef, Replace};
use crate::config::{ConfigError, EngineConfig};
use crate::event::{
    Accepted, BookDelta, Done, DoneReason, Event, EventBody, EventSink, InstrumentStatus,
    MassCancelled, RejectReason, Rejected, Replaced, RequestKind, Trade,
};
use crate::fixed_map::FixedMap;
use crate::types::{
    AccountId, ClientOrderId, OrderId, OrderType, Price, Qty, SelfTradePrevention, Seq, Side,
    SymbolId, TimeInForce, TradeId,
};

/// A resting order in the preallocated pool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OrderNode {
    pub(crate) id: OrderId,
    pub(crate) client_order_id: ClientOrderId,
    pub(crate) price: Price,
    pub(crate) leaves: Qty,
    pub(crate) account: AccountId,
    pub(crate) account_slot: u32,
    pub(crate) book: u32,
    /// Level FIFO links (also the free-list link while free).
    pub(crate) prev: u32,
    pub(crate) next: u32,
    /// Account list links (ascending order id).
    pub(crate) acct_prev: u32,
    pub(crate) acct_next: u32,
    pub(crate) side: Side,
    pub(crate) stp: SelfTradePrevention,
    pub(crate) post_only: bool,
}

const FREE_NODE: OrderNode = OrderNode {
    id: 0,
    client_order_id: 0,
    price: 0,
    leaves: 0,
    account: 0,
    account_slot: NIL,
    book: NIL,
    prev: NIL,
    next: NIL,
    acct_prev: NIL,
    acct_next: NIL,
    side: Side::Buy,
    stp: SelfTradePrevention::Allow,
    post_only: false,
};

/// An account that has rested at least one order: the head/tail of its order list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccountNode {
    pub(crate) id: AccountId,
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

/// A read-only view of a resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderView {
    /// Engine order id.
    pub order_id: OrderId,
    /// Owner.
    pub account: AccountId,
    /// Client's id.
    pub client_order_id: ClientOrderId,
    /// Instrument.
    pub symbol: SymbolId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Open quantity.
    pub leaves: Qty,
    /// Post-only flag.
    pub post_only: bool,
    /// Self-trade prevention mode (applies if a replace makes it aggress).
    pub stp: SelfTradePrevention,
}

/// The incoming side of a match.
struct Taker {
    order_id: OrderId,
    account: AccountId,
    client_order_id: ClientOrderId,
    side: Side,
    limit: Option<Price>,
    remaining: Qty,
    stp: SelfTradePrevention,
}

enum MatchEnd {
    /// Nothing left to fill.
    Filled,
    /// Self-trade prevention cancelled the taker's remainder.
    SelfTradeStopped,
    /// No more liquidity at an acceptable price.
    Exhausted,
}

/// The deterministic, allocation-free matching engine for a set of instruments.
///
/// All memory is allocated in [`Engine::new`]; [`Engine::process`] never allocates. When a
/// capacity is reached the command is rejected with a reason.
#[derive(Clone)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) books: Vec<Book>,
    symbols: FixedMap<u32, u32>,
    pub(crate) orders: Vec<OrderNode>,
    free_head: u32,
    pub(crate) live_orders: u32,
    by_id: FixedMap<u64, u32>,
    by_client: FixedMap<(u32, u64), u32>,
    /// The dedupe window: the last `dedupe_window` accepted new orders, oldest first from
    /// `recent_head` (a ring), and an index from `(account, client order id)` to order id.
    pub(crate) recent: Box<[(u32, u64)]>,
    pub(crate) recent_head: usize,
    pub(crate) recent_len: usize,
    recent_ids: FixedMap<(u32, u64), u64>,
    pub(crate) accounts: Vec<AccountNode>,
    account_slots: FixedMap<u32, u32>,
    pub(crate) next_seq: Seq,
    pub(crate) next_order_id: OrderId,
    pub(crate) next_trade_id: TradeId,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("instruments", &self.books.len())
            .field("live_orders", &self.live_orders)
            .field("last_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine and preallocates every structure it will ever use.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration is invalid.
    pub fn new(config: EngineConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let n = config.max_orders as usize;
        let mut orders = vec![FREE_NODE; n];
        for (i, o) in orders.iter_mut().enumerate() {
            o.next = if i + 1 < n { (i + 1) as u32 } else { NIL };
        }
        let mut symbols = FixedMap::with_limit(config.instruments.len(), config.hash_seed);
        let mut books = Vec::with_capacity(config.instruments.len());
        for (i, spec) in config.instruments.iter().enumerate() {
            symbols.insert(spec.id, i as u32);
            books.push(Book::new(*spec));
        }
        let seed = config.hash_seed;
        Ok(Self {
            books,
            symbols,
            orders,
            free_head: 0,
            live_orders: 0,
            by_id: FixedMap::with_limit(n, seed.rotate_left(17)),
            by_client: FixedMap::with_limit(n, seed.rotate_left(29)),
            recent: vec![(0, 0); config.dedupe_window as usize].into_boxed_slice(),
            recent_head: 0,
            recent_len: 0,
            recent_ids: FixedMap::with_limit(
                config.dedupe_window.max(1) as usize,
                seed.rotate_left(53),
            ),
            accounts: Vec::with_capacity(config.max_accounts as usize),
            account_slots: FixedMap::with_limit(config.max_accounts as usize, seed.rotate_left(43)),
            next_seq: 0,
            next_order_id: 0,
            next_trade_id: 0,
            config,
        })
    }

    /// The configuration the engine was built with.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sequence number of the last event emitted (0 before the first).
    #[must_use]
    pub fn last_seq(&self) -> Seq {
        self.next_seq
    }

    /// Number of resting orders.
    #[must_use]
    pub fn live_orders(&self) -> u32 {
        self.live_orders
    }

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

    fn best(&self, symbol: SymbolId, side: Side) -> Option<(Price, Qty)> {
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

    /// A resting order by engine id.
    #[must_use]
    pub fn order(&self, order_id: OrderId) -> Option<OrderView> {
        self.by_id.get(&order_id).map(|h| self.view(h))
    }

    fn view(&self, h: u32) -> OrderView {
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

    /// Applies one command, emitting its events to `sink` in sequence order.
    ///
    /// Never allocates, never panics on any command value: invalid commands produce a
    /// [`Rejected`] event with a reason.
    #[inline]
    pub fn process<S: EventSink + ?Sized>(&mut self, cmd: &Command, sink: &mut S) {
        match cmd {
            Command::New(o) => self.new_order(o, sink),
            Command::Cancel(c) => self.cancel(c, sink),
            Command::Replace(r) => self.replace(r, sink),
            Command::MassCancel(m) => self.mass_cancel(m, sink),
            Command::Halt(s) => self.set_halted(*s, true, sink),
            Command::Resume(s) => self.set_halted(*s, false, sink),
        }
    }

    /// Adds an accepted order to the dedupe window, forgetting the oldest when it is full.
    #[inline]
    pub(crate) fn remember(&mut self, account: u32, client_order_id: u64, order_id: u64) {
        let w = self.recent.len();
        if w == 0 {
            return;
        }
        let at = (self.recent_head + self.recent_len) % w;
        if self.recent_len == w {
            let old = self.recent[self.recent_head];
            self.recent_ids.remove(&old);
            self.recent_head = (self.recent_head + 1) % w;
        } else {
            self.recent_len += 1;
        }
        self.recent[at] = (account, client_order_id);
        self.recent_ids.insert((account, client_order_id), order_id);
    }

    /// The dedupe window, oldest first: `(account, client order id, order id)`.
    pub(crate) fn for_each_recent(&self, mut f: impl FnMut(u32, u64, u64)) {
        let w = self.recent.len();
        for i in 0..self.recent_len {
            let key = self.recent[(self.recent_head + i) % w];
            f(key.0, key.1, self.recent_ids.get(&key).unwrap_or(0));
        }
    }

    /// Whether `(account, client_order_id)` is in the dedupe window (a resend would be
    /// rejected as a duplicate), and the order id it was given.
    #[must_use]
    pub fn recently_accepted(&self, account: u32, client_order_id: u64) -> Option<OrderId> {
        self.recent_ids.get(&(account, client_order_id))
    }

    #[inline]
    fn emit<S: EventSink + ?Sized>(&mut self, sink: &mut S, body: EventBody) {
        self.next_seq += 1;
        sink.on_event(&Event {
            seq: self.next_seq,
            body,
        });
    }

    #[inline]
    fn reject<S: EventSink + ?Sized>(&mut self, sink: &mut S, r: Rejected) {
        self.emit(sink, EventBody::Rejected(r));
    }

    fn check_price(book: &Book, price: Price) -> Result<(), RejectReason> {
        let s = &book.spec;
        if price == 0 {
            Err(RejectReason::ZeroPrice)
        } else if price % s.tick_size != 0 {
            Err(RejectReason::PriceOffTick)
        } else if price < s.min_price || price > s.max_price {
            Err(RejectReason::PriceOutOfBand)
        } else {
            Ok(())
        }
    }

    fn check_qty(book: &Book, qty: Qty) -> Result<(), RejectReason> {
        let s = &book.spec;
        if qty == 0 {
            Err(RejectReason::ZeroQuantity)
        } else if qty % s.lot_size != 0 {
            Err(RejectReason::QuantityOffLot)
        } else if qty > s.max_qty {
            Err(RejectReason::QuantityOverMax)
        } else {
            Ok(())
        }
    }

    fn validate_new(&self, b: usize, o: &NewOrder) -> Result<(), RejectReason> {
        let book = &self.books[b];
        if book.halted {
            return Err(RejectReason::InstrumentHalted);
        }
        match o.order_type {
            OrderType::Market => {
                if o.post_only {
                    return Err(RejectReason::InvalidOrderType);
                }
                if o.tif == TimeInForce::Gtc {
                    return Err(RejectReason::InvalidTimeInForce);
                }
                if o.price != 0 {
                    return Err(RejectReason::MarketOrderHasPrice);
                }
            }
            OrderType::Limit => {
                if o.post_only && o.tif != TimeInForce::Gtc {
                    return Err(RejectReason::InvalidTimeInForce);
                }
                Self::check_price(book, o.price)?;
            }
        }
        Self::check_qty(book, o.qty)?;
        if self.by_client.contains(&(o.account, o.client_order_id)) {
            return Err(RejectReason::DuplicateClientOrderId);
        }
        let limit = (o.order_type == OrderType::Limit).then_some(o.price);
        if o.post_only && self.crosses(b, o.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        if o.tif == TimeInForce::Fok && !self.fillable(b, o.side, limit, o.qty, o.account, o.stp) {
            return Err(RejectReason::FokNotFillable);
        }
        if o.order_type == OrderType::Limit && o.tif == TimeInForce::Gtc {
            if self.free_head == NIL {
                return Err(RejectReason::OrderCapacityReached);
            }
            if !self.account_slots.contains(&o.account)
                && self.accounts.len() >= self.config.max_accounts as usize
            {
                return Err(RejectReason::AccountCapacityReached);
            }
        }
        Ok(())
    }

    fn new_order<S: EventSink + ?Sized>(&mut self, o: &NewOrder, sink: &mut S) {
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
        if let Some(original) = self.recent_ids.get(&(o.account, o.client_order_id)) {
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
                    self.by_id.insert(order_id, h);
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

    /// Registers (if needed) the order's account and appends the order to the account's list.
    /// Capacity was checked before acceptance.
    pub(crate) fn link_account(&mut self, h: u32) {
        let account = self.orders[h as usize].account;
        let slot = self
            .account_slot(account)
            .expect("account capacity is checked before an order rests");
        let a = &mut self.accounts[slot as usize];
        let tail = a.tail;
        a.tail = h;
        if tail == NIL {
            a.head = h;
        } else {
            self.orders[tail as usize].acct_next = h;
        }
        let o = &mut self.orders[h as usize];
        o.account_slot = slot;
        o.acct_prev = tail;
        o.acct_next = NIL;
    }

    /// The slot of `account`, registering it if new; `None` when the account table is full.
    pub(crate) fn account_slot(&mut self, account: AccountId) -> Option<u32> {
        if let Some(s) = self.account_slots.get(&account) {
            return Some(s);
        }
        if self.accounts.len() >= self.config.max_accounts as usize {
            return None;
        }
        let s = self.accounts.len() as u32;
        self.accounts.push(AccountNode {
            id: account,
            head: NIL,
            tail: NIL,
        });
        self.account_slots.insert(account, s);
        Some(s)
    }

    fn unlink_account(&mut self, h: u32) {
        let o = self.orders[h as usize];
        let a = &mut self.accounts[o.account_slot as usize];
        if o.acct_prev == NIL {
            a.head = o.acct_next;
        }
        if o.acct_next == NIL {
            a.tail = o.acct_prev;
        }
        if o.acct_prev != NIL {
            self.orders[o.acct_prev as usize].acct_next = o.acct_next;
        }
        if o.acct_next != NIL {
            self.orders[o.acct_next as usize].acct_prev = o.acct_prev;
        }
    }

    /// Appends the order to the back of its price level and reports the level.
    fn link_level<S: EventSink + ?Sized>(&mut self, h: u32, sink: &mut S) {
        let delta = self.link_level_quiet(h);
        self.emit(sink, EventBody::BookDelta(delta));
    }

    /// Appends the order to the back of its price level; returns the level's new state.
    fn link_level_quiet(&mut self, h: u32) -> BookDelta {
        let (b, side, price, leaves) = {
            let o = &self.orders[h as usize];
            (o.book as usize, o.side, o.price, o.leaves)
        };
        let book = &mut self.books[b];
        let i = book.index(price);
        let bs = &mut book.sides[side.index()];
        let level = &mut bs.levels[i as usize];
        let tail = level.tail;
        level.tail = h;
        level.qty += leaves;
        let qty = level.qty;
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
    fn unlink_level(&mut self, h: u32) -> Qty {
        let o = self.orders[h as usize];
        let book = &mut self.books[o.book as usize];
        let i = book.index(o.price);
        let bs = &mut book.sides[o.side.index()];
        let level = &mut bs.levels[i as usize];
        level.qty -= o.leaves;
        if o.prev == NIL {
            level.head = o.next;
        }
        if o.next == NIL {
            level.tail = o.prev;
        }
        let qty = level.qty;
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
    fn release(&mut self, h: u32) {
        let o = self.orders[h as usize];
        self.unlink_account(h);
        self.by_id.remove(&o.id);
        self.by_client.remove(&(o.account, o.client_order_id));
        self.orders[h as usize] = FREE_NODE;
        self.orders[h as usize].next = self.free_head;
        self.free_head = h;
        self.live_orders -= 1;
    }

    /// Removes a resting order entirely: `Done` then the level's `BookDelta`.
    fn remove_resting<S: EventSink + ?Sized>(&mut self, h: u32, reason: DoneReason, sink: &mut S) {
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

    /// Would an order on `side` at `limit` (None = market) trade on arrival?
    fn crosses(&self, b: usize, side: Side, limit: Option<Price>) -> bool {
        match (self.books[b].best_price(side.opposite()), limit) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(best), Some(p)) => match side {
                Side::Buy => best <= p,
                Side::Sell => best >= p,
            },
        }
    }

    /// Can `qty` be filled at once, honouring self-trade prevention exactly as matching would?
    fn fillable(
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
        let mut i = s.best;
        let mut sum: Qty = 0;
        while i != NIL {
            let price = book.price(i);
            if let Some(p) = limit {
                let ok = match side {
                    Side::Buy => price <= p,
                    Side::Sell => price >= p,
                };
                if !ok {
                    return false;
                }
            }
            let mut h = s.levels[i as usize].head;
            while h != NIL {
                let o = &self.orders[h as usize];
                if stp != SelfTradePrevention::Allow && o.account == account {
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
    fn match_taker<S: EventSink + ?Sized>(
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
            let level = &mut self.books[b].sides[opp].levels[best as usize];
            level.qty -= qty;
            let level_qty = level.qty;
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

    fn find(&self, account: AccountId, target: OrderRef) -> Option<u32> {
        match target {
            OrderRef::Id(id) => self
                .by_id
                .get(&id)
                .filter(|h| self.orders[*h as usize].account == account),
            OrderRef::Client(c) => self.by_client.get(&(account, c)),
        }
    }

    fn target_reject(account: AccountId, target: OrderRef, request: RequestKind) -> Rejected {
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

    fn cancel<S: EventSink + ?Sized>(&mut self, c: &Cancel, sink: &mut S) {
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

    fn replace<S: EventSink + ?Sized>(&mut self, r: &Replace, sink: &mut S) {
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
            let level = &mut book.sides[o.side.index()].levels[i as usize];
            level.qty -= diff;
            let qty = level.qty;
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

    fn mass_cancel<S: EventSink + ?Sized>(&mut self, m: &MassCancel, sink: &mut S) {
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

    fn set_halted<S: EventSink + ?Sized>(&mut self, symbol: SymbolId, halted: bool, sink: &mut S) {
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
        if !self.by_id.insert(node.id, h)
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
        self.by_id.contains(&id)
    }

    pub(crate) fn account_slots_contains(&self, account: AccountId) -> bool {
        self.account_slots.contains(&account)
    }

    /// Checks every internal invariant; used by tests and after restore.
    ///
    /// # Errors
    /// A description of the first violated invariant.
    pub fn check_integrity(&self) -> Result<(), String> {
        let mut counted = 0u32;
        for book in &self.books {
            for side in [Side::Buy, Side::Sell] {
                let s = book.side(side);
                let mut i = s.best;
                let mut last: Option<Price> = None;
                while i != NIL {
                    let level = &s.levels[i as usize];
                    let price = book.price(i);
                    if let Some(l) = last {
                        let ordered = if side == Side::Buy {
                            price < l
                        } else {
                            price > l
                        };
                        if !ordered {
                            return Err(format!("levels out of order at {price}"));
                        }
                    }
                    last = Some(price);
                    let (mut sum, mut h, mut prev) = (0u64, level.head, NIL);
                    if h == NIL {
                        return Err(format!("empty level {price} marked non-empty"));
                    }
                    while h != NIL {
                        let o = &self.orders[h as usize];
                        if o.prev != prev || o.price != price || o.side != side || o.leaves == 0 {
                            return Err(format!("bad order node {} at {price}", o.id));
                        }
                        if self.by_id.get(&o.id) != Some(h)
                            || self.by_client.get(&(o.account, o.client_order_id)) != Some(h)
                        {
                            return Err(format!("order {} missing from an index", o.id));
                        }
                        sum += o.leaves;
                        counted += 1;
                        prev = h;
                        h = o.next;
                    }
                    if level.tail != prev || level.qty != sum {
                        return Err(format!("level {price}: qty {} != sum {sum}", level.qty));
                    }
                    i = s.next_worse(i);
                }
            }
            if let (Some(bid), Some(ask)) =
                (book.best_price(Side::Buy), book.best_price(Side::Sell))
            {
                if bid >= ask {
                    return Err(format!(
                        "book {} crossed at rest: {bid} >= {ask}",
                        book.spec.id
                    ));
                }
            }
        }
        if counted != self.live_orders
            || self.by_id.len() != counted as usize
            || self.by_client.len() != counted as usize
        {
            return Err(format!(
                "live order count mismatch: {counted} vs {}",
                self.live_orders
            ));
        }
        let mut in_lists = 0u32;
        for a in &self.accounts {
            let (mut h, mut last_id) = (a.head, 0);
            while h != NIL {
                let o = &self.orders[h as usize];
                if o.account != a.id || o.id <= last_id {
                    return Err(format!("account {} list out of order", a.id));
                }
                last_id = o.id;
                in_lists += 1;
                h = o.acct_next;
            }
        }
        if in_lists != counted {
            return Err("account lists do not cover every order".into());
        }
        Ok(())
    }
}
