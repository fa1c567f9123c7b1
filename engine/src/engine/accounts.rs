//! Accounts: the table of accounts that rest orders, and each account's order list.

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
        if self.accounts.len() >= self.config.max_accounts as usize {
            return None;
        }
        let s = self.accounts.len() as u32;
        self.accounts.push(AccountNode {
            id: account,
            head: NIL,
            tail: NIL,
        });
        self.account_slots.insert(account, s);
        Some(s)
    }

    pub(super) fn unlink_account(&mut self, h: u32) {
        let o = self.orders[h as usize];
        let a = &mut self.accounts[o.account_slot as usize];
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
}
