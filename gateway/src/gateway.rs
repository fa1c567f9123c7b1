//! The gateway agent: ZeroMQ ROUTER order entry → validation → inbound SPSC ring; outbound SPSC
//! ring → per-session execution reports and market data.
//!
//! Back-pressure is explicit and loses nothing (ADR 0003):
//! - inbound ring full: the gateway stops reading the ROUTER socket (requests wait in libzmq's
//!   queue, then in TCP, then the client's DEALER send blocks or fails with EAGAIN);
//! - a session that does not read its reports: its report frames are kept in a per-session
//!   backlog (ROUTER_MANDATORY, so libzmq never drops them); once the backlog reaches
//!   `max_session_backlog` frames its new order-entry requests are rejected with `Busy`, and
//!   once it reaches `max_session_backlog_bytes` the session ends (ADR 0012);
//! - outbound ring full: the engine thread waits for room (never drops an event).

use crate::config::GatewayConfig;
use crate::counters::{GatewayCounters, GatewayStats, Stage};
use crate::market_data::MarketData;
use crate::resend::{Chunk, History, HistoryError, ResendJob};
use crate::session::{Access, LogonRefused, SessionEnd, SessionRef, Sessions};
use caldera_auth::{Guard, ServerKeys};
use caldera_engine::{Command, EventBody, SymbolId};
use caldera_pipeline::{Agent, OrderRow, OrdersQuery, Output, Shared};
use caldera_schema::codec::{self, ClientRequest, FrameError, RequestError, ServerReport};
use caldera_schema::map::{self, MapError};
use caldera_schema::{convert, wire};
use rtrb::{Consumer, Producer};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A socket could not be created, configured or bound.
#[derive(Debug, thiserror::Error)]
#[error("{what} {endpoint}: {source}")]
pub struct SocketError {
    /// What failed.
    pub what: &'static str,
    /// Endpoint.
    pub endpoint: String,
    /// Cause.
    #[source]
    pub source: zmq::Error,
}

/// A frame's way through the stages ([`Shared::now_ns`] clock).
struct Sample {
    /// Commands pushed to the engine up to and including this frame's.
    commands: u64,
    read_ns: u64,
    engine_ns: Option<u64>,
    durable_ns: Option<u64>,
}

/// How the gateway authenticates its clients (docs/protocol.md, "Security").
#[derive(Clone, Debug)]
pub struct Security {
    /// The node's CURVE server key pair.
    pub keys: ServerKeys,
    /// Who may connect and what they may do.
    pub guard: Arc<Guard>,
    /// Market data over CURVE too (subscribers need a listed key of any role).
    pub market_data: bool,
}

/// The pipeline ends the gateway works with.
pub struct GatewayRings {
    /// Commands to the engine.
    pub commands: Producer<Command>,
    /// Durable events (from the journal, or from the engine without one).
    pub events: Consumer<Output>,
    /// Slots per ring.
    pub capacity: usize,
    /// Read-only questions to the engine (`QueryOrders`).
    pub queries: Producer<OrdersQuery>,
    /// The engine's answers.
    pub answers: Consumer<OrderRow>,
}

/// A `QueryOrders` waiting for its answer, then for its `as_of` sequence to be routed.
struct OrdersAnswer {
    session: SessionRef,
    request_id: u64,
    /// Rows received (the answer is complete when it holds `count` of them, or one for 0).
    rows: Vec<wire::OpenOrder>,
    as_of: u64,
    count: Option<u32>,
}

/// The wire side of a primary: sessions, routing, reports, back-pressure, market data.
pub struct Gateway<'a> {
    cfg: GatewayConfig,
    router: zmq::Socket,
    publisher: zmq::Socket,
    order_entry: String,
    market_data: String,
    rings: GatewayRings,
    shared: Arc<Shared>,
    counters: Arc<GatewayCounters>,
    shutdown: &'a AtomicBool,
    sessions: Sessions,
    /// None: `auth = "none"` (every session is open).
    guard: Option<Arc<Guard>>,
    /// The entitlements version the sessions were last checked against.
    auth_version: u64,
    /// One entry per all-symbols mass cancel sent to the engine, in order: the admin session
    /// to copy its `MassCancelled` to (a `CancelAll`), or None (a client's own).
    all_symbol_cancels: VecDeque<Option<SessionRef>>,
    /// A frame being written outside any session (reused).
    scratch: Vec<u8>,
    /// This round's clock (rate limits).
    round: Instant,
    md: MarketData,
    /// The requests of the frame being handled (reused).
    requests: Vec<Result<ClientRequest, RequestError>>,
    stats: GatewayStats,
    pushed: u64,
    stopping: bool,
    stop_deadline: Option<Instant>,
    finished: bool,
    ident_msg: zmq::Message,
    payload_msg: zmq::Message,
    /// Latency samples (one per frame that carried commands) awaiting their reports.
    samples: VecDeque<Sample>,
    /// Commands whose events had been released when this round's routing began.
    released_before_routing: u64,
    last_publish: Instant,
    next_md_snapshot: Option<Instant>,
    /// When the order-entry socket is read next (see [`Gateway::read_requests`]).
    next_read: Instant,
    /// Where resends read the account's past reports (None: no journal, no resend).
    history: Option<Arc<dyn History>>,
    /// The last event sequence routed to the sessions (what a resend reads up to).
    routed: Arc<AtomicU64>,
    /// The resends running.
    resends: Vec<ResendJob>,
    /// `QueryOrders` asked of the engine, in order (it answers in order).
    orders_answers: VecDeque<OrdersAnswer>,
}

/// Most resends running at once; a `LogonWith{RESEND}` beyond gets `Busy`.
pub const MAX_RESENDS: usize = 16;

/// `LogonWith.flags`: resend the account's reports after `resume_after`.
pub const LOGON_RESEND: u8 = 1;
/// `LogonWith.flags`: cancel the account's resting orders when the session's connection drops
/// or it logs out.
pub const LOGON_CANCEL_ON_DISCONNECT: u8 = 2;

