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
//!
//! Memory is bounded (docs/operations.md, "Limits"): a session ends when its connection drops
//! (libzmq's router notification), when it has been idle and not logged on for
//! `session_idle_timeout_ms`, or when the report frames it has not read exceed
//! `max_session_backlog_bytes` (its queued reports are discarded — they stay in the journal —
//! and its next frame starts a new session). At most `max_sessions` sessions exist, and at most
//! `max_sessions_per_peer` from one IP address; beyond, frames get `SessionLimit`.

use crate::counters::GatewayStats;
use caldera_auth::{Client, Guard, PublicKey, Role};
use caldera_schema::codec::{self, ServerReport};
use caldera_schema::map::VENUE;
use caldera_schema::wire;
use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The account a `read` key entitled to every account (`"*"`) logs on for to receive every
/// account's reports (a drop copy of the whole venue).
pub(crate) const ALL_ACCOUNTS: u32 = u32::MAX;

/// Most reports in one report frame (a large mass cancel is sent as several frames): bounds
/// what one frame in libzmq's queue can weigh.
pub(crate) const MAX_REPORTS_PER_FRAME: usize = 1024;

/// The limits on sessions ([`crate::GatewayConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionLimits {
    /// Requests a second a session may send (0 = no limit) and how many it may save up.
    pub(crate) rate: u64,
    pub(crate) burst: u64,
    pub(crate) max_sessions: usize,
    pub(crate) max_per_peer: usize,
    pub(crate) max_backlog_bytes: usize,
    pub(crate) idle_timeout: std::time::Duration,
}

/// Why a session ended (counted in `caldera_sessions_closed_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Its connection dropped.
    Disconnected = 0,
    /// Idle and never logged on.
    Idle = 1,
    /// It did not read its reports: the unread backlog passed `max_session_backlog_bytes`.
    Backlog = 2,
}

impl SessionEnd {
    /// Every reason, in order.
    pub const ALL: [SessionEnd; 3] = [
        SessionEnd::Disconnected,
        SessionEnd::Idle,
        SessionEnd::Backlog,
    ];

    /// Its label value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SessionEnd::Disconnected => "disconnected",
            SessionEnd::Idle => "idle",
            SessionEnd::Backlog => "backlog",
        }
    }
}

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
    /// False for a free slot (its session ended; reused by the next new session).
    live: bool,
    /// Increases every time the slot is reused (see [`SessionRef`]).
    generation: u32,
    ident: Vec<u8>,
    /// The connection's IP address (`Peer-Address`), for the per-peer limit.
    peer: Vec<u8>,
    last_frame: Instant,
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
    /// A resend for one account (`LogonWith{RESEND}`, see [`crate::resend`]).
    resume: Resume,
    /// The account's live reports held back while its resend runs, with their event sequence.
    held: Vec<(u64, ServerReport)>,
    /// Cancel the trading account's resting orders when the session ends or logs out.
    cancel_on_disconnect: bool,
    backlog: VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    bucket: Bucket,
    dirty: bool,
    gone: bool,
}

/// Where a session's resend stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resume {
    /// No resend asked for.
    None,
    /// A resend of `account`'s reports runs: its live reports are held back.
    Holding { account: u32 },
    /// A resend of `account` covered every event up to `through`: later live reports of
    /// events at or below it are not sent again.
    Done { account: u32, through: u64 },
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Integer arithmetic in
/// nanoseconds, so it never drifts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    /// Tokens × 1e9 (nanosecond-tokens).
    level: u128,
    last: Instant,
}

impl Bucket {
    fn full(burst: u64, now: Instant) -> Self {
        Self {
            level: u128::from(burst) * 1_000_000_000,
            last: now,
        }
    }

    /// Takes one token; false when there is none (the request is throttled).
    fn take(&mut self, rate: u64, burst: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = now;
        let cap = u128::from(burst) * 1_000_000_000;
        self.level = (self.level + elapsed * u128::from(rate)).min(cap);
        if self.level >= 1_000_000_000 {
            self.level -= 1_000_000_000;
            true
        } else {
            false
        }
    }
}

/// A session slot and its generation: refers to that session only, not to a later one that
/// reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionRef {
    pub(crate) sid: usize,
    generation: u32,
}

/// Why a `Logon` or `Logout` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogonRefused {
    NotEntitled,
    AlreadyLoggedOn,
    NotLoggedOn,
    InvalidAccount,
}

