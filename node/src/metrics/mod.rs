//! Prometheus metrics and health endpoints (`--metrics ADDR`).
//!
//! - `GET /metrics`: Prometheus text format (names and meanings in docs/operations.md).
//! - `GET /healthz`: 200 while the process works (500 once fenced).
//! - `GET /readyz`: 200 only on the active primary whose journal is accepting (readiness =
//!   "send orders here"); 503 with the role otherwise.
//!
//! The hot path never blocks on this: the gateway publishes its counters every few
//! milliseconds, rejects and histograms are relaxed atomic increments, and the listener runs on
//! its own thread ([`http`]).

mod http;

pub use http::serve_http;

use crate::security::NodeSecurity;
use crate::status::{NodeStatus, Role};
use caldera_gateway::GatewayCounters;
use caldera_pipeline::histogram::BUCKETS;
use caldera_pipeline::{CachePadded, Histogram};
use caldera_schema::wire;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters written by the journal thread.
#[derive(Debug, Default)]
pub struct JournalCounters {
    /// Journal appends (batches, heartbeats included).
    pub appends: AtomicU64,
    /// One journal append including its fsync (file) or acknowledgement poll (Kafka).
    pub append: Histogram,
    /// One `fdatasync` of the file journal.
    pub fsync: Histogram,
}

/// Everything `/metrics` reports, shared by the node's threads.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Role, epoch, standby progress.
    pub node: NodeStatus,
    /// What the gateway counts.
    pub gateway: Arc<GatewayCounters>,
    /// What the journal stage counts.
    pub journal: CachePadded<JournalCounters>,
    /// Ring capacity (slots).
    pub ring_capacity: AtomicU64,
    /// The authentication in force (set once at start).
    pub security: std::sync::OnceLock<NodeSecurity>,
}

fn render_histogram(h: &Histogram, out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    histogram_series(h, out, name, "");
}

