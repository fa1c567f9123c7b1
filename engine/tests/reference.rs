//! Differential property tests: the engine against a deliberately simple reference book
//! (BTreeMap of price -> VecDeque of orders), written independently here. Random command streams
//! must give identical event streams, and invariants must hold after every command.
mod common;
use caldera_engine::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};

#[derive(Clone, Debug)]
struct ROrder {
    id: OrderId,
    cl: ClientOrderId,
    account: AccountId,
    side: Side,
    price: Price,
    leaves: Qty,
    stp: SelfTradePrevention,
    post_only: bool,
}

#[derive(Clone, Debug, Default)]
struct RBook {
    halted: bool,
    bids: BTreeMap<Price, VecDeque<ROrder>>,
    asks: BTreeMap<Price, VecDeque<ROrder>>,
}

struct Reference {
    specs: Vec<InstrumentSpec>,
    books: Vec<RBook>,
    max_orders: usize,
    max_accounts: usize,
    max_per_account: usize,
    seq: u64,
    next_id: u64,
    next_trade: u64,
    out: Vec<Event>,
    /// The dedupe windows: per account the last `window` accepted client id → order id, for
    /// the last `window_accounts` accounts that had one accepted (least recent first).
    window: usize,
    window_accounts: usize,
    recent: VecDeque<(AccountId, VecDeque<(ClientOrderId, OrderId)>)>,
}

enum End {
    Filled,
    Stp,
    Exhausted,
}

