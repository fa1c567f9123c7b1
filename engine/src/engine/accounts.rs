//! Accounts: the table of accounts that rest orders, and each account's order list. A slot
//! lives while its account has a live order: an account without one takes no capacity.

//! The matching engine: applies [`Command`]s to the books and emits [`Event`]s.

use super::{AccountNode, Engine};
use crate::book::NIL;
use crate::types::AccountId;

impl Engine {
    /// Registers (if needed) the order's account and appends the order to the account's list.
    /// Capacity was checked before acceptance.
    pub(crate) fn link_account(&mut self, h: u32) {
        let account = self.orders[h as usize].account;
        let slot = self
            .account_slot(account)
            .expect("account capacity is checked before an order rests");
        let a = &mut self.accounts[slot as usize];
        a.live += 1;
        let tail = a.tail;
        a.tail = h;
        if tail == NIL {
            a.head = h;
        } else {
            self.orders[tail as usize].acct_next = h;
        }
        let o = &mut self.orders[h as usize];
        o.account_slot = slot;
        o.acct_prev = tail;
        o.acct_next = NIL;
    }

    /// The slot of `account`, registering it if new; `None` when the account table is full.
    pub(crate) fn account_slot(&mut self, account: AccountId) -> Option<u32> {
        if let Some(s) = self.account_slots.get(&account) {
            return Some(s);
        }
        let node = AccountNode {
            id: account,
            head: NIL,
            tail: NIL,
            live: 0,
        };
        let s = if let Some(s) = self.free_accounts.pop() {
            self.accounts[s as usize] = node;
            s
        } else if self.accounts.len() < self.config.max_accounts as usize {
            self.accounts.push(node);
            (self.accounts.len() - 1) as u32
        } else {
            return None;
        };
        self.account_slots.insert(account, s);
        Some(s)
    }

    /// Accounts holding a slot (with live orders).
    pub(crate) fn live_accounts(&self) -> usize {
        self.accounts.len() - self.free_accounts.len()
    }

    /// Live orders of `account` (0 when it has no slot).
    pub(crate) fn account_live_orders(&self, account: AccountId) -> u32 {
        self.account_slots
            .get(&account)
            .map_or(0, |s| self.accounts[s as usize].live)
    }

    pub(super) fn unlink_account(&mut self, h: u32) {
        let o = self.orders[h as usize];
        let a = &mut self.accounts[o.account_slot as usize];
        a.live -= 1;
        if a.live == 0 {
            // The account's last order: free the slot.
            a.head = NIL;
            a.tail = NIL;
            self.account_slots.remove(&o.account);
            self.free_accounts.push(o.account_slot);
            return;
        }
        if o.acct_prev == NIL {
            a.head = o.acct_next;
        }
        if o.acct_next == NIL {
            a.tail = o.acct_prev;
        }
        if o.acct_prev != NIL {
            self.orders[o.acct_prev as usize].acct_next = o.acct_next;
        }
        if o.acct_next != NIL {
            self.orders[o.acct_next as usize].acct_prev = o.acct_prev;
        }
    }

    /// Appends an account slot as a snapshot lists it (`live`: indexed; else a free slot whose
    /// place in the free list the snapshot gives next).
    pub(crate) fn restore_account_slot(&mut self, account: AccountId, live: bool) {
        self.accounts.push(AccountNode {
            id: account,
            head: NIL,
            tail: NIL,
            live: 0,
        });
        if live {
            self.account_slots
                .insert(account, (self.accounts.len() - 1) as u32);
        }
    }

    /// Frees the slots of accounts without live orders (restoring an older snapshot).
    pub(crate) fn free_empty_account_slots(&mut self) {
        for slot in 0..self.accounts.len() {
            let a = self.accounts[slot];
            if a.live == 0 && self.account_slots.get(&a.id) == Some(slot as u32) {
                self.account_slots.remove(&a.id);
                self.free_accounts.push(slot as u32);
            }
        }
    }

    /// Whether an account has more live orders than `max_orders_per_account` allows.
    pub(crate) fn per_account_limit_exceeded(&self) -> bool {
        let limit = self.config.max_orders_per_account;
        limit != 0 && self.accounts.iter().any(|a| a.live > limit)
    }
}
