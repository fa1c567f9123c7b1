//! Drives the gateway: connections spread over threads, each connection one account with its
//! own flow. Open loop: every request has a planned send time and latency is measured from it
//! (a stall shows up as latency, not as a lower rate). Closed loop: a window of requests in
//! flight per connection, latency from the actual send.

use crate::flow::{Flow, FlowParams, Kind};
use crate::wait::Waiter;
use anyhow::{bail, Context, Result};
use caldera_client::wire::{self, DoneReason};
use caldera_client::{OrderClient, ServerReport};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Load shape.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Fixed total rate (requests/s), latency from planned send times.
    Open {
        /// Requests per second, all connections together.
        rate: f64,
    },
    /// Maximum throughput with `window` requests in flight per connection.
    Closed {
        /// Requests in flight per connection.
        window: usize,
    },
}

/// One run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// How connections authenticate.
    pub credentials: caldera_client::ClientCredentials,
    /// Gateway endpoints; connections are spread over them round-robin.
    pub endpoints: Vec<String>,
    /// Connections (each logs on as its own account).
    pub connections: usize,
    /// Driver threads.
    pub threads: usize,
    /// Load shape.
    pub mode: Mode,
    /// Measured duration.
    pub duration: Duration,
    /// Passive orders each connection places before measuring (not timed).
    pub warmup_orders: usize,
    /// Most requests per frame.
    pub batch: usize,
    /// The flow.
    pub flow: FlowParams,
    /// Open loop: hold due requests up to this long to send them as one frame (their latency
    /// still counts from their planned send time).
    pub coalesce: Duration,
    /// Open loop: least time between two frames of a connection (requests due meanwhile go
    /// out together; latency still counts from each one's planned time).
    pub frame_gap: Duration,
    /// First account id.
    pub account_base: u32,
}

/// Counters and latencies of a run.
pub struct RunResult {
    /// Latency of answered requests (ns).
    pub latency: Histogram<u64>,
    /// Requests sent during the measured window.
    pub sent: u64,
    /// Requests answered during the measured window.
    pub answered: u64,
    /// New orders answered.
    pub orders: u64,
    /// Engine rejects (all reasons).
    pub rejects: u64,
    /// Of which UnknownOrder (cancel/replace of an order that had already filled).
    pub unknown_order_rejects: u64,
    /// Gateway rejects (Busy, malformed…): should be 0.
    pub gateway_rejects: u64,
    /// Requests never answered (within the drain timeout after the run).
    pub unanswered: u64,
    /// Frames sent and received.
    pub frames_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Reports received.
    pub reports: u64,
    /// Fills received.
    pub fills: u64,
    /// Measured wall time.
    pub elapsed: Duration,
}

impl RunResult {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds"),
            sent: 0,
            answered: 0,
            orders: 0,
            rejects: 0,
            unknown_order_rejects: 0,
            gateway_rejects: 0,
            unanswered: 0,
            frames_out: 0,
            frames_in: 0,
            reports: 0,
            fills: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, o: &RunResult) {
        let _ = self.latency.add(&o.latency);
        self.sent += o.sent;
        self.answered += o.answered;
        self.orders += o.orders;
        self.rejects += o.rejects;
        self.unknown_order_rejects += o.unknown_order_rejects;
        self.gateway_rejects += o.gateway_rejects;
        self.unanswered += o.unanswered;
        self.frames_out += o.frames_out;
        self.frames_in += o.frames_in;
        self.reports += o.reports;
        self.fills += o.fills;
        self.elapsed = self.elapsed.max(o.elapsed);
    }

    /// Answered requests per second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Live counters for the progress display.
#[derive(Default)]
pub struct Progress {
    /// Requests answered so far.
    pub answered: AtomicU64,
    /// Set when the measured window started.
    pub started: AtomicBool,
    /// Set while a sampler reads CPU time at the window's end: driver threads (and their
    /// libzmq I/O threads) stay alive until it is done, so their time is read by thread.
    pub hold: AtomicBool,
}

struct Conn {
    client: OrderClient,
    flow: Flow,
    /// (send or planned time ns, kind, client order id for new orders)
    inflight: VecDeque<(u64, Kind, u64)>,
    reports: Vec<ServerReport>,
    next_planned: f64,
    last_frame_ns: u64,
}

