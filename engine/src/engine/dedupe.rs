//! The dedupe window: each account's most recently accepted `(client order id, order id)`
//! pairs, so a resent order is rejected as a duplicate instead of executed twice.
//!
//! The window is per account, so no account's traffic can push another's orders out of it:
//! every account has its own ring of the last `dedupe_window` orders it had accepted. Rings are
//! kept for the `dedupe_accounts` accounts that had an order accepted most recently (least
//! recently used first out, the whole ring at once). Everything is preallocated: remembering
//! an order never allocates.
//!
//! Each window has its own small hash table of client order ids. An account's lookups,
//! inserts and evictions stay in its own table (48 KiB for a window of 1024), which stays in
//! cache while the account is active, instead of landing at random in one table sized for
//! every window at once (64 MiB by default). It also keeps one account's ids from lengthening
//! another's probes.

use super::Engine;
use crate::fixed_map::FixedMap;
use crate::types::OrderId;

const NONE: u32 = u32::MAX;

/// One account's ring of remembered orders, linked into the recency list.
#[derive(Clone, Copy, Debug)]
struct Window {
    account: u32,
    /// Oldest entry, as an offset in the window's slice of `entries`.
    head: u32,
    len: u32,
    /// Less and more recently used windows.
    older: u32,
    newer: u32,
}

/// Per-account dedupe windows (see the module docs).
#[derive(Clone)]
pub(crate) struct Dedupe {
    /// Orders remembered per account.
    per_account: usize,
    /// `per_account` slots per window: `(client order id, order id)`.
    entries: Box<[(u64, u64)]>,
    windows: Box<[Window]>,
    /// Windows handed out so far (the rest were never used).
    used: usize,
    /// Least and most recently used windows.
    oldest: u32,
    newest: u32,
    by_account: FixedMap<u32, u32>,
    /// One table per window: client order id → order id.
    ids: Box<[FixedMap<u64, u64>]>,
}

impl Dedupe {
    /// Windows of `per_account` orders for `accounts` accounts (0 of either: no window).
    pub(crate) fn new(per_account: u32, accounts: u32, seed: u64) -> Self {
        let (k, m) = if per_account == 0 || accounts == 0 {
            (0, 0)
        } else {
            (per_account as usize, accounts as usize)
        };
        Self {
            per_account: k,
            entries: vec![(0, 0); k * m].into_boxed_slice(),
            windows: vec![
                Window {
                    account: 0,
                    head: 0,
                    len: 0,
                    older: NONE,
                    newer: NONE,
                };
                m
            ]
            .into_boxed_slice(),
            used: 0,
            oldest: NONE,
            newest: NONE,
            by_account: FixedMap::with_limit(m.max(1), seed.rotate_left(11)),
            ids: (0..m)
                .map(|_| FixedMap::with_limit(k, seed.rotate_left(53)))
                .collect(),
        }
    }

    /// The order id `(account, client_order_id)` was accepted as, if remembered.
    #[inline]
    pub(crate) fn get(&self, account: u32, client_order_id: u64) -> Option<u64> {
        let w = self.by_account.get(&account)?;
        self.ids[w as usize].get(&client_order_id)
    }

    /// Starts loading the slots that accepting `(account, client_order_id)` reads: its own,
    /// and the one of the order it would push out of a full window.
    #[inline]
    pub(crate) fn prefetch(&self, account: u32, client_order_id: u64) {
        let Some(w) = self.by_account.get(&account) else {
            return;
        };
        let table = &self.ids[w as usize];
        table.prefetch(&client_order_id);
        let win = &self.windows[w as usize];
        if win.len as usize == self.per_account {
            let (oldest, _) = self.entries[w as usize * self.per_account + win.head as usize];
            table.prefetch(&oldest);
        }
    }

    /// Takes `w` out of the recency list.
    fn unlink(&mut self, w: u32) {
        let Window { older, newer, .. } = self.windows[w as usize];
        if older == NONE {
            self.oldest = newer;
        } else {
            self.windows[older as usize].newer = newer;
        }
        if newer == NONE {
            self.newest = older;
        } else {
            self.windows[newer as usize].older = older;
        }
    }

