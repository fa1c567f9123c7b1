//! Rust client for Caldera: order entry over a ZeroMQ DEALER socket (pipelined: many requests
//! in flight, batched per frame) and market data over SUB with an L2 book rebuilt from deltas.
//!
//! ```no_run
//! use caldera_client::{ClientCredentials, OrderClient, requests};
//! use caldera_client::wire::{Side, TimeInForce};
//! // This client's secret key and the server's public key (from `caldera init`).
//! let keys = ClientCredentials::from_dir("caldera-keys".as_ref(), "trader").unwrap();
//! let ctx = zmq::Context::new();
//! let mut c = OrderClient::connect(&ctx, "tcp://127.0.0.1:7001", &keys).unwrap();
//! c.push(requests::logon(42));
//! c.push(requests::limit(1, 1, Side::Buy, TimeInForce::Gtc, 100, 10));
//! c.flush().unwrap();
//! let mut reports = Vec::new();
//! c.recv(&mut reports, std::time::Duration::from_secs(1)).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use caldera_auth::{Certificate, ClientCredentials, KeyError, PublicKey};
use caldera_schema::codec;
pub use caldera_schema::codec::{ClientRequest, ServerReport};
pub use caldera_schema::wire;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// ZeroMQ failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    /// The gateway sent something that is not a valid frame.
    #[error("bad frame from gateway: {0}")]
    BadFrame(#[from] codec::FrameError),
    /// Session sequence numbers skipped: reports were lost.
    #[error("session sequence gap: expected {expected}, got {got}")]
    SequenceGap {
        /// Expected next sequence.
        expected: u64,
        /// Received.
        got: u64,
    },
}

/// Request builders.
pub mod requests {
    use super::{wire, ClientRequest};

    /// Logon for an account.
    #[must_use]
    pub fn logon(account: u32) -> ClientRequest {
        ClientRequest::Logon(wire::Logon::new(account))
    }

    /// `LogonWith` flag: resend the account's reports after `resume_after`.
    pub const RESEND: u8 = 1;
    /// `LogonWith` flag: cancel the account's resting orders when this session's connection
    /// drops or it logs out.
    pub const CANCEL_ON_DISCONNECT: u8 = 2;

    /// Logon for an account that also asks for every report of the account with an
    /// `engine_seq` above `resume_after` (resent from the journal before the live ones).
    #[must_use]
    pub fn logon_resume(account: u32, resume_after: u64) -> ClientRequest {
        logon_with(account, resume_after, RESEND)
    }

    /// Logon with options: `flags` of [`RESEND`] (after `resume_after`) and
    /// [`CANCEL_ON_DISCONNECT`].
    #[must_use]
    pub fn logon_with(account: u32, resume_after: u64, flags: u8) -> ClientRequest {
        ClientRequest::LogonWith(wire::LogonWith::new(resume_after, account, flags))
    }

    /// Logout from an account.
    #[must_use]
    pub fn logout(account: u32) -> ClientRequest {
        ClientRequest::Logout(wire::Logout::new(account))
    }

    /// Admin: halt an instrument.
    #[must_use]
    pub fn halt(symbol: u32) -> ClientRequest {
        ClientRequest::HaltInstrument(wire::HaltInstrument::new(symbol))
    }

    /// Admin: resume an instrument.
    #[must_use]
    pub fn resume(symbol: u32) -> ClientRequest {
        ClientRequest::ResumeInstrument(wire::ResumeInstrument::new(symbol))
    }

    /// Admin: cancel every resting order of an account.
    #[must_use]
    pub fn cancel_all(account: u32) -> ClientRequest {
        ClientRequest::CancelAll(wire::CancelAll::new(account))
    }

    /// The live orders of the session's account (answered with `OpenOrder` rows tagged
    /// `request_id`, as of an `engine_seq`).
    #[must_use]
    pub fn query_orders(request_id: u64) -> ClientRequest {
        ClientRequest::QueryOrders(wire::QueryOrders::new(request_id))
    }

    /// Admin: list the sessions (answered with `SessionInfo`s tagged `request_id`).
    #[must_use]
    pub fn list_sessions(request_id: u64) -> ClientRequest {
        ClientRequest::ListSessions(wire::ListSessions::new(request_id))
    }