/// One histogram's series; `labels` (e.g. `stage="engine",`) go before `le`.
fn histogram_series(h: &Histogram, out: &mut String, name: &str, labels: &str) {
    let (counts, sum_ns) = h.read();
    let mut cum = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cum += counts[i];
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {cum}");
    }
    cum += counts[BUCKETS.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cum}");
    let labels = labels.trim_end_matches(',');
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{braces} {cum}");
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
    /// Records the node's security set-up (exported as `caldera_auth_*`).
    pub fn set_security(&self, s: &NodeSecurity) {
        let _ = self.security.set(s.clone());
    }

    /// Whether this node should receive orders (the active primary, journal accepting).
    #[must_use]
    pub fn ready(&self) -> bool {
        self.node.role() == Role::Primary
            && self.gateway.serving()
            && !self
                .gateway
                .published
                .journal_unavailable
                .load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        self.render_node(&mut o);
        self.render_gateway(&mut o);
        self.render_journal_and_standby(&mut o);
        self.render_security(&mut o);
        self.render_process(&mut o);
        o
    }

    /// The authentication mode and what the ZAP handler counted.
    fn render_security(&self, o: &mut String) {
        let Some(s) = self.security.get() else {
            return;
        };
        let mode = s.mode().name();
        let _ = writeln!(
            o,
            "# HELP caldera_auth_mode Authentication in force (curve, or none = INSECURE).\n# TYPE caldera_auth_mode gauge"
        );
        for m in ["curve", "none"] {
            let _ = writeln!(
                o,
                "caldera_auth_mode{{mode=\"{m}\"}} {}",
                u8::from(m == mode)
            );
        }
        let Some(g) = &s.gateway else {
            return;
        };
        let c = &g.guard.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            o,
            "caldera_auth_admitted_total",
            "Connections admitted (listed CURVE key).",
            r(&c.admitted),
        );
        counter(
            o,
            "caldera_auth_denied_total",
            "CURVE handshakes refused: key not in the entitlements.",
            r(&c.denied),
        );
        counter(o, "caldera_auth_handshake_failures_total", "Connections whose handshake failed before authentication (no CURVE, wrong server key, not ZMTP).", r(&c.handshake_failures));
        counter(
            o,
            "caldera_auth_reloads_total",
            "Entitlement reloads (SIGHUP) that took effect.",
            r(&c.reloads),
        );
        counter(
            o,
            "caldera_auth_reload_failures_total",
            "Entitlement reloads refused (the file did not parse; the old entitlements stay).",
            r(&c.reload_failures),
        );
        gauge(
            o,
            "caldera_auth_entitled_keys",
            "Client keys listed in the entitlements.",
            g.guard.current().len().saturating_sub(1) as u64,
        );
    }

    /// Standard process metrics and CPU time by pipeline thread (what a request costs).
    fn render_process(&self, o: &mut String) {
        let cpu = caldera_pipeline::cpu::process_cpu().as_secs_f64();
        let _ = writeln!(
            o,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.6}"
        );
        gauge(
            o,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            caldera_pipeline::cpu::resident_bytes(),
        );
        let main_role = if self.node.role() == Role::Primary {
            "gateway"
        } else {
            "main"
        };
        let pid = caldera_pipeline::cpu::pid();
        let mut by_role: std::collections::BTreeMap<String, f64> =
            std::collections::BTreeMap::new();
        for t in caldera_pipeline::cpu::threads() {
            *by_role
                .entry(caldera_pipeline::cpu::role_of(&t, pid, main_role))
                .or_default() += t.cpu.as_secs_f64();
        }
        let _ = writeln!(
            o,
            "# HELP caldera_thread_cpu_seconds_total CPU time of the live threads by role (gateway = the main thread of a primary; zmq-io = libzmq's I/O threads).\n# TYPE caldera_thread_cpu_seconds_total counter"
        );
        for (role, secs) in by_role {
            let _ = writeln!(
                o,
                "caldera_thread_cpu_seconds_total{{thread=\"{role}\"}} {secs:.6}"
            );
        }
    }

    /// Role, readiness, epoch.
    fn render_node(&self, o: &mut String) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
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
            ("failed", Role::Failed),
        ] {
            let _ = writeln!(
                o,
                "caldera_role{{role=\"{name}\"}} {}",
                u8::from(role == rl)
            );
        }
        gauge(
            o,
            "caldera_ready",
            "1 on the active primary accepting orders (what /readyz answers).",
            u64::from(self.ready()),
        );
        gauge(
            o,
            "caldera_epoch",
            "Journal epoch this node writes (primary) or follows (standby).",
            r(&self.node.epoch),
        );
    }

    /// Requests, reports, rejects, rings.
    fn render_gateway(&self, o: &mut String) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let g = &self.gateway.published;
        counter(
            o,
            "caldera_frames_in_total",
            "ZeroMQ frames read from clients.",
            r(&g.frames_in),
        );
        counter(
            o,
            "caldera_orders_in_total",
            "Order-entry requests decoded by the gateway.",
            r(&g.requests),
        );
        counter(
            o,
            "caldera_commands_total",
            "Commands passed to the engine.",
            r(&g.commands),
        );
        counter(
            o,
            "caldera_events_out_total",
            "Engine events released to the gateway (durable).",
            r(&g.events),
        );
        counter(
            o,
            "caldera_reports_total",
            "Execution reports sent to clients.",
            r(&g.reports),
        );
        counter(
            o,
            "caldera_undeliverable_reports_total",
            "Reports for accounts with no session.",
            r(&g.undeliverable),
        );
        counter(
            o,
            "caldera_ring_full_pauses_total",
            "Times the gateway stopped reading because the inbound ring was full.",
            r(&g.ring_full_pauses),
        );
        counter(
            o,
            "caldera_resends_total",
            "Resends (LogonWith{RESEND}) completed.",
            r(&g.resends),
        );
        counter(
            o,
            "caldera_resent_reports_total",
            "Reports resent from the journal.",
            r(&g.resent_reports),
        );
        counter(
            o,
            "caldera_disconnect_cancels_total",
            "Mass cancels sent because a cancel-on-disconnect session ended or logged out.",
            r(&g.disconnect_cancels),
        );
        let _ = writeln!(
            o,
            "# HELP caldera_rejects_total Rejected requests by reason.\n# TYPE caldera_rejects_total counter"
        );
        for (code, c) in self.gateway.rejects.0 .0.iter().enumerate() {
            let v = r(c);
            let name = u16::try_from(code)
                .ok()
                .and_then(|c| wire::RejectReason(c).variant_name());
            if let (Some(name), true) = (name, v > 0 || code == 105 || code == 111) {
                let _ = writeln!(o, "caldera_rejects_total{{reason=\"{name}\"}} {v}");
            }
        }
        gauge(
            o,
            "caldera_inbound_ring_used",
            "Slots in use in the gateway → engine ring.",
            r(&g.inbound_ring_used),
        );
        gauge(
            o,
            "caldera_outbound_ring_used",
            "Slots in use in the ring towards the gateway.",
            r(&g.outbound_ring_used),
        );
        gauge(
            o,
            "caldera_ring_capacity",
            "Slots per ring.",
            r(&self.ring_capacity),
        );
        gauge(
            o,
            "caldera_engine_seq",
            "Engine's last event sequence.",
            r(&g.engine_seq),
        );
        gauge(
            o,
            "caldera_journal_durable_seq",
            "Last event sequence durable in the journal and released.",
            r(&g.durable_seq),
        );
    }

    /// Sequences, journal, sessions, standby progress, latency histograms.
    fn render_journal_and_standby(&self, o: &mut String) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let g = &self.gateway.published;
        gauge(
            o,
            "caldera_journal_lag_events",
            "Events processed by the engine, not yet durable.",
            r(&g.engine_seq).saturating_sub(r(&g.durable_seq)),
        );
        counter(
            o,
            "caldera_journal_appends_total",
            "Journal appends (batches and heartbeats).",
            r(&self.journal.appends),
        );
        gauge(
            o,
            "caldera_journal_unavailable",
            "1 while the journal cannot make events durable.",
            u64::from(g.journal_unavailable.load(Ordering::Relaxed)),
        );
        gauge(
            o,
            "caldera_sessions",
            "Order-entry sessions known to the gateway.",
            r(&g.sessions),
        );
        let _ = writeln!(
            o,
            "# HELP caldera_sessions_closed_total Sessions ended: disconnected, idle (never logged on), backlog (did not read its reports).\n# TYPE caldera_sessions_closed_total counter"
        );
        for why in caldera_gateway::SessionEnd::ALL {
            let _ = writeln!(
                o,
                "caldera_sessions_closed_total{{reason=\"{}\"}} {}",
                why.name(),
                r(&g.sessions_ended[why as usize])
            );
        }
        gauge(
            o,
            "caldera_standby_applied_seq",
            "Standby: last event sequence applied from the journal.",
            r(&self.node.applied_seq),
        );
        gauge(
            o,
            "caldera_standby_lag_ms",
            "Standby: journal write → apply delay of the newest batch, ms.",
            r(&self.node.lag_ms),
        );
        gauge(
            o,
            "caldera_standby_silence_ms",
            "Standby: time since the last journal record, ms.",
            r(&self.node.silence_ms),
        );
        counter(
            o,
            "caldera_stale_batches_total",
            "Batches skipped under the epoch rule (a fenced writer's late appends).",
            r(&self.node.stale_batches),
        );
        counter(
            o,
            "caldera_skipped_records_total",
            "Journal records skipped as not history: an impossible epoch jump or a record that is not a journal batch (forged or corrupted; alert on any).",
            r(&self.node.skipped_records),
        );
        gauge(
            o,
            "caldera_last_promotion_us",
            "Detection → epoch started at the last promotion, µs.",
            r(&self.node.promotion_us),
        );
        render_histogram(
            &self.gateway.request_to_durable,
            o,
            "caldera_request_to_durable_seconds",
            "Request read from the socket until its events are durable and ready to report (sampled).",
        );
        render_histogram(
            &self.journal.append,
            o,
            "caldera_journal_append_seconds",
            "One journal append, including fsync (file) or the acknowledgement poll (Kafka).",
        );
        render_histogram(
            &self.journal.fsync,
            o,
            "caldera_journal_fsync_seconds",
            "One fdatasync of the file journal.",
        );
        let name = "caldera_stage_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Where a request waits (sampled per frame): engine = read → processed, journal = processed → durable, report = durable → reports sent, total = read → reports sent.\n# TYPE {name} histogram"
        );
        for stage in caldera_gateway::Stage::ALL {
            histogram_series(
                &self.gateway.stages[stage as usize],
                o,
                name,
                &format!("stage=\"{}\",", stage.name()),
            );
        }
    }
}
