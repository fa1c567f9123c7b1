//! Order-entry sessions: one per ZeroMQ routing id, authenticated by the CURVE key of its
//! connection, bound to accounts by `Logon`, each with its own report sequence and its own
//! backlog of report frames a slow reader has not taken.
//!
//! Session rules (docs/protocol.md, "Sessions"):
//! - a `trade` session is logged on for at most one account; a `Logon` for another account is
//!   rejected with `AlreadyLoggedOn` (send `Logout` first); the latest `Logon` for an account
//!   wins, and the session that had it gets `LoggedOut{Replaced}`;
//! - a `read` session (drop copy) receives the reports of every account it logged on for,
//!   next to the trading session, and never takes an account from anyone;
//! - an `admin` session receives the venue's reports (account 0: instrument status, rejected
//!   admin requests) and the outcome of its own `CancelAll`s;
//! - a key that loses an entitlement (entitlements reloaded) gets `LoggedOut{Revoked}` for
//!   each account it lost; a key no longer listed can do nothing more.

use crate::counters::GatewayStats;
use caldera_auth::{Client, Guard, PublicKey, Role};
use caldera_schema::codec::{self, ServerReport};
use caldera_schema::map::VENUE;
use caldera_schema::wire;
use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// What a session's connection may do.
#[derive(Clone, Debug)]
pub(crate) enum Access {
    /// No authentication (`auth = "none"`): everything, as any account.
    Open,
    /// A listed key.
    Listed(Arc<Client>),
    /// A key that is not (or no longer) listed.
    Unlisted,
}

impl Access {
    fn role(&self) -> Option<Role> {
        match self {
            Access::Open => None,
            Access::Listed(c) => Some(c.role),
            Access::Unlisted => Some(Role::Peer),
        }
    }

    fn may_trade(&self, account: u32) -> bool {
        match self {
            Access::Open => account != VENUE,
            Access::Listed(c) => c.role == Role::Trade && c.may_use(account),
            Access::Unlisted => false,
        }
    }

    fn may_read(&self, account: u32) -> bool {
        match self {
            Access::Open => false,
            Access::Listed(c) => match c.role {
                Role::Read => c.may_use(account),
                Role::Admin => account == VENUE,
                Role::Trade | Role::Peer => false,
            },
            Access::Unlisted => false,
        }
    }

    /// Whether the key may enter orders at all (for some account).
    pub(crate) fn trades(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Listed(c) => c.role == Role::Trade,
            Access::Unlisted => false,
        }
    }

    pub(crate) fn may_admin(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Listed(c) => c.role == Role::Admin,
            Access::Unlisted => false,
        }
    }

    fn wire_role(&self) -> wire::SessionRole {
        match self.role() {
            None => wire::SessionRole::Open,
            Some(Role::Trade) => wire::SessionRole::Trade,
            Some(Role::Read) => wire::SessionRole::Read,
            Some(Role::Admin | Role::Peer) => wire::SessionRole::Admin,
        }
    }
}

struct Session {
    ident: Vec<u8>,
    /// The connection's `User-Id` (the Z85 text of its CURVE key); empty without
    /// authentication.
    user: Vec<u8>,
    key_id: u64,
    access: Access,
    /// The account a trading session is logged on for.
    account: Option<u32>,
    /// The accounts whose reports a read (or admin: the venue's) session receives.
    observing: Vec<u32>,
    next_seq: u64,
    out: Vec<ServerReport>,
    backlog: VecDeque<Vec<u8>>,
    dirty: bool,
    gone: bool,
}

/// Why a `Logon` or `Logout` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogonRefused {
    NotEntitled,
    AlreadyLoggedOn,
    NotLoggedOn,
}

/// Every session the gateway knows, indexed by routing id and by account.
pub(crate) struct Sessions {
    secure: bool,
    list: Vec<Session>,
    by_ident: HashMap<Vec<u8>, usize>,
    by_account: HashMap<u32, usize>,
    /// Read and admin sessions by the account whose reports they receive.
    observers: HashMap<u32, Vec<usize>>,
    /// Sessions with reports waiting to be framed.
    dirty: Vec<usize>,
    /// Sessions with report frames waiting in their backlog (retried every flush).
    backlogged: Vec<usize>,
    /// The frame being written (reused).
    frame: Vec<u8>,
}