    /// A limit order (no self-trade prevention, not post-only).
    #[must_use]
    pub fn limit(
        client_order_id: u64,
        symbol: u32,
        side: wire::Side,
        tif: wire::TimeInForce,
        price: u64,
        qty: u64,
    ) -> ClientRequest {
        ClientRequest::NewOrder(wire::NewOrder::new(
            client_order_id,
            price,
            qty,
            symbol,
            side,
            wire::OrderType::Limit,
            tif,
            wire::SelfTradePrevention::Allow,
            false,
        ))
    }

    /// A market IOC order.
    #[must_use]
    pub fn market(client_order_id: u64, symbol: u32, side: wire::Side, qty: u64) -> ClientRequest {
        ClientRequest::NewOrder(wire::NewOrder::new(
            client_order_id,
            0,
            qty,
            symbol,
            side,
            wire::OrderType::Market,
            wire::TimeInForce::Ioc,
            wire::SelfTradePrevention::Allow,
            false,
        ))
    }

    /// Cancel by engine order id.
    #[must_use]
    pub fn cancel(order_id: u64) -> ClientRequest {
        ClientRequest::Cancel(wire::Cancel::new(order_id, 0, false))
    }

    /// Cancel by client order id.
    #[must_use]
    pub fn cancel_client(client_order_id: u64) -> ClientRequest {
        ClientRequest::Cancel(wire::Cancel::new(0, client_order_id, true))
    }

    /// Replace by engine order id.
    #[must_use]
    pub fn replace(order_id: u64, price: u64, qty: u64) -> ClientRequest {
        ClientRequest::Replace(wire::Replace::new(order_id, 0, price, qty, false))
    }

    /// Mass cancel (all symbols when `symbol` is `None`).
    #[must_use]
    pub fn mass_cancel(symbol: Option<u32>) -> ClientRequest {
        ClientRequest::MassCancel(wire::MassCancel::new(symbol.unwrap_or(0), symbol.is_none()))
    }

    /// Heartbeat.
    #[must_use]
    pub fn heartbeat(client_time_ns: u64) -> ClientRequest {
        ClientRequest::Heartbeat(wire::Heartbeat::new(client_time_ns))
    }
}

/// Most requests [`OrderClient::flush`] and [`OrderClient::try_flush`] put in one frame.
pub const FRAME_REQUESTS: usize = 256;

/// An order-entry session.
pub struct OrderClient {
    socket: zmq::Socket,
    frame: Vec<u8>,
    pending: Vec<ClientRequest>,
    next_seq: u64,
    msg: zmq::Message,
    last_resent: bool,
}