/// Every session the gateway knows, indexed by routing id and by account.
pub(crate) struct Sessions {
    secure: bool,
    limits: SessionLimits,
    list: Vec<Session>,
    /// Free slots of `list`.
    free: Vec<usize>,
    live: usize,
    by_peer: HashMap<Vec<u8>, usize>,
    /// Sessions ended, by [`SessionEnd`].
    pub(crate) ended: [u64; 3],
    next_sweep: Instant,
    by_ident: HashMap<Vec<u8>, usize>,
    by_account: HashMap<u32, usize>,
    /// Read and admin sessions by the account whose reports they receive.
    observers: HashMap<u32, Vec<usize>>,
    /// Accounts to mass-cancel: their cancel-on-disconnect session ended or logged out.
    disconnect_cancels: VecDeque<u32>,
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

/// Queues an engine report (of event `seq`, for `account`) for `sid`, unless the session's
/// resend holds it back or already sent it.
fn deliver(
    list: &mut [Session],
    dirty: &mut Vec<usize>,
    sid: usize,
    account: u32,
    seq: u64,
    r: ServerReport,
) {
    let s = &mut list[sid];
    match s.resume {
        Resume::None => {}
        Resume::Holding { account: a } if a == account || a == ALL_ACCOUNTS => {
            return s.held.push((seq, r));
        }
        Resume::Done {
            account: a,
            through,
        } if (a == account || a == ALL_ACCOUNTS) && seq <= through => return,
        Resume::Holding { .. } | Resume::Done { .. } => {}
    }
    queue(list, dirty, sid, r);
}

fn queue(list: &mut [Session], dirty: &mut Vec<usize>, sid: usize, r: ServerReport) {
    let s = &mut list[sid];
    s.out.push(r);
    if !s.dirty {
        s.dirty = true;
        dirty.push(sid);
    }
}

/// Frames `reports` for session `s` (slot `sid`) — one frame per [`MAX_REPORTS_PER_FRAME`],
/// marked `resent` or not — and sends them, or keeps them in its backlog behind earlier
/// frames. Returns true when the backlog passed `max_backlog_bytes` (the session must end).
#[allow(clippy::too_many_arguments)] // the parts of `Sessions` one frame touches
fn emit(
    s: &mut Session,
    sid: usize,
    frame: &mut Vec<u8>,
    backlogged: &mut Vec<usize>,
    max_backlog_bytes: usize,
    router: &zmq::Socket,
    stats: &mut GatewayStats,
    reports: &[ServerReport],
    resent: bool,
) -> bool {
    let mut start = 0;
    while start < reports.len() {
        let end = (start + MAX_REPORTS_PER_FRAME).min(reports.len());
        let first = s.next_seq;
        let n = (end - start) as u64;
        s.next_seq += n;
        stats.reports += n;
        codec::write_report_frame(frame, first, &reports[start..end], resent);
        start = end;
        let bytes = &frame[..];
        if s.gone {
            stats.undeliverable += n;
            continue;
        }
        if s.backlog.is_empty() {
            match send_frame(router, &s.ident, bytes) {
                SendResult::Sent => {
                    stats.report_frames += 1;
                    continue;
                }
                SendResult::WouldBlock => backlogged.push(sid),
                SendResult::Gone => {
                    s.gone = true;
                    stats.undeliverable += n;
                    continue;
                }
            }
        }
        // Behind earlier frames (already listed in `backlogged`): keep the order.
        s.backlog_bytes += bytes.len();
        s.backlog.push_back(bytes.to_vec());
        if s.backlog_bytes > max_backlog_bytes {
            return true;
        }
    }
    false
}

fn logged_out(account: u32, reason: wire::LogoutReason) -> ServerReport {
    ServerReport::LoggedOut(wire::LoggedOut::new(account, reason))
}

impl Sessions {
    /// `secure`: connections are authenticated (CURVE); otherwise every session is
    /// [`Access::Open`].
    pub(crate) fn new(secure: bool, limits: SessionLimits) -> Self {
        Self {
            secure,
            limits,
            list: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_peer: HashMap::default(),
            ended: [0; 3],
            next_sweep: Instant::now(),
            by_ident: HashMap::default(),
            by_account: HashMap::default(),
            observers: HashMap::default(),
            disconnect_cancels: VecDeque::new(),
            dirty: Vec::new(),
            backlogged: Vec::new(),
            frame: Vec::with_capacity(1 << 16),
        }
    }

    /// Live sessions.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// The session of a routing id, if it has one.
    pub(crate) fn find(&self, ident: &[u8]) -> Option<usize> {
        self.by_ident.get(ident).copied()
    }