    /// Puts `w` at the most recently used end.
    fn link_newest(&mut self, w: u32) {
        let prev = self.newest;
        self.windows[w as usize].older = prev;
        self.windows[w as usize].newer = NONE;
        if prev == NONE {
            self.oldest = w;
        } else {
            self.windows[prev as usize].newer = w;
        }
        self.newest = w;
    }

    /// The window of `account`, taking the least recently used one when it has none.
    fn window_of(&mut self, account: u32) -> u32 {
        if let Some(w) = self.by_account.get(&account) {
            if self.newest != w {
                self.unlink(w);
                self.link_newest(w);
            }
            return w;
        }
        let w = if self.used < self.windows.len() {
            self.used += 1;
            (self.used - 1) as u32
        } else {
            // Every window is in use: the least recently used account's is forgotten.
            let w = self.oldest;
            let old = self.windows[w as usize];
            self.ids[w as usize].clear();
            self.by_account.remove(&old.account);
            self.unlink(w);
            w
        };
        self.windows[w as usize] = Window {
            account,
            head: 0,
            len: 0,
            older: NONE,
            newer: NONE,
        };
        self.by_account.insert(account, w);
        self.link_newest(w);
        w
    }

    /// Remembers an accepted order, forgetting the account's oldest when its window is full.
    pub(crate) fn remember(&mut self, account: u32, client_order_id: u64, order_id: u64) {
        let k = self.per_account;
        if k == 0 {
            return;
        }
        let w = self.window_of(account);
        let base = w as usize * k;
        let win = &mut self.windows[w as usize];
        let table = &mut self.ids[w as usize];
        if win.len as usize == k {
            let (c, _) = self.entries[base + win.head as usize];
            table.remove(&c);
            win.head = ((win.head as usize + 1) % k) as u32;
            win.len -= 1;
        }
        let at = base + (win.head as usize + win.len as usize) % k;
        win.len += 1;
        self.entries[at] = (client_order_id, order_id);
        // Never full: the table holds up to `k` ids and the ring keeps at most `k`.
        let fitted = table.insert(client_order_id, order_id);
        debug_assert!(fitted, "a dedupe table holds its window");
    }

    /// Orders remembered, all accounts (counted when asked: only snapshots ask).
    pub(crate) fn len(&self) -> usize {
        self.windows[..self.used]
            .iter()
            .map(|w| w.len as usize)
            .sum()
    }

    /// Every remembered order as `(account, client order id, order id)`: accounts least
    /// recently used first, each account's oldest first. Remembering them in this order
    /// rebuilds the same windows.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32, u64, u64)) {
        let k = self.per_account;
        let mut w = self.oldest;
        while w != NONE {
            let win = self.windows[w as usize];
            let base = w as usize * k;
            for i in 0..win.len as usize {
                let (c, id) = self.entries[base + (win.head as usize + i) % k];
                f(win.account, c, id);
            }
            w = win.newer;
        }
    }
}

impl Engine {
    /// Adds an accepted order to its account's dedupe window.
    #[inline]
    pub(crate) fn remember(&mut self, account: u32, client_order_id: u64, order_id: u64) {
        self.dedupe.remember(account, client_order_id, order_id);
    }

    /// The dedupe windows: `(account, client order id, order id)`, accounts least recently
    /// used first, each account's oldest first.
    pub(crate) fn for_each_recent(&self, f: impl FnMut(u32, u64, u64)) {
        self.dedupe.for_each(f);
    }

    /// Orders in the dedupe windows.
    pub(crate) fn recent_len(&self) -> usize {
        self.dedupe.len()
    }

    /// Whether `(account, client_order_id)` is in the dedupe window (a resend would be
    /// rejected as a duplicate), and the order id it was given.
    #[must_use]
    pub fn recently_accepted(&self, account: u32, client_order_id: u64) -> Option<OrderId> {
        self.dedupe.get(account, client_order_id)
    }
}