/// The kind of a request and the order it names, for its rejects.
fn describe(req: &ClientRequest) -> (wire::RequestKind, u64, u64) {
    use wire::RequestKind as K;
    match req {
        ClientRequest::Logon(_) | ClientRequest::LogonWith(_) => (K::Logon, 0, 0),
        ClientRequest::Logout(_) => (K::Logout, 0, 0),
        ClientRequest::Heartbeat(_) => (K::Heartbeat, 0, 0),
        ClientRequest::ListSessions(_) => (K::ListSessions, 0, 0),
        ClientRequest::QueryOrders(_) => (K::QueryOrders, 0, 0),
        ClientRequest::HaltInstrument(_) => (K::Halt, 0, 0),
        ClientRequest::ResumeInstrument(_) => (K::Resume, 0, 0),
        ClientRequest::CancelAll(_) => (K::CancelAll, 0, 0),
        ClientRequest::NewOrder(o) => (K::New, o.client_order_id(), 0),
        ClientRequest::Cancel(c) => (K::Cancel, c.client_order_id(), c.order_id()),
        ClientRequest::Replace(r) => (K::Replace, r.client_order_id(), r.order_id()),
        ClientRequest::MassCancel(_) => (K::MassCancel, 0, 0),
    }
}

/// How long after finding the order-entry socket empty it is read again in a busy loop.
const REREAD: Duration = Duration::from_micros(10);

fn socket_error(what: &'static str, endpoint: &str) -> impl FnOnce(zmq::Error) -> SocketError {
    let endpoint = endpoint.to_string();
    move |source| SocketError {
        what,
        endpoint,
        source,
    }
}

fn bind_order_entry(
    ctx: &zmq::Context,
    g: &GatewayConfig,
    security: Option<&Security>,
) -> Result<zmq::Socket, SocketError> {
    let ep = &g.order_entry;
    let mut router = ctx
        .socket(zmq::ROUTER)
        .map_err(socket_error("creating order-entry socket", ep))?;
    if let Some(s) = security {
        s.keys
            .apply(&router)
            .map_err(socket_error("setting up CURVE on", ep))?;
    }
    router
        .set_router_mandatory(true)
        .map_err(socket_error("configuring", ep))?;
    router
        .set_sndhwm(g.sndhwm)
        .map_err(socket_error("configuring", ep))?;
    router
        .set_rcvhwm(g.rcvhwm)
        .map_err(socket_error("configuring", ep))?;
    router
        .set_maxmsgsize(g.message_limit())
        .map_err(socket_error("configuring", ep))?;
    // ZMTP heartbeats: a peer that stops answering (a dead host, a cut cable) is disconnected
    // within seconds, and its session ends with it.
    router
        .set_heartbeat_ivl(5_000)
        .and_then(|()| router.set_heartbeat_timeout(15_000))
        .map_err(socket_error("configuring", ep))?;
    notify_disconnects(&mut router).map_err(socket_error("configuring", ep))?;
    router
        .set_linger(i32::try_from(g.shutdown_linger_ms).unwrap_or(i32::MAX))
        .map_err(socket_error("configuring", ep))?;
    router
        .bind(ep)
        .map_err(socket_error("binding order entry to", ep))?;
    Ok(router)
}

/// Asks libzmq for a message (routing id + empty frame) when a peer disconnects
/// (`ZMQ_ROUTER_NOTIFY`, a libzmq DRAFT option: the workspace's libzmq is built with it).
#[allow(unsafe_code)]
fn notify_disconnects(router: &mut zmq::Socket) -> Result<(), zmq::Error> {
    const ZMQ_ROUTER_NOTIFY: i32 = 97;
    const ZMQ_NOTIFY_DISCONNECT: i32 = 2;
    let value: i32 = ZMQ_NOTIFY_DISCONNECT;
    // SAFETY: `router.as_mut_ptr()` is a live ZeroMQ socket for the duration of the call (the
    // borrow keeps it open); the option value is a 4-byte int read by libzmq during the call,
    // and the length passed is its size.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            router.as_mut_ptr(),
            ZMQ_ROUTER_NOTIFY,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(zmq::Error::from_raw(unsafe_errno()))
    }
}

/// The calling thread's last libzmq error number.
#[allow(unsafe_code)]
fn unsafe_errno() -> i32 {
    // SAFETY: zmq_errno only reads the thread's errno.
    unsafe { zmq_sys::zmq_errno() }
}

fn bind_market_data(
    ctx: &zmq::Context,
    g: &GatewayConfig,
    security: Option<&Security>,
) -> Result<zmq::Socket, SocketError> {
    let ep = &g.market_data;
    let publisher = ctx
        .socket(zmq::PUB)
        .map_err(socket_error("creating market-data socket", ep))?;
    if let Some(s) = security.filter(|s| s.market_data) {
        s.keys
            .apply(&publisher)
            .map_err(socket_error("setting up CURVE on", ep))?;
    }
    publisher
        .set_sndhwm(g.md_sndhwm)
        .map_err(socket_error("configuring", ep))?;
    publisher
        .set_linger(1000)
        .map_err(socket_error("configuring", ep))?;
    publisher
        .bind(ep)
        .map_err(socket_error("binding market data to", ep))?;
    Ok(publisher)
}

fn last_endpoint(s: &zmq::Socket, configured: &str) -> String {
    s.get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| configured.to_string())
}

