//! The gateway thread: ZeroMQ ROUTER order entry → validation → inbound SPSC ring; outbound SPSC
//! ring → per-session execution reports and market data.
//!
//! Back-pressure is explicit and loses nothing:
//! - inbound ring full: the gateway stops reading the ROUTER socket (requests wait in libzmq's
//!   queue, then in TCP, then the client's DEALER send blocks or fails with EAGAIN);
//! - a session that does not read its reports: its report frames are kept in a per-session
//!   backlog (ROUTER_MANDATORY, so libzmq never drops them); once the backlog reaches
//!   `max_session_backlog` frames its new order-entry requests are rejected with `Busy`;
//! - outbound ring full: the engine thread waits for room (never drops an event).

use crate::config::{Config, JournalUri, WaitStrategy};
use crate::engine_thread::{self, EngineReport, Output, Shared};
use crate::journal_thread::{self, JournalStage, JournalStats};
use crate::market_data::MarketData;
use crate::metrics::Metrics;
use caldera_engine::{Cancel, Command, Event, EventBody, MassCancel, NewOrder, OrderRef, Replace};
use caldera_schema::codec::{self, ClientRequest, FrameError, RequestError, ServerReport};
use caldera_schema::{convert, wire};
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};
use rtrb::{Consumer, Producer, RingBuffer};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors that stop `serve` from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigFileError),
    /// A socket could not be created or bound.
    #[error("{what} {endpoint}: {source}")]
    Socket {
        /// What failed.
        what: &'static str,
        /// Endpoint.
        endpoint: String,
        /// Cause.
        source: zmq::Error,
    },
    /// Thread or eventfd creation failed.
    #[error("start-up: {0}")]
    Io(#[from] std::io::Error),
    /// The engine thread panicked.
    #[error("the engine thread panicked")]
    EnginePanicked,
    /// The journal could not be opened or replayed.
    #[error("journal: {0}")]
    Journal(String),
    /// A newer primary took over; this one stopped without releasing anything more.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// Counters of one `serve` run.
#[derive(Debug, Default, Clone)]
pub struct GatewayStats {
    /// Frames read from clients.
    pub frames_in: u64,
    /// Requests decoded.
    pub requests: u64,
    /// Commands pushed to the engine.
    pub commands: u64,
    /// Requests rejected by the gateway (never reached the engine).
    pub gateway_rejects: u64,
    /// Events received from the engine.
    pub events: u64,
    /// Report frames sent.
    pub report_frames: u64,
    /// Reports sent.
    pub reports: u64,
    /// Reports for accounts with no logged-on session, or sessions that disconnected.
    pub undeliverable: u64,
    /// Times the gateway stopped reading because the inbound ring was full.
    pub ring_full_pauses: u64,
}

/// Result of a `serve` run.
#[derive(Debug)]
pub struct ServeSummary {
    /// Journal stage counters (None without a journal).
    pub journal: Option<JournalStats>,
    /// Sequence the engine started from (recovered from the journal).
    pub recovered_seq: u64,
    /// The engine thread's report (final engine state included).
    pub engine: EngineReport,
    /// Gateway counters.
    pub gateway: GatewayStats,
    /// Market-data messages published.
    pub md_published: u64,
}

struct Session {
    ident: Vec<u8>,
    account: Option<u32>,
    next_seq: u64,
    out: Vec<ServerReport>,
    backlog: VecDeque<Vec<u8>>,
    dirty: bool,
    gone: bool,
}

struct Gateway<'a> {
    cfg: &'a Config,
    router: zmq::Socket,
    publisher: zmq::Socket,
    in_tx: Producer<Command>,
    out_rx: Consumer<Output>,
    shared: Arc<Shared>,
    sessions: Vec<Session>,
    by_ident: HashMap<Vec<u8>, usize>,
    by_account: HashMap<u32, usize>,
    dirty: Vec<usize>,
    /// Sessions with report frames waiting in their backlog (retried every iteration).
    backlogged: Vec<usize>,
    md: MarketData,
    fbb: FlatBufferBuilder<'static>,
    offsets: Vec<WIPOffset<wire::Report<'static>>>,
    verifier: VerifierOptions,
    stats: GatewayStats,
    pushed: u64,
    stopping: bool,
    ident_msg: zmq::Message,
    payload_msg: zmq::Message,
    metrics: Arc<Metrics>,
    /// (commands pushed when a frame was read, when): latency samples awaiting durability.
    samples: VecDeque<(u64, Instant)>,
    last_publish: Instant,
}

