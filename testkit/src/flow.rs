//! A seeded order-flow generator modelled on exchange-core's single-book performance test:
//! about 9% new GTC, 3% IOC, 6% cancel and 82% replace ("move"), around 1K resting orders
//! spread over a few hundred levels, prices walking around a mid.
//!
//! It runs a shadow [`Engine`] while generating so that cancels and replaces name live orders;
//! the same seed gives the same commands. Generation allocates; replaying the generated commands
//! through a fresh engine does not.

use caldera_engine::{Cancel, MassCancel};
use caldera_engine::{
    Command, Engine, EngineConfig, EventBody, InstrumentSpec, NewOrder, OrderId, OrderRef,
    OrderType, Replace, SelfTradePrevention, Side, SymbolId, TimeInForce,
};

/// Deterministic 64-bit PRNG (splitmix64): identical streams on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// True with probability `pct`/100.
    pub fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Shape of a generated flow.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// PRNG seed.
    pub seed: u64,
    /// Number of instruments (ids 1..=n), all with the same spec as [`FlowConfig::instrument`].
    pub symbols: u32,
    /// Number of accounts (ids 1..=n).
    pub accounts: u32,
    /// Resting orders per instrument the flow aims to hold.
    pub target_orders: usize,
    /// Add the rarer parts of the command set (market, FOK, post-only, self-trade prevention,
    /// mass cancel, halt/resume) and some invalid commands that must be rejected.
    pub full_mix: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            symbols: 1,
            accounts: 2000,
            target_orders: 1000,
            full_mix: false,
        }
    }
}

impl FlowConfig {
    /// The instrument every generated symbol uses: tick 1, lot 1, band 1..=200_000.
    #[must_use]
    pub fn instrument(id: SymbolId) -> InstrumentSpec {
        InstrumentSpec {
            id,
            tick_size: 1,
            lot_size: 1,
            min_price: 1,
            max_price: 200_000,
            max_qty: 1_000_000,
        }
    }

    /// An engine configuration that fits this flow.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_orders: (self.target_orders * self.symbols as usize * 4 + 1024) as u32,
            max_accounts: self.accounts + 16,
            hash_seed: 0xca1d_e7a5,
            dedupe_window: 4096,
            dedupe_accounts: 4,
            max_orders_per_account: 0,
            instruments: (1..=self.symbols).map(Self::instrument).collect(),
        }
    }
}

struct Live {
    ids: Vec<OrderId>,
    pos: std::collections::HashMap<OrderId, usize>,
}

impl Live {
    fn add(&mut self, id: OrderId) {
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
    }
    fn remove(&mut self, id: OrderId) {
        if let Some(i) = self.pos.remove(&id) {
            self.ids.swap_remove(i);
            if let Some(&moved) = self.ids.get(i) {
                self.pos.insert(moved, i);
            }
        }
    }
}

