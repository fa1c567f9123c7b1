//! Serving as the primary: the engine and journal stages started around the gateway, and the
//! orderly shutdown that delivers every report.
//!
//! Threads (docs/architecture.md): the gateway runs on the calling thread; the engine on its own
//! or, with `threads.engine = "gateway"`, on the gateway's (ADR 0017); the journal stage on its
//! own; libzmq's I/O thread under the sockets.

use crate::config::{Config, EngineThread, JournalUri};
use crate::engine_stage::{Drain, EngineReport, EngineStage, InlineEngine, QueryRings};
use crate::error::NodeError;
pub use crate::handover::Primary;
use crate::journal_stage::{JournalSettings, JournalStage, JournalStats, JournalThread};
use crate::metrics::Metrics;
use crate::security::{AuthThread, NodeSecurity};
use crate::snapshotter::{self, SnapshotSettings, SnapshotWriter};
use caldera_engine::Command;
use caldera_gateway::{Gateway, GatewayRings, GatewayStats};
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::Retention;
use caldera_pipeline::{Agent, Idle, OrderRow, OrdersQuery, Output, Shared, WaitStrategy};
use rtrb::RingBuffer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Result of serving.
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
    /// Snapshots written (periodic and final).
    pub snapshots: u64,
}

/// Serves a [`Primary`]: binds the endpoints, starts the pipeline, runs the gateway on the
/// calling thread until `shutdown` is set, then stops reading, drains the rings and delivers
/// every report.
pub struct PrimaryNode<'a> {
    cfg: &'a Config,
    security: &'a NodeSecurity,
    metrics: Arc<Metrics>,
    on_ready: Box<dyn FnOnce(&str) + 'a>,
}

impl<'a> PrimaryNode<'a> {
    /// A primary with this configuration and security (reporting into fresh metrics).
    #[must_use]
    pub fn new(cfg: &'a Config, security: &'a NodeSecurity) -> Self {
        Self {
            cfg,
            security,
            metrics: Arc::new(Metrics::default()),
            on_ready: Box::new(|_| {}),
        }
    }

    /// Reports into `metrics` (served by [`crate::metrics::serve_http`]).
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Calls `f` with the bound order-entry endpoint once clients can connect.
    #[must_use]
    pub fn on_ready(mut self, f: impl FnOnce(&str) + 'a) -> Self {
        self.on_ready = Box::new(f);
        self
    }