/// Binds the sockets, starts the engine thread, and runs the gateway until `shutdown` is set;
/// then stops reading, drains the rings, flushes every report and returns.
///
/// # Errors
/// [`ServeError`] on start-up failures.
pub fn serve(cfg: &Config, shutdown: &AtomicBool) -> Result<ServeSummary, ServeError> {
    serve_with_ready(cfg, shutdown, |_| {})
}

/// Like [`serve`], calling `ready` with the bound order-entry endpoint once clients can connect.
///
/// # Errors
/// [`ServeError`] on start-up failures.
pub fn serve_with_ready(
    cfg: &Config,
    shutdown: &AtomicBool,
    ready: impl FnOnce(&str),
) -> Result<ServeSummary, ServeError> {
    cfg.validate()?;
    let primary = crate::failover::open_primary(cfg)?;
    serve_primary(cfg, primary, shutdown, ready)
}

/// Serves as the primary with an engine and journal already recovered (by
/// [`crate::failover::open_primary`] or a standby's promotion).
///
/// # Errors
/// [`ServeError`] on start-up failures, or [`ServeError::Fenced`] when a newer primary took over.
pub fn serve_primary(
    cfg: &Config,
    primary: crate::failover::Primary,
    shutdown: &AtomicBool,
    ready: impl FnOnce(&str),
) -> Result<ServeSummary, ServeError> {
    serve_primary_with(cfg, primary, shutdown, ready, &Arc::new(Metrics::default()))
}