impl<'a> Gateway<'a> {
    /// Binds the order-entry and market-data sockets; with `security`, as CURVE servers (the
    /// context's ZAP handler must be bound first: see `caldera_auth::Authenticator`).
    ///
    /// # Errors
    /// [`SocketError`] when a socket cannot be created, configured or bound.
    #[allow(clippy::too_many_arguments)] // the pipeline's ends, each needed once
    pub fn bind(
        ctx: &zmq::Context,
        cfg: &GatewayConfig,
        security: Option<&Security>,
        symbols: impl IntoIterator<Item = SymbolId>,
        rings: GatewayRings,
        shared: Arc<Shared>,
        counters: Arc<GatewayCounters>,
        shutdown: &'a AtomicBool,
    ) -> Result<Self, SocketError> {
        let router = bind_order_entry(ctx, cfg, security)?;
        let publisher = bind_market_data(ctx, cfg, security)?;
        let guard = security.map(|s| Arc::clone(&s.guard));
        let order_entry = last_endpoint(&router, &cfg.order_entry);
        let market_data = last_endpoint(&publisher, &cfg.market_data);
        let snapshot_every = Duration::from_millis(cfg.md_snapshot_interval_ms);
        Ok(Self {
            requests: Vec::with_capacity(cfg.max_batch),
            cfg: cfg.clone(),
            router,
            publisher,
            order_entry,
            market_data,
            rings,
            counters,
            shutdown,
            sessions: Sessions::new(guard.is_some(), cfg.session_limits()),
            scratch: Vec::with_capacity(256),
            round: Instant::now(),
            auth_version: guard.as_ref().map_or(0, |g| g.version()),
            guard,
            all_symbol_cancels: VecDeque::new(),
            md: MarketData::new(symbols),
            stats: GatewayStats::default(),
            pushed: 0,
            stopping: false,
            stop_deadline: None,
            finished: false,
            ident_msg: zmq::Message::new(),
            payload_msg: zmq::Message::new(),
            samples: VecDeque::with_capacity(4096),
            released_before_routing: 0,
            last_publish: Instant::now(),
            next_md_snapshot: (!snapshot_every.is_zero()).then(|| Instant::now() + snapshot_every),
            next_read: Instant::now(),
            history: None,
            routed: Arc::new(AtomicU64::new(
                shared.engine.seq.load(std::sync::atomic::Ordering::Relaxed),
            )),
            resends: Vec::new(),
            orders_answers: VecDeque::new(),
            shared,
        })
    }

    /// Serves `LogonWith{RESEND}` from `history` (the node's journal). Without it, every
    /// `LogonWith{RESEND}` is answered `Rejected{ResendUnavailable}`.
    pub fn set_history(&mut self, history: Arc<dyn History>) {
        self.history = Some(history);
    }

    /// The bound order-entry endpoint (resolved when the configuration used port 0).
    #[must_use]
    pub fn order_entry(&self) -> &str {
        &self.order_entry
    }

    /// The order-entry and market-data sockets (to watch their handshakes).
    #[must_use]
    pub fn sockets(&self) -> (&zmq::Socket, &zmq::Socket) {
        (&self.router, &self.publisher)
    }

    /// The bound market-data endpoint.
    #[must_use]
    pub fn market_data(&self) -> &str {
        &self.market_data
    }

    /// The counters of this run.
    #[must_use]
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// Market-data messages published.
    #[must_use]
    pub fn md_published(&self) -> u64 {
        self.md.published
    }

    /// The engine has consumed every command and stopped: route what is left, deliver every
    /// report (keeping a slow reader's backlog for up to `shutdown_linger_ms`), publish the
    /// last market data.
    pub fn finish(&mut self) {
        self.route_events(usize::MAX);
        self.sessions.flush(&self.router, &mut self.stats);
        self.md.flush(&self.publisher);
        if self.cfg.md_snapshot_interval_ms != 0 {
            self.md.snapshot(&self.publisher);
        }
        let linger = Instant::now() + Duration::from_millis(self.cfg.shutdown_linger_ms);
        while self.sessions.has_backlog() && Instant::now() < linger {
            self.sessions.flush(&self.router, &mut self.stats);
            std::thread::sleep(Duration::from_millis(1));
        }
        self.publish(Instant::now());
        self.counters
            .published
            .serving
            .store(false, Ordering::Relaxed);
    }

    /// Marks the gateway as serving (the endpoints are bound).
    pub fn start_serving(&self) {
        self.counters
            .published
            .serving
            .store(true, Ordering::Relaxed);
    }

    /// Routes every report the journal has released and hands them to ZeroMQ. Returns the
    /// ring items taken.
    ///
    /// For an engine that runs on this thread (the node's `threads.engine = "gateway"`) and
    /// finds its output ring full: the journal frees that ring only as this routing frees the
    /// one behind it.
    pub fn route_released(&mut self) -> usize {
        let n = self.route_events(usize::MAX);
        if n > 0 {
            self.sessions.flush(&self.router, &mut self.stats);
        }
        n
    }

    fn ring_has_room(&self) -> bool {
        self.rings.commands.slots() >= self.cfg.max_batch
    }

    /// Reads and handles up to 256 frames. Returns the number handled.
    ///
    /// A ZeroMQ socket read empty costs libzmq a `poll` system call, so after the socket was
    /// found empty it is read again only [`REREAD`] later (or when the gateway wakes from
    /// `zmq_poll`): a busy round that only routes events does not pay that call every time.
    /// While stopping, frames are still read and every request is answered `ShuttingDown`.
    fn read_requests(&mut self, now: Instant) -> usize {
        if now < self.next_read {
            return 0;
        }
        let mut n = 0;
        while n < 256 {
            if !self.stopping && !self.ring_has_room() {
                self.stats.ring_full_pauses += 1;
                break;
            }
            let mut ident = std::mem::replace(&mut self.ident_msg, zmq::Message::new());
            if self.router.recv(&mut ident, zmq::DONTWAIT).is_err() {
                self.ident_msg = ident;
                self.next_read = now + REREAD;
                break;
            }
            let mut payload = std::mem::replace(&mut self.payload_msg, zmq::Message::new());
            let mut extra = false;
            if self.router.get_rcvmore().unwrap_or(false) {
                let _ = self.router.recv(&mut payload, 0);
                while self.router.get_rcvmore().unwrap_or(false) {
                    let mut junk = zmq::Message::new();
                    let _ = self.router.recv(&mut junk, 0);
                    extra = true;
                }
            } else {
                payload = zmq::Message::new();
            }
            n += 1;
            self.handle_message(&ident, &mut payload, extra, now);
            self.ident_msg = ident;
            self.payload_msg = payload;
        }
        if n > 0 {
            // At once, not with the other counters: the supervisor compares it with the
            // engine's progress, and an engine on this thread that stalls stops this thread too.
            self.counters
                .published
                .commands
                .store(self.stats.commands, Ordering::Relaxed);
        }
        n
    }