    /// Serves until `shutdown` is set, then drains and returns the summary.
    ///
    /// # Errors
    /// [`NodeError`] on start-up failures, [`NodeError::Fenced`] when a newer primary took over.
    pub fn serve(self, primary: Primary, shutdown: &AtomicBool) -> Result<ServeSummary, NodeError> {
        let placement = Placement::of(self.cfg);
        let recovered_seq = primary.engine.last_seq();
        let epoch = primary.epoch;
        let shared = Arc::new(Shared::new(primary.journal.is_some(), recovered_seq)?);
        let (gateway_rings, stage_rings) =
            rings(self.cfg.threads.ring_capacity, primary.journal.is_some());
        // Bind first: a socket that cannot be bound stops the start before any thread runs.
        let ctx = zmq::Context::new();
        // libzmq starts its I/O thread with the first socket: named so its CPU is told apart.
        // The ZAP handler is bound before the server sockets: libzmq admits every CURVE client
        // of a context that has none.
        let (auth, mut gw) = caldera_pipeline::cpu::with_thread_name("caldera-zmq-io", || {
            let auth = AuthThread::bind(&ctx, self.security)?;
            let gw = Gateway::bind(
                &ctx,
                &self.cfg.gateway,
                self.security.gateway.as_ref(),
                self.cfg.instruments.iter().map(|i| i.id),
                gateway_rings,
                Arc::clone(&shared),
                Arc::clone(&self.metrics.gateway),
                shutdown,
            )?;
            Ok::<_, NodeError>((auth, gw))
        })?;
        let _auth = match auth {
            Some((mut a, stop)) => {
                let (router, publisher) = gw.sockets();
                let watch = a
                    .watch(&ctx, router, "order-entry")
                    .and_then(|()| a.watch(&ctx, publisher, "market-data"));
                watch.map_err(|e| NodeError::Security(format!("monitoring handshakes: {e}")))?;
                Some(AuthThread::start(a, stop)?)
            }
            None => {
                tracing::warn!("INSECURE: authentication is off (auth = \"none\"): anyone who reaches {} can trade as any account", self.cfg.gateway.order_entry);
                None
            }
        };
        if let Some(history) = crate::history::of(self.cfg, primary.offsets.clone()) {
            gw.set_history(history);
        }
        let mut stages = self.start_stages(primary, stage_rings, &shared, &placement)?;
        let _supervisor = crate::supervisor::Supervisor::new(
            Arc::clone(&shared),
            Arc::clone(&self.metrics),
            Duration::from_millis(self.cfg.failover.stall_ms),
        )
        .spawn()?;
        let _ = caldera_pipeline::agent::pin("caldera-gateway", self.cfg.threads.gateway_core);
        tracing::info!(order_entry = %gw.order_entry(), market_data = %gw.market_data(), cores = placement.cores, wait = ?placement.wait, engine = ?placement.engine, engine_core = ?placement.engine_core, "serving");
        self.metrics
            .ring_capacity
            .store(self.cfg.threads.ring_capacity as u64, Ordering::Relaxed);
        gw.start_serving();
        (self.on_ready)(gw.order_entry());
        if let EngineRun::Inline(engine) = &mut stages.engine {
            let mut one = GatewayEngine {
                gw: &mut gw,
                engine,
            };
            run_inline(&mut one, placement.gateway_idle(), &self.metrics);
        } else {
            caldera_pipeline::run_with(&mut gw, placement.gateway_idle());
        }
        stop(gw, stages, &shared, epoch, recovered_seq)
    }

    /// Starts the journal stage and the snapshotter (if there is a journal), and the engine
    /// stage.
    fn start_stages(
        &self,
        primary: Primary,
        rings: StageRings,
        shared: &Arc<Shared>,
        placement: &Placement,
    ) -> Result<Stages, NodeError> {
        let Primary {
            engine,
            journal,
            journal_dir,
            epoch,
            offsets: _,
        } = primary;
        let journal = match (journal, rings.journal) {
            (Some(writer), Some((rx, tx))) => {
                let stage = JournalStage::new(
                    writer,
                    engine.last_seq(),
                    rx,
                    tx,
                    Arc::clone(shared),
                    Arc::clone(&self.metrics),
                    self.journal_settings(epoch),
                );
                Some(stage.spawn(placement.wait)?)
            }
            _ => None,
        };
        let j = &self.cfg.journal;
        let snapshots = journal_dir.map(|dir| SnapshotSettings {
            dir,
            every_events: j.snapshot_every_events,
            retention: Retention {
                max_bytes: j.retention_bytes,
                max_age: j.retention_age_s.map(Duration::from_secs),
            },
        });
        let (trigger, writer) = match &snapshots {
            Some(s) if s.every_events > 0 => {
                let (t, w) = snapshotter::snapshots(s.clone(), &engine, Arc::clone(shared));
                (Some(t), Some(w.spawn()?))
            }
            _ => (None, None),
        };
        let engine = EngineStage::new(
            engine,
            rings.commands,
            rings.engine_output,
            Arc::clone(shared),
            placement.wait,
            trigger,
        )
        .with_queries(rings.queries);
        let engine = match placement.engine {
            EngineThread::Gateway => EngineRun::Inline(Box::new(engine.inline())),
            _ => EngineRun::Thread(engine.spawn(placement.wait, placement.engine_core)?),
        };
        Ok(Stages {
            engine,
            journal,
            snapshot_writer: writer,
            snapshots,
        })
    }