/// Generates `n` commands for `cfg`.
///
/// # Panics
/// If `cfg` gives an invalid engine configuration (zero symbols or accounts).
#[must_use]
pub fn generate(cfg: &FlowConfig, n: usize) -> Vec<Command> {
    let mut engine = Engine::new(cfg.engine_config()).expect("flow config is valid");
    let mut rng = Rng::new(cfg.seed);
    let mut live: Vec<Live> = (0..cfg.symbols)
        .map(|_| Live {
            ids: Vec::new(),
            pos: std::collections::HashMap::new(),
        })
        .collect();
    let mut mids: Vec<u64> = vec![100_000; cfg.symbols as usize];
    let mut next_client_id = vec![0u64; cfg.accounts as usize + 1];
    let mut out = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(4096);
    while out.len() < n {
        // Symbol skew: the first symbol gets about half of the flow.
        let s = if cfg.symbols == 1 || rng.percent(50) {
            0
        } else {
            rng.below(u64::from(cfg.symbols)) as usize
        };
        let symbol = s as SymbolId + 1;
        if rng.percent(1) {
            let step = rng.below(3) as i64 - 1;
            mids[s] = (mids[s] as i64 + step).clamp(1000, 199_000) as u64;
        }
        let mid = mids[s];
        let account = 1 + rng.below(u64::from(cfg.accounts)) as u32;
        let roll = rng.below(1000);
        let book = &live[s];
        let cmd = if cfg.full_mix
            && (roll < 20 || (engine.is_halted(symbol) == Some(true) && rng.percent(5)))
        {
            rare_command(
                &mut rng,
                cfg,
                symbol,
                account,
                mid,
                &mut next_client_id,
                book,
                &engine,
            )
        } else if book.ids.len() < cfg.target_orders / 2 || (30..120).contains(&roll) {
            // New GTC limit, mostly passive, a few levels deep.
            let side = if rng.percent(50) {
                Side::Buy
            } else {
                Side::Sell
            };
            let depth = rng.below(300);
            // Above the target size, new orders take liquidity more often (and bigger) so
            // the book stays near its target, as exchange-core's generator does.
            let over = book.ids.len() > cfg.target_orders;
            let cross = rng.percent(if over { 60 } else { 5 });
            let price = match (side, cross) {
                (Side::Buy, false) => mid - 1 - depth,
                (Side::Sell, false) => mid + 1 + depth,
                (Side::Buy, true) => mid + rng.below(3),
                (Side::Sell, true) => mid - rng.below(3),
            };
            next_client_id[account as usize] += 1;
            Command::New(NewOrder {
                account,
                client_order_id: next_client_id[account as usize],
                symbol,
                side,
                order_type: OrderType::Limit,
                tif: TimeInForce::Gtc,
                post_only: false,
                price,
                qty: 1 + rng.below(if over { 400 } else { 100 }),
                stp: SelfTradePrevention::Allow,
            })
        } else if roll < 30 {
            // IOC, aggressive.
            let side = if rng.percent(50) {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = match side {
                Side::Buy => mid + rng.below(10),
                Side::Sell => mid - rng.below(10),
            };
            next_client_id[account as usize] += 1;
            Command::New(NewOrder {
                account,
                client_order_id: next_client_id[account as usize],
                symbol,
                side,
                order_type: OrderType::Limit,
                tif: TimeInForce::Ioc,
                post_only: false,
                price,
                qty: 1 + rng.below(50),
                stp: SelfTradePrevention::Allow,
            })
        } else if book.ids.is_empty() {
            continue;
        } else if (120..180).contains(&roll) {
            let id = book.ids[rng.below(book.ids.len() as u64) as usize];
            let o = engine.order(id).expect("live order");
            Command::Cancel(Cancel {
                account: o.account,
                target: OrderRef::Id(id),
            })
        } else {
            // Move: shift the price a little, sometimes change the size.
            let id = book.ids[rng.below(book.ids.len() as u64) as usize];
            let o = engine.order(id).expect("live order");
            let step = 1 + rng.below(4);
            let toward_mid = match o.side {
                Side::Buy => o.price < mid,
                Side::Sell => o.price > mid,
            };
            let up = if rng.percent(70) {
                toward_mid
            } else {
                !toward_mid
            };
            let price = match (o.side, up) {
                (Side::Buy, true) | (Side::Sell, false) => o.price + step,
                _ => o.price.saturating_sub(step).max(1),
            };
            let qty = if rng.percent(20) {
                1 + rng.below(100)
            } else {
                o.leaves
            };
            Command::Replace(Replace {
                account: o.account,
                target: OrderRef::Id(id),
                price,
                qty,
            })
        };
        events.clear();
        engine.process(&cmd, &mut events);
        for e in &events {
            match e.body {
                EventBody::Accepted(a) if a.tif == TimeInForce::Gtc => {
                    live[(a.symbol - 1) as usize].add(a.order_id);
                }
                EventBody::Done(d) => live[(d.symbol - 1) as usize].remove(d.order_id),
                _ => {}
            }
        }
        out.push(cmd);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn rare_command(
    rng: &mut Rng,
    cfg: &FlowConfig,
    symbol: SymbolId,
    account: u32,
    mid: u64,
    next_client_id: &mut [u64],
    book: &Live,
    engine: &Engine,
) -> Command {
    let side = if rng.percent(50) {
        Side::Buy
    } else {
        Side::Sell
    };
    next_client_id[account as usize] += 1;
    let client_order_id = next_client_id[account as usize];
    let stp =
        SelfTradePrevention::from_u8(rng.below(4) as u8).unwrap_or(SelfTradePrevention::Allow);
    let base = NewOrder {
        account,
        client_order_id,
        symbol,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        post_only: false,
        price: mid,
        qty: 1 + rng.below(200),
        stp,
    };
    match rng.below(12) {
        0 => Command::New(NewOrder {
            order_type: OrderType::Market,
            tif: TimeInForce::Ioc,
            price: 0,
            ..base
        }),
        1 => Command::New(NewOrder {
            tif: TimeInForce::Fok,
            qty: 1 + rng.below(400),
            ..base
        }),
        2 => Command::New(NewOrder {
            post_only: true,
            price: if rng.percent(50) { mid - 1 } else { mid + 1 },
            ..base
        }),
        3 => Command::New(NewOrder {
            stp: SelfTradePrevention::CancelOldest,
            price: mid + 5,
            ..base
        }),
        4 => Command::MassCancel(MassCancel {
            account,
            symbol: if rng.percent(50) { Some(symbol) } else { None },
        }),
        5 => Command::New(NewOrder { price: 0, ..base }),
        6 => Command::New(NewOrder { qty: 0, ..base }),
        7 => Command::New(NewOrder {
            symbol: cfg.symbols + 7,
            ..base
        }),
        8 => Command::New(NewOrder {
            price: 300_000,
            ..base
        }),
        9 => Command::Cancel(Cancel {
            account,
            target: OrderRef::Id(u64::MAX - rng.below(9)),
        }),
        10 => {
            // Duplicate client order id of a live order, if there is one.
            match book.ids.first().and_then(|id| engine.order(*id)) {
                Some(o) => Command::New(NewOrder {
                    account: o.account,
                    client_order_id: o.client_order_id,
                    ..base
                }),
                None => Command::New(NewOrder { qty: 7, ..base }),
            }
        }
        _ => {
            // Short halts: a halted symbol is resumed at the next chance.
            if engine.is_halted(symbol) == Some(false) && rng.percent(10) {
                Command::Halt(symbol)
            } else {
                Command::Resume(symbol)
            }
        }
    }
}