impl Reference {
    fn new(cfg: &EngineConfig) -> Self {
        Self {
            specs: cfg.instruments.clone(),
            books: vec![RBook::default(); cfg.instruments.len()],
            max_orders: cfg.max_orders as usize,
            max_accounts: cfg.max_accounts as usize,
            max_per_account: cfg.max_orders_per_account as usize,
            seq: 0,
            next_id: 0,
            next_trade: 0,
            out: vec![],
            window: cfg.dedupe_window as usize,
            window_accounts: cfg.dedupe_accounts as usize,
            recent: VecDeque::new(),
        }
    }
    fn emit(&mut self, body: EventBody) {
        self.seq += 1;
        self.out.push(Event {
            seq: self.seq,
            body,
        });
    }
    fn book_of(&self, s: SymbolId) -> Option<usize> {
        self.specs.iter().position(|x| x.id == s)
    }
    /// Resting orders of `account`.
    fn live_of(&self, account: AccountId) -> usize {
        self.books
            .iter()
            .flat_map(|b| b.bids.values().chain(b.asks.values()))
            .flatten()
            .filter(|o| o.account == account)
            .count()
    }
    /// Accounts with a resting order (an account holds capacity only while it has one).
    fn live_accounts(&self) -> usize {
        let mut set: Vec<AccountId> = self
            .books
            .iter()
            .flat_map(|b| b.bids.values().chain(b.asks.values()))
            .flatten()
            .map(|o| o.account)
            .collect();
        set.sort_unstable();
        set.dedup();
        set.len()
    }
    fn live(&self) -> usize {
        self.books
            .iter()
            .map(|b| {
                b.bids
                    .values()
                    .chain(b.asks.values())
                    .map(VecDeque::len)
                    .sum::<usize>()
            })
            .sum()
    }
    fn side_mut(&mut self, b: usize, side: Side) -> &mut BTreeMap<Price, VecDeque<ROrder>> {
        match side {
            Side::Buy => &mut self.books[b].bids,
            Side::Sell => &mut self.books[b].asks,
        }
    }
    /// Levels of `side` in priority order.
    fn levels(&self, b: usize, side: Side) -> Vec<(Price, Vec<ROrder>)> {
        let m = match side {
            Side::Buy => &self.books[b].bids,
            Side::Sell => &self.books[b].asks,
        };
        let mut v: Vec<_> = m
            .iter()
            .map(|(p, q)| (*p, q.iter().cloned().collect()))
            .collect();
        if side == Side::Buy {
            v.reverse();
        }
        v
    }
    fn level_qty(&self, b: usize, side: Side, price: Price) -> Qty {
        let m = match side {
            Side::Buy => &self.books[b].bids,
            Side::Sell => &self.books[b].asks,
        };
        m.get(&price)
            .map_or(0, |q| q.iter().map(|o| o.leaves).sum())
    }
    fn locate(&self, account: AccountId, target: OrderRef) -> Option<(usize, Side, Price, usize)> {
        for (b, book) in self.books.iter().enumerate() {
            for (side, m) in [(Side::Buy, &book.bids), (Side::Sell, &book.asks)] {
                for (p, q) in m {
                    for (i, o) in q.iter().enumerate() {
                        let hit = match target {
                            OrderRef::Id(id) => o.id == id && o.account == account,
                            OrderRef::Client(c) => o.cl == c && o.account == account,
                        };
                        if hit {
                            return Some((b, side, *p, i));
                        }
                    }
                }
            }
        }
        None
    }
    fn take(&mut self, b: usize, side: Side, price: Price, i: usize) -> ROrder {
        let m = self.side_mut(b, side);
        let q = m.get_mut(&price).unwrap();
        let o = q.remove(i).unwrap();
        if q.is_empty() {
            m.remove(&price);
        }
        o
    }
    fn crosses(&self, b: usize, side: Side, limit: Option<Price>) -> bool {
        let best = self.levels(b, side.opposite()).first().map(|l| l.0);
        match (best, limit) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(x), Some(p)) => {
                if side == Side::Buy {
                    x <= p
                } else {
                    x >= p
                }
            }
        }
    }
    fn fillable(
        &self,
        b: usize,
        side: Side,
        limit: Option<Price>,
        qty: Qty,
        account: AccountId,
        stp: SelfTradePrevention,
    ) -> bool {
        // Exact by quantity; with self-trade prevention on and own resting orders anywhere, the
        // engine walks at most 1024 makers.
        let reachable: Vec<(Price, Vec<ROrder>)> = self
            .levels(b, side.opposite())
            .into_iter()
            .filter(|(price, _)| match limit {
                Some(p) => {
                    (side == Side::Buy && *price <= p) || (side == Side::Sell && *price >= p)
                }
                None => true,
            })
            .collect();
        let total: Qty = reachable
            .iter()
            .flat_map(|(_, q)| q.iter().map(|o| o.leaves))
            .sum();
        if total < qty {
            return false;
        }
        let own = self.books.iter().any(|bk| {
            bk.bids
                .values()
                .chain(bk.asks.values())
                .any(|q| q.iter().any(|o| o.account == account))
        });
        if stp == SelfTradePrevention::Allow || !own {
            return true;
        }
        let mut budget = 1024;
        let mut sum = 0;
        for (_, q) in reachable {
            for o in q {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                if o.account == account {
                    if stp != SelfTradePrevention::CancelOldest {
                        return false;
                    }
                    continue;
                }
                sum += o.leaves;
                if sum >= qty {
                    return true;
                }
            }
        }
        false
    }
    fn done(&mut self, b: usize, o: &ROrder, reason: DoneReason, leaves: Qty) {
        let symbol = self.specs[b].id;
        self.emit(EventBody::Done(Done {
            order_id: o.id,
            account: o.account,
            client_order_id: o.cl,
            symbol,
            side: o.side,
            reason,
            leaves,
        }));
    }
    fn delta(&mut self, b: usize, side: Side, price: Price) {
        let qty = self.level_qty(b, side, price);
        let symbol = self.specs[b].id;
        self.emit(EventBody::BookDelta(BookDelta {
            symbol,
            side,
            price,
            qty,
        }));
    }
    fn run_match(&mut self, b: usize, t: &mut ROrder, limit: Option<Price>) -> End {
        let opp = t.side.opposite();
        loop {
            if t.leaves == 0 {
                return End::Filled;
            }
            let Some((price, q)) = self.levels(b, opp).into_iter().next() else {
                return End::Exhausted;
            };
            if let Some(p) = limit {
                if (t.side == Side::Buy && price > p) || (t.side == Side::Sell && price < p) {
                    return End::Exhausted;
                }
            }
            let maker = q[0].clone();
            if t.stp != SelfTradePrevention::Allow && maker.account == t.account {
                if t.stp == SelfTradePrevention::CancelNewest {
                    return End::Stp;
                }
                let m = self.take(b, opp, price, 0);
                self.done(b, &m, DoneReason::SelfTradePrevented, m.leaves);
                self.delta(b, opp, price);
                if t.stp == SelfTradePrevention::CancelBoth {
                    return End::Stp;
                }
                continue;
            }
            let qty = t.leaves.min(maker.leaves);
            t.leaves -= qty;
            let m_left = maker.leaves - qty;
            self.side_mut(b, opp).get_mut(&price).unwrap()[0].leaves = m_left;
            self.next_trade += 1;
            let trade = Trade {
                trade_id: self.next_trade,
                symbol: self.specs[b].id,
                price,
                qty,
                aggressor: t.side,
                maker_order_id: maker.id,
                maker_account: maker.account,
                maker_client_order_id: maker.cl,
                maker_leaves: m_left,
                taker_order_id: t.id,
                taker_account: t.account,
                taker_client_order_id: t.cl,
                taker_leaves: t.leaves,
            };
            self.emit(EventBody::Trade(trade));
            if m_left == 0 {
                let m = self.take(b, opp, price, 0);
                self.done(b, &m, DoneReason::Filled, 0);
            }
            self.delta(b, opp, price);
        }
    }
    fn rest(&mut self, b: usize, o: ROrder) {
        let (side, price) = (o.side, o.price);
        self.side_mut(b, side)
            .entry(price)
            .or_default()
            .push_back(o);
        self.delta(b, side, price);
    }
    fn check_new(&self, b: usize, o: &NewOrder) -> Result<(), RejectReason> {
        let s = self.specs[b];
        if self.books[b].halted {
            return Err(RejectReason::InstrumentHalted);
        }
        if o.order_type == OrderType::Market {
            if o.post_only {
                return Err(RejectReason::InvalidOrderType);
            }
            if o.tif == TimeInForce::Gtc {
                return Err(RejectReason::InvalidTimeInForce);
            }
            if o.price != 0 {
                return Err(RejectReason::MarketOrderHasPrice);
            }
        } else {
            if o.post_only && o.tif != TimeInForce::Gtc {
                return Err(RejectReason::InvalidTimeInForce);
            }
            check_price(&s, o.price)?;
        }
        check_qty(&s, o.qty)?;
        if o.client_order_id == 0 {
            return Err(RejectReason::ZeroClientOrderId);
        }
        if self
            .locate(o.account, OrderRef::Client(o.client_order_id))
            .is_some()
        {
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
            if self.live() >= self.max_orders {
                return Err(RejectReason::OrderCapacityReached);
            }
            let mine = self.live_of(o.account);
            if mine == 0 && self.live_accounts() >= self.max_accounts {
                return Err(RejectReason::AccountCapacityReached);
            }
            if self.max_per_account != 0 && mine >= self.max_per_account {
                return Err(RejectReason::AccountOrderLimit);
            }
        }
        Ok(())
    }
    fn reject(
        &mut self,
        account: AccountId,
        cl: ClientOrderId,
        id: OrderId,
        symbol: SymbolId,
        request: RequestKind,
        reason: RejectReason,
    ) {
        self.emit(EventBody::Rejected(Rejected {
            account,
            client_order_id: cl,
            order_id: id,
            symbol,
            request,
            reason,
        }));
    }
    fn apply(&mut self, cmd: &Command) {
        match *cmd {
            Command::New(o) => {
                let Some(b) = self.book_of(o.symbol) else {
                    return self.reject(
                        o.account,
                        o.client_order_id,
                        0,
                        o.symbol,
                        RequestKind::New,
                        RejectReason::UnknownSymbol,
                    );
                };
                let original = self
                    .recent
                    .iter()
                    .filter(|(a, _)| *a == o.account)
                    .flat_map(|(_, w)| w.iter())
                    .find(|(c, _)| *c == o.client_order_id)
                    .map(|&(_, id)| id);
                if let Some(original) = original {
                    return self.reject(
                        o.account,
                        o.client_order_id,
                        original,
                        o.symbol,
                        RequestKind::New,
                        RejectReason::DuplicateClientOrderId,
                    );
                }
                if let Err(r) = self.check_new(b, &o) {
                    return self.reject(
                        o.account,
                        o.client_order_id,
                        0,
                        o.symbol,
                        RequestKind::New,
                        r,
                    );
                }
                self.next_id += 1;
                let id = self.next_id;
                if self.window > 0 && self.window_accounts > 0 {
                    let mut w = match self.recent.iter().position(|(a, _)| *a == o.account) {
                        Some(i) => self.recent.remove(i).unwrap().1,
                        None => {
                            if self.recent.len() == self.window_accounts {
                                self.recent.pop_front();
                            }
                            VecDeque::new()
                        }
                    };
                    if w.len() == self.window {
                        w.pop_front();
                    }
                    w.push_back((o.client_order_id, id));
                    self.recent.push_back((o.account, w));
                }
                self.emit(EventBody::Accepted(Accepted {
                    order_id: id,
                    account: o.account,
                    client_order_id: o.client_order_id,
                    symbol: o.symbol,
                    side: o.side,
                    order_type: o.order_type,
                    tif: o.tif,
                    price: o.price,
                    qty: o.qty,
                }));
                let mut t = ROrder {
                    id,
                    cl: o.client_order_id,
                    account: o.account,
                    side: o.side,
                    price: o.price,
                    leaves: o.qty,
                    stp: o.stp,
                    post_only: o.post_only,
                };
                let limit = (o.order_type == OrderType::Limit).then_some(o.price);
                match self.run_match(b, &mut t, limit) {
                    End::Filled => self.done(b, &t.clone(), DoneReason::Filled, 0),
                    End::Stp => self.done(b, &t.clone(), DoneReason::SelfTradePrevented, t.leaves),
                    End::Exhausted
                        if o.order_type == OrderType::Limit && o.tif == TimeInForce::Gtc =>
                    {
                        self.rest(b, t)
                    }
                    End::Exhausted => self.done(b, &t.clone(), DoneReason::Expired, t.leaves),
                }
            }
            Command::Cancel(c) => match self.locate(c.account, c.target) {
                Some((b, side, price, i)) => {
                    let o = self.take(b, side, price, i);
                    self.done(b, &o, DoneReason::Cancelled, o.leaves);
                    self.delta(b, side, price);
                }
                None => self.target_reject(c.account, c.target, RequestKind::Cancel),
            },
            Command::Replace(r) => {
                let Some((b, side, price, i)) = self.locate(r.account, r.target) else {
                    return self.target_reject(r.account, r.target, RequestKind::Replace);
                };
                let o = self.levels_at(b, side, price)[i].clone();
                let s = self.specs[b];
                let keep = r.price == o.price && r.qty <= o.leaves;
                let check = if self.books[b].halted {
                    Err(RejectReason::InstrumentHalted)
                } else {
                    check_price(&s, r.price)
                        .and_then(|()| check_qty(&s, r.qty))
                        .and_then(|()| {
                            if !keep && o.post_only && self.crosses(b, side, Some(r.price)) {
                                Err(RejectReason::PostOnlyWouldTake)
                            } else {
                                Ok(())
                            }
                        })
                };
                if let Err(reason) = check {
                    return self.reject(r.account, o.cl, o.id, s.id, RequestKind::Replace, reason);
                }
                let rep = |kept| {
                    EventBody::Replaced(Replaced {
                        order_id: o.id,
                        account: o.account,
                        client_order_id: o.cl,
                        symbol: s.id,
                        side,
                        price: r.price,
                        qty: r.qty,
                        kept_priority: kept,
                    })
                };
                if keep {
                    let diff = o.leaves - r.qty;
                    self.side_mut(b, side).get_mut(&price).unwrap()[i].leaves = r.qty;
                    self.emit(rep(true));
                    if diff > 0 {
                        self.delta(b, side, price);
                    }
                    return;
                }
                let mut t = self.take(b, side, price, i);
                self.emit(rep(false));
                self.delta(b, side, price);
                t.price = r.price;
                t.leaves = r.qty;
                match self.run_match(b, &mut t, Some(r.price)) {
                    End::Filled => self.done(b, &t.clone(), DoneReason::Filled, 0),
                    End::Stp => self.done(b, &t.clone(), DoneReason::SelfTradePrevented, t.leaves),
                    End::Exhausted => self.rest(b, t),
                }
            }
            Command::MassCancel(m) => {
                let filter = match m.symbol {
                    None => None,
                    Some(s) => match self.book_of(s) {
                        Some(b) => Some(b),
                        None => {
                            return self.reject(
                                m.account,
                                0,
                                0,
                                s,
                                RequestKind::MassCancel,
                                RejectReason::UnknownSymbol,
                            )
                        }
                    },
                };
                let mut mine = vec![];
                for (b, book) in self.books.iter().enumerate() {
                    if filter.is_some_and(|f| f != b) {
                        continue;
                    }
                    for q in book.bids.values().chain(book.asks.values()) {
                        mine.extend(q.iter().filter(|o| o.account == m.account).map(|o| o.id));
                    }
                }
                mine.sort_unstable();
                for id in &mine {
                    let (b, side, price, i) = self.locate(m.account, OrderRef::Id(*id)).unwrap();
                    let o = self.take(b, side, price, i);
                    self.done(b, &o, DoneReason::Cancelled, o.leaves);
                    self.delta(b, side, price);
                }
                self.emit(EventBody::MassCancelled(MassCancelled {
                    account: m.account,
                    symbol: m.symbol,
                    count: mine.len() as u32,
                }));
            }
            Command::Halt(s) | Command::Resume(s) => {
                let halted = matches!(cmd, Command::Halt(_));
                match self.book_of(s) {
                    Some(b) => {
                        self.books[b].halted = halted;
                        self.emit(EventBody::InstrumentStatus(InstrumentStatus {
                            symbol: s,
                            halted,
                        }));
                    }
                    None => self.reject(
                        0,
                        0,
                        0,
                        s,
                        if halted {
                            RequestKind::Halt
                        } else {
                            RequestKind::Resume
                        },
                        RejectReason::UnknownSymbol,
                    ),
                }
            }
        }
    }
    fn levels_at(&self, b: usize, side: Side, price: Price) -> Vec<ROrder> {
        let m = match side {
            Side::Buy => &self.books[b].bids,
            Side::Sell => &self.books[b].asks,
        };
        m[&price].iter().cloned().collect()
    }
    fn target_reject(&mut self, account: AccountId, target: OrderRef, req: RequestKind) {
        let (id, cl) = match target {
            OrderRef::Id(i) => (i, 0),
            OrderRef::Client(c) => (0, c),
        };
        self.reject(account, cl, id, 0, req, RejectReason::UnknownOrder);
    }
}