    /// One message from the order-entry socket: a disconnect notification, or a client frame.
    fn handle_message(
        &mut self,
        ident: &[u8],
        payload: &mut zmq::Message,
        extra: bool,
        now: Instant,
    ) {
        // libzmq's router notification (ZMQ_ROUTER_NOTIFY): the routing id and an empty frame,
        // without the metadata every frame from a connection carries.
        if payload.is_empty() && !extra && payload.gets("Peer-Address").is_none() {
            if let Some(sid) = self.sessions.find(ident) {
                self.sessions
                    .end(sid, SessionEnd::Disconnected, &mut self.stats);
            }
            return;
        }
        self.stats.frames_in += 1;
        let sid = match self.sessions.find(ident) {
            Some(sid) => self.sessions.touch(sid, now),
            None => {
                let peer = payload
                    .gets("Peer-Address")
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec();
                match self.sessions.session_for(ident, &peer, now) {
                    Some(sid) => sid,
                    None => {
                        return self.reply_without_session(ident, wire::RejectReason::SessionLimit);
                    }
                }
            }
        };
        if self.guard.is_some() {
            // The ZAP handler set the connection's User-Id to its key (module docs of
            // caldera_auth::zap): frames of keys that are not listed go no further.
            let user = payload.gets("User-Id").map(str::as_bytes);
            let unlisted = matches!(
                self.sessions.authenticate(sid, user, self.guard.as_deref()),
                Access::Unlisted
            );
            if unlisted {
                return self.frame_reject(sid, wire::RejectReason::NotEntitled);
            }
        }
        if extra {
            self.gateway_reject(
                sid,
                0,
                wire::RequestKind::Frame,
                wire::RejectReason::UnexpectedFrames,
                0,
                0,
            );
        } else {
            self.handle_frame(sid, payload);
        }
    }

    /// Answers a frame that gets no session (the session limits are reached): one `Rejected`
    /// in a report frame with session sequence 0, sent if libzmq takes it at once.
    fn reply_without_session(&mut self, ident: &[u8], reason: wire::RejectReason) {
        self.stats.gateway_rejects += 1;
        self.counters.reject(reason);
        let r = ServerReport::Rejected(wire::Rejected::new(
            0,
            0,
            0,
            0,
            0,
            reason,
            wire::RequestKind::Frame,
        ));
        codec::write_report_batch(&mut self.scratch, 0, &[r]);
        let sent = self
            .router
            .send(ident, zmq::SNDMORE | zmq::DONTWAIT)
            .is_ok()
            && self.router.send(&self.scratch[..], zmq::DONTWAIT).is_ok();
        if !sent {
            self.stats.undeliverable += 1;
        }
    }

    fn handle_frame(&mut self, sid: usize, payload: &[u8]) {
        if payload.len() > self.cfg.max_frame_bytes {
            return self.frame_reject(sid, wire::RejectReason::FrameTooLarge);
        }
        let before = self.pushed;
        let mut requests = std::mem::take(&mut self.requests);
        requests.clear();
        let result = codec::read_client_batch(payload, self.cfg.max_batch, &mut requests);
        for (i, req) in requests.iter().enumerate() {
            self.handle_request(sid, i, *req);
        }
        self.requests = requests;
        match result {
            Ok(0) => self.frame_reject(sid, wire::RejectReason::EmptyBatch),
            Ok(_) => {}
            Err(FrameError::Malformed(_)) => {
                self.frame_reject(sid, wire::RejectReason::MalformedMessage);
            }
            Err(FrameError::TooMany(_)) => {
                self.frame_reject(sid, wire::RejectReason::BatchTooLarge);
            }
        }
        if self.pushed != before {
            self.shared.engine_parker.wake();
            if self.samples.len() < self.samples.capacity() {
                self.samples.push_back(Sample {
                    commands: self.pushed,
                    read_ns: self.shared.now_ns(),
                    engine_ns: None,
                    durable_ns: None,
                });
            }
        }
    }

    fn handle_request(
        &mut self,
        sid: usize,
        index: usize,
        req: Result<ClientRequest, RequestError>,
    ) {
        self.stats.requests += 1;
        let req = match req {
            Ok(r) => r,
            Err(RequestError::UnknownType) => {
                return self.request_reject(sid, index, wire::RejectReason::UnknownMessageType);
            }
            Err(RequestError::Ambiguous) => {
                return self.request_reject(sid, index, wire::RejectReason::AmbiguousRequest);
            }
        };
        let (kind, cl, oid) = describe(&req);
        if !self.sessions.admit(sid, self.round) {
            return self.gateway_reject(sid, index, kind, wire::RejectReason::Throttled, cl, oid);
        }
        if self.stopping && !matches!(req, ClientRequest::Heartbeat(_)) {
            return self.gateway_reject(
                sid,
                index,
                kind,
                wire::RejectReason::ShuttingDown,
                cl,
                oid,
            );
        }
        match &req {
            ClientRequest::Logon(l) => {
                let refused = self.sessions.logon(sid, l.account()).err();
                return self.logon_refused(sid, index, kind, refused);
            }
            ClientRequest::LogonWith(l) => return self.logon_with(sid, index, l),
            ClientRequest::QueryOrders(q) => return self.query_orders(sid, index, q.request_id()),
            ClientRequest::Logout(l) => {
                let refused = self.sessions.logout(sid, l.account()).err();
                return self.logon_refused(sid, index, kind, refused);
            }
            ClientRequest::Heartbeat(h) => {
                return self.sessions.report(
                    sid,
                    ServerReport::HeartbeatAck(wire::HeartbeatAck::new(h.client_time_ns())),
                );
            }
            ClientRequest::ListSessions(l) => {
                if !self.sessions.access(sid).may_admin() {
                    return self.gateway_reject(
                        sid,
                        index,
                        kind,
                        wire::RejectReason::NotEntitled,
                        0,
                        0,
                    );
                }
                return self.sessions.list_sessions(sid, l.request_id());
            }
            _ => {}
        }
        let reject = |me: &mut Self, reason| me.gateway_reject(sid, index, kind, reason, cl, oid);
        let admin = matches!(
            req,
            ClientRequest::HaltInstrument(_)
                | ClientRequest::ResumeInstrument(_)
                | ClientRequest::CancelAll(_)
        );
        // Order entry acts for the session's account; admin requests name their own target.
        let account = if admin {
            if !self.sessions.access(sid).may_admin() {
                return reject(self, wire::RejectReason::NotEntitled);
            }
            self.sessions.observe_venue(sid);
            caldera_schema::map::VENUE
        } else {
            match self.sessions.account(sid) {
                Some(a) => a,
                None if self.sessions.access(sid).trades() => {
                    return reject(self, wire::RejectReason::NotLoggedOn);
                }
                // A read, admin or peer key never enters orders.
                None => return reject(self, wire::RejectReason::NotEntitled),
            }
        };
        if self.sessions.busy(sid, self.cfg.max_session_backlog) {
            return reject(self, wire::RejectReason::Busy);
        }
        if self.shared.journal.failed.load(Ordering::Relaxed) {
            return reject(self, wire::RejectReason::JournalUnavailable);
        }
        let cmd = match map::command(account, &req) {
            Ok(cmd) => cmd,
            Err(MapError::InvalidEnumValue | MapError::NotACommand) => {
                return reject(self, wire::RejectReason::InvalidEnumValue);
            }
        };
        // Room for a whole batch was checked before the frame was read.
        let copy_to = admin.then(|| self.sessions.reference(sid));
        if !self.push_command(cmd, copy_to) {
            reject(self, wire::RejectReason::Busy);
        }
    }

