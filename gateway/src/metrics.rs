//! Prometheus metrics and health endpoints on a small HTTP listener (`--metrics ADDR`).
//!
//! - `GET /metrics`: Prometheus text format (names and meanings in docs/operations.md).
//! - `GET /healthz`: 200 while the process works (500 once fenced).
//! - `GET /readyz`: 200 only on the active primary whose journal is accepting (readiness =
//!   "send orders here"); 503 with the role otherwise.
//!
//! The hot path never blocks on this: the gateway publishes its counters here every few
//! milliseconds, rejects and histograms are relaxed atomic increments, and the listener runs on
//! its own thread.

use crate::failover::{NodeStatus, Role};
use caldera_schema::wire;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 16] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    250e-3, 500e-3, 1.0,
];

/// A Prometheus histogram with fixed buckets (lock-free, no allocation).
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {cum}");
    }
}

/// Everything `/metrics` reports, shared by the node's threads.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Role, epoch, standby progress.
    pub node: NodeStatus,
    /// Frames read from clients.
    pub frames_in: AtomicU64,
    /// Order-entry requests decoded.
    pub requests: AtomicU64,
    /// Commands sent to the engine.
    pub commands: AtomicU64,
    /// Engine events received by the gateway (durable).
    pub events: AtomicU64,
    /// Reports sent to clients.
    pub reports: AtomicU64,
    /// Reports with no session to deliver to.
    pub undeliverable: AtomicU64,
    /// Times the gateway paused reading because the inbound ring was full.
    pub ring_full_pauses: AtomicU64,
    /// Rejects by wire reason code (engine 1–17, gateway 100–111).
    pub rejects: Rejects,
    /// Inbound ring (gateway → engine) slots in use.
    pub inbound_ring_used: AtomicU64,
    /// Outbound ring (journal/engine → gateway) slots in use.
    pub outbound_ring_used: AtomicU64,
    /// Ring capacity (slots).
    pub ring_capacity: AtomicU64,
    /// Engine's last sequence.
    pub engine_seq: AtomicU64,
    /// Last sequence durable in the journal and released to the gateway.
    pub durable_seq: AtomicU64,
    /// Journal appends (batches, heartbeats included).
    pub journal_appends: AtomicU64,
    /// The journal cannot make events durable (requests are being rejected).
    pub journal_unavailable: AtomicBool,
    /// Sessions known to the gateway.
    pub sessions: AtomicU64,
    /// Request read from the socket → its events durable and ready to report (sampled).
    pub request_to_durable: Histogram,
    /// One journal append including its fsync (file) or acknowledgement poll (Kafka).
    pub journal_append: Histogram,
    /// The endpoints are bound and the gateway is serving.
    pub serving: AtomicBool,
}

/// Reject counters indexed by wire reason code.
#[derive(Debug)]
pub struct Rejects(pub [AtomicU64; 128]);