    fn journal_settings(&self, epoch: u64) -> JournalSettings {
        let kafka = matches!(self.cfg.journal.parsed(), Ok(JournalUri::Kafka { .. }));
        JournalSettings {
            epoch,
            heartbeat: Duration::from_millis(self.cfg.failover.heartbeat_ms),
            group_commit: Duration::from_micros(self.cfg.journal.group_commit_us),
            // Kafka brokers cap record sizes (1 MB by default): batches stay at half the
            // configured record limit; only one command's own events can exceed it, and those
            // are split across records (caldera_schema::record::split).
            max_batch_commands: if kafka { 2048 } else { 8192 },
            max_batch_bytes: if kafka {
                self.cfg.journal.kafka_max_record_bytes / 2
            } else {
                usize::MAX
            },
        }
    }
}

/// Where the pipeline threads run and how they wait.
struct Placement {
    cores: usize,
    wait: WaitStrategy,
    engine: EngineThread,
    engine_core: Option<usize>,
}

impl Placement {
    fn of(cfg: &Config) -> Self {
        let cores = core_affinity::get_core_ids().map_or(1, |c| c.len());
        let engine = cfg.threads.engine;
        if engine == EngineThread::Gateway && cfg.threads.engine_core.is_some() {
            tracing::warn!("threads.engine_core is ignored: the engine runs on the gateway thread (threads.engine)");
        }
        Self {
            cores,
            wait: cfg.threads.wait.resolve(cores),
            engine,
            // With 4+ cores the engine gets the last one to itself.
            engine_core: cfg
                .threads
                .engine_core
                .or_else(|| (cores >= 4).then(|| cores - 1)),
        }
    }

    /// The gateway sleeps in `zmq_poll` after a short spin unless it may spin.
    fn gateway_idle(&self) -> Idle {
        let wait = if self.wait == WaitStrategy::Spin {
            WaitStrategy::Spin
        } else {
            WaitStrategy::Park
        };
        Idle::with_phases(wait, 64, 0)
    }
}

/// The ring ends the stages use.
struct StageRings {
    commands: rtrb::Consumer<Command>,
    engine_output: rtrb::Producer<Output>,
    /// The journal stage's input (the engine's output) and output (towards the gateway).
    journal: Option<(rtrb::Consumer<Output>, rtrb::Producer<Output>)>,
    /// The engine's read-only queries.
    queries: QueryRings,
}

/// Queries waiting for the engine at most.
const QUERIES: usize = 64;
/// Rows of answers in flight at most: an account's live orders up to the default
/// `max_orders_per_account` fit in one answer.
const ANSWER_ROWS: usize = (1 << 16) + 1;

/// The rings: gateway → engine, engine → (journal →) gateway.
fn rings(capacity: usize, journal: bool) -> (GatewayRings, StageRings) {
    let (in_tx, in_rx) = RingBuffer::<Command>::new(capacity);
    let (out_tx, engine_out_rx) = RingBuffer::<Output>::new(capacity);
    let (query_tx, query_rx) = RingBuffer::<OrdersQuery>::new(QUERIES);
    let (row_tx, row_rx) = RingBuffer::<OrderRow>::new(ANSWER_ROWS);
    let (journal_rings, to_gateway) = if journal {
        let (jtx, jrx) = RingBuffer::<Output>::new(capacity);
        (Some((engine_out_rx, jtx)), jrx)
    } else {
        (None, engine_out_rx)
    };
    (
        GatewayRings {
            commands: in_tx,
            events: to_gateway,
            capacity,
            queries: query_tx,
            answers: row_rx,
        },
        StageRings {
            commands: in_rx,
            engine_output: out_tx,
            journal: journal_rings,
            queries: QueryRings {
                rx: query_rx,
                tx: row_tx,
            },
        },
    )
}

/// Where the engine runs.
enum EngineRun {
    /// On its own thread.
    Thread(crate::engine_stage::EngineThread),
    /// On the gateway's thread.
    Inline(Box<InlineEngine>),
}