    /// Pushes `cmd` to the engine; false when the ring is full. An all-symbols mass cancel is
    /// remembered in order, with the admin session to copy its `MassCancelled` to (`copy_to`).
    fn push_command(&mut self, cmd: Command, copy_to: Option<SessionRef>) -> bool {
        if self.rings.commands.push(cmd).is_err() {
            return false;
        }
        self.pushed += 1;
        self.stats.commands += 1;
        if let Command::MassCancel(m) = cmd {
            if m.symbol.is_none() {
                self.all_symbol_cancels.push_back(copy_to);
            }
        }
        true
    }

    /// `LogonWith{account, resume_after, flags}`: a logon with options — a resend
    /// ([`LOGON_RESEND`]) and cancel on disconnect ([`LOGON_CANCEL_ON_DISCONNECT`]).
    fn logon_with(&mut self, sid: usize, index: usize, l: &wire::LogonWith) {
        let kind = wire::RequestKind::Logon;
        let flags = l.flags();
        if flags & !(LOGON_RESEND | LOGON_CANCEL_ON_DISCONNECT) != 0 {
            return self.gateway_reject(
                sid,
                index,
                kind,
                wire::RejectReason::InvalidEnumValue,
                0,
                0,
            );
        }
        let cancel = flags & LOGON_CANCEL_ON_DISCONNECT != 0;
        if cancel && !self.sessions.access(sid).trades() {
            // Only a trading session has orders to cancel.
            return self.gateway_reject(sid, index, kind, wire::RejectReason::NotEntitled, 0, 0);
        }
        let account = l.account();
        if flags & LOGON_RESEND == 0 {
            if let Err(refused) = self.sessions.logon(sid, account) {
                return self.logon_refused(sid, index, kind, Some(refused));
            }
        } else if !self.logon_resume(sid, index, account, l.resume_after()) {
            return;
        }
        self.sessions.set_cancel_on_disconnect(sid, cancel);
    }

    /// A logon, then the account's reports after `after` from the journal, then the live ones
    /// (see [`crate::resend`]). False when the logon itself was refused.
    fn logon_resume(&mut self, sid: usize, index: usize, account: u32, after: u64) -> bool {
        let kind = wire::RequestKind::Logon;
        if self.sessions.resuming(sid) || self.resends.len() >= MAX_RESENDS {
            self.gateway_reject(sid, index, kind, wire::RejectReason::Busy, 0, 0);
            return false;
        }
        if let Err(refused) = self.sessions.logon(sid, account) {
            self.logon_refused(sid, index, kind, Some(refused));
            return false;
        }
        let Some(history) = self.history.clone() else {
            // No journal: nothing before the next event is kept; the logon stands.
            let next = self.routed.load(Ordering::Relaxed) + 1;
            self.resend_unavailable(sid, index, next);
            return true;
        };
        let session = self.sessions.reference(sid);
        self.sessions.start_resume(sid, account);
        match ResendJob::start(
            &history,
            session,
            account,
            after,
            &self.routed,
            &self.shared,
        ) {
            Ok(job) => {
                tracing::info!(session = sid, account, after, "resend started");
                self.resends.push(job);
            }
            Err(e) => {
                tracing::error!(error = %e, "resend thread could not start");
                self.sessions.finish_resume(sid, after);
                self.resend_unavailable(sid, index, 0);
            }
        }
        true
    }

    /// `QueryOrders{request_id}`: asks the engine (on the query ring, never journaled) for the
    /// live orders of the session's trading account.
    fn query_orders(&mut self, sid: usize, index: usize, request_id: u64) {
        let kind = wire::RequestKind::QueryOrders;
        let reject = |me: &mut Self, reason| me.gateway_reject(sid, index, kind, reason, 0, 0);
        let Some(account) = self.sessions.account(sid) else {
            return if self.sessions.access(sid).trades() {
                reject(self, wire::RejectReason::NotLoggedOn)
            } else {
                reject(self, wire::RejectReason::NotEntitled)
            };
        };
        if self.sessions.busy(sid, self.cfg.max_session_backlog)
            || self.orders_answers.len() >= 1024
        {
            return reject(self, wire::RejectReason::Busy);
        }
        if self.rings.queries.push(OrdersQuery { account }).is_err() {
            return reject(self, wire::RejectReason::Busy);
        }
        self.orders_answers.push_back(OrdersAnswer {
            session: self.sessions.reference(sid),
            request_id,
            rows: Vec::new(),
            as_of: 0,
            count: None,
        });
        self.shared.engine_parker.wake();
    }