/// Runs the load and merges the threads' results.
///
/// # Errors
/// Connection, logon or warm-up failures.
pub fn run(spec: &RunSpec, progress: &Arc<Progress>) -> Result<RunResult> {
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let barrier = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    for t in 0..threads {
        let spec = spec.clone();
        let barrier = Arc::clone(&barrier);
        let progress = Arc::clone(progress);
        let conns: Vec<usize> = (0..spec.connections).filter(|c| c % threads == t).collect();
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || drive(&spec, &conns, &barrier, &progress))?,
        );
    }
    let mut total = RunResult::new();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("driver thread panicked"))??;
        total.merge(&r);
    }
    Ok(total)
}

fn now_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn drive(
    spec: &RunSpec,
    ids: &[usize],
    barrier: &Barrier,
    progress: &Progress,
) -> Result<RunResult> {
    let ctx = zmq::Context::new();
    let mut conns = Vec::new();
    for &i in ids {
        let ep = &spec.endpoints[i % spec.endpoints.len()];
        // libzmq starts its I/O thread with the first socket: named so its CPU is told apart.
        let mut client = caldera_pipeline::cpu::with_thread_name("loadgen-zmq-io", || {
            OrderClient::connect(&ctx, ep, &spec.credentials)
        })
        .with_context(|| format!("connecting to {ep}"))?;
        let account = spec.account_base + i as u32;
        client.push(caldera_client::requests::logon(account));
        client.flush()?;
        let mut reports = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reports
            .iter()
            .any(|r| matches!(r, ServerReport::LoggedOn(_)))
        {
            if Instant::now() > deadline {
                bail!("no logon answer from {ep} within 10 s (is `caldera serve` running?)");
            }
            client.recv(&mut reports, Duration::from_millis(100))?;
        }
        conns.push(Conn {
            client,
            flow: Flow::new(&spec.flow, i as u32),
            inflight: VecDeque::new(),
            reports: Vec::new(),
            next_planned: 0.0,
            last_frame_ns: 0,
        });
    }
    // Warm-up: fill the books with passive orders, wait for every answer.
    for c in &mut conns {
        let mut left = spec.warmup_orders;
        while left > 0 {
            let n = left.min(spec.batch);
            for _ in 0..n {
                let r = c.flow.warmup();
                c.client.push(r);
            }
            c.client.flush()?;
            left -= n;
            let mut answered = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while answered < n {
                if Instant::now() > deadline {
                    bail!("warm-up answers timed out");
                }
                c.reports.clear();
                c.client.recv(&mut c.reports, Duration::from_millis(100))?;
                answered += c
                    .reports
                    .iter()
                    .filter(|r| matches!(r, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
                    .count();
            }
        }
    }
    barrier.wait();
    progress.started.store(true, Ordering::Relaxed);
    let per_conn_interval_ns = match spec.mode {
        Mode::Open { rate } => 1e9 * spec.connections as f64 / rate.max(1.0),
        Mode::Closed { .. } => 0.0,
    };
    let coalesce_ns = spec.coalesce.as_nanos() as f64;
    let frame_gap_ns = u64::try_from(spec.frame_gap.as_nanos()).unwrap_or(u64::MAX);
    let mut res = RunResult::new();
    let t0 = Instant::now();
    let end = u64::try_from(spec.duration.as_nanos()).unwrap_or(u64::MAX);
    let mut waiter = Waiter::new()?;
    loop {
        let now = now_ns(t0);
        let sending = now < end;
        if !sending && conns.iter().all(|c| c.inflight.is_empty()) {
            break;
        }
        if !sending && now > end + 5_000_000_000 {
            res.unanswered += conns.iter().map(|c| c.inflight.len() as u64).sum::<u64>();
            break;
        }
        let mut progressed = false;
        for c in &mut conns {
            if sending && c.client.pending() == 0 {
                let n = match spec.mode {
                    Mode::Closed { window } => {
                        window.saturating_sub(c.inflight.len()).min(spec.batch)
                    }
                    Mode::Open { .. } => {
                        let mut n = 0;
                        // Due (held `coalesce` past its planned time), and the connection's
                        // last frame left at least `frame_gap` ago: at high rates requests
                        // gather into frames instead of one frame each.
                        let due = c.next_planned + coalesce_ns <= now as f64
                            && now >= c.last_frame_ns + frame_gap_ns;
                        while due && n < spec.batch && c.next_planned <= now as f64 {
                            n += 1;
                            let planned = c.next_planned as u64;
                            let (req, kind) = c.flow.next();
                            let cl = new_cl(&req);
                            c.client.push(req);
                            c.inflight.push_back((planned, kind, cl));
                            c.next_planned += per_conn_interval_ns;
                        }
                        res.sent += n as u64;
                        if n > 0 {
                            c.last_frame_ns = now;
                        }
                        0
                    }
                };
                for _ in 0..n {
                    let (req, kind) = c.flow.next();
                    let cl = new_cl(&req);
                    c.client.push(req);
                    c.inflight.push_back((now, kind, cl));
                }
                res.sent += n as u64;
            }
            if c.client.pending() > 0 && c.client.try_flush()? {
                res.frames_out += 1;
                progressed = true;
            }
            // Receive everything that is ready.
            for _ in 0..64 {
                c.reports.clear();
                let got = c.client.try_recv(&mut c.reports)?;
                if got == 0 {
                    break;
                }
                progressed = true;
                res.frames_in += 1;
                res.reports += got as u64;
                let t = now_ns(t0);
                let mut answered = 0;
                for r in &c.reports {
                    answered += account(&mut res, &mut c.inflight, r, t, end);
                }
                progress.answered.fetch_add(answered, Ordering::Relaxed);
            }
        }
        if !progressed {
            // Nothing to send or read: block until a socket signals or the next planned send
            // is due (open loop), instead of burning the CPU the server needs.
            let due = match spec.mode {
                Mode::Open { .. } if sending => conns
                    .iter()
                    .map(|c| {
                        ((c.next_planned + coalesce_ns) as u64).max(c.last_frame_ns + frame_gap_ns)
                    })
                    .min()
                    .map(|t| t.saturating_sub(now_ns(t0))),
                _ => None,
            };
            waiter.wait(conns.iter().map(|c| c.client.socket()), due)?;
        }
    }
    res.elapsed = spec.duration;
    while progress.hold.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(res)
}

fn new_cl(r: &caldera_client::ClientRequest) -> u64 {
    match r {
        caldera_client::ClientRequest::NewOrder(o) => o.client_order_id(),
        _ => 0,
    }
}

/// Classifies one report: if it answers the oldest in-flight request, records its latency.
/// Returns 1 for an answer in the measured window.
fn account(
    res: &mut RunResult,
    inflight: &mut VecDeque<(u64, Kind, u64)>,
    r: &ServerReport,
    t: u64,
    end: u64,
) -> u64 {
    let answer = match r {
        ServerReport::Accepted(_) | ServerReport::Replaced(_) => true,
        ServerReport::Done(d) => d.reason() == DoneReason::Cancelled,
        ServerReport::Rejected(x) if x.engine_seq() > 0 => {
            res.rejects += 1;
            if x.reason() == wire::RejectReason::UnknownOrder {
                res.unknown_order_rejects += 1;
            }
            true
        }
        ServerReport::Rejected(x) => {
            // A gateway reject is answered out of band (before the engine's answers to
            // earlier requests): find its request rather than popping the front.
            res.gateway_rejects += 1;
            let pos = inflight.iter().position(|e| {
                (x.client_order_id() != 0 && e.2 == x.client_order_id())
                    || (x.client_order_id() == 0 && e.1 != Kind::New)
            });
            if let Some(p) = pos {
                inflight.remove(p);
            }
            return 0;
        }
        ServerReport::Fill(_) => {
            res.fills += 1;
            false
        }
        _ => false,
    };
    if !answer {
        return 0;
    }
    let Some((sent, kind, _)) = inflight.pop_front() else {
        return 0;
    };
    let _ = res.latency.record(t.saturating_sub(sent).max(1));
    // Throughput counts answers that arrived inside the measured window.
    if t <= end {
        res.answered += 1;
        if kind == Kind::New {
            res.orders += 1;
        }
        1
    } else {
        0
    }
}