impl Default for Rejects {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

impl Metrics {
    /// Counts a reject by its wire reason.
    pub fn reject(&self, reason: wire::RejectReason) {
        if let Some(c) = self.rejects.0.get(usize::from(reason.0)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether this node should receive orders (the active primary, journal accepting).
    #[must_use]
    pub fn ready(&self) -> bool {
        self.node.role() == Role::Primary
            && self.serving.load(Ordering::Relaxed)
            && !self.journal_unavailable.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::with_capacity(8192);
        let role = self.node.role();
        let _ = writeln!(
            o,
            "# HELP caldera_role 1 for the node's current role.\n# TYPE caldera_role gauge"
        );
        for (name, rl) in [
            ("starting", Role::Starting),
            ("standby", Role::Standby),
            ("primary", Role::Primary),
            ("fenced", Role::Fenced),
        ] {
            let _ = writeln!(
                o,
                "caldera_role{{role=\"{name}\"}} {}",
                u8::from(role == rl)
            );
        }
        gauge(
            &mut o,
            "caldera_ready",
            "1 on the active primary accepting orders (what /readyz answers).",
            u64::from(self.ready()),
        );
        gauge(
            &mut o,
            "caldera_epoch",
            "Journal epoch this node writes (primary) or follows (standby).",
            r(&self.node.epoch),
        );
        counter(
            &mut o,
            "caldera_frames_in_total",
            "ZeroMQ frames read from clients.",
            r(&self.frames_in),
        );
        counter(
            &mut o,
            "caldera_orders_in_total",
            "Order-entry requests decoded by the gateway.",
            r(&self.requests),
        );
        counter(
            &mut o,
            "caldera_commands_total",
            "Commands passed to the engine.",
            r(&self.commands),
        );
        counter(
            &mut o,
            "caldera_events_out_total",
            "Engine events released to the gateway (durable).",
            r(&self.events),
        );
        counter(
            &mut o,
            "caldera_reports_total",
            "Execution reports sent to clients.",
            r(&self.reports),
        );
        counter(
            &mut o,
            "caldera_undeliverable_reports_total",
            "Reports for accounts with no session.",
            r(&self.undeliverable),
        );
        counter(
            &mut o,
            "caldera_ring_full_pauses_total",
            "Times the gateway stopped reading because the inbound ring was full.",
            r(&self.ring_full_pauses),
        );
        let _ = writeln!(
            o,
            "# HELP caldera_rejects_total Rejected requests by reason.\n# TYPE caldera_rejects_total counter"
        );
        for (code, c) in self.rejects.0.iter().enumerate() {
            let v = r(c);
            let name = u16::try_from(code)
                .ok()
                .and_then(|c| wire::RejectReason(c).variant_name());
            if let (Some(name), true) = (name, v > 0 || code == 105 || code == 111) {
                let _ = writeln!(o, "caldera_rejects_total{{reason=\"{name}\"}} {v}");
            }
        }
        gauge(
            &mut o,
            "caldera_inbound_ring_used",
            "Slots in use in the gateway → engine ring.",
            r(&self.inbound_ring_used),
        );
        gauge(
            &mut o,
            "caldera_outbound_ring_used",
            "Slots in use in the ring towards the gateway.",
            r(&self.outbound_ring_used),
        );
        gauge(
            &mut o,
            "caldera_ring_capacity",
            "Slots per ring.",
            r(&self.ring_capacity),
        );
        gauge(
            &mut o,
            "caldera_engine_seq",
            "Engine's last event sequence.",
            r(&self.engine_seq),
        );
        gauge(
            &mut o,
            "caldera_journal_durable_seq",
            "Last event sequence durable in the journal and released.",
            r(&self.durable_seq),
        );
        gauge(
            &mut o,
            "caldera_journal_lag_events",
            "Events processed by the engine, not yet durable.",
            r(&self.engine_seq).saturating_sub(r(&self.durable_seq)),
        );
        counter(
            &mut o,
            "caldera_journal_appends_total",
            "Journal appends (batches and heartbeats).",
            r(&self.journal_appends),
        );
        gauge(
            &mut o,
            "caldera_journal_unavailable",
            "1 while the journal cannot make events durable.",
            u64::from(self.journal_unavailable.load(Ordering::Relaxed)),
        );
        gauge(
            &mut o,
            "caldera_sessions",
            "Order-entry sessions known to the gateway.",
            r(&self.sessions),
        );
        gauge(
            &mut o,
            "caldera_standby_applied_seq",
            "Standby: last event sequence applied from the journal.",
            r(&self.node.applied_seq),
        );
        gauge(
            &mut o,
            "caldera_standby_lag_ms",
            "Standby: journal write → apply delay of the newest batch, ms.",
            r(&self.node.lag_ms),
        );
        gauge(
            &mut o,
            "caldera_standby_silence_ms",
            "Standby: time since the last journal record, ms.",
            r(&self.node.silence_ms),
        );
        counter(
            &mut o,
            "caldera_stale_batches_total",
            "Batches skipped under the epoch rule (a fenced writer's late appends).",
            r(&self.node.stale_batches),
        );
        gauge(
            &mut o,
            "caldera_last_promotion_us",
            "Detection → epoch started at the last promotion, µs.",
            r(&self.node.promotion_us),
        );
        self.request_to_durable.render(
            &mut o,
            "caldera_request_to_durable_seconds",
            "Request read from the socket until its events are durable and ready to report (sampled).",
        );
        self.journal_append.render(
            &mut o,
            "caldera_journal_append_seconds",
            "One journal append, including fsync (file) or the acknowledgement poll (Kafka).",
        );
        o
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a background thread. Returns the
/// bound address (`addr` may use port 0).
///
/// # Errors
/// When the address cannot be bound.
pub fn serve_http(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("caldera-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &metrics);
            }
        })?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, m: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    // Read the request head (the path is all that matters).
    while n < buf.len() {
        let k = conn.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].contains(&b'\n') {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", m.render()),
        ("GET", "/healthz") => {
            if m.node.role() == Role::Fenced {
                (
                    "500 Internal Server Error",
                    "text/plain",
                    "fenced\n".to_string(),
                )
            } else {
                ("200 OK", "text/plain", "ok\n".to_string())
            }
        }
        ("GET", "/readyz") => {
            let role = format!("{:?}\n", m.node.role()).to_lowercase();
            if m.ready() {
                ("200 OK", "text/plain", role)
            } else {
                ("503 Service Unavailable", "text/plain", role)
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