    /// Takes the engine's answer rows, and sends each complete answer once the gateway has
    /// routed every event up to its `as_of` sequence: the rows then come after every report
    /// they reflect, and before every later one (and, like a report, only once what they
    /// reflect is durable). Returns the rows and answers handled.
    fn answer_orders(&mut self) -> usize {
        let mut work = 0;
        while let Ok(row) = self.rings.answers.pop() {
            work += 1;
            let Some(a) = self.orders_answers.iter_mut().find(|a| a.count.is_none()) else {
                tracing::error!("an order row without a query: dropped");
                continue;
            };
            a.as_of = row.as_of;
            if row.count == 0 || row.count == OrderRow::BUSY {
                a.count = Some(row.count);
                continue;
            }
            a.rows.push(wire::OpenOrder::new(
                a.request_id,
                row.order_id,
                row.client_order_id,
                row.price,
                row.open_qty,
                row.as_of,
                row.symbol,
                row.index,
                row.count,
                caldera_schema::convert::side(row.side),
            ));
            if a.rows.len() == row.count as usize {
                a.count = Some(row.count);
            }
        }
        let routed = self.routed.load(Ordering::Relaxed);
        while self
            .orders_answers
            .front()
            .is_some_and(|a| a.count.is_some() && a.as_of <= routed)
        {
            let a = self.orders_answers.pop_front().expect("front");
            work += 1;
            if !self.sessions.is_current(a.session) {
                continue;
            }
            let sid = a.session.sid;
            match a.count {
                Some(OrderRow::BUSY) => {
                    self.gateway_reject(
                        sid,
                        0,
                        wire::RequestKind::QueryOrders,
                        wire::RejectReason::Busy,
                        0,
                        0,
                    );
                }
                Some(0) => self.sessions.report(
                    sid,
                    ServerReport::OpenOrder(wire::OpenOrder::new(
                        a.request_id,
                        0,
                        0,
                        0,
                        0,
                        a.as_of,
                        0,
                        0,
                        0,
                        wire::Side::Buy,
                    )),
                ),
                _ => {
                    for r in a.rows {
                        self.sessions.report(sid, ServerReport::OpenOrder(r));
                    }
                }
            }
        }
        work
    }

    /// Sends the engine a mass cancel (all symbols) for each account whose cancel-on-disconnect
    /// session ended or logged out. A full ring keeps them for the next round (never dropped);
    /// a stopping node sends none (its orders stay for the next primary, as after a failover).
    fn cancel_on_disconnect(&mut self) -> usize {
        let mut n = 0;
        while let Some(account) = self.sessions.next_disconnect_cancel() {
            if self.stopping {
                tracing::info!(
                    account,
                    "cancel on disconnect skipped: the node is stopping"
                );
                self.sessions.pop_disconnect_cancel();
                continue;
            }
            let cmd = Command::MassCancel(caldera_engine::MassCancel {
                account,
                symbol: None,
            });
            if !self.push_command(cmd, None) {
                break;
            }
            self.sessions.pop_disconnect_cancel();
            self.stats.disconnect_cancels += 1;
            tracing::info!(
                account,
                "cancel on disconnect: the account's resting orders are cancelled"
            );
            n += 1;
        }
        if n > 0 {
            self.shared.engine_parker.wake();
        }
        n
    }

    /// `Rejected{ResendUnavailable}`: `oldest` is the oldest event sequence still kept.
    fn resend_unavailable(&mut self, sid: usize, index: usize, oldest: u64) {
        let reason = wire::RejectReason::ResendUnavailable;
        self.reject_with_seq(sid, index, wire::RequestKind::Logon, reason, (0, 0), oldest);
    }