fn check_price(s: &InstrumentSpec, p: Price) -> Result<(), RejectReason> {
    if p == 0 {
        Err(RejectReason::ZeroPrice)
    } else if p % s.tick_size != 0 {
        Err(RejectReason::PriceOffTick)
    } else if p < s.min_price || p > s.max_price {
        Err(RejectReason::PriceOutOfBand)
    } else {
        Ok(())
    }
}

fn check_qty(s: &InstrumentSpec, q: Qty) -> Result<(), RejectReason> {
    if q == 0 {
        Err(RejectReason::ZeroQuantity)
    } else if q % s.lot_size != 0 {
        Err(RejectReason::QuantityOffLot)
    } else if q > s.max_qty {
        Err(RejectReason::QuantityOverMax)
    } else {
        Ok(())
    }
}

fn config() -> EngineConfig {
    let spec = |id| InstrumentSpec {
        id,
        tick_size: 5,
        lot_size: 10,
        min_price: 50,
        max_price: 150,
        max_qty: 200,
    };
    EngineConfig {
        max_orders: 14,
        max_accounts: 3,
        hash_seed: 99,
        dedupe_window: 0,
        dedupe_accounts: 2,
        max_orders_per_account: 6,
        instruments: vec![spec(1), spec(2)],
    }
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}
fn price() -> impl Strategy<Value = Price> {
    prop_oneof![20 => (9u64..=31).prop_map(|t| t * 5), 1 => Just(0u64), 1 => Just(102u64), 1 => Just(155u64)]
}
fn qty() -> impl Strategy<Value = Qty> {
    prop_oneof![20 => (1u64..=12).prop_map(|l| l * 10), 1 => Just(0u64), 1 => Just(15u64), 1 => Just(210u64)]
}
fn target() -> impl Strategy<Value = OrderRef> {
    prop_oneof![
        (1u64..60).prop_map(OrderRef::Id),
        (1u64..8).prop_map(OrderRef::Client)
    ]
}
fn symbol() -> impl Strategy<Value = SymbolId> {
    prop_oneof![10 => Just(1u32), 4 => Just(2u32), 1 => Just(3u32)]
}

