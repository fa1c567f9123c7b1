//! Instruments and capacities, fixed at construction.

use crate::types::{Price, Qty, SymbolId};

/// The largest number of price ticks one instrument's band may span.
///
/// Each tick costs 16 bytes per side (a level slot) plus two bits of bitmap, preallocated.
pub const MAX_BAND_TICKS: u64 = 1 << 22;

/// One tradable instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentSpec {
    /// Instrument id (unique).
    pub id: SymbolId,
    /// Prices must be multiples of this.
    pub tick_size: Price,
    /// Quantities must be multiples of this.
    pub lot_size: Qty,
    /// Lowest accepted limit price (inclusive, a multiple of the tick, > 0).
    pub min_price: Price,
    /// Highest accepted limit price (inclusive, a multiple of the tick).
    pub max_price: Price,
    /// Largest accepted order quantity.
    pub max_qty: Qty,
}

impl InstrumentSpec {
    /// Number of price ticks in the band.
    #[must_use]
    pub const fn band_ticks(&self) -> u64 {
        (self.max_price - self.min_price) / self.tick_size + 1
    }
}

/// Engine construction parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Maximum number of resting orders, all instruments together.
    pub max_orders: u32,
    /// Maximum number of distinct accounts that ever rest an order.
    pub max_accounts: u32,
    /// Seed for the engine's internal hash tables. Keep it secret (a node draws a random one
    /// per process): with the seed known, client order ids can be chosen to cluster in one
    /// slot. It never changes behaviour — table layout is never observable, so replicas and
    /// replays may use different seeds — and it is not part of snapshots or the state hash.
    pub hash_seed: u64,
    /// How many of each account's most recently accepted new orders are remembered by client
    /// order id after they are done, so that a resent order (a client retrying after a
    /// failover) is rejected as a duplicate instead of executed twice. Per account: no other
    /// account's traffic shortens it. Part of the replicated state. 0 = only live orders are
    /// checked.
    pub dedupe_window: u32,
    /// For how many accounts dedupe windows are kept: those that had an order accepted most
    /// recently (the least recently active account's window is forgotten first).
    pub dedupe_accounts: u32,
    /// Most live (resting) orders one account may have; a GTC limit order of an account that
    /// has them gets `AccountOrderLimit`. 0 = no limit beyond `max_orders`.
    pub max_orders_per_account: u32,
    /// The instruments.
    pub instruments: Vec<InstrumentSpec>,
}

/// An invalid [`EngineConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No instrument was configured.
    #[error("no instruments configured")]
    NoInstruments,
    /// Two instruments share an id.
    #[error("instrument id {0} configured twice")]
    DuplicateInstrument(SymbolId),
    /// A field of an instrument is invalid.
    #[error("instrument {id}: {problem}")]
    InvalidInstrument {
        /// Which instrument.
        id: SymbolId,
        /// What is wrong.
        problem: &'static str,
    },
    /// A capacity is zero or too large.
    #[error("invalid capacity: {0}")]
    InvalidCapacity(&'static str),
    /// The engine would need more memory than allowed.
    #[error("the configuration needs about {needed} bytes, more than the allowed {limit}")]
    TooLarge {
        /// Estimated bytes.
        needed: u64,
        /// Allowed bytes.
        limit: u64,
    },
}

impl EngineConfig {
    /// Approximate memory the engine preallocates for this configuration, in bytes: the order
    /// pool and its two indices, the account table, and two price ladders per instrument.
    #[must_use]
    pub fn estimated_memory_bytes(&self) -> u64 {
        let orders = u64::from(self.max_orders);
        let slots = (orders.max(1) * 2).next_power_of_two();
        let accounts = u64::from(self.max_accounts);
        let account_slots = (accounts.max(1) * 2).next_power_of_two();
        let mut total = orders
            .saturating_mul(64)
            .saturating_add(slots.saturating_mul(24 + 32))
            .saturating_add(accounts.saturating_mul(12))
            .saturating_add(account_slots.saturating_mul(16));
        let window = u64::from(self.dedupe_window).saturating_mul(u64::from(self.dedupe_accounts));
        // One table per window, each at a load factor of at most 1/2.
        let window_slots = (u64::from(self.dedupe_window).max(1) * 2)
            .next_power_of_two()
            .saturating_mul(u64::from(self.dedupe_accounts));
        let account_slots = (u64::from(self.dedupe_accounts).max(1) * 2).next_power_of_two();
        total = total
            .saturating_add(window.saturating_mul(16))
            .saturating_add(window_slots.saturating_mul(24))
            .saturating_add(u64::from(self.dedupe_accounts).saturating_mul(48))
            .saturating_add(u64::from(self.dedupe_accounts).saturating_mul(20))
            .saturating_add(account_slots.saturating_mul(16));
        for s in &self.instruments {
            if s.tick_size > 0 && s.max_price >= s.min_price {
                // two sides × (16-byte level + bitmap bits)
                total = total.saturating_add(s.band_ticks().saturating_mul(33));
            }
        }
        total
    }

    /// Checks every rule the engine relies on.
    ///
    /// # Errors
    /// The first problem found, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.instruments.is_empty() {
            return Err(ConfigError::NoInstruments);
        }
        if self.max_orders == 0 || self.max_orders >= u32::MAX / 4 {
            return Err(ConfigError::InvalidCapacity(
                "max_orders must be in 1..2^30",
            ));
        }
        if self.max_accounts == 0 || self.max_accounts >= u32::MAX / 4 {
            return Err(ConfigError::InvalidCapacity(
                "max_accounts must be in 1..2^30",
            ));
        }
        if u64::from(self.dedupe_window) * u64::from(self.dedupe_accounts) >= 1 << 30 {
            return Err(ConfigError::InvalidCapacity(
                "dedupe_window × dedupe_accounts must be below 2^30",
            ));
        }
        for (i, s) in self.instruments.iter().enumerate() {
            let bad = |problem| Err(ConfigError::InvalidInstrument { id: s.id, problem });
            if self.instruments[..i].iter().any(|o| o.id == s.id) {
                return Err(ConfigError::DuplicateInstrument(s.id));
            }
            if s.tick_size == 0 {
                return bad("tick_size must be > 0");
            }
            if s.lot_size == 0 {
                return bad("lot_size must be > 0");
            }
            if s.min_price == 0 || s.min_price > s.max_price {
                return bad("price band must satisfy 0 < min_price <= max_price");
            }
            if s.min_price % s.tick_size != 0 || s.max_price % s.tick_size != 0 {
                return bad("price band limits must be multiples of tick_size");
            }
            if s.band_ticks() > MAX_BAND_TICKS {
                return bad("price band spans more than MAX_BAND_TICKS ticks");
            }
            if s.max_qty == 0 || s.max_qty < s.lot_size {
                return bad("max_qty must be >= lot_size");
            }
            // A level's quantity is the sum of up to max_orders orders of up to max_qty each.
            if u128::from(s.max_qty) * u128::from(self.max_orders) > u128::from(u64::MAX) {
                return bad("max_qty × max_orders must fit in 64 bits (a level's total quantity)");
            }
        }
        Ok(())
    }
}
