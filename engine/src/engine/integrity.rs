//! Integrity checks of every internal invariant (tests, and after restore).

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::Engine;
use crate::book::NIL;
use crate::fixed_map::OrderKey;
use crate::types::{Price, Side};

impl Engine {
    /// Checks every internal invariant; used by tests and after restore.
    ///
    /// # Errors
    /// A description of the first violated invariant.
    pub fn check_integrity(&self) -> Result<(), String> {
        let mut counted = 0u32;
        for book in &self.books {
            for side in [Side::Buy, Side::Sell] {
                let s = book.side(side);
                if !s.sums_consistent() {
                    return Err(format!(
                        "book {} {side:?}: block or group quantity sums disagree with the levels",
                        book.spec.id
                    ));
                }
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
                        if self.by_id.get(&OrderKey(o.id)) != Some(h)
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
        let mut free = vec![false; self.accounts.len()];
        for &f in &self.free_accounts {
            let Some(slot) = free.get_mut(f as usize) else {
                return Err(format!("free account slot {f} out of range"));
            };
            if *slot {
                return Err(format!("account slot {f} freed twice"));
            }
            *slot = true;
        }
        for (slot, a) in self.accounts.iter().enumerate() {
            if free[slot] {
                if a.live != 0 || a.head != NIL {
                    return Err(format!("free account slot {slot} holds orders"));
                }
                continue;
            }
            if self.account_slots.get(&a.id) != Some(slot as u32) {
                return Err(format!("account {} not indexed at its slot", a.id));
            }
            if a.live == 0 {
                return Err(format!(
                    "account {} holds a slot without a live order",
                    a.id
                ));
            }
            let (mut h, mut last_id, mut n) = (a.head, 0, 0u32);
            while h != NIL {
                let o = &self.orders[h as usize];
                if o.account != a.id || o.id <= last_id || o.account_slot != slot as u32 {
                    return Err(format!("account {} list out of order", a.id));
                }
                last_id = o.id;
                in_lists += 1;
                n += 1;
                h = o.acct_next;
            }
            if n != a.live {
                return Err(format!(
                    "account {} counts {} live orders, lists {n}",
                    a.id, a.live
                ));
            }
        }
        if in_lists != counted {
            return Err("account lists do not cover every order".into());
        }
        if self.account_slots.len() != self.live_accounts() {
            return Err("account index and slots disagree".into());
        }
        Ok(())
    }
}