/// The gateway and the engine on one thread (ADR 0017): each round the gateway reads, routes
/// and sends, then the engine processes what the gateway read. While the engine's output ring
/// is full it keeps the gateway routing what the journal releases.
struct GatewayEngine<'g, 'a> {
    gw: &'g mut Gateway<'a>,
    engine: &'g mut InlineEngine,
}

impl Drain for Gateway<'_> {
    fn drain(&mut self) -> usize {
        self.route_released()
    }
}

impl Agent for GatewayEngine<'_, '_> {
    fn do_work(&mut self) -> usize {
        let Self { gw, engine } = self;
        gw.do_work() + engine.step(*gw)
    }

    fn sleep(&mut self) {
        self.gw.sleep();
    }

    fn done(&self) -> bool {
        self.gw.done()
    }
}

/// Runs the gateway and the engine on this thread until the gateway is done. A panic there ends
/// the process as the death of the engine thread does (exit code 6: a standby takes over).
fn run_inline(one: &mut GatewayEngine<'_, '_>, idle: Idle, metrics: &Metrics) {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        caldera_pipeline::run_with(one, idle);
    }));
    if let Err(panic) = run {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        crate::supervisor::halt(
            metrics,
            crate::supervisor::EXIT_THREAD_DIED,
            &format!("the engine thread died: the gateway thread, which runs the engine, panicked: {why}"),
        );
    }
}

/// The running stage threads.
struct Stages {
    engine: EngineRun,
    journal: Option<JournalThread>,
    snapshot_writer: Option<std::thread::JoinHandle<(SnapshotWriter, Option<usize>)>>,
    /// Where snapshots go (file journal).
    snapshots: Option<SnapshotSettings>,
}

/// After the gateway's loop: unless fenced, stop the engine once it has consumed every
/// command, wait for the journal to release everything, and deliver what is left.
fn stop(
    mut gw: Gateway<'_>,
    stages: Stages,
    shared: &Shared,
    epoch: u64,
    recovered_seq: u64,
) -> Result<ServeSummary, NodeError> {
    if shared.journal.fenced.load(Ordering::SeqCst) {
        // Release nothing more; the process exits without joining the pipeline threads.
        return Err(NodeError::Fenced(format!(
            "epoch {epoch} was superseded by a newer primary"
        )));
    }
    shared.gateway.stop.store(true, Ordering::SeqCst);
    shared.engine_parker.wake();
    let engine = match stages.engine {
        EngineRun::Thread(t) => t.join()?,
        EngineRun::Inline(e) => e.stop(),
    };
    let journal = stages.journal.map(JournalThread::join).transpose()?;
    gw.finish();
    let mut snapshots = match stages.snapshot_writer {
        Some(h) => {
            h.join()
                .map_err(|_| NodeError::Panicked("snapshot"))?
                .0
                .written
        }
        None => 0,
    };
    // Everything is durable now (the journal stage synced on close): the final snapshot is the
    // engine's own state, exact and free.
    if let Some(s) = &stages.snapshots {
        if engine.engine.last_seq() > 0 && final_snapshot(s, &engine.engine) {
            snapshots += 1;
        }
    }
    Ok(ServeSummary {
        md_published: gw.md_published(),
        gateway: gw.stats().clone(),
        engine,
        journal,
        recovered_seq,
        snapshots,
    })
    // Dropping the gateway closes the sockets; the context's drop waits up to the linger.
}

/// Writes the snapshot of the stopped engine, then applies retention. Returns whether it was
/// written.
fn final_snapshot(s: &SnapshotSettings, engine: &caldera_engine::Engine) -> bool {
    let store = SnapshotStore::new(&s.dir, 3);
    let seq = engine.last_seq();
    if store.latest().is_some_and(|(latest, _)| latest == seq) {
        return false;
    }
    match store.write(seq, &engine.snapshot()) {
        Ok(path) => {
            tracing::info!(seq, path = %path.display(), "final snapshot written");
            snapshotter::apply_retention(s, seq);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "final snapshot failed");
            false
        }
    }
}
