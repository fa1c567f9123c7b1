//! The dedupe window: recently accepted `(account, client order id)` pairs, so a resent order is
//! rejected as a duplicate instead of executed twice.

use super::Engine;
use crate::types::OrderId;

impl Engine {
    /// Adds an accepted order to the dedupe window, forgetting the oldest when it is full.
    #[inline]
    pub(crate) fn remember(&mut self, account: u32, client_order_id: u64, order_id: u64) {
        let w = self.recent.len();
        if w == 0 {
            return;
        }
        let at = (self.recent_head + self.recent_len) % w;
        if self.recent_len == w {
            let (a, c, _) = self.recent[self.recent_head];
            self.recent_ids.remove(&(a, c));
            self.recent_head = (self.recent_head + 1) % w;
        } else {
            self.recent_len += 1;
        }
        self.recent[at] = (account, client_order_id, order_id);
        self.recent_ids.insert((account, client_order_id), order_id);
    }

    /// The dedupe window, oldest first: `(account, client order id, order id)`. Reads the ring
    /// only (sequential memory), so a snapshot of a large window takes milliseconds, not a
    /// cache miss per entry.
    pub(crate) fn for_each_recent(&self, mut f: impl FnMut(u32, u64, u64)) {
        let w = self.recent.len();
        for i in 0..self.recent_len {
            let (a, c, id) = self.recent[(self.recent_head + i) % w];
            f(a, c, id);
        }
    }

    /// Whether `(account, client_order_id)` is in the dedupe window (a resend would be
    /// rejected as a duplicate), and the order id it was given.
    #[must_use]
    pub fn recently_accepted(&self, account: u32, client_order_id: u64) -> Option<OrderId> {
        self.recent_ids.get(&(account, client_order_id))
    }
}
