//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.
//!
//! The engine's state and construction live here; each concern has its own module.

mod accounts;
mod commands;
mod dedupe;
mod integrity;
mod matching;
mod pool;
mod queries;
mod validate;

use crate::book::{Book, NIL};
use crate::command::{Command, OrderRef};
use crate::config::{ConfigError, EngineConfig};
use crate::event::{Event, EventBody, EventSink, Rejected};
use crate::fixed_map::{FixedMap, OrderKey};
use crate::types::{
    AccountId, ClientOrderId, OrderId, Price, Qty, SelfTradePrevention, Seq, Side, SymbolId,
    TradeId,
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

pub(super) const FREE_NODE: OrderNode = OrderNode {
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
    /// Live orders in the list; the slot is freed when it drops to 0.
    pub(crate) live: u32,
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
    by_id: FixedMap<OrderKey, u32>,
    by_client: FixedMap<(u32, u64), u32>,
    /// The dedupe windows: each account's last `dedupe_window` accepted new orders, for the
    /// `dedupe_accounts` accounts that had one accepted most recently.
    pub(crate) dedupe: dedupe::Dedupe,
    /// Account slots, registered in order; a slot whose account has no live order is free
    /// (listed in `free_accounts`, reused last-freed first).
    pub(crate) accounts: Vec<AccountNode>,
    pub(crate) free_accounts: Vec<u32>,
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
            dedupe: dedupe::Dedupe::new(config.dedupe_window, config.dedupe_accounts, seed),
            accounts: Vec::with_capacity(config.max_accounts as usize),
            free_accounts: Vec::with_capacity(config.max_accounts as usize),
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

    /// Starts loading the index slots `cmd` will look up, so that processing a batch of
    /// commands overlaps their cache misses (call it for the next command before processing
    /// the current one). A hint: it changes nothing.
    #[inline]
    pub fn prefetch(&self, cmd: &Command) {
        let target = |account: AccountId, t: &OrderRef| match t {
            OrderRef::Id(id) => self.by_id.prefetch(&OrderKey(*id)),
            OrderRef::Client(c) => self.by_client.prefetch(&(account, *c)),
        };
        match cmd {
            Command::New(o) => {
                self.by_client.prefetch(&(o.account, o.client_order_id));
                self.dedupe.prefetch(o.account, o.client_order_id);
            }
            Command::Cancel(c) => target(c.account, &c.target),
            Command::Replace(r) => target(r.account, &r.target),
            Command::MassCancel(_) | Command::Halt(_) | Command::Resume(_) => {}
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
}