fn command() -> impl Strategy<Value = Command> {
    let new = (
        1u32..=4,
        1u64..8,
        symbol(),
        side(),
        0u8..10,
        0u8..4,
        any::<bool>(),
        price(),
        qty(),
        0u8..4,
    )
        .prop_map(
            |(account, cl, symbol, side, kind, stp, po, price, qty, tif)| {
                let (order_type, price) = if kind == 0 {
                    (
                        OrderType::Market,
                        if po { 0 } else { price * u64::from(tif == 3) },
                    )
                } else {
                    (OrderType::Limit, price)
                };
                let tif = match tif {
                    0 | 3 => TimeInForce::Gtc,
                    1 => TimeInForce::Ioc,
                    _ => TimeInForce::Fok,
                };
                Command::New(NewOrder {
                    account,
                    client_order_id: cl,
                    symbol,
                    side,
                    order_type,
                    tif: if order_type == OrderType::Market && kind == 0 && cl % 3 != 0 {
                        TimeInForce::Ioc
                    } else {
                        tif
                    },
                    post_only: po && kind > 7,
                    price,
                    qty,
                    stp: SelfTradePrevention::from_u8(stp).unwrap(),
                })
            },
        );
    prop_oneof![
        10 => new,
        3 => (1u32..=4, target()).prop_map(|(account, target)| Command::Cancel(Cancel { account, target })),
        5 => (1u32..=4, target(), price(), qty()).prop_map(|(account, target, price, qty)| Command::Replace(Replace { account, target, price, qty })),
        1 => (1u32..=4, prop::option::of(symbol())).prop_map(|(account, symbol)| Command::MassCancel(MassCancel { account, symbol })),
        1 => symbol().prop_map(Command::Halt),
        2 => symbol().prop_map(Command::Resume),
    ]
}

