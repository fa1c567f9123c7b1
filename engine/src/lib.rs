//! Caldera's matching engine: a deterministic, allocation-free, price-time priority order book
//! for many instruments. No I/O, no clocks, no threads: [`Command`]s in, [`Event`]s out.
//!
//! ```
//! use caldera_engine::*;
//! let mut engine = Engine::new(EngineConfig {
//!     max_orders: 1024,
//!     max_accounts: 16,
//!     hash_seed: 1,
//!     dedupe_window: 1024,
//!     dedupe_accounts: 4,
//!     max_orders_per_account: 0,
//!     instruments: vec![InstrumentSpec {
//!         id: 1, tick_size: 1, lot_size: 1, min_price: 1, max_price: 10_000, max_qty: 1_000,
//!     }],
//! })
//! .unwrap();
//! let mut events = Vec::new();
//! engine.process(
//!     &Command::New(NewOrder {
//!         account: 7, client_order_id: 1, symbol: 1, side: Side::Sell,
//!         order_type: OrderType::Limit, tif: TimeInForce::Gtc, post_only: false,
//!         price: 100, qty: 5, stp: SelfTradePrevention::Allow,
//!     }),
//!     &mut events,
//! );
//! assert_eq!(engine.best_ask(1), Some((100, 5)));
//! ```
//!
//! Rules (see `docs/engine.md`): trades execute at the resting order's price; a sweep walks
//! levels in price then time order; market orders never rest; IOC remainders expire; FOK fills
//! completely or is rejected without any trade; post-only never takes; self-trade prevention is
//! chosen by the incoming order.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod book;
mod command;
mod config;
mod engine;
mod event;
mod fixed_map;
mod prefetch;
mod snapshot;
mod types;

pub use command::{Cancel, Command, MassCancel, NewOrder, OrderRef, Replace};
pub use config::{ConfigError, EngineConfig, InstrumentSpec, MAX_BAND_TICKS};
pub use engine::{Engine, OrderView};
pub use event::{
    Accepted, BookDelta, Done, DoneReason, Event, EventBody, EventSink, FnSink, InstrumentStatus,
    MassCancelled, NullSink, RejectReason, Rejected, Replaced, RequestKind, Trade,
};
pub use snapshot::{SnapshotError, DEFAULT_RESTORE_MEMORY_LIMIT};
pub use types::{
    AccountId, ClientOrderId, OrderId, OrderType, Price, Qty, SelfTradePrevention, Seq, Side,
    SymbolId, TimeInForce, TradeId,
};