impl OrderClient {
    /// Connects a DEALER socket to the gateway's ROUTER endpoint with `credentials` (CURVE,
    /// or [`ClientCredentials::Insecure`] for a node run with `auth = "none"`).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        credentials: &ClientCredentials,
    ) -> Result<Self, ClientError> {
        let socket = Self::dealer(ctx)?;
        credentials.apply(&socket)?;
        socket.set_linger(1000)?;
        socket.connect(endpoint)?;
        Ok(Self::on(socket))
    }

    fn dealer(ctx: &zmq::Context) -> Result<zmq::Socket, ClientError> {
        let socket = ctx.socket(zmq::DEALER)?;
        socket.set_sndhwm(100_000)?;
        socket.set_rcvhwm(100_000)?;
        Ok(socket)
    }

    fn on(socket: zmq::Socket) -> Self {
        Self {
            socket,
            frame: Vec::with_capacity(1 << 16),
            pending: Vec::with_capacity(1024),
            next_seq: 1,
            msg: zmq::Message::new(),
            last_resent: false,
        }
    }

    /// Connects one DEALER socket to every endpoint of a primary/standby pair. Only the active
    /// primary binds its endpoints, so with `ZMQ_IMMEDIATE` requests only go to a completed
    /// connection: the primary, and after a failover the new one (reconnect every 1–10 ms).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn connect_any(
        ctx: &zmq::Context,
        endpoints: &[String],
        credentials: &ClientCredentials,
    ) -> Result<Self, ClientError> {
        let socket = Self::dealer(ctx)?;
        credentials.apply(&socket)?;
        socket.set_linger(0)?;
        socket.set_immediate(true)?;
        socket.set_reconnect_ivl(1)?;
        socket.set_reconnect_ivl_max(10)?;
        for e in endpoints {
            socket.connect(e)?;
        }
        Ok(Self::on(socket))
    }

    /// The socket (to poll it together with others).
    #[must_use]
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Queues a request for the next frame.
    pub fn push(&mut self, r: ClientRequest) {
        self.pending.push(r);
    }

    /// Requests queued and not yet sent.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends every queued request, [`FRAME_REQUESTS`] per frame (blocks while the socket is at
    /// its high-water mark).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.send_pending(0).map(|_| ())
    }

    /// Like [`OrderClient::flush`] but never blocks: `Ok(false)` (requests kept) when the socket
    /// is at its high-water mark.
    ///
    /// # Errors
    /// ZeroMQ errors other than EAGAIN.
    pub fn try_flush(&mut self) -> Result<bool, ClientError> {
        self.send_pending(zmq::DONTWAIT)
    }

    /// Sends the queue in frames of at most [`FRAME_REQUESTS`] (the gateway's `max_batch` is
    /// larger); `Ok(false)` when a non-blocking send found the socket full.
    fn send_pending(&mut self, flags: i32) -> Result<bool, ClientError> {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(FRAME_REQUESTS);
            codec::write_client_batch(&mut self.frame, &self.pending[..n]);
            match self.socket.send(&self.frame[..], flags) {
                Ok(()) => {
                    self.pending.drain(..n);
                }
                Err(zmq::Error::EAGAIN) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Sends raw bytes as one frame (tests of malformed input).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.socket.send(bytes, 0)?;
        Ok(())
    }

    /// Waits up to `timeout` for one report frame; appends its reports to `out` and returns how
    /// many. Checks that session sequence numbers continue without a gap.
    ///
    /// # Errors
    /// ZeroMQ errors, a bad frame, or a sequence gap. On [`ClientError::SequenceGap`] the
    /// frame's reports were still appended to `out`: they came from another session (another
    /// gateway, or after lost frames), so a caller that resumes drops them and asks for a
    /// resend instead ([`FailoverClient`] does).
    pub fn recv(
        &mut self,
        out: &mut Vec<ServerReport>,
        timeout: Duration,
    ) -> Result<usize, ClientError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if self.socket.poll(zmq::POLLIN, ms)? == 0 {
            return Ok(0);
        }
        self.recv_ready(out)
    }

    /// Reads one frame if one is ready (never blocks).
    ///
    /// # Errors
    /// As [`OrderClient::recv`].
    pub fn try_recv(&mut self, out: &mut Vec<ServerReport>) -> Result<usize, ClientError> {
        self.recv_ready(out)
    }

    fn recv_ready(&mut self, out: &mut Vec<ServerReport>) -> Result<usize, ClientError> {
        match self.socket.recv(&mut self.msg, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        let before = out.len();
        let frame = codec::read_report_frame(&self.msg, out)?;
        let first = frame.first_session_seq;
        self.last_resent = frame.resent;
        if first != self.next_seq {
            return Err(ClientError::SequenceGap {
                expected: self.next_seq,
                got: first,
            });
        }
        let n = out.len() - before;
        self.next_seq += n as u64;
        Ok(n)
    }

    /// The session sequence number expected next.
    #[must_use]
    pub fn next_session_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether the last frame received held reports resent from the journal (the answer to a
    /// `LogonWith{RESEND}`).
    #[must_use]
    pub fn last_frame_resent(&self) -> bool {
        self.last_resent
    }
}

/// The engine sequence number of an engine report (`None` for the gateway's own reports).
#[must_use]
pub fn engine_seq(r: &ServerReport) -> Option<u64> {
    let seq = match r {
        ServerReport::Accepted(x) => x.engine_seq(),
        ServerReport::Rejected(x) => x.engine_seq(),
        ServerReport::Fill(x) => x.engine_seq(),
        ServerReport::Done(x) => x.engine_seq(),
        ServerReport::Replaced(x) => x.engine_seq(),
        ServerReport::MassCancelled(x) => x.engine_seq(),
        ServerReport::InstrumentStatus(x) => x.engine_seq(),
        _ => 0,
    };
    // A gateway reject carries 0; ResendUnavailable carries the oldest sequence kept.
    let gateway_reject = matches!(r, ServerReport::Rejected(x)
        if x.reason().0 >= 100);
    (seq != 0 && !gateway_reject).then_some(seq)
}

/// An order-entry session that survives a failover, and delivers each of the account's
/// reports to the application exactly once, in `engine_seq` order.
///
/// It connects to every endpoint of a primary/standby pair and remembers each new order,
/// cancel and mass cancel until the gateway answers it. While requests wait unanswered it
/// probes with a Logon every `resend_after / 8` (a new primary answers with session sequence 1,
/// which reveals the failover at once). When the session is lost — a session sequence restart,
/// `NotLoggedOn` (a new primary that never saw this session), `ShuttingDown` (the primary is
/// stopping and did not take the request), or a request unanswered for
/// `resend_after` — it opens a fresh session with `LogonWith{account, resume_after, flags: RESEND}`, where
/// `resume_after` is the last `engine_seq` it delivered: the node resends every report of the
/// account after it from the journal (fills of resting orders while no session was logged on
/// included), then `ResendComplete`, then the live reports. Only then does it resend the
/// requests still unanswered, in the order they were first sent — a request whose answer came
/// in the resend is not sent again. Reports at or below an `engine_seq` already delivered are
/// dropped, and so are the `DuplicateClientOrderId` / `UnknownOrder` answers to its own
/// resends (the original's reports are the answer). While a resend runs it sends a `Heartbeat`
/// ([`RESUME_PROBE`]) every `resend_after / 8` without an answer: the acknowledgements (never
/// held back, not delivered) keep a long resend from being taken for a lost session.
///
/// Resending is safe:
/// - new orders: the engine remembers accepted `(account, client order id)` pairs (its dedupe
///   window, part of the replicated state), so an order the old primary already took is
///   answered `Rejected(DuplicateClientOrderId)` naming the original order id, never executed
///   twice;
/// - cancels and mass cancels are idempotent (a second cancel of a done order is
///   `UnknownOrder`).
///
/// Replaces are sent but never resent: `qty` is the new open quantity, so replaying one after
/// fills could reopen filled quantity. [`FailoverClient::unconfirmed_replaces`] lists those
/// without an answer when a session was lost; the application decides.
pub struct FailoverClient {
    ctx: zmq::Context,
    endpoints: Vec<String>,
    credentials: ClientCredentials,
    account: u32,
    inner: OrderClient,
    /// Unanswered requests by send order.
    unacked: BTreeMap<u64, (ClientRequest, std::time::Instant)>,
    /// What answers each unanswered request → its send order.
    waiting: HashMap<Answer, u64>,
    sent_seq: u64,
    replaces: BTreeMap<u64, ClientRequest>,
    unconfirmed_replaces: Vec<ClientRequest>,
    resend_after: Duration,
    last_answer: std::time::Instant,
    last_probe: std::time::Instant,
    reconnects: u64,
    resent: u64,
    /// The last `engine_seq` delivered to the application.
    last_seq: u64,
    /// A `LogonWith{RESEND}` was sent and its resend has not completed.
    resuming: bool,
    /// Requests this client resent: a duplicate's reject answers them, and is not delivered.
    resent_answers: std::collections::HashSet<Answer>,
    /// Resends the gateway could not serve (`ResendUnavailable`).
    resends_unavailable: u64,
    /// The gateway refused the `LogonWith{RESEND}` (busy): reconnect and ask again.
    resume_refused: bool,
    /// The `LogonWith{RESEND}` of the resend running was answered (`LoggedOn`).
    resume_logged_on: bool,
}

impl FailoverClient {
    /// Connects to `endpoints` (every node of the pair serves with the same server key) and
    /// logs on as `account`.
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        credentials: &ClientCredentials,
        account: u32,
        resend_after: Duration,
    ) -> Result<Self, ClientError> {
        let mut inner = OrderClient::connect_any(ctx, endpoints, credentials)?;
        inner.push(requests::logon(account));
        Ok(Self {
            ctx: ctx.clone(),
            endpoints: endpoints.to_vec(),
            credentials: credentials.clone(),
            account,
            inner,
            unacked: BTreeMap::new(),
            waiting: HashMap::new(),
            sent_seq: 0,
            replaces: BTreeMap::new(),
            unconfirmed_replaces: Vec::new(),
            resend_after,
            last_answer: std::time::Instant::now(),
            last_probe: std::time::Instant::now(),
            reconnects: 0,
            resent: 0,
            last_seq: 0,
            resuming: false,
            resent_answers: std::collections::HashSet::new(),
            resends_unavailable: 0,
            resume_refused: false,
            resume_logged_on: false,
        })
    }

    /// The last `engine_seq` delivered (what the next `LogonWith{RESEND}` resumes after).
    #[must_use]
    pub fn last_engine_seq(&self) -> u64 {
        self.last_seq
    }

    /// Resends the gateway could not serve (retention had dropped what was asked for, or the
    /// node keeps no journal): reports may have been missed (the reject was delivered too).
    #[must_use]
    pub fn resends_unavailable(&self) -> u64 {
        self.resends_unavailable
    }

    /// Drops what the application already has and settles the resend: reports at or below
    /// an `engine_seq` delivered, and the duplicate answers to this client's own resends.
    fn filter(&mut self, out: &mut Vec<ServerReport>, before: usize) {
        let mut keep = before;
        for i in before..out.len() {
            let r = out[i];
            if let Some(seq) = engine_seq(&r) {
                if seq < self.last_seq {
                    continue;
                }
                self.last_seq = seq;
            }
            match r {
                ServerReport::HeartbeatAck(h) if h.client_time_ns() == RESUME_PROBE => {
                    // This client's own probe while a resend runs: the node is alive.
                    if self.resuming && self.resume_logged_on {
                        self.last_answer = std::time::Instant::now();
                    }
                    continue;
                }
                ServerReport::LoggedOn(l) if self.resuming && l.account() == self.account => {
                    self.resume_logged_on = true;
                }
                ServerReport::ResendComplete(_) => self.end_resume(),
                ServerReport::Rejected(x)
                    if x.reason() == wire::RejectReason::ResendUnavailable =>
                {
                    self.resends_unavailable += 1;
                    self.end_resume();
                }
                ServerReport::Rejected(x)
                    if x.reason() == wire::RejectReason::DuplicateClientOrderId
                        && self
                            .resent_answers
                            .remove(&Answer::New(x.client_order_id())) =>
                {
                    self.answered(Answer::New(x.client_order_id()));
                    continue;
                }
                ServerReport::Rejected(x)
                    if x.reason() == wire::RejectReason::UnknownOrder
                        && (self.resent_answers.remove(&Answer::CancelId(x.order_id()))
                            || self
                                .resent_answers
                                .remove(&Answer::CancelClient(x.client_order_id()))) =>
                {
                    // The order was done before the resend reached it: its Done was delivered.
                    self.answered(Answer::CancelId(x.order_id()));
                    self.answered(Answer::CancelClient(x.client_order_id()));
                    continue;
                }
                ServerReport::Rejected(x)
                    if self.resuming
                        && x.request() == wire::RequestKind::Logon
                        && x.engine_seq() == 0 =>
                {
                    // The LogonWith{RESEND} itself was refused (Busy: too many resends at once):
                    // the session is lost, the next poll reconnects and asks again.
                    self.resume_refused = true;
                }
                _ => {}
            }
            out[keep] = r;
            keep += 1;
        }
        out.truncate(keep);
    }

    /// The resend is over: the requests still unanswered are sent again.
    fn end_resume(&mut self) {
        if !std::mem::take(&mut self.resuming) {
            return;
        }
        let now = std::time::Instant::now();
        for (seq, (r, t)) in &mut self.unacked {
            self.inner.push(*r);
            *t = now;
            self.resent += 1;
            if let Some(a) = answer_of(r, *seq) {
                self.resent_answers.insert(a);
            }
        }
        self.last_answer = now;
    }

    /// Queues a request; new orders, cancels and mass cancels are remembered until answered
    /// (replaces: see the type's documentation). Client order ids must be unique per account.
    pub fn push(&mut self, r: ClientRequest) {
        self.sent_seq += 1;
        match answer_of(&r, self.sent_seq) {
            Some(a) => {
                // The same answer settles an identical earlier request too.
                if let Some(old) = self.waiting.insert(a, self.sent_seq) {
                    self.unacked.remove(&old);
                }
                self.unacked
                    .insert(self.sent_seq, (r, std::time::Instant::now()));
            }
            None => {
                if let ClientRequest::Replace(_) = r {
                    self.replaces.insert(self.sent_seq, r);
                }
            }
        }
        self.inner.push(r);
    }

    fn answered(&mut self, a: Answer) -> bool {
        match self.waiting.remove(&a) {
            Some(seq) => self.unacked.remove(&seq).is_some(),
            None => false,
        }
    }

    /// Sends what is queued if a gateway is connected (never blocks). `Ok(false)`: kept for
    /// later (no primary reachable right now).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn flush(&mut self) -> Result<bool, ClientError> {
        self.inner.try_flush()
    }

    /// Waits up to `timeout` for reports, appending them to `out`; handles a lost session
    /// (see the type's documentation). Returns the number of reports.
    ///
    /// # Errors
    /// ZeroMQ errors or a bad frame.
    pub fn poll(
        &mut self,
        out: &mut Vec<ServerReport>,
        timeout: Duration,
    ) -> Result<usize, ClientError> {
        let probe = self.resend_after / 8;
        if !self.resuming
            && self
                .unacked
                .values()
                .next()
                .is_some_and(|(_, t)| t.elapsed() > probe)
            && self.last_answer.elapsed() > probe
            && self.last_probe.elapsed() > probe
        {
            self.inner.push(requests::logon(self.account));
            self.last_probe = std::time::Instant::now();
        }
        if self.resuming
            && self.resume_logged_on
            && self.last_answer.elapsed() > probe
            && self.last_probe.elapsed() > probe
        {
            // A resend sends nothing until it has a frame of the account's reports, which can
            // take a while over a long absence: a heartbeat's answer (never held back) shows
            // that the node is alive and still reading, so the session is not given up. Only
            // once the resend's logon was answered: the socket reaches every node, and from
            // then on a frame of another node's (a new session) breaks the sequence.
            self.inner.push(requests::heartbeat(RESUME_PROBE));
            self.last_probe = std::time::Instant::now();
        }
        self.inner.try_flush()?;
        let before = out.len();
        // A session sequence restart means another gateway answered: the session was lost.
        let mut lost = false;
        let _received = match self.inner.recv(out, timeout) {
            Ok(n) => n,
            Err(ClientError::SequenceGap { .. }) => {
                // Not this session's next frame: another gateway answered (a new primary that
                // logged this socket on with a plain probe), or frames were lost. Its reports
                // are not delivered: a new primary's session did not get the account's reports
                // while no session was logged on, so delivering a later one here would move
                // `last_seq` past them and the resend would skip them. The resend after
                // `last_seq` brings them all, in order.
                out.truncate(before);
                lost = true;
                0
            }
            Err(e) => return Err(e),
        };
        if self.resuming && out.len() > before {
            // The resend is progress.
            self.last_answer = std::time::Instant::now();
        }
        self.filter(out, before);
        let n = out.len() - before;
        // Only answers to orders count as progress (a probe's LoggedOn does not: a frame of
        // orders may have gone to a primary that died before answering it).
        for r in &out[before..] {
            let mut progress = false;
            match r {
                ServerReport::Accepted(a) => {
                    progress |= self.answered(Answer::New(a.client_order_id()));
                }
                ServerReport::Fill(f) => {
                    progress |= self.answered(Answer::New(f.client_order_id()));
                }
                ServerReport::Done(d) => {
                    // A done order answers its own placement and any cancel of it.
                    progress |= self.answered(Answer::New(d.client_order_id()));
                    progress |= self.answered(Answer::CancelId(d.order_id()));
                    progress |= self.answered(Answer::CancelClient(d.client_order_id()));
                }
                ServerReport::Replaced(x) => {
                    self.replaces
                        .retain(|_, r| !replace_targets(r, x.order_id(), x.client_order_id()));
                }
                ServerReport::MassCancelled(_) => {
                    // Answered in order: the oldest unanswered mass cancel.
                    let oldest = self
                        .waiting
                        .iter()
                        .filter(|(a, _)| matches!(a, Answer::Mass(_)))
                        .min_by_key(|(_, s)| **s)
                        .map(|(a, _)| *a);
                    if let Some(a) = oldest {
                        progress |= self.answered(a);
                    }
                }
                ServerReport::Rejected(x) => {
                    // Not done, and this node will not do it: the next primary will.
                    if x.reason() == wire::RejectReason::NotLoggedOn
                        || x.reason() == wire::RejectReason::ShuttingDown
                    {
                        lost = true;
                    } else {
                        match x.request() {
                            wire::RequestKind::New => {
                                progress |= self.answered(Answer::New(x.client_order_id()));
                            }
                            wire::RequestKind::Cancel => {
                                progress |= self.answered(Answer::CancelId(x.order_id()));
                                progress |=
                                    self.answered(Answer::CancelClient(x.client_order_id()));
                            }
                            wire::RequestKind::Replace => {
                                let (id, cl) = (x.order_id(), x.client_order_id());
                                self.replaces.retain(|_, r| !replace_targets(r, id, cl));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            if progress {
                self.last_answer = std::time::Instant::now();
            }
        }
        let stuck = self
            .unacked
            .values()
            .next()
            .is_some_and(|(_, t)| t.elapsed() > self.resend_after)
            && self.last_answer.elapsed() > self.resend_after;
        if lost || stuck || std::mem::take(&mut self.resume_refused) {
            self.reconnect()?;
        }
        Ok(n)
    }

    /// Opens a fresh session with `LogonWith{RESEND}` after the last `engine_seq` delivered; once the
    /// resend is over, sends again every new order, cancel and mass cancel still unanswered.
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut inner = OrderClient::connect_any(&self.ctx, &self.endpoints, &self.credentials)?;
        inner.push(requests::logon_resume(self.account, self.last_seq));
        let lost_replaces = std::mem::take(&mut self.replaces);
        self.unconfirmed_replaces
            .extend(lost_replaces.into_values());
        let now = std::time::Instant::now();
        for (_, t) in self.unacked.values_mut() {
            *t = now;
        }
        // The unanswered requests go once the resend is over (`end_resume`).
        self.resuming = true;
        self.resume_logged_on = false;
        self.inner = inner;
        self.last_answer = now;
        self.reconnects += 1;
        self.inner.try_flush()?;
        Ok(())
    }

    /// Requests (new orders, cancels, mass cancels) sent and not answered yet.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Replaces that had no answer when a session was lost (not resent; drains the list).
    pub fn unconfirmed_replaces(&mut self) -> Vec<ClientRequest> {
        std::mem::take(&mut self.unconfirmed_replaces)
    }

    /// Sessions reopened so far.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Orders resent so far.
    #[must_use]
    pub fn resent(&self) -> u64 {
        self.resent
    }
}

/// The `client_time_ns` of the heartbeats [`FailoverClient`] sends while a resend runs.
pub const RESUME_PROBE: u64 = u64::MAX;

/// What answers a request: the report that settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    New(u64),
    CancelId(u64),
    CancelClient(u64),
    Mass(u64),
}

/// `seq` (the request's send order) keys a mass cancel: they are answered in order.
fn answer_of(r: &ClientRequest, seq: u64) -> Option<Answer> {
    match r {
        ClientRequest::NewOrder(o) => Some(Answer::New(o.client_order_id())),
        ClientRequest::Cancel(c) if c.by_client_order_id() => {
            Some(Answer::CancelClient(c.client_order_id()))
        }
        ClientRequest::Cancel(c) => Some(Answer::CancelId(c.order_id())),
        ClientRequest::MassCancel(_) => Some(Answer::Mass(seq)),
        _ => None,
    }
}

fn replace_targets(r: &ClientRequest, order_id: u64, client_order_id: u64) -> bool {
    match r {
        ClientRequest::Replace(x) if x.by_client_order_id() => {
            x.client_order_id() == client_order_id
        }
        ClientRequest::Replace(x) => x.order_id() == order_id,
        _ => false,
    }
}

/// One symbol's L2 book rebuilt from market data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct L2Book {
    /// Bid levels price → quantity.
    pub bids: BTreeMap<u64, u64>,
    /// Ask levels price → quantity.
    pub asks: BTreeMap<u64, u64>,
    /// Halted.
    pub halted: bool,
    /// Last md_seq applied.
    pub md_seq: u64,
    /// Last engine sequence number reflected.
    pub engine_seq: u64,
    /// False after a gap until the next snapshot.
    pub synced: bool,
}

/// A market-data subscriber that rebuilds L2 books.
pub struct MarketDataClient {
    socket: zmq::Socket,
    /// Books by symbol.
    pub books: HashMap<u32, L2Book>,
    /// Gaps detected (messages lost).
    pub gaps: u64,
    /// Trades seen (trade id, symbol, price, qty).
    pub trades: Vec<(u64, u32, u64, u64)>,
}

impl MarketDataClient {
    /// Subscribes to `symbols` (all when empty) on the gateway's PUB endpoint.
    /// `credentials`: [`ClientCredentials::Insecure`] for open market data (the default), a
    /// listed key when the node runs `market_data_curve = true`.
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        credentials: &ClientCredentials,
        symbols: &[u32],
    ) -> Result<Self, ClientError> {
        let socket = ctx.socket(zmq::SUB)?;
        credentials.apply(&socket)?;
        socket.set_rcvhwm(1_000_000)?;
        if symbols.is_empty() {
            socket.set_subscribe(b"md.")?;
        }
        for s in symbols {
            socket.set_subscribe(&codec::md_topic(*s))?;
        }
        socket.connect(endpoint)?;
        Ok(Self {
            socket,
            books: HashMap::new(),
            gaps: 0,
            trades: Vec::new(),
        })
    }

    /// Applies every message that arrives within `timeout` of the previous one; returns the
    /// number of messages applied.
    ///
    /// # Errors
    /// ZeroMQ errors or a bad frame.
    pub fn pump(&mut self, timeout: Duration) -> Result<usize, ClientError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let mut n = 0;
        while self.socket.poll(zmq::POLLIN, ms)? > 0 {
            let parts = self.socket.recv_multipart(0)?;
            if parts.len() != 2 {
                continue;
            }
            self.apply(&parts[1])?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies one market-data payload.
    ///
    /// # Errors
    /// A bad frame.
    pub fn apply(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let opts = flatbuffers::VerifierOptions {
            max_tables: 10_000_000,
            max_apparent_size: 1 << 31,
            ..Default::default()
        };
        let m = flatbuffers::root_with_opts::<wire::MarketData>(&opts, payload)
            .map_err(|e| codec::FrameError::Malformed(e.to_string()))?;
        let book = self.books.entry(m.symbol()).or_default();
        if book.md_seq != 0 && m.md_seq() != book.md_seq + 1 {
            self.gaps += 1;
            book.synced = false;
        }
        book.md_seq = m.md_seq();
        if m.is_snapshot() {
            book.bids = m
                .bids()
                .map(|v| v.iter().map(|l| (l.price(), l.qty())).collect())
                .unwrap_or_default();
            book.asks = m
                .asks()
                .map(|v| v.iter().map(|l| (l.price(), l.qty())).collect())
                .unwrap_or_default();
            book.halted = m.halted();
            book.engine_seq = m.snapshot_engine_seq();
            book.synced = true;
            return Ok(());
        }
        if let Some(ds) = m.deltas() {
            for d in ds {
                if d.engine_seq() <= book.engine_seq && book.engine_seq != 0 {
                    continue;
                }
                let side = if d.side() == wire::Side::Buy {
                    &mut book.bids
                } else {
                    &mut book.asks
                };
                if d.qty() == 0 {
                    side.remove(&d.price());
                } else {
                    side.insert(d.price(), d.qty());
                }
                book.engine_seq = d.engine_seq();
            }
        }
        if let Some(ts) = m.trades() {
            self.trades.extend(
                ts.iter()
                    .map(|t| (t.trade_id(), m.symbol(), t.price(), t.qty())),
            );
        }
        if let Some(ss) = m.statuses() {
            for s in ss {
                book.halted = s.halted();
            }
        }
        Ok(())
    }
}