/// Like [`serve_primary`], reporting into `metrics` (served by [`crate::metrics::serve_http`]).
///
/// # Errors
/// As [`serve_primary`].
pub fn serve_primary_with(
    cfg: &Config,
    primary: crate::failover::Primary,
    shutdown: &AtomicBool,
    ready: impl FnOnce(&str),
    metrics: &Arc<Metrics>,
) -> Result<ServeSummary, ServeError> {
    let crate::failover::Primary {
        engine,
        backend,
        epoch,
        shadow,
    } = primary;
    let recovered_seq = engine.last_seq();
    let ctx = zmq::Context::new();
    let g = &cfg.gateway;
    let sock = |what, endpoint: &str, source| ServeError::Socket {
        what,
        endpoint: endpoint.to_string(),
        source,
    };
    let router = ctx
        .socket(zmq::ROUTER)
        .map_err(|e| sock("creating order-entry socket", &g.order_entry, e))?;
    router
        .set_router_mandatory(true)
        .map_err(|e| sock("configuring", &g.order_entry, e))?;
    router
        .set_sndhwm(g.sndhwm)
        .map_err(|e| sock("configuring", &g.order_entry, e))?;
    router
        .set_rcvhwm(g.rcvhwm)
        .map_err(|e| sock("configuring", &g.order_entry, e))?;
    router
        .set_maxmsgsize(g.max_message_bytes)
        .map_err(|e| sock("configuring", &g.order_entry, e))?;
    router
        .set_linger(i32::try_from(g.shutdown_linger_ms).unwrap_or(i32::MAX))
        .map_err(|e| sock("configuring", &g.order_entry, e))?;
    router
        .bind(&g.order_entry)
        .map_err(|e| sock("binding order entry to", &g.order_entry, e))?;
    let publisher = ctx
        .socket(zmq::PUB)
        .map_err(|e| sock("creating market-data socket", &g.market_data, e))?;
    publisher
        .set_sndhwm(g.md_sndhwm)
        .map_err(|e| sock("configuring", &g.market_data, e))?;
    publisher
        .set_linger(1000)
        .map_err(|e| sock("configuring", &g.market_data, e))?;
    publisher
        .bind(&g.market_data)
        .map_err(|e| sock("binding market data to", &g.market_data, e))?;
    let bound = router
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| g.order_entry.clone());
    let md_bound = publisher
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| g.market_data.clone());

    let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let wait = cfg.threads.wait.resolve(cores);
    let engine_core = cfg
        .threads
        .engine_core
        .or_else(|| (cores >= 4).then(|| cores - 1));
    let (in_tx, in_rx) = RingBuffer::<Command>::new(cfg.threads.ring_capacity);
    let (out_tx, engine_out_rx) = RingBuffer::<Output>::new(cfg.threads.ring_capacity);
    let shared = Arc::new(Shared::new()?);
    shared.engine_seq.store(recovered_seq, Ordering::SeqCst);
    shared.forwarded_seq.store(recovered_seq, Ordering::SeqCst);
    let symbols: Vec<u32> = cfg.instruments.iter().map(|i| i.id).collect();
    let (out_rx, journal_handle) = match backend {
        Some((backend, snapshots)) => {
            shared.journal_enabled.store(true, Ordering::SeqCst);
            let (jtx, jrx) = RingBuffer::<Output>::new(cfg.threads.ring_capacity);
            let stage = JournalStage {
                epoch,
                heartbeat: Duration::from_millis(cfg.failover.heartbeat_ms),
                metrics: Arc::clone(metrics),
                snapshots,
                snapshot_every_events: cfg.journal.snapshot_every_events,
                retention: journal_thread::Retention {
                    max_bytes: cfg.journal.retention_bytes,
                    max_age: cfg.journal.retention_age_s.map(Duration::from_secs),
                },
                // Kafka brokers cap record sizes (1 MB by default): keep batches well below.
                max_batch_items: if matches!(cfg.journal.parsed(), Ok(JournalUri::Kafka { .. })) {
                    4096
                } else {
                    16_384
                },
            };
            let h = journal_thread::spawn(
                backend,
                // The standby kept a shadow in step (no copy on the failover path).
                shadow.unwrap_or_else(|| engine.clone()),
                engine_out_rx,
                jtx,
                Arc::clone(&shared),
                wait,
                stage,
            )?;
            (jrx, Some(h))
        }
        None => (engine_out_rx, None),
    };
    let handle = engine_thread::spawn(
        engine,
        in_rx,
        out_tx,
        Arc::clone(&shared),
        wait,
        engine_core,
    )?;
    if let Some(core) = cfg.threads.gateway_core {
        let ok = core_affinity::get_core_ids()
            .and_then(|ids| ids.into_iter().find(|c| c.id == core))
            .is_some_and(core_affinity::set_for_current);
        if !ok {
            tracing::warn!(core, "could not pin the gateway thread; running unpinned");
        }
    }
    tracing::info!(order_entry = %bound, market_data = %md_bound, cores, ?wait, ?engine_core, "serving");

    let mut gw = Gateway {
        cfg,
        router,
        publisher,
        in_tx,
        out_rx,
        shared: Arc::clone(&shared),
        sessions: Vec::new(),
        by_ident: HashMap::new(),
        by_account: HashMap::new(),
        dirty: Vec::new(),
        backlogged: Vec::new(),
        md: MarketData::new(symbols),
        fbb: FlatBufferBuilder::with_capacity(1 << 16),
        offsets: Vec::with_capacity(4096),
        verifier: codec::verifier_options(g.max_batch),
        stats: GatewayStats::default(),
        pushed: 0,
        stopping: false,
        ident_msg: zmq::Message::new(),
        payload_msg: zmq::Message::new(),
        metrics: Arc::clone(metrics),
        samples: VecDeque::with_capacity(4096),
        last_publish: Instant::now(),
    };
    metrics
        .ring_capacity
        .store(cfg.threads.ring_capacity as u64, Ordering::Relaxed);
    metrics.serving.store(true, Ordering::Relaxed);
    ready(&bound);
    gw.run(shutdown, wait);
    metrics.serving.store(false, Ordering::Relaxed);
    if shared.fenced.load(Ordering::SeqCst) {
        // Release nothing more; the process exits without joining the pipeline threads.
        return Err(ServeError::Fenced(format!(
            "epoch {epoch} was superseded by a newer primary"
        )));
    }
    // The engine has consumed every command; stop it and route what is left.
    shared.stop.store(true, Ordering::SeqCst);
    shared.wake_engine();
    let report = handle.join().map_err(|_| ServeError::EnginePanicked)?;
    let journal = match journal_handle {
        Some(h) => Some(
            h.join()
                .map_err(|_| ServeError::Journal("the journal thread panicked".into()))?,
        ),
        None => None,
    };
    gw.drain_events(usize::MAX);
    gw.flush_sessions();
    gw.md.flush(&gw.publisher);
    if g.md_snapshot_interval_ms != 0 {
        gw.md.snapshot(&gw.publisher);
    }
    let linger = Instant::now() + Duration::from_millis(g.shutdown_linger_ms);
    while gw.has_backlog() && Instant::now() < linger {
        gw.flush_sessions();
        std::thread::sleep(Duration::from_millis(1));
    }
    let summary = ServeSummary {
        md_published: gw.md.published,
        gateway: gw.stats.clone(),
        engine: report,
        journal,
        recovered_seq,
    };
    drop(gw); // closes the sockets; the context's drop waits up to the linger for queued frames
    Ok(summary)
}

