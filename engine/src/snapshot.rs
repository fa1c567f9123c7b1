//! Canonical state encoding: [`Engine::snapshot`], [`Engine::restore`] and [`Engine::state_hash`]
//! share one writer, so the hash covers exactly what a snapshot carries.
//!
//! The encoding is logical (instruments, counters, the account slots in order with the free
//! list, and every resting order per book, side, level best-first, FIFO), not a memory dump:
//! it is independent of pool slot numbers and of the hash seed, so two engines with the same
//! history hash the same.
//!
//! Version 4 keeps a dedupe window per account (`dedupe_accounts`); version 3 adds
//! `max_orders_per_account` and the account free list; version 2 and 3 snapshots are still
//! read (their one dedupe window becomes per-account windows of the same total size; a version
//! 2 snapshot's accounts without orders are freed on restore).

use crate::book::NIL;
use crate::config::{EngineConfig, InstrumentSpec};
use crate::engine::{Engine, OrderNode};
use crate::types::{SelfTradePrevention, Side};

const MAGIC: &[u8; 8] = b"CALDSNP1";
/// Above this a snapshot's sequence or id counter is damage (see `restore_seeded`).
const MAX_COUNTER: u64 = 1 << 62;
const VERSION: u32 = 4;
/// Earlier versions, still restored.
const VERSION_3: u32 = 3;
const VERSION_2: u32 = 2;

/// Memory budget [`Engine::restore`] allows a snapshot's configuration (16 GiB).
pub const DEFAULT_RESTORE_MEMORY_LIMIT: u64 = 16 << 30;

/// A snapshot could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic.
    #[error("not a Caldera engine snapshot")]
    BadMagic,
    /// Written by an incompatible version.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u32),
    /// The bytes end early.
    #[error("snapshot truncated")]
    Truncated,
    /// Trailing bytes after the snapshot.
    #[error("{0} trailing bytes after the snapshot")]
    TrailingBytes(usize),
    /// The configuration inside is invalid.
    #[error("invalid configuration in snapshot: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The content is inconsistent.
    #[error("corrupt snapshot: {0}")]
    Corrupt(&'static str),
}

trait Out {
    fn u8(&mut self, v: u8);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
}

impl Out for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

/// 64-bit multiplicative hash over the canonical stream (deterministic on every platform).
struct StateHasher(u64);

impl StateHasher {
    #[inline]
    fn word(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29)
            ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Out for StateHasher {
    fn u8(&mut self, v: u8) {
        self.word(u64::from(v) | 0x100);
    }
    fn u32(&mut self, v: u32) {
        self.word(u64::from(v) | 0x1_0000_0000);
    }
    fn u64(&mut self, v: u64) {
        self.word(v);
    }
}

impl Engine {
    fn write_state(&self, w: &mut impl Out) {
        let c = &self.config;
        w.u32(VERSION);
        w.u32(c.max_orders);
        w.u32(c.max_accounts);
        // The seed is not state (layout is never observable) and must stay secret.
        w.u64(0);
        w.u32(c.dedupe_window);
        w.u32(c.dedupe_accounts);
        w.u32(c.max_orders_per_account);
        w.u32(c.instruments.len() as u32);
        for (s, book) in c.instruments.iter().zip(&self.books) {
            w.u32(s.id);
            w.u64(s.tick_size);
            w.u64(s.lot_size);
            w.u64(s.min_price);
            w.u64(s.max_price);
            w.u64(s.max_qty);
            w.u8(u8::from(book.halted));
        }
        w.u64(self.next_seq);
        w.u64(self.next_order_id);
        w.u64(self.next_trade_id);
        w.u32(self.accounts.len() as u32);
        for a in &self.accounts {
            w.u32(a.id);
            w.u8(u8::from(a.live > 0));
        }
        w.u32(self.free_accounts.len() as u32);
        for &f in &self.free_accounts {
            w.u32(f);
        }
        w.u32(self.recent_len() as u32);
        self.for_each_recent(|account, client_order_id, order_id| {
            w.u32(account);
            w.u64(client_order_id);
            w.u64(order_id);
        });
        for book in &self.books {
            for side in [Side::Buy, Side::Sell] {
                let s = book.side(side);
                let mut levels = 0u32;
                let mut i = s.best;
                while i != NIL {
                    levels += 1;
                    i = s.next_worse(i);
                }
                w.u32(levels);
                let mut i = s.best;
                while i != NIL {
                    let level = &s.levels[i as usize];
                    w.u64(book.price(i));
                    let mut n = 0u32;
                    let mut h = level.head;
                    while h != NIL {
                        n += 1;
                        h = self.orders[h as usize].next;
                    }
                    w.u32(n);
                    let mut h = level.head;
                    while h != NIL {
                        let o = &self.orders[h as usize];
                        w.u64(o.id);
                        w.u64(o.client_order_id);
                        w.u32(o.account);
                        w.u64(o.leaves);
                        w.u8(o.stp.as_u8());
                        w.u8(u8::from(o.post_only));
                        h = o.next;
                    }
                    i = s.next_worse(i);
                }
            }
        }
    }