    /// The session of a routing id, created on its first frame; `None` when the session limits
    /// are reached (`peer`: the connection's IP address).
    pub(crate) fn session_for(&mut self, ident: &[u8], peer: &[u8], now: Instant) -> Option<usize> {
        if let Some(&s) = self.by_ident.get(ident) {
            let x = &mut self.list[s];
            x.gone = false;
            x.last_frame = now;
            return Some(s);
        }
        let per_peer = self.by_peer.get(peer).copied().unwrap_or(0);
        if self.live >= self.limits.max_sessions || per_peer >= self.limits.max_per_peer {
            return None;
        }
        let access = if self.secure {
            Access::Unlisted
        } else {
            Access::Open
        };
        let s = if let Some(s) = self.free.pop() {
            let x = &mut self.list[s];
            x.live = true;
            x.generation = x.generation.wrapping_add(1);
            x.ident.clear();
            x.ident.extend_from_slice(ident);
            x.peer.clear();
            x.peer.extend_from_slice(peer);
            x.last_frame = now;
            x.user.clear();
            x.key_id = 0;
            x.access = access;
            x.account = None;
            x.observing.clear();
            x.next_seq = 1;
            x.out.clear();
            x.resume = Resume::None;
            x.held.clear();
            x.cancel_on_disconnect = false;
            x.backlog.clear();
            x.backlog_bytes = 0;
            x.bucket = Bucket::full(self.limits.burst, now);
            x.dirty = false;
            x.gone = false;
            s
        } else {
            self.list.push(Session {
                live: true,
                generation: 0,
                ident: ident.to_vec(),
                peer: peer.to_vec(),
                last_frame: now,
                user: Vec::new(),
                key_id: 0,
                access,
                account: None,
                observing: Vec::new(),
                next_seq: 1,
                out: Vec::with_capacity(8),
                resume: Resume::None,
                held: Vec::new(),
                cancel_on_disconnect: false,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                bucket: Bucket::full(self.limits.burst, now),
                dirty: false,
                gone: false,
            });
            self.list.len() - 1
        };
        self.by_ident.insert(ident.to_vec(), s);
        *self.by_peer.entry(peer.to_vec()).or_default() += 1;
        self.live += 1;
        Some(s)
    }

    /// The session sent a frame now; returns `sid`.
    pub(crate) fn touch(&mut self, sid: usize, now: Instant) -> usize {
        let s = &mut self.list[sid];
        s.gone = false;
        s.last_frame = now;
        sid
    }

    /// Whether new order entry from `sid` gets `Busy`: `max_frames` report frames, or half
    /// of `max_session_backlog_bytes`, are waiting for it to read.
    pub(crate) fn busy(&self, sid: usize, max_frames: usize) -> bool {
        let s = &self.list[sid];
        s.backlog.len() >= max_frames || s.backlog_bytes >= self.limits.max_backlog_bytes / 2
    }

    /// Whether `sid` may send one more request now (its rate limit); false = `Throttled`.
    pub(crate) fn admit(&mut self, sid: usize, now: Instant) -> bool {
        let l = self.limits;
        l.rate == 0 || self.list[sid].bucket.take(l.rate, l.burst, now)
    }

    /// A reference to the session in slot `sid` as it is now.
    pub(crate) fn reference(&self, sid: usize) -> SessionRef {
        SessionRef {
            sid,
            generation: self.list[sid].generation,
        }
    }

    /// Whether `r` still names a live session.
    pub(crate) fn is_current(&self, r: SessionRef) -> bool {
        let s = &self.list[r.sid];
        s.live && s.generation == r.generation
    }

