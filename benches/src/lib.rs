//! Shared benchmark drivers: the same pre-generated command flow run through Caldera's engine and
//! through peer order-book crates, so their figures come from one run on one machine.
#![forbid(unsafe_code)]

pub mod hostile;

use caldera_engine::{
    Command, Engine, EngineConfig, Event, EventBody, EventSink, OrderRef, OrderType, Side,
    TimeInForce,
};

/// Counts events the way a real consumer would touch them (so nothing is optimised away).
#[derive(Default, Debug, Clone, Copy)]
pub struct CountingSink {
    /// Events seen.
    pub events: u64,
    /// Trades seen.
    pub trades: u64,
}

impl EventSink for CountingSink {
    #[inline]
    fn on_event(&mut self, e: &Event) {
        self.events += 1;
        if let EventBody::Trade(_) = e.body {
            self.trades += 1;
        }
    }
}

/// Something that can replay the flow.
pub trait Book {
    /// Display name.
    fn name(&self) -> &'static str;
    /// Applies one flow command.
    fn apply(&mut self, cmd: &Command);
    /// Trades executed so far (sanity check that every book did real work).
    fn trades(&self) -> u64;
}

/// Caldera's engine.
pub struct CalderaBook {
    engine: Engine,
    sink: CountingSink,
}

impl CalderaBook {
    /// A fresh engine.
    ///
    /// # Panics
    /// On an invalid configuration.
    #[must_use]
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            engine: Engine::new(cfg).expect("valid config"),
            sink: CountingSink::default(),
        }
    }
    /// The engine inside.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Book for CalderaBook {
    fn name(&self) -> &'static str {
        "caldera-engine"
    }
    #[inline]
    fn apply(&mut self, cmd: &Command) {
        self.engine.process(cmd, &mut self.sink);
    }
    fn trades(&self) -> u64 {
        self.sink.trades
    }
}

/// The `lobster` crate (0.7). It has no replace or IOC: a replace is cancel + new limit with the
/// same id, an IOC is a limit followed by a cancel of any remainder. Ids are the engine's ids
/// (the flow only contains valid commands, so both books assign the same sequence).
pub struct LobsterBook {
    book: lobster::OrderBook,
    next_id: u128,
    sides: std::collections::HashMap<u128, lobster::Side>,
    trades: u64,
}

impl LobsterBook {
    /// A fresh book sized like the engine.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            book: lobster::OrderBook::new(capacity, 64, false),
            next_id: 0,
            sides: std::collections::HashMap::with_capacity(capacity),
            trades: 0,
        }
    }

    /// (best bid, best ask) prices.
    #[must_use]
    pub fn top(&self) -> (Option<u64>, Option<u64>) {
        (self.book.max_bid(), self.book.min_ask())
    }

    fn count(&mut self, ev: &lobster::OrderEvent) {
        if let lobster::OrderEvent::Filled { fills, .. }
        | lobster::OrderEvent::PartiallyFilled { fills, .. } = ev
        {
            self.trades += fills.len() as u64;
        }
    }
}

fn lside(s: Side) -> lobster::Side {
    match s {
        Side::Buy => lobster::Side::Bid,
        Side::Sell => lobster::Side::Ask,
    }
}

impl Book for LobsterBook {
    fn name(&self) -> &'static str {
        "lobster 0.7"
    }
    fn apply(&mut self, cmd: &Command) {
        match *cmd {
            Command::New(o) => {
                self.next_id += 1;
                let id = self.next_id;
                let ev = match o.order_type {
                    OrderType::Limit => self.book.execute(lobster::OrderType::Limit {
                        id,
                        side: lside(o.side),
                        qty: o.qty,
                        price: o.price,
                    }),
                    OrderType::Market => self.book.execute(lobster::OrderType::Market {
                        id,
                        side: lside(o.side),
                        qty: o.qty,
                    }),
                };
                self.count(&ev);
                let rested = matches!(ev, lobster::OrderEvent::Placed { .. })
                    || matches!(ev, lobster::OrderEvent::PartiallyFilled { .. });
                if rested && o.order_type == OrderType::Limit {
                    if o.tif == TimeInForce::Gtc {
                        self.sides.insert(id, lside(o.side));
                    } else {
                        self.book.execute(lobster::OrderType::Cancel { id });
                    }
                }
            }
            Command::Cancel(c) => {
                if let OrderRef::Id(id) = c.target {
                    self.book
                        .execute(lobster::OrderType::Cancel { id: u128::from(id) });
                    self.sides.remove(&u128::from(id));
                }
            }
            Command::Replace(r) => {
                if let OrderRef::Id(id) = r.target {
                    let id = u128::from(id);
                    if let Some(side) = self.sides.get(&id).copied() {
                        self.book.execute(lobster::OrderType::Cancel { id });
                        let ev = self.book.execute(lobster::OrderType::Limit {
                            id,
                            side,
                            qty: r.qty,
                            price: r.price,
                        });
                        self.count(&ev);
                        if matches!(ev, lobster::OrderEvent::Filled { .. }) {
                            self.sides.remove(&id);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    fn trades(&self) -> u64 {
        self.trades
    }
}