impl Gateway<'_> {
    fn run(&mut self, shutdown: &AtomicBool, wait: WaitStrategy) {
        let snapshot_every = Duration::from_millis(self.cfg.gateway.md_snapshot_interval_ms);
        let mut next_snapshot = Instant::now() + snapshot_every;
        let mut idle = 0u32;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if self.shared.fenced.load(Ordering::Relaxed) {
                return;
            }
            let mut work = 0;
            if !self.stopping {
                work += self.read_requests();
            }
            work += self.drain_events(8192);
            // One clock read per iteration serves latency samples, metrics and snapshots.
            let now = Instant::now();
            self.observe_latency(now);
            self.flush_sessions();
            if now.duration_since(self.last_publish) >= Duration::from_millis(5) {
                self.publish(now);
            }
            self.md.flush(&self.publisher);
            if !snapshot_every.is_zero() && now >= next_snapshot {
                self.md.snapshot(&self.publisher);
                next_snapshot = now + snapshot_every;
            }
            if shutdown.load(Ordering::Relaxed) && !self.stopping {
                self.stopping = true;
                stop_deadline = Some(
                    Instant::now() + Duration::from_millis(self.cfg.gateway.shutdown_linger_ms),
                );
                tracing::info!("shutdown requested: no new requests; draining");
            }
            if self.stopping {
                let engine_done =
                    self.shared.commands_processed.load(Ordering::Acquire) == self.pushed;
                let engine_seq = self.shared.engine_seq.load(Ordering::Acquire);
                let journal_done = !self.shared.journal_enabled.load(Ordering::Relaxed)
                    || self.shared.forwarded_seq.load(Ordering::Acquire) >= engine_seq
                    || stop_deadline.is_some_and(|d| Instant::now() > d);
                if engine_done
                    && journal_done
                    && self.out_rx.is_empty()
                    && (!self.has_backlog() || stop_deadline.is_some_and(|d| Instant::now() > d))
                {
                    return;
                }
            }
            if work > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if wait == WaitStrategy::Spin || idle < 64 {
                std::hint::spin_loop();
                continue;
            }
            // Sleep in zmq_poll until a request arrives or the engine signals events.
            self.shared.gateway_sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.out_rx.is_empty() {
                let timeout = if self.has_backlog() || self.stopping {
                    1
                } else {
                    50
                };
                let fd = self.shared.wake_gateway.as_raw_fd();
                let mut items = [
                    self.router
                        .as_poll_item(if self.stopping || !self.ring_has_room() {
                            zmq::PollEvents::empty()
                        } else {
                            zmq::POLLIN
                        }),
                    zmq::PollItem::from_fd(fd, zmq::POLLIN),
                ];
                let _ = zmq::poll(&mut items, timeout);
                self.shared.drain_gateway_wakeups();
            }
            self.shared.gateway_sleeping.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }

    /// Completes latency samples whose commands are now durable (forwarded by the journal, or
    /// processed by the engine without one).
    fn observe_latency(&mut self, now: Instant) {
        if self.samples.is_empty() {
            return;
        }
        let done = if self.shared.journal_enabled.load(Ordering::Relaxed) {
            self.shared.commands_forwarded.load(Ordering::Acquire)
        } else {
            self.shared.commands_processed.load(Ordering::Acquire)
        };
        while let Some(&(target, t)) = self.samples.front() {
            if target > done {
                break;
            }
            self.metrics
                .request_to_durable
                .observe(now.saturating_duration_since(t));
            self.samples.pop_front();
        }
    }

    /// Copies the gateway's counters and gauges into the shared metrics.
    fn publish(&mut self, now: Instant) {
        let m = &self.metrics;
        let s = &self.stats;
        let st = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        st(&m.frames_in, s.frames_in);
        st(&m.requests, s.requests);
        st(&m.commands, s.commands);
        st(&m.events, s.events);
        st(&m.reports, s.reports);
        st(&m.undeliverable, s.undeliverable);
        st(&m.ring_full_pauses, s.ring_full_pauses);
        st(&m.sessions, self.sessions.len() as u64);
        st(
            &m.inbound_ring_used,
            (self.cfg.threads.ring_capacity - self.in_tx.slots()) as u64,
        );
        st(&m.outbound_ring_used, self.out_rx.slots() as u64);
        st(
            &m.engine_seq,
            self.shared.engine_seq.load(Ordering::Relaxed),
        );
        let durable = if self.shared.journal_enabled.load(Ordering::Relaxed) {
            self.shared.forwarded_seq.load(Ordering::Relaxed)
        } else {
            self.shared.engine_seq.load(Ordering::Relaxed)
        };
        st(&m.durable_seq, durable);
        m.journal_unavailable.store(
            self.shared.journal_failed.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.last_publish = now;
    }

    fn ring_has_room(&self) -> bool {
        self.in_tx.slots() >= self.cfg.gateway.max_batch
    }

    fn has_backlog(&self) -> bool {
        !self.backlogged.is_empty()
    }

    /// Reads and handles up to 256 frames. Returns the number handled.
    fn read_requests(&mut self) -> usize {
        let mut n = 0;
        while n < 256 {
            if !self.ring_has_room() {
                self.stats.ring_full_pauses += 1;
                break;
            }
            let mut ident = std::mem::replace(&mut self.ident_msg, zmq::Message::new());
            if self.router.recv(&mut ident, zmq::DONTWAIT).is_err() {
                self.ident_msg = ident;
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
            self.stats.frames_in += 1;
            let sid = self.session_for(&ident);
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
                self.handle_frame(sid, &payload);
            }
            self.ident_msg = ident;
            self.payload_msg = payload;
        }
        n
    }

    fn session_for(&mut self, ident: &[u8]) -> usize {
        if let Some(&s) = self.by_ident.get(ident) {
            self.sessions[s].gone = false;
            return s;
        }
        let s = self.sessions.len();
        self.sessions.push(Session {
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

    fn handle_frame(&mut self, sid: usize, payload: &[u8]) {
        let g = &self.cfg.gateway;
        if payload.len() > g.max_frame_bytes {
            return self.gateway_reject(
                sid,
                0,
                wire::RequestKind::Frame,
                wire::RejectReason::FrameTooLarge,
                0,
                0,
            );
        }
        let before = self.pushed;
        let verifier = std::mem::take(&mut self.verifier);
        let max_batch = g.max_batch;
        let result = codec::decode_client_batch(payload, &verifier, max_batch, |i, req| {
            self.handle_request(sid, i, req)
        });
        self.verifier = verifier;
        match result {
            Ok(_) => {}
            Err(FrameError::Malformed(_)) => {
                self.gateway_reject(
                    sid,
                    0,
                    wire::RequestKind::Frame,
                    wire::RejectReason::MalformedMessage,
                    0,
                    0,
                );
            }
            Err(FrameError::TooMany(_)) => {
                self.gateway_reject(
                    sid,
                    0,
                    wire::RequestKind::Frame,
                    wire::RejectReason::BatchTooLarge,
                    0,
                    0,
                );
            }
        }
        if self.pushed != before {
            self.shared.wake_engine();
            if self.samples.len() < self.samples.capacity() {
                self.samples.push_back((self.pushed, Instant::now()));
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
                return self.gateway_reject(
                    sid,
                    index,
                    wire::RequestKind::Frame,
                    wire::RejectReason::UnknownMessageType,
                    0,
                    0,
                )
            }
            Err(RequestError::Ambiguous) => {
                return self.gateway_reject(
                    sid,
                    index,
                    wire::RequestKind::Frame,
                    wire::RejectReason::AmbiguousRequest,
                    0,
                    0,
                )
            }
        };
        let (kind, cl, oid) = match &req {
            ClientRequest::Logon(l) => return self.logon(sid, l.account()),
            ClientRequest::Heartbeat(h) => {
                return self.report(
                    sid,
                    ServerReport::HeartbeatAck(wire::HeartbeatAck::new(h.client_time_ns())),
                );
            }
            ClientRequest::NewOrder(o) => (wire::RequestKind::New, o.client_order_id(), 0),
            ClientRequest::Cancel(c) => {
                (wire::RequestKind::Cancel, c.client_order_id(), c.order_id())
            }
            ClientRequest::Replace(r) => (
                wire::RequestKind::Replace,
                r.client_order_id(),
                r.order_id(),
            ),
            ClientRequest::MassCancel(_) => (wire::RequestKind::MassCancel, 0, 0),
        };
        let Some(account) = self.sessions[sid].account else {
            return self.gateway_reject(sid, index, kind, wire::RejectReason::NotLoggedOn, cl, oid);
        };
        if self.sessions[sid].backlog.len() >= self.cfg.gateway.max_session_backlog {
            return self.gateway_reject(sid, index, kind, wire::RejectReason::Busy, cl, oid);
        }
        if self.shared.journal_failed.load(Ordering::Relaxed) {
            return self.gateway_reject(
                sid,
                index,
                kind,
                wire::RejectReason::JournalUnavailable,
                cl,
                oid,
            );
        }
        let Some(cmd) = to_command(account, &req) else {
            return self.gateway_reject(
                sid,
                index,
                kind,
                wire::RejectReason::InvalidEnumValue,
                cl,
                oid,
            );
        };
        // Room for a whole batch was checked before the frame was read.
        if self.in_tx.push(cmd).is_ok() {
            self.pushed += 1;
            self.stats.commands += 1;
        } else {
            self.gateway_reject(sid, index, kind, wire::RejectReason::Busy, cl, oid);
        }
    }

    fn logon(&mut self, sid: usize, account: u32) {
        if let Some(old) = self.by_account.insert(account, sid) {
            if old != sid {
                self.sessions[old].account = None;
                self.report(old, ServerReport::LoggedOut(wire::LoggedOut::new(account)));
            }
        }
        if let Some(prev) = self.sessions[sid].account.replace(account) {
            if prev != account && self.by_account.get(&prev) == Some(&sid) {
                self.by_account.remove(&prev);
            }
        }
        self.report(sid, ServerReport::LoggedOn(wire::LoggedOn::new(account)));
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
        self.stats.gateway_rejects += 1;
        self.metrics.reject(reason);
        let r = wire::Rejected::new(
            oid,
            cl,
            0,
            0,
            u32::try_from(index).unwrap_or(u32::MAX),
            reason,
            request,
        );
        self.report(sid, ServerReport::Rejected(r));
    }

    fn report(&mut self, sid: usize, r: ServerReport) {
        let s = &mut self.sessions[sid];
        s.out.push(r);
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(sid);
        }
    }

    fn report_to_account(&mut self, account: u32, r: ServerReport) {
        match self.by_account.get(&account) {
            Some(&sid) => self.report(sid, r),
            None => self.stats.undeliverable += 1,
        }
    }

    /// Routes up to `max` engine events. Returns the number routed.
    fn drain_events(&mut self, max: usize) -> usize {
        let mut n = 0;
        let mut events = 0;
        while n < max {
            let Ok(item) = self.out_rx.pop() else { break };
            n += 1;
            if let Output::Event(ev) = item {
                events += 1;
                self.route(&ev);
            }
        }
        self.stats.events += events;
        n
    }

    fn route(&mut self, ev: &Event) {
        let seq = ev.seq;
        self.md.saw(seq);
        match &ev.body {
            EventBody::Accepted(a) => {
                let r = wire::Accepted::new(
                    a.order_id,
                    a.client_order_id,
                    a.price,
                    a.qty,
                    seq,
                    a.symbol,
                    convert::side(a.side),
                    convert::order_type(a.order_type),
                    convert::tif(a.tif),
                );
                self.report_to_account(a.account, ServerReport::Accepted(r));
            }
            EventBody::Rejected(r) => {
                self.metrics.reject(convert::reject_reason(r.reason));
                let w = wire::Rejected::new(
                    r.order_id,
                    r.client_order_id,
                    seq,
                    r.symbol,
                    0,
                    convert::reject_reason(r.reason),
                    convert::request_kind(r.request),
                );
                self.report_to_account(r.account, ServerReport::Rejected(w));
            }
            EventBody::Trade(t) => {
                let maker_side = t.aggressor.opposite();
                let maker = wire::Fill::new(
                    t.trade_id,
                    t.maker_order_id,
                    t.maker_client_order_id,
                    t.price,
                    t.qty,
                    t.maker_leaves,
                    seq,
                    t.symbol,
                    convert::side(maker_side),
                    wire::Liquidity::Maker,
                );
                let taker = wire::Fill::new(
                    t.trade_id,
                    t.taker_order_id,
                    t.taker_client_order_id,
                    t.price,
                    t.qty,
                    t.taker_leaves,
                    seq,
                    t.symbol,
                    convert::side(t.aggressor),
                    wire::Liquidity::Taker,
                );
                self.report_to_account(t.maker_account, ServerReport::Fill(maker));
                self.report_to_account(t.taker_account, ServerReport::Fill(taker));
                self.md.trade(seq, t);
            }
            EventBody::Done(d) => {
                let w = wire::Done::new(
                    d.order_id,
                    d.client_order_id,
                    d.leaves,
                    seq,
                    d.symbol,
                    convert::side(d.side),
                    convert::done_reason(d.reason),
                );
                self.report_to_account(d.account, ServerReport::Done(w));
            }
            EventBody::Replaced(r) => {
                let w = wire::Replaced::new(
                    r.order_id,
                    r.client_order_id,
                    r.price,
                    r.qty,
                    seq,
                    r.symbol,
                    convert::side(r.side),
                    r.kept_priority,
                );
                self.report_to_account(r.account, ServerReport::Replaced(w));
            }
            EventBody::MassCancelled(m) => {
                let w = wire::MassCancelled::new(
                    seq,
                    m.count,
                    m.symbol.unwrap_or(0),
                    m.symbol.is_none(),
                );
                self.report_to_account(m.account, ServerReport::MassCancelled(w));
            }
            EventBody::BookDelta(d) => self.md.delta(seq, d),
            EventBody::InstrumentStatus(s) => self.md.status(seq, s),
        }
    }

    /// Sends every session's pending reports as one frame per session.
    fn flush_sessions(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &sid in &dirty {
            let s = &mut self.sessions[sid];
            s.dirty = false;
            if s.out.is_empty() {
                continue;
            }
            let first = s.next_seq;
            s.next_seq += s.out.len() as u64;
            self.stats.reports += s.out.len() as u64;
            let bytes = codec::encode_report_batch(&mut self.fbb, &mut self.offsets, first, &s.out);
            s.out.clear();
            if s.backlog.is_empty() && !s.gone {
                match send_frame(&self.router, &s.ident, bytes) {
                    SendResult::Sent => {
                        self.stats.report_frames += 1;
                        continue;
                    }
                    SendResult::WouldBlock => {
                        s.backlog.push_back(bytes.to_vec());
                        self.backlogged.push(sid);
                    }
                    SendResult::Gone => {
                        s.gone = true;
                        self.stats.undeliverable += s.next_seq - first;
                    }
                }
            } else if !s.gone {
                // Already backlogged (and listed): keep the order.
                s.backlog.push_back(bytes.to_vec());
            } else {
                self.stats.undeliverable += s.next_seq - first;
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        // Retry backlogs in order; only sessions that have one are visited.
        let router = &self.router;
        let stats = &mut self.stats;
        let sessions = &mut self.sessions;
        self.backlogged.retain(|&sid| {
            let s = &mut sessions[sid];
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

/// Turns a validated wire request into an engine command for `account`. `None` when an enum
/// field is out of range.
fn to_command(account: u32, req: &ClientRequest) -> Option<Command> {
    Some(match req {
        ClientRequest::NewOrder(o) => Command::New(NewOrder {
            account,
            client_order_id: o.client_order_id(),
            symbol: o.symbol(),
            side: convert::side_from(o.side())?,
            order_type: convert::order_type_from(o.order_type())?,
            tif: convert::tif_from(o.tif())?,
            post_only: o.post_only(),
            price: o.price(),
            qty: o.qty(),
            stp: convert::stp_from(o.stp())?,
        }),
        ClientRequest::Cancel(c) => Command::Cancel(Cancel {
            account,
            target: order_ref(c.by_client_order_id(), c.order_id(), c.client_order_id()),
        }),
        ClientRequest::Replace(r) => Command::Replace(Replace {
            account,
            target: order_ref(r.by_client_order_id(), r.order_id(), r.client_order_id()),
            price: r.price(),
            qty: r.qty(),
        }),
        ClientRequest::MassCancel(m) => Command::MassCancel(MassCancel {
            account,
            symbol: (!m.all_symbols()).then(|| m.symbol()),
        }),
        ClientRequest::Logon(_) | ClientRequest::Heartbeat(_) => return None,
    })
}

fn order_ref(by_client: bool, order_id: u64, client_order_id: u64) -> OrderRef {
    if by_client {
        OrderRef::Client(client_order_id)
    } else {
        OrderRef::Id(order_id)
    }
}