enum SendResult {
    Sent,
    WouldBlock,
    Gone,
}

fn send_frame(router: &zmq::Socket, ident: &[u8], payload: &[u8]) -> SendResult {
    match router.send(ident, zmq::SNDMORE | zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return SendResult::WouldBlock,
        Err(_) => return SendResult::Gone,
    }
    match router.send(payload, zmq::DONTWAIT) {
        Ok(()) => SendResult::Sent,
        Err(_) => SendResult::Gone,
    }
}

fn queue(list: &mut [Session], dirty: &mut Vec<usize>, sid: usize, r: ServerReport) {
    let s = &mut list[sid];
    s.out.push(r);
    if !s.dirty {
        s.dirty = true;
        dirty.push(sid);
    }
}

fn logged_out(account: u32, reason: wire::LogoutReason) -> ServerReport {
    ServerReport::LoggedOut(wire::LoggedOut::new(account, reason))
}

impl Sessions {
    /// `secure`: connections are authenticated (CURVE); otherwise every session is
    /// [`Access::Open`].
    pub(crate) fn new(secure: bool) -> Self {
        Self {
            secure,
            list: Vec::new(),
            by_ident: HashMap::default(),
            by_account: HashMap::default(),
            observers: HashMap::default(),
            dirty: Vec::new(),
            backlogged: Vec::new(),
            frame: Vec::with_capacity(1 << 16),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The session of a routing id, created on its first frame.
    pub(crate) fn session_for(&mut self, ident: &[u8]) -> usize {
        if let Some(&s) = self.by_ident.get(ident) {
            self.list[s].gone = false;
            return s;
        }
        let s = self.list.len();
        self.list.push(Session {
            ident: ident.to_vec(),
            user: Vec::new(),
            key_id: 0,
            access: if self.secure {
                Access::Unlisted
            } else {
                Access::Open
            },
            account: None,
            observing: Vec::new(),
            next_seq: 1,
            out: Vec::with_capacity(256),
            backlog: VecDeque::new(),
            dirty: false,
            gone: false,
        });
        self.by_ident.insert(ident.to_vec(), s);
        s
    }

    /// Checks the `User-Id` of a frame from `sid` (the Z85 text of its connection's CURVE key,
    /// set by the ZAP handler) and returns the session's access. A routing id now used by
    /// another key (a client that chose its routing id and reconnected with another key)
    /// starts over: its logons are dropped.
    pub(crate) fn authenticate(
        &mut self,
        sid: usize,
        user: Option<&[u8]>,
        guard: Option<&Guard>,
    ) -> &Access {
        if !self.secure {
            return &self.list[sid].access;
        }
        let user = user.unwrap_or_default();
        if self.list[sid].user != user {
            self.drop_logons(sid, None);
            let key = std::str::from_utf8(user)
                .ok()
                .and_then(|u| PublicKey::from_z85(u, "User-Id").ok());
            let s = &mut self.list[sid];
            s.user = user.to_vec();
            s.key_id = key.map_or(0, |k| k.id());
            s.access = match (key, guard) {
                (Some(k), Some(g)) => g.client(&k).map_or(Access::Unlisted, Access::Listed),
                _ => Access::Unlisted,
            };
        }
        &self.list[sid].access
    }

    pub(crate) fn access(&self, sid: usize) -> &Access {
        &self.list[sid].access
    }

    pub(crate) fn account(&self, sid: usize) -> Option<u32> {
        self.list[sid].account
    }

    /// Report frames the session has not taken yet.
    pub(crate) fn backlog_len(&self, sid: usize) -> usize {
        self.list[sid].backlog.len()
    }

    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlogged.is_empty()
    }

    /// `Logon{account}` from `sid`, under the session rules (module docs).
    pub(crate) fn logon(&mut self, sid: usize, account: u32) -> Result<(), LogonRefused> {
        let access = &self.list[sid].access;
        if access.may_trade(account) {
            match self.list[sid].account {
                Some(a) if a != account => return Err(LogonRefused::AlreadyLoggedOn),
                _ => {}
            }
            if let Some(old) = self.by_account.insert(account, sid) {
                if old != sid {
                    self.list[old].account = None;
                    self.report(old, logged_out(account, wire::LogoutReason::Replaced));
                }
            }
            self.list[sid].account = Some(account);
        } else if access.may_read(account) || (matches!(access, Access::Open) && account == VENUE) {
            if !self.list[sid].observing.contains(&account) {
                self.list[sid].observing.push(account);
                self.observers.entry(account).or_default().push(sid);
            }
        } else {
            return Err(LogonRefused::NotEntitled);
        }
        self.report(sid, ServerReport::LoggedOn(wire::LoggedOn::new(account)));
        Ok(())
    }

    /// `Logout{account}` from `sid`.
    pub(crate) fn logout(&mut self, sid: usize, account: u32) -> Result<(), LogonRefused> {
        if self.list[sid].account == Some(account) {
            self.list[sid].account = None;
            if self.by_account.get(&account) == Some(&sid) {
                self.by_account.remove(&account);
            }
        } else if !self.stop_observing(sid, account) {
            return Err(LogonRefused::NotLoggedOn);
        }
        self.report(sid, logged_out(account, wire::LogoutReason::Requested));
        Ok(())
    }

    /// Makes an admin session receive the venue's reports (on its first admin request).
    pub(crate) fn observe_venue(&mut self, sid: usize) {
        if !self.list[sid].observing.contains(&VENUE) {
            self.list[sid].observing.push(VENUE);
            self.observers.entry(VENUE).or_default().push(sid);
        }
    }

    fn stop_observing(&mut self, sid: usize, account: u32) -> bool {
        let s = &mut self.list[sid];
        let Some(i) = s.observing.iter().position(|&a| a == account) else {
            return false;
        };
        s.observing.swap_remove(i);
        self.unlist_observer(sid, account);
        true
    }

    fn unlist_observer(&mut self, sid: usize, account: u32) {
        if let Some(v) = self.observers.get_mut(&account) {
            v.retain(|&x| x != sid);
            if v.is_empty() {
                self.observers.remove(&account);
            }
        }
    }

    /// Ends every logon of `sid`; with a reason, the session is told (`LoggedOut`) for each.
    fn drop_logons(&mut self, sid: usize, reason: Option<wire::LogoutReason>) {
        if let Some(a) = self.list[sid].account.take() {
            if self.by_account.get(&a) == Some(&sid) {
                self.by_account.remove(&a);
            }
            if let Some(r) = reason {
                self.report(sid, logged_out(a, r));
            }
        }
        for a in std::mem::take(&mut self.list[sid].observing) {
            self.unlist_observer(sid, a);
            if let Some(r) = reason {
                self.report(sid, logged_out(a, r));
            }
        }
    }

    /// The entitlements changed: every session takes its key's new entitlement, and loses
    /// (with `LoggedOut{Revoked}`) each logon it no longer has. Returns the sessions that
    /// lost something.
    pub(crate) fn revalidate(&mut self, guard: &Guard) -> usize {
        let mut changed = 0;
        for sid in 0..self.list.len() {
            let s = &self.list[sid];
            if s.user.is_empty() {
                continue;
            }
            let Some(key) = std::str::from_utf8(&s.user)
                .ok()
                .and_then(|u| PublicKey::from_z85(u, "User-Id").ok())
            else {
                continue;
            };
            let access = guard.client(&key).map_or(Access::Unlisted, Access::Listed);
            let mut lost = Vec::new();
            if let Some(a) = s.account {
                if !access.may_trade(a) {
                    lost.push(a);
                }
            }
            lost.extend(s.observing.iter().copied().filter(|&a| !access.may_read(a)));
            self.list[sid].access = access;
            if lost.is_empty() {
                continue;
            }
            changed += 1;
            for a in lost {
                if self.list[sid].account == Some(a) {
                    self.list[sid].account = None;
                    if self.by_account.get(&a) == Some(&sid) {
                        self.by_account.remove(&a);
                    }
                } else {
                    self.stop_observing(sid, a);
                }
                self.report(sid, logged_out(a, wire::LogoutReason::Revoked));
            }
        }
        changed
    }

    /// One `SessionInfo` per session (and per account a read session receives), to `sid`.
    pub(crate) fn list_sessions(&mut self, sid: usize, request_id: u64) {
        let mut rows = Vec::new();
        for (index, s) in self.list.iter().enumerate() {
            let role = s.access.wire_role();
            let sent = s.next_seq - 1;
            let backlog = u32::try_from(s.backlog.len()).unwrap_or(u32::MAX);
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let mut accounts: Vec<(u32, bool)> = s.account.iter().map(|&a| (a, true)).collect();
            accounts.extend(s.observing.iter().map(|&a| (a, true)));
            if accounts.is_empty() {
                accounts.push((0, false));
            }
            for (account, logged_on) in accounts {
                rows.push((s.key_id, sent, account, index, backlog, role, logged_on));
            }
        }
        let count = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        for (key_id, sent, account, index, backlog, role, logged_on) in rows {
            self.report(
                sid,
                ServerReport::SessionInfo(wire::SessionInfo::new(
                    request_id, key_id, sent, account, index, count, backlog, role, logged_on,
                )),
            );
        }
    }

    /// Queues a report for the session's next frame.
    pub(crate) fn report(&mut self, sid: usize, r: ServerReport) {
        queue(&mut self.list, &mut self.dirty, sid, r);
    }

    /// Queues a report for the session logged on for `account` and for the sessions that
    /// receive its reports; false when no session trades it (the report is undeliverable to
    /// its owner).
    pub(crate) fn report_to_account(&mut self, account: u32, r: ServerReport) -> bool {
        if !self.observers.is_empty() {
            if let Some(obs) = self.observers.get(&account) {
                for &sid in obs {
                    queue(&mut self.list, &mut self.dirty, sid, r);
                }
            }
        }
        match self.by_account.get(&account) {
            Some(&sid) => {
                self.report(sid, r);
                true
            }
            None => account == VENUE,
        }
    }

    /// Sends every session's pending reports as one frame per session, then retries the
    /// backlogs in order (only sessions that have one are visited).
    pub(crate) fn flush(&mut self, router: &zmq::Socket, stats: &mut GatewayStats) {
        let dirty = std::mem::take(&mut self.dirty);
        for &sid in &dirty {
            let s = &mut self.list[sid];
            s.dirty = false;
            if s.out.is_empty() {
                continue;
            }
            let first = s.next_seq;
            s.next_seq += s.out.len() as u64;
            stats.reports += s.out.len() as u64;
            codec::write_report_batch(&mut self.frame, first, &s.out);
            let bytes = &self.frame[..];
            s.out.clear();
            if s.backlog.is_empty() && !s.gone {
                match send_frame(router, &s.ident, bytes) {
                    SendResult::Sent => {
                        stats.report_frames += 1;
                        continue;
                    }
                    SendResult::WouldBlock => {
                        s.backlog.push_back(bytes.to_vec());
                        self.backlogged.push(sid);
                    }
                    SendResult::Gone => {
                        s.gone = true;
                        stats.undeliverable += s.next_seq - first;
                    }
                }
            } else if !s.gone {
                // Already backlogged (and listed): keep the order.
                s.backlog.push_back(bytes.to_vec());
            } else {
                stats.undeliverable += s.next_seq - first;
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        let list = &mut self.list;
        self.backlogged.retain(|&sid| {
            let s = &mut list[sid];
            while let Some(front) = s.backlog.front() {
                if s.gone {
                    s.backlog.clear();
                    break;
                }
                match send_frame(router, &s.ident, front) {
                    SendResult::Sent => {
                        stats.report_frames += 1;
                        s.backlog.pop_front();
                    }
                    SendResult::WouldBlock => break,
                    SendResult::Gone => s.gone = true,
                }
            }
            !s.backlog.is_empty()
        });
    }
}