/// Open quantity per live order, tracked from events only.
#[derive(Default)]
struct Conservation(HashMap<OrderId, Qty>);

impl Conservation {
    fn apply(&mut self, ev: &Event) -> Result<(), TestCaseError> {
        match ev.body {
            EventBody::Accepted(a) => {
                prop_assert!(self.0.insert(a.order_id, a.qty).is_none());
            }
            EventBody::Trade(t) => {
                for (id, left) in [
                    (t.maker_order_id, t.maker_leaves),
                    (t.taker_order_id, t.taker_leaves),
                ] {
                    let open = self.0.get_mut(&id).expect("trade of a live order");
                    prop_assert!(*open >= t.qty);
                    *open -= t.qty;
                    prop_assert_eq!(*open, left, "leaves after trade");
                }
            }
            EventBody::Replaced(r) => {
                prop_assert!(self.0.insert(r.order_id, r.qty).is_some());
            }
            EventBody::Done(d) => {
                prop_assert_eq!(
                    self.0.remove(&d.order_id),
                    Some(d.leaves),
                    "Done leaves == open qty"
                );
            }
            _ => {}
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 5000, ..ProptestConfig::default() })]

    #[test]
    fn engine_equals_reference_and_invariants_hold(cmds in prop::collection::vec(command(), 1..160), window in prop_oneof![2 => Just(0u32), 3 => 1u32..8], window_accounts in 1u32..4) {
        // Client ids 1..8 per account: windows below and above that exercise eviction; up to
        // 3 accounts' windows for more accounts than that exercise forgetting an account.
        let cfg = EngineConfig { dedupe_window: window, dedupe_accounts: window_accounts, ..config() };
        let mut engine = Engine::new(cfg.clone()).unwrap();
        let mut reference = Reference::new(&cfg);
        let mut cons = Conservation::default();
        let mut got = Vec::new();
        for (n, cmd) in cmds.iter().enumerate() {
            got.clear();
            engine.process(cmd, &mut got);
            reference.out.clear();
            reference.apply(cmd);
            prop_assert_eq!(&got, &reference.out, "events differ at command {}: {:?}", n, cmd);
            engine.check_integrity().map_err(|e| TestCaseError::fail(format!("integrity after {n}: {e}")))?;
            for ev in &got {
                cons.apply(ev)?;
            }
            // Same books, order by order, FIFO within each level; never crossed at rest.
            let mut resting = 0;
            for (b, spec) in cfg.instruments.iter().enumerate() {
                for side in [Side::Buy, Side::Sell] {
                    let mut mine = vec![];
                    engine.for_each_order(spec.id, side, |o| mine.push((o.order_id, o.price, o.leaves)));
                    let theirs: Vec<_> = reference.levels(b, side).into_iter().flat_map(|(p, q)| q.into_iter().map(move |o| (o.id, p, o.leaves))).collect();
                    prop_assert_eq!(&mine, &theirs);
                    for (id, _, leaves) in &mine {
                        prop_assert_eq!(cons.0.get(id), Some(leaves), "resting leaves == open qty");
                    }
                    resting += mine.len();
                }
                if let (Some(bid), Some(ask)) = (engine.best_bid(spec.id), engine.best_ask(spec.id)) {
                    prop_assert!(bid.0 < ask.0);
                }
            }
            prop_assert_eq!(resting, cons.0.len(), "every open order rests");
        }
    }

    #[test]
    fn snapshot_restore_is_exact_at_any_point(cmds in prop::collection::vec(command(), 1..120), split in 0usize..120, window in 0u32..8, window_accounts in 1u32..4) {
        let cfg = EngineConfig { dedupe_window: window, dedupe_accounts: window_accounts, ..config() };
        let split = split.min(cmds.len());
        let mut live = Engine::new(cfg.clone()).unwrap();
        let mut sink = NullSink;
        for c in &cmds[..split] {
            live.process(c, &mut sink);
        }
        let mut restored = Engine::restore(&live.snapshot()).unwrap();
        prop_assert_eq!(restored.state_hash(), live.state_hash());
        restored.check_integrity().map_err(TestCaseError::fail)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for c in &cmds[split..] {
            live.process(c, &mut a);
            restored.process(c, &mut b);
        }
        prop_assert_eq!(a, b);
        prop_assert_eq!(restored.state_hash(), live.state_hash());
    }
}