    /// A hash of the whole logical state (configuration, counters, accounts, every resting order
    /// in queue order). Equal hashes mean the engines will behave identically from here on.
    /// Does not allocate.
    #[must_use]
    pub fn state_hash(&self) -> u64 {
        let mut h = StateHasher(0xcbf2_9ce4_8422_2325);
        self.write_state(&mut h);
        h.0
    }

    /// Serialises the whole state. [`Engine::restore`] rebuilds an engine with the same
    /// [`Engine::state_hash`] that behaves identically afterwards.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.snapshot_len_bound());
        self.snapshot_into(&mut v);
        v
    }

    /// [`Engine::snapshot`] into `out` (cleared first). Allocates nothing when `out` has room
    /// for [`Engine::snapshot_len_bound`] bytes, so the engine thread itself can take
    /// snapshots.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(MAGIC);
        self.write_state(out);
    }

    /// An upper bound of the length of [`Engine::snapshot`] for the current state.
    #[must_use]
    pub fn snapshot_len_bound(&self) -> usize {
        let instruments = self.config.instruments.len();
        MAGIC.len()
            + 44
            + instruments * 45
            + 24
            + 4
            + 5 * self.accounts.len()
            + 4
            + 4 * self.free_accounts.len()
            + 4
            + 20 * self.recent_len()
            // Per side a level count; per level (at most one per order) its price and length.
            + instruments * 2 * 4
            + self.live_orders as usize * (12 + 30)
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes, refusing configurations that would
    /// need more than [`DEFAULT_RESTORE_MEMORY_LIMIT`] bytes (see [`Engine::restore_with_limit`]).
    ///
    /// # Errors
    /// [`SnapshotError`] when the bytes are not a valid, consistent snapshot.
    /// The engine's hash seed is 0: use [`Engine::restore_seeded`] for a secret one.
    pub fn restore(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        Self::restore_seeded(bytes, DEFAULT_RESTORE_MEMORY_LIMIT, 0)
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes. The configuration inside is checked
    /// against `memory_limit` (bytes, estimated by [`EngineConfig::estimated_memory_bytes`])
    /// before anything is allocated, so damaged capacity fields give an error, not an abort.
    ///
    /// # Errors
    /// [`SnapshotError`] when the bytes are not a valid, consistent snapshot.
    pub fn restore_with_limit(bytes: &[u8], memory_limit: u64) -> Result<Engine, SnapshotError> {
        Self::restore_seeded(bytes, memory_limit, 0)
    }

    /// [`Engine::restore_with_limit`] with the hash seed the restored engine uses (snapshots
    /// carry none: see [`EngineConfig::hash_seed`]).
    ///
    /// # Errors
    /// [`SnapshotError`] when the bytes are not a valid, consistent snapshot.
    pub fn restore_seeded(
        bytes: &[u8],
        memory_limit: u64,
        hash_seed: u64,
    ) -> Result<Engine, SnapshotError> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = r.u32()?;
        if version != VERSION && version != VERSION_3 && version != VERSION_2 {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let max_orders = r.u32()?;
        let max_accounts = r.u32()?;
        let _written_seed = r.u64()?;
        let window = r.u32()?;
        // Version 4 keeps a window per account; earlier versions one window of `window`
        // orders for all accounts, restored as per-account windows of the same total size.
        let (dedupe_window, dedupe_accounts) = if version == VERSION {
            (window, r.u32()?)
        } else if window == 0 {
            (0, 0)
        } else {
            let per_account = window.min(1024);
            (per_account, (window / per_account).max(1))
        };
        let max_orders_per_account = if version >= VERSION_3 { r.u32()? } else { 0 };
        let n = r.u32()? as usize;
        if n > bytes.len() / 8 {
            return Err(SnapshotError::Truncated);
        }
        let mut instruments = Vec::with_capacity(n);
        let mut halted = Vec::with_capacity(n);
        for _ in 0..n {
            instruments.push(InstrumentSpec {
                id: r.u32()?,
                tick_size: r.u64()?,
                lot_size: r.u64()?,
                min_price: r.u64()?,
                max_price: r.u64()?,
                max_qty: r.u64()?,
            });
            halted.push(r.bool()?);
        }
        let config = EngineConfig {
            max_orders,
            max_accounts,
            hash_seed,
            dedupe_window,
            dedupe_accounts,
            max_orders_per_account,
            instruments,
        };
        config.validate()?;
        let needed = config.estimated_memory_bytes();
        if needed > memory_limit {
            return Err(crate::config::ConfigError::TooLarge {
                needed,
                limit: memory_limit,
            }
            .into());
        }
        let mut e = Engine::new(config)?;
        for (book, h) in e.books.iter_mut().zip(halted) {
            book.halted = h;
        }
        e.next_seq = r.u64()?;
        e.next_order_id = r.u64()?;
        e.next_trade_id = r.u64()?;
        // Counters far beyond anything reachable (2^62 events: centuries at 100M a second) are
        // damage; refusing them keeps every later sequence and id from overflowing.
        if [e.next_seq, e.next_order_id, e.next_trade_id]
            .iter()
            .any(|&c| c >= MAX_COUNTER)
        {
            return Err(SnapshotError::Corrupt(
                "sequence or id counter out of range",
            ));
        }
        let accounts = r.u32()?;
        if accounts > max_accounts {
            return Err(SnapshotError::Corrupt("more accounts than max_accounts"));
        }
        let mut slot_free = Vec::with_capacity(accounts as usize);
        for _ in 0..accounts {
            let id = r.u32()?;
            let live = if version >= VERSION_3 {
                r.bool()?
            } else {
                true
            };
            if live && e.account_slots_contains(id) {
                return Err(SnapshotError::Corrupt("duplicate account"));
            }
            e.restore_account_slot(id, live);
            slot_free.push(!live);
        }
        if version >= VERSION_3 {
            let free = r.u32()?;
            if free as usize != slot_free.iter().filter(|f| **f).count() {
                return Err(SnapshotError::Corrupt("free account list does not match"));
            }
            let mut seen = vec![false; slot_free.len()];
            for _ in 0..free {
                let f = r.u32()? as usize;
                if f >= slot_free.len() || !slot_free[f] || seen[f] {
                    return Err(SnapshotError::Corrupt("bad free account slot"));
                }
                seen[f] = true;
                e.free_accounts.push(f as u32);
            }
        }
        let recent = r.u32()?;
        if u64::from(recent) > u64::from(dedupe_window) * u64::from(dedupe_accounts) {
            return Err(SnapshotError::Corrupt(
                "dedupe window longer than configured",
            ));
        }
        for _ in 0..recent {
            let account = r.u32()?;
            let client_order_id = r.u64()?;
            let order_id = r.u64()?;
            if order_id == 0
                || order_id > e.next_order_id
                || e.recently_accepted(account, client_order_id).is_some()
            {
                return Err(SnapshotError::Corrupt("bad dedupe entry"));
            }
            e.remember(account, client_order_id, order_id);
        }
        let mut handles = Vec::with_capacity(e.live_orders as usize);
        for b in 0..e.books.len() {
            for side in [Side::Buy, Side::Sell] {
                let levels = r.u32()?;
                let mut last: Option<u64> = None;
                for _ in 0..levels {
                    let price = r.u64()?;
                    let spec = e.books[b].spec;
                    if price < spec.min_price
                        || price > spec.max_price
                        || price % spec.tick_size != 0
                        || last.is_some_and(|l| {
                            if side == Side::Buy {
                                price >= l
                            } else {
                                price <= l
                            }
                        })
                    {
                        return Err(SnapshotError::Corrupt("bad level price"));
                    }
                    last = Some(price);
                    let count = r.u32()?;
                    if count == 0 {
                        return Err(SnapshotError::Corrupt("empty level"));
                    }
                    for _ in 0..count {
                        let id = r.u64()?;
                        let client_order_id = r.u64()?;
                        let account = r.u32()?;
                        let leaves = r.u64()?;
                        let stp = SelfTradePrevention::from_u8(r.u8()?)
                            .ok_or(SnapshotError::Corrupt("bad stp mode"))?;
                        let post_only = r.bool()?;
                        if leaves == 0 || id == 0 || id > e.next_order_id {
                            return Err(SnapshotError::Corrupt("bad order"));
                        }
                        // Within the instrument's limits, so level sums cannot overflow.
                        if leaves > spec.max_qty || leaves % spec.lot_size != 0 {
                            return Err(SnapshotError::Corrupt("bad order quantity"));
                        }
                        if e.has_order_id(id) || e.has_client_id(account, client_order_id) {
                            return Err(SnapshotError::Corrupt("duplicate order"));
                        }
                        if e.symbol_index(spec.id).is_none() {
                            return Err(SnapshotError::Corrupt("unknown book"));
                        }
                        let node = OrderNode {
                            id,
                            client_order_id,
                            price,
                            leaves,
                            account,
                            account_slot: NIL,
                            book: b as u32,
                            prev: NIL,
                            next: NIL,
                            acct_prev: NIL,
                            acct_next: NIL,
                            side,
                            stp,
                            post_only,
                        };
                        let h = e
                            .restore_order(node)
                            .ok_or(SnapshotError::Corrupt("more orders than max_orders"))?;
                        handles.push((id, h, account));
                    }
                }
            }
        }
        if r.at != bytes.len() {
            return Err(SnapshotError::TrailingBytes(bytes.len() - r.at));
        }
        // Account lists are kept in ascending order id.
        handles.sort_unstable();
        for (_, h, account) in handles {
            if !e.account_slots_contains(account) {
                return Err(SnapshotError::Corrupt("order of an unregistered account"));
            }
            e.link_account(h);
        }
        if e.per_account_limit_exceeded() {
            return Err(SnapshotError::Corrupt(
                "an account above max_orders_per_account",
            ));
        }
        if version == VERSION {
            if e.accounts
                .iter()
                .enumerate()
                .any(|(slot, a)| a.live == 0 && e.account_slot_of(a.id) == Some(slot as u32))
            {
                return Err(SnapshotError::Corrupt("an account slot without orders"));
            }
        } else {
            // Version 2 kept every account that ever rested an order: free the empty ones.
            e.free_empty_account_slots();
        }
        for book in &e.books {
            if let (Some(b), Some(a)) = (book.best_price(Side::Buy), book.best_price(Side::Sell)) {
                if b >= a {
                    return Err(SnapshotError::Corrupt("crossed book"));
                }
            }
        }
        Ok(e)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).ok_or(SnapshotError::Truncated)?;
        let s = self.b.get(self.at..end).ok_or(SnapshotError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(SnapshotError::Corrupt("bad flag")),
        }
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}
