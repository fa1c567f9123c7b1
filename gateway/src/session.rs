//! Order-entry sessions: one per ZeroMQ routing id, bound to an account by `Logon`, each with
//! its own report sequence and its own backlog of report frames a slow reader has not taken.

use crate::counters::GatewayStats;
use caldera_schema::codec::{self, ServerReport};
use caldera_schema::wire;
use foldhash::HashMap;
use std::collections::VecDeque;

struct Session {
    ident: Vec<u8>,
    account: Option<u32>,
    next_seq: u64,
    out: Vec<ServerReport>,
    backlog: VecDeque<Vec<u8>>,
    dirty: bool,
    gone: bool,
}

/// Every session the gateway knows, indexed by routing id and by logged-on account.
pub(crate) struct Sessions {
    list: Vec<Session>,
    by_ident: HashMap<Vec<u8>, usize>,
    by_account: HashMap<u32, usize>,
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

impl Sessions {
    pub(crate) fn new() -> Self {
        Self {
            list: Vec::new(),
            by_ident: HashMap::default(),
            by_account: HashMap::default(),
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
            account: None,
            next_seq: 1,
            out: Vec::with_capacity(256),
            backlog: VecDeque::new(),
            dirty: false,
            gone: false,
        });
        self.by_ident.insert(ident.to_vec(), s);
        s
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

    /// Binds the session to `account`; the session that had the account gets `LoggedOut`.
    pub(crate) fn logon(&mut self, sid: usize, account: u32) {
        if let Some(old) = self.by_account.insert(account, sid) {
            if old != sid {
                self.list[old].account = None;
                self.report(old, ServerReport::LoggedOut(wire::LoggedOut::new(account)));
            }
        }
        if let Some(prev) = self.list[sid].account.replace(account) {
            if prev != account && self.by_account.get(&prev) == Some(&sid) {
                self.by_account.remove(&prev);
            }
        }
        self.report(sid, ServerReport::LoggedOn(wire::LoggedOn::new(account)));
    }

    /// Queues a report for the session's next frame.
    pub(crate) fn report(&mut self, sid: usize, r: ServerReport) {
        let s = &mut self.list[sid];
        s.out.push(r);
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(sid);
        }
    }

    /// Queues a report for the session logged on for `account`; false when there is none.
    pub(crate) fn report_to_account(&mut self, account: u32, r: ServerReport) -> bool {
        match self.by_account.get(&account) {
            Some(&sid) => {
                self.report(sid, r);
                true
            }
            None => false,
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