    /// Ends session `sid`: its logons end, its queued reports are discarded (counted as
    /// undeliverable), its slot is freed. Its connection, if still open, starts a new session
    /// with its next frame.
    pub(crate) fn end(&mut self, sid: usize, why: SessionEnd, stats: &mut GatewayStats) {
        if !self.list[sid].live {
            return;
        }
        self.cancel_if_asked(sid);
        self.drop_logons(sid, None);
        let s = &mut self.list[sid];
        stats.undeliverable += (s.out.len() + s.held.len()) as u64;
        s.out.clear();
        s.held.clear();
        s.resume = Resume::None;
        s.backlog.clear();
        s.backlog_bytes = 0;
        s.live = false;
        let ident = std::mem::take(&mut s.ident);
        let peer = std::mem::take(&mut s.peer);
        if self.by_ident.get(&ident) == Some(&sid) {
            self.by_ident.remove(&ident);
        }
        if let Some(n) = self.by_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.by_peer.remove(&peer);
            }
        }
        // Keep the buffers' memory for the next session of this slot.
        let s = &mut self.list[sid];
        s.ident = ident;
        s.peer = peer;
        self.free.push(sid);
        self.live -= 1;
        self.ended[why as usize] += 1;
    }

    /// Ends the sessions that never logged on and sent nothing for the idle timeout (checked
    /// once a second).
    pub(crate) fn sweep_idle(&mut self, now: Instant, stats: &mut GatewayStats) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + std::time::Duration::from_secs(1);
        let timeout = self.limits.idle_timeout;
        for sid in 0..self.list.len() {
            let s = &self.list[sid];
            if s.live
                && s.account.is_none()
                && s.observing.is_empty()
                && s.backlog.is_empty()
                && now.duration_since(s.last_frame) >= timeout
            {
                self.end(sid, SessionEnd::Idle, stats);
            }
        }
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

    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlogged.is_empty()
    }

    /// `Logon{account}` from `sid`, under the session rules (module docs).
    pub(crate) fn logon(&mut self, sid: usize, account: u32) -> Result<(), LogonRefused> {
        let access = &self.list[sid].access;
        // 0 is the venue's (admins only); u32::MAX is every account, for a read key entitled to
        // all ("*").
        if (account == ALL_ACCOUNTS && !access.may_read(ALL_ACCOUNTS))
            || (account == VENUE && !access.may_admin())
        {
            return Err(LogonRefused::InvalidAccount);
        }
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
            self.cancel_if_asked(sid);
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

    /// Asks (or stops asking) for the session's trading account to be cancelled when it ends
    /// or logs out.
    pub(crate) fn set_cancel_on_disconnect(&mut self, sid: usize, on: bool) {
        self.list[sid].cancel_on_disconnect = on;
    }

    /// The session ends or logs out: a cancel-on-disconnect session's trading account is
    /// queued for a mass cancel (once: the option ends with it).
    fn cancel_if_asked(&mut self, sid: usize) {
        let s = &mut self.list[sid];
        if std::mem::take(&mut s.cancel_on_disconnect) {
            if let Some(account) = s.account {
                self.disconnect_cancels.push_back(account);
            }
        }
    }

    /// Whether mass cancels for ended cancel-on-disconnect sessions wait to be sent.
    pub(crate) fn has_disconnect_cancels(&self) -> bool {
        !self.disconnect_cancels.is_empty()
    }

    /// The next account to mass-cancel (see [`Sessions::pop_disconnect_cancel`]).
    pub(crate) fn next_disconnect_cancel(&self) -> Option<u32> {
        self.disconnect_cancels.front().copied()
    }

    /// The account returned by [`Sessions::next_disconnect_cancel`] was handled.
    pub(crate) fn pop_disconnect_cancel(&mut self) {
        self.disconnect_cancels.pop_front();
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
            if !s.live || s.user.is_empty() {
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
        for (index, s) in self.list.iter().enumerate().filter(|(_, s)| s.live) {
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

    /// Queues a report of event `seq` for the session logged on for `account` and for the
    /// sessions that receive its reports; false when no session trades it (the report is
    /// undeliverable to its owner — it stays in the journal for a resend).
    pub(crate) fn report_to_account(&mut self, account: u32, seq: u64, r: ServerReport) -> bool {
        if !self.observers.is_empty() {
            if let Some(obs) = self.observers.get(&account) {
                for &sid in obs {
                    deliver(&mut self.list, &mut self.dirty, sid, account, seq, r);
                }
            }
            if account != VENUE {
                if let Some(obs) = self.observers.get(&ALL_ACCOUNTS) {
                    for &sid in obs {
                        deliver(&mut self.list, &mut self.dirty, sid, account, seq, r);
                    }
                }
            }
        }
        match self.by_account.get(&account) {
            Some(&sid) => {
                deliver(&mut self.list, &mut self.dirty, sid, account, seq, r);
                true
            }
            None => account == VENUE,
        }
    }

    /// Whether `sid` receives `account`'s reports (logged on for it, trading or reading).
    pub(crate) fn receives(&self, sid: usize, account: u32) -> bool {
        let s = &self.list[sid];
        s.account == Some(account) || s.observing.contains(&account)
    }

    /// Starts holding back `account`'s live reports for `sid` (its resend begins).
    pub(crate) fn start_resume(&mut self, sid: usize, account: u32) {
        let s = &mut self.list[sid];
        s.held.clear();
        s.resume = Resume::Holding { account };
    }

    /// Whether `sid` has a resend running.
    pub(crate) fn resuming(&self, sid: usize) -> bool {
        matches!(self.list[sid].resume, Resume::Holding { .. })
    }

    /// Live reports held back for `sid`.
    pub(crate) fn held(&self, sid: usize) -> usize {
        self.list[sid].held.len()
    }

    /// The resend has read every event up to `through`: the held reports it covered go.
    pub(crate) fn trim_held(&mut self, sid: usize, through: u64) {
        let held = &mut self.list[sid].held;
        let n = held.partition_point(|(seq, _)| *seq <= through);
        held.drain(..n);
    }

    /// The resend covered every event up to `through` (`after` when it failed): the held
    /// reports after it are queued, and later live reports at or below it are not sent.
    pub(crate) fn finish_resume(&mut self, sid: usize, through: u64) {
        let s = &mut self.list[sid];
        let Resume::Holding { account } = s.resume else {
            return;
        };
        s.resume = Resume::Done { account, through };
        let held = std::mem::take(&mut s.held);
        for &(seq, r) in &held {
            if seq > through {
                queue(&mut self.list, &mut self.dirty, sid, r);
            }
        }
        let mut held = held;
        held.clear();
        self.list[sid].held = held;
    }

    /// Ends a resend whose session no longer receives the account: nothing held is sent.
    pub(crate) fn abort_resume(&mut self, sid: usize, stats: &mut GatewayStats) {
        let s = &mut self.list[sid];
        stats.undeliverable += s.held.len() as u64;
        s.held.clear();
        s.resume = Resume::None;
    }

    /// Sends `reports` (resent from the journal) to `sid` in frames marked `resent`, after
    /// the reports already queued for it. A session whose unread frames pass
    /// `max_session_backlog_bytes` ends.
    pub(crate) fn resend(
        &mut self,
        sid: usize,
        reports: &[ServerReport],
        router: &zmq::Socket,
        stats: &mut GatewayStats,
    ) {
        let overflow =
            self.emit_queued(sid, router, stats) || self.emit_to(sid, router, stats, reports, true);
        if overflow {
            tracing::warn!(
                session = sid,
                "a session that does not read its resent reports passed max_session_backlog_bytes: session ended"
            );
            self.end(sid, SessionEnd::Backlog, stats);
        }
    }

    /// Frames and sends `reports` for `sid` ([`emit`]); true when its backlog overflowed.
    fn emit_to(
        &mut self,
        sid: usize,
        router: &zmq::Socket,
        stats: &mut GatewayStats,
        reports: &[ServerReport],
        resent: bool,
    ) -> bool {
        emit(
            &mut self.list[sid],
            sid,
            &mut self.frame,
            &mut self.backlogged,
            self.limits.max_backlog_bytes,
            router,
            stats,
            reports,
            resent,
        )
    }

    /// Frames and sends the reports queued for `sid` (live frames); true when its backlog
    /// overflowed.
    fn emit_queued(&mut self, sid: usize, router: &zmq::Socket, stats: &mut GatewayStats) -> bool {
        let out = std::mem::take(&mut self.list[sid].out);
        let overflow = !out.is_empty() && self.emit_to(sid, router, stats, &out, false);
        let s = &mut self.list[sid];
        s.out = out;
        s.out.clear();
        overflow
    }

    /// Sends every session's pending reports as one frame per session (several for more than
    /// [`MAX_REPORTS_PER_FRAME`]), then retries the backlogs in order (only sessions that have
    /// one are visited). A session whose unread frames pass `max_session_backlog_bytes` ends.
    pub(crate) fn flush(&mut self, router: &zmq::Socket, stats: &mut GatewayStats) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut overflow = Vec::new();
        for &sid in &dirty {
            let s = &mut self.list[sid];
            s.dirty = false;
            if s.out.is_empty() || !s.live {
                s.out.clear();
                continue;
            }
            if self.emit_queued(sid, router, stats) {
                overflow.push(sid);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        for sid in overflow {
            let s = &self.list[sid];
            tracing::warn!(
                session = sid,
                backlog_bytes = s.backlog_bytes,
                account = ?s.account,
                "a session that does not read its reports passed max_session_backlog_bytes: session ended"
            );
            self.end(sid, SessionEnd::Backlog, stats);
        }
        let list = &mut self.list;
        self.backlogged.retain(|&sid| {
            let s = &mut list[sid];
            while let Some(front) = s.backlog.front() {
                if s.gone || !s.live {
                    s.backlog.clear();
                    s.backlog_bytes = 0;
                    break;
                }
                match send_frame(router, &s.ident, front) {
                    SendResult::Sent => {
                        stats.report_frames += 1;
                        s.backlog_bytes -= front.len();
                        s.backlog.pop_front();
                    }
                    SendResult::WouldBlock => break,
                    SendResult::Gone => s.gone = true,
                }
            }
            !s.backlog.is_empty()
        });
        self.backlogged.dedup();
    }
}