    /// Takes what the resend threads read: resent reports for sessions that are reading
    /// theirs (a session with a backlog waits: its resend slows, nothing else does), and the
    /// ends of resends. Returns the chunks taken.
    fn poll_resends(&mut self) -> usize {
        let mut work = 0;
        let mut i = 0;
        // Held live reports a session may accumulate while its resend runs (then it ends,
        // as a session that does not read its reports does).
        let max_held = self.cfg.max_session_backlog_bytes / 64;
        while i < self.resends.len() {
            let job = &mut self.resends[i];
            let sid = job.session.sid;
            if !self.sessions.is_current(job.session) {
                self.resends.swap_remove(i);
                continue;
            }
            if !self.sessions.receives(sid, job.account) {
                // Logged out or replaced while its resend ran.
                self.sessions.abort_resume(sid, &mut self.stats);
                self.resends.swap_remove(i);
                continue;
            }
            if self.sessions.held(sid) > max_held {
                tracing::warn!(
                    session = sid,
                    held = self.sessions.held(sid),
                    "live reports held back during a resend passed the session's limit: session ended"
                );
                self.sessions.end(sid, SessionEnd::Backlog, &mut self.stats);
                self.resends.swap_remove(i);
                continue;
            }
            if self.sessions.busy(sid, self.cfg.max_session_backlog) {
                i += 1;
                continue;
            }
            let chunk = match job.rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => {
                    i += 1;
                    continue;
                }
                Err(TryRecvError::Disconnected) => {
                    Chunk::Failed(HistoryError::Read("the resend thread ended".into()))
                }
            };
            work += 1;
            match chunk {
                Chunk::Reports { reports, through } => {
                    job.count += reports.len() as u64;
                    self.stats.resent_reports += reports.len() as u64;
                    self.sessions.trim_held(sid, through);
                    self.sessions
                        .resend(sid, &reports, &self.router, &mut self.stats);
                    i += 1;
                }
                Chunk::Done { through } => {
                    let (account, after, count) = (job.account, job.after, job.count);
                    self.sessions.report(
                        sid,
                        ServerReport::ResendComplete(wire::ResendComplete::new(
                            after, through, count, account,
                        )),
                    );
                    self.sessions.finish_resume(sid, through.max(after));
                    self.stats.resends += 1;
                    tracing::info!(
                        session = sid,
                        account,
                        after,
                        through,
                        count,
                        "resend complete"
                    );
                    self.resends.swap_remove(i);
                }
                Chunk::Failed(e) => {
                    let after = job.after;
                    tracing::warn!(session = sid, error = %e, "resend failed");
                    let oldest = match e {
                        HistoryError::Dropped { oldest } => oldest,
                        HistoryError::Read(_) => 0,
                    };
                    self.resend_unavailable(sid, 0, oldest);
                    self.sessions.finish_resume(sid, after);
                    self.resends.swap_remove(i);
                }
            }
        }
        work
    }

    fn logon_refused(
        &mut self,
        sid: usize,
        index: usize,
        request: wire::RequestKind,
        refused: Option<LogonRefused>,
    ) {
        let reason = match refused {
            None => return,
            Some(LogonRefused::NotEntitled) => wire::RejectReason::NotEntitled,
            Some(LogonRefused::AlreadyLoggedOn) => wire::RejectReason::AlreadyLoggedOn,
            Some(LogonRefused::NotLoggedOn) => wire::RejectReason::NotLoggedOn,
            Some(LogonRefused::InvalidAccount) => wire::RejectReason::InvalidAccount,
        };
        self.gateway_reject(sid, index, request, reason, 0, 0);
    }

    fn frame_reject(&mut self, sid: usize, reason: wire::RejectReason) {
        self.gateway_reject(sid, 0, wire::RequestKind::Frame, reason, 0, 0);
    }

    fn request_reject(&mut self, sid: usize, index: usize, reason: wire::RejectReason) {
        self.gateway_reject(sid, index, wire::RequestKind::Frame, reason, 0, 0);
    }

    fn gateway_reject(
        &mut self,
        sid: usize,
        index: usize,
        request: wire::RequestKind,
        reason: wire::RejectReason,
        cl: u64,
        oid: u64,
    ) {
        self.reject_with_seq(sid, index, request, reason, (cl, oid), 0);
    }

    /// A gateway reject of a request naming `(client order id, order id)`; `engine_seq` is 0
    /// but for `ResendUnavailable` (the oldest sequence kept).
    fn reject_with_seq(
        &mut self,
        sid: usize,
        index: usize,
        request: wire::RequestKind,
        reason: wire::RejectReason,
        (cl, oid): (u64, u64),
        engine_seq: u64,
    ) {
        self.stats.gateway_rejects += 1;
        self.counters.reject(reason);
        let r = wire::Rejected::new(
            oid,
            cl,
            engine_seq,
            0,
            u32::try_from(index).unwrap_or(u32::MAX),
            reason,
            request,
        );
        self.sessions.report(sid, ServerReport::Rejected(r));
    }

    /// Whether the next event in the ring may be reported (with a journal: it is durable).
    fn next_releasable(&self) -> bool {
        match self.rings.events.peek() {
            Ok(Output::Event(ev)) if self.shared.journal_enabled() => {
                ev.seq <= self.shared.journal.forwarded_seq.load(Ordering::Acquire)
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Routes up to `max` engine events — with a journal, only those it made durable. Returns
    /// the number of ring items taken.
    fn route_events(&mut self, max: usize) -> usize {
        let gate = self
            .shared
            .journal_enabled()
            .then(|| self.shared.journal.forwarded_seq.load(Ordering::Acquire));
        let mut n = 0;
        let mut events = 0;
        let mut routed = 0;
        // One run of the ring at a time, released at once (one publication of its head).
        let Ok(run) = self
            .rings
            .events
            .read_chunk(self.rings.events.slots().min(max))
        else {
            return 0;
        };
        let (a, b) = run.as_slices();
        for item in a.iter().chain(b) {
            if let (Some(gate), Output::Event(ev)) = (gate, item) {
                if ev.seq > gate {
                    break;
                }
            }
            n += 1;
            if let Output::Event(ev) = item {
                events += 1;
                self.md.saw(ev.seq);
                if let EventBody::Rejected(r) = &ev.body {
                    self.counters.reject(convert::reject_reason(r.reason));
                }
                let (sessions, stats) = (&mut self.sessions, &mut self.stats);
                let mut last = None;
                let seq = ev.seq;
                map::reports(ev, |account, report| {
                    last = Some(report);
                    if !sessions.report_to_account(account, seq, report) {
                        stats.undeliverable += 1;
                    }
                });
                routed = seq;
                if let (EventBody::MassCancelled(m), Some(report)) = (&ev.body, last) {
                    // Exactly one per all-symbols mass cancel, in command order: a CancelAll's
                    // outcome also goes to the admin who sent it.
                    if m.symbol.is_none() {
                        if let Some(Some(admin)) = self.all_symbol_cancels.pop_front() {
                            if self.sessions.is_current(admin) {
                                self.sessions.report(admin.sid, report);
                            }
                        }
                    }
                }
                match &ev.body {
                    EventBody::Trade(t) => self.md.trade(ev.seq, t),
                    EventBody::BookDelta(d) => self.md.delta(ev.seq, d),
                    EventBody::InstrumentStatus(s) => self.md.status(ev.seq, s),
                    _ => {}
                }
            }
        }
        run.commit(n);
        self.stats.events += events;
        if events > 0 {
            // After the reports were queued or held: a resend reads up to here.
            self.routed.store(routed, Ordering::Release);
        }
        n
    }

    /// Times the sampled frames through the stages: when the engine had processed them, when
    /// the journal released them, and — once this round routed their events and flushed the
    /// reports — when their reports went out.
    fn observe_latency(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let sh = &self.shared;
        let engine_commands = sh.engine.commands.load(Ordering::Acquire);
        let engine_ns = sh.engine.done_ns.load(Ordering::Relaxed);
        let journal = sh.journal_enabled();
        let forwarded = sh.journal.commands_forwarded.load(Ordering::Acquire);
        let released_ns = sh.journal.released_ns.load(Ordering::Relaxed);
        let out_ns = sh.now_ns();
        let c = &self.counters;
        for s in &mut self.samples {
            if s.engine_ns.is_none() && engine_commands >= s.commands {
                s.engine_ns = Some(engine_ns.max(s.read_ns));
            }
            if journal && s.durable_ns.is_none() && forwarded >= s.commands {
                s.durable_ns = Some(released_ns.max(s.read_ns));
            }
        }
        while let Some(s) = self.samples.front() {
            if s.commands > self.released_before_routing {
                break;
            }
            let engine = s.engine_ns.unwrap_or(out_ns);
            let durable = if journal {
                s.durable_ns.unwrap_or(out_ns).max(engine)
            } else {
                engine
            };
            let d = |from: u64, to: u64| Duration::from_nanos(to.saturating_sub(from));
            c.request_to_durable.observe(d(s.read_ns, durable));
            c.stages[Stage::Engine as usize].observe(d(s.read_ns, engine));
            c.stages[Stage::Journal as usize].observe(d(engine, durable));
            c.stages[Stage::Report as usize].observe(d(durable, out_ns));
            c.stages[Stage::Total as usize].observe(d(s.read_ns, out_ns));
            self.samples.pop_front();
        }
    }

    /// The entitlements were reloaded: sessions that lost an entitlement are logged out.
    fn check_entitlements(&mut self) {
        let Some(guard) = &self.guard else {
            return;
        };
        let v = guard.version();
        if v != self.auth_version {
            self.auth_version = v;
            let changed = self.sessions.revalidate(guard);
            tracing::info!(
                sessions_logged_out = changed,
                "entitlements changed: sessions re-checked"
            );
        }
    }

    /// Copies the gateway's counters and gauges into the shared counters (every 5 ms).
    fn publish(&mut self, now: Instant) {
        self.stats.sessions_ended = self.sessions.ended;
        let m = &self.counters.published;
        let s = &self.stats;
        let st = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        st(&m.frames_in, s.frames_in);
        st(&m.requests, s.requests);
        st(&m.commands, s.commands);
        st(&m.events, s.events);
        st(&m.reports, s.reports);
        st(&m.undeliverable, s.undeliverable);
        st(&m.ring_full_pauses, s.ring_full_pauses);
        st(&m.resends, s.resends);
        st(&m.resent_reports, s.resent_reports);
        st(&m.disconnect_cancels, s.disconnect_cancels);
        st(&m.sessions, self.sessions.len() as u64);
        for (a, v) in m.sessions_ended.iter().zip(self.sessions.ended) {
            st(a, v);
        }
        st(
            &m.inbound_ring_used,
            (self.rings.capacity - self.rings.commands.slots()) as u64,
        );
        st(&m.outbound_ring_used, self.rings.events.slots() as u64);
        st(
            &m.engine_seq,
            self.shared.engine.seq.load(Ordering::Relaxed),
        );
        st(&m.durable_seq, self.shared.releasable_seq());
        m.journal_unavailable.store(
            self.shared.journal.failed.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.last_publish = now;
    }

    /// Publishes market data: the changes since the last round, and a full snapshot when due.
    fn publish_market_data(&mut self, now: Instant) {
        self.md.flush(&self.publisher);
        if let Some(due) = self.next_md_snapshot {
            if now >= due {
                self.md.snapshot(&self.publisher);
                self.next_md_snapshot =
                    Some(now + Duration::from_millis(self.cfg.md_snapshot_interval_ms));
            }
        }
    }

    /// Shutdown: after the signal, stop reading; done once the engine has finished every
    /// command read, the journal has released its events (or the linger ran out), every event
    /// the engine produced is routed, and every report is delivered (or the linger ran out).
    ///
    /// "Routed", not "the event ring is empty": the journal hands events to that ring only as
    /// it has room (a large command's events wait in the journal's backlog), so the ring can be
    /// empty with events still to come, and a gateway that stopped then would leave the journal
    /// unable to hand them over, and the node unable to exit.
    fn check_shutdown(&mut self, now: Instant) {
        if self.shared.journal.fenced.load(Ordering::Relaxed) {
            self.finished = true;
            return;
        }
        if self.shutdown.load(Ordering::Relaxed) && !self.stopping {
            self.stopping = true;
            self.stop_deadline = Some(now + Duration::from_millis(self.cfg.shutdown_linger_ms));
            tracing::info!("shutdown requested: no new requests; draining");
        }
        if !self.stopping {
            return;
        }
        let lingered = self.stop_deadline.is_some_and(|d| now > d);
        let engine_done = self.shared.engine.commands.load(Ordering::Acquire) == self.pushed;
        let engine_seq = self.shared.engine.seq.load(Ordering::Acquire);
        let journal_done = !self.shared.journal_enabled()
            || self.shared.journal.forwarded_seq.load(Ordering::Acquire) >= engine_seq
            || lingered;
        let all_routed = self.routed.load(Ordering::Relaxed) >= engine_seq
            && (self.shared.journal_enabled() || self.rings.events.is_empty());
        if engine_done && journal_done && all_routed && (!self.sessions.has_backlog() || lingered) {
            self.finished = true;
        }
    }
}

impl Agent for Gateway<'_> {
    fn do_work(&mut self) -> usize {
        // One clock read per round serves reading, latency samples, metrics, snapshots and
        // shutdown.
        let now = Instant::now();
        self.round = now;
        let mut work = self.read_requests(now);
        if self.sessions.has_disconnect_cancels() {
            work += self.cancel_on_disconnect();
        }
        self.released_before_routing = self.shared.releasable_commands();
        work += self.route_events(8192);
        if !self.resends.is_empty() {
            work += self.poll_resends();
        }
        if !self.orders_answers.is_empty() {
            work += self.answer_orders();
        }
        self.sessions.flush(&self.router, &mut self.stats);
        self.observe_latency();
        if now.duration_since(self.last_publish) >= Duration::from_millis(5) {
            self.publish(now);
        }
        self.publish_market_data(now);
        self.check_entitlements();
        self.sessions.sweep_idle(now, &mut self.stats);
        self.check_shutdown(now);
        work
    }

    /// Sleeps in `zmq_poll` until a request arrives, the journal or engine signals events, or a
    /// short timeout (1 ms while draining or retrying a backlog, else 50 ms).
    fn sleep(&mut self) {
        let waker = &self.shared.gateway_waker;
        waker.announce_sleep();
        if !self.next_releasable() {
            let timeout = if self.sessions.has_backlog() || self.stopping {
                1
            } else {
                50
            };
            let read = if !self.stopping && !self.ring_has_room() {
                zmq::PollEvents::empty()
            } else {
                zmq::POLLIN
            };
            let mut items = [
                self.router.as_poll_item(read),
                zmq::PollItem::from_fd(waker.fd(), zmq::POLLIN),
            ];
            let _ = zmq::poll(&mut items, timeout);
        }
        // Awake: look at the socket again at once.
        self.next_read = Instant::now();
        waker.awake();
    }

    fn done(&self) -> bool {
        self.finished
    }
}
