//! The engine stage: pops commands from the inbound SPSC ring, runs the engine, pushes the
//! events (then the command) to the outbound SPSC ring. On its own thread (pinned to a core when
//! configured) or run by the gateway's thread between its rounds ([`InlineEngine`], ADR 0017);
//! allocation-free after start-up either way.

use crate::snapshotter::SnapshotTrigger;
use caldera_engine::{Command, Engine, Event, EventSink};
use caldera_pipeline::alloc_count::thread_allocations;
use caldera_pipeline::{Agent, Idle, OrderRow, OrdersQuery, Output, Shared, WaitStrategy};
use rtrb::{Consumer, Producer};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What the engine thread hands back when it stops.
#[derive(Debug)]
pub struct EngineReport {
    /// The engine, with its final state.
    pub engine: Engine,
    /// Commands processed.
    pub commands: u64,
    /// Allocations made by the engine thread after start-up (expected: 0).
    pub allocations: u64,
    /// Core the thread was pinned to, if pinning succeeded.
    pub pinned_core: Option<usize>,
}

/// Pushes events into the outbound ring, waiting (never dropping) when it is full.
///
/// Items are staged and published to the ring in runs of up to [`STAGE`] (and at the end of
/// every chunk of commands): one publication of the ring's tail per run instead of one per
/// item, so the cache line the journal thread polls moves between cores once per run.
struct RingSink {
    tx: Producer<Output>,
    /// Items not yet in the ring. Allocated once (capacity [`STAGE`]) and never grown.
    staged: Vec<Output>,
    shared: Arc<Shared>,
    idle: Idle,
}

/// Most items staged before they are published to the engine's output ring.
const STAGE: usize = 128;

impl RingSink {
    fn new(tx: Producer<Output>, shared: Arc<Shared>, wait: WaitStrategy) -> Self {
        Self {
            tx,
            staged: Vec::with_capacity(STAGE),
            shared,
            idle: Idle::new(wait),
        }
    }

    /// Stages `item`, publishing the run when the stage is full.
    #[inline]
    fn push(&mut self, item: Output, drain: &mut dyn Drain) {
        if self.staged.len() == STAGE {
            self.flush(drain);
        }
        self.staged.push(item);
    }

    /// Publishes every staged item; while the ring is full, wakes downstream and calls `drain`
    /// (the work this thread must keep doing for downstream to make room: see [`Drain`]),
    /// waiting when it did nothing.
    fn flush(&mut self, drain: &mut dyn Drain) {
        let mut from = 0;
        while from < self.staged.len() {
            let (pushed, _) = self.tx.push_partial_slice(&self.staged[from..]);
            if pushed.is_empty() {
                // Back-pressure: downstream is behind. Wake it and wait for room.
                self.shared.notify_downstream();
                if drain.drain() == 0 {
                    self.idle
                        .wait(|| std::thread::park_timeout(Duration::from_micros(50)));
                }
            } else {
                from += pushed.len();
                self.idle.reset();
            }
        }
        self.staged.clear();
    }
}

/// What the engine does while its output ring is full, besides waiting.
///
/// On its own thread, nothing ([`NoDrain`]). On the gateway's thread (ADR 0017) the gateway must
/// keep routing the reports the journal releases: the journal waits for room towards the
/// gateway before it takes more of the engine's output, so an engine that only waited there
/// would wait forever.
pub trait Drain {
    /// Does that work once; returns how much was done (0: nothing, the engine waits).
    fn drain(&mut self) -> usize;
}

/// The engine on its own thread: nothing to do but wait for downstream.
pub struct NoDrain;

impl Drain for NoDrain {
    fn drain(&mut self) -> usize {
        0
    }
}

/// The sink `Engine::process` writes to: the ring, and what to do while it is full.
struct DrainingSink<'a> {
    ring: &'a mut RingSink,
    drain: &'a mut dyn Drain,
}

impl EventSink for DrainingSink<'_> {
    #[inline]
    fn on_event(&mut self, event: &Event) {
        self.ring.push(Output::Event(*event), self.drain);
    }
}

/// Counts the allocations a [`Drain`] makes, so that the engine's own count leaves them out
/// (the gateway's work may allocate; the engine's may not).
struct CountedDrain<'a> {
    inner: &'a mut dyn Drain,
    allocations: u64,
}

impl Drain for CountedDrain<'_> {
    fn drain(&mut self) -> usize {
        let before = thread_allocations();
        let n = self.inner.drain();
        self.allocations += thread_allocations() - before;
        n
    }
}

/// The rings of the engine's read-only queries (never journaled): questions from the gateway,
/// answers back to it.
pub struct QueryRings {
    /// Questions.
    pub rx: Consumer<OrdersQuery>,
    /// Answer rows.
    pub tx: Producer<OrderRow>,
}

/// The engine thread's agent.
pub struct EngineStage {
    /// Read-only queries (`QueryOrders`).
    queries: Option<QueryRings>,
    engine: Engine,
    /// Takes snapshots between commands (file journal).
    snapshots: Option<SnapshotTrigger>,
    rx: Consumer<Command>,
    sink: RingSink,
    shared: Arc<Shared>,
    commands: u64,
    /// Allocations made by the engine's work while serving (counted per step).
    allocations: u64,
    stopped: bool,
    /// A fault to inject (debug builds, `CALDERA_FAULT=engine-stall@N|engine-panic@N`).
    #[cfg(debug_assertions)]
    fault: Option<(bool, u64)>,
    _death: crate::supervisor::DeathNotice,
}

impl EngineStage {
    /// The stage for `engine`, reading `rx` and writing `tx`.
    #[must_use]
    pub fn new(
        engine: Engine,
        rx: Consumer<Command>,
        tx: Producer<Output>,
        shared: Arc<Shared>,
        wait: WaitStrategy,
        snapshots: Option<SnapshotTrigger>,
    ) -> Self {
        Self {
            _death: crate::supervisor::DeathNotice::engine(&shared),
            queries: None,
            engine,
            snapshots,
            rx,
            sink: RingSink::new(tx, Arc::clone(&shared), wait),
            shared,
            commands: 0,
            allocations: 0,
            stopped: false,
            #[cfg(debug_assertions)]
            fault: engine_fault(),
        }
    }

    /// Answers read-only queries from `rings` between command chunks.
    #[must_use]
    pub fn with_queries(mut self, rings: QueryRings) -> Self {
        self.queries = Some(rings);
        self
    }

    /// Answers the waiting queries: each one's rows all at once (as of the engine's last
    /// sequence), when the answer ring has room for them; an answer that can never fit is one
    /// `BUSY` row. Allocation-free. Returns the queries answered.
    fn answer_queries(&mut self) -> usize {
        let Some(q) = &mut self.queries else {
            return 0;
        };
        let engine = &self.engine;
        let mut n = 0;
        while let Ok(&query) = q.rx.peek() {
            let live = engine.account_orders(query.account) as usize;
            let rows = live.max(1);
            let free = q.tx.slots();
            let empty = OrderRow {
                as_of: engine.last_seq(),
                index: 0,
                count: 0,
                order_id: 0,
                client_order_id: 0,
                price: 0,
                open_qty: 0,
                symbol: 0,
                side: caldera_engine::Side::Buy,
            };
            if rows > q.tx.buffer().capacity() {
                if free == 0 {
                    break;
                }
                let _ = q.tx.push(OrderRow {
                    count: OrderRow::BUSY,
                    ..empty
                });
            } else if free < rows {
                break; // the gateway has not taken the last answers yet
            } else if live == 0 {
                let _ = q.tx.push(empty);
            } else {
                let mut index = 0;
                let count = live as u32;
                engine.for_each_account_order(query.account, |o| {
                    let _ = q.tx.push(OrderRow {
                        index,
                        count,
                        order_id: o.order_id,
                        client_order_id: o.client_order_id,
                        price: o.price,
                        open_qty: o.leaves,
                        symbol: o.symbol,
                        side: o.side,
                        ..empty
                    });
                    index += 1;
                });
            }
            let _ = q.rx.pop();
            n += 1;
        }
        if n > 0 {
            self.shared.gateway_waker.wake();
        }
        n
    }

    /// Starts the engine thread (pinned to `core` when given).
    ///
    /// # Errors
    /// When the OS cannot spawn the thread.
    pub fn spawn(self, wait: WaitStrategy, core: Option<usize>) -> std::io::Result<EngineThread> {
        caldera_pipeline::spawn("caldera-engine", self, Idle::new(wait), core).map(EngineThread)
    }

    /// Processes the commands waiting in the ring (at most [`CHUNK`]): for each, its events
    /// then the command itself (a command boundary for the journal); then publishes progress and
    /// wakes downstream once for the whole chunk.
    #[inline]
    fn process_available(&mut self, drain: &mut dyn Drain) -> usize {
        let n = self.rx.slots().min(CHUNK);
        if n == 0 {
            return 0;
        }
        let Self {
            rx, engine, sink, ..
        } = self;
        let Ok(chunk) = rx.read_chunk(n) else {
            return 0;
        };
        let (a, b) = chunk.as_slices();
        let cmds = a.iter().chain(b);
        // Overlap cache misses: the index slots of the command PREFETCH_AHEAD places on are
        // requested while this one is processed.
        for c in cmds.clone().take(PREFETCH_AHEAD) {
            engine.prefetch(c);
        }
        let mut ahead = cmds.clone().skip(PREFETCH_AHEAD);
        for cmd in cmds {
            if let Some(next) = ahead.next() {
                engine.prefetch(next);
            }
            let mut events = DrainingSink { ring: sink, drain };
            engine.process(cmd, &mut events);
            sink.push(Output::Command(*cmd), drain);
        }
        chunk.commit_all();
        sink.flush(drain);
        self.commands += n as u64;
        self.shared
            .engine
            .done_ns
            .store(self.shared.now_ns(), Ordering::Relaxed);
        self.shared
            .engine
            .seq
            .store(self.engine.last_seq(), Ordering::Release);
        self.shared
            .engine
            .commands
            .store(self.commands, Ordering::Release);
        self.shared.notify_downstream();
        if let Some(t) = &mut self.snapshots {
            t.after_commands(&self.engine);
        }
        n
    }
}

/// How many commands ahead the engine prefetches index slots (about one memory latency of
/// work).
const PREFETCH_AHEAD: usize = 3;

/// Most commands processed between two publications of progress (and wake-ups downstream).
const CHUNK: usize = 256;

/// The running engine thread.
pub struct EngineThread(std::thread::JoinHandle<(EngineStage, Option<usize>)>);

impl EngineThread {
    /// Waits for the thread to stop (after [`caldera_pipeline::shared::GatewaySide::stop`]).
    ///
    /// # Errors
    /// When the thread panicked.
    pub fn join(self) -> Result<EngineReport, crate::NodeError> {
        let (stage, pinned_core) = self
            .0
            .join()
            .map_err(|_| crate::NodeError::Panicked("engine"))?;
        Ok(stage.report(pinned_core))
    }
}

impl EngineStage {
    /// One round of the engine's work: up to `chunks` chunks of commands, then the waiting
    /// queries. `drain` runs while the output ring is full. The allocations made here, other
    /// than `drain`'s, are added to the engine's count (expected: none). Returns the work done.
    fn step(&mut self, chunks: usize, drain: &mut dyn Drain) -> usize {
        #[cfg(debug_assertions)]
        if let Some((stall, at)) = self.fault {
            // Only with commands waiting: on the gateway's thread nothing else would show it.
            if self.commands >= at && !self.rx.is_empty() {
                if stall {
                    tracing::warn!("CALDERA_FAULT: the engine thread stops making progress");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                panic!("CALDERA_FAULT: injected engine panic");
            }
        }
        let before = thread_allocations();
        let mut counted = CountedDrain {
            inner: drain,
            allocations: 0,
        };
        let mut n = 0;
        for _ in 0..chunks {
            let k = self.process_available(&mut counted);
            n += k;
            if k < CHUNK {
                break;
            }
        }
        n += self.answer_queries();
        self.allocations += thread_allocations() - before - counted.allocations;
        n
    }

    /// Stops once the gateway has stopped and every command is processed. Returns whether it
    /// stopped.
    fn stop_when_drained(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        if !(self.shared.gateway.stop.load(Ordering::Acquire) && self.rx.is_empty()) {
            return false;
        }
        self.stopped = true;
        self.shared.engine.stopped.store(true, Ordering::SeqCst);
        self.shared.notify_downstream();
        tracing::info!(
            commands = self.commands,
            allocations = self.allocations,
            "engine stopped"
        );
        true
    }

    /// Runs the engine on the calling thread, the gateway's (ADR 0017): `drain` is the gateway's
    /// routing of released reports. Call [`InlineEngine::step`] from the gateway's loop.
    #[must_use]
    pub fn inline(self) -> InlineEngine {
        tracing::info!("engine running on the gateway thread");
        InlineEngine(self)
    }

    /// The report of a stopped stage.
    fn report(self, pinned_core: Option<usize>) -> EngineReport {
        EngineReport {
            engine: self.engine,
            commands: self.commands,
            allocations: self.allocations,
            pinned_core,
        }
    }
}

/// The engine run by the gateway's thread (ADR 0017).
pub struct InlineEngine(EngineStage);

impl InlineEngine {
    /// One round: every waiting command (up to [`INLINE_CHUNKS`] chunks) and query, calling
    /// `drain` while the output ring is full. Returns the work done.
    #[inline]
    pub fn step(&mut self, drain: &mut dyn Drain) -> usize {
        self.0.step(INLINE_CHUNKS, drain)
    }

    /// After the gateway's loop has ended: stops the engine (every command was processed:
    /// the gateway ends only then) and returns its report.
    #[must_use]
    pub fn stop(mut self) -> EngineReport {
        self.0.shared.gateway.stop.store(true, Ordering::SeqCst);
        while !self.0.stop_when_drained() {
            self.0.step(INLINE_CHUNKS, &mut NoDrain);
        }
        self.0.report(None)
    }
}

/// Chunks of commands the inline engine processes per round of the gateway's loop (the
/// gateway reads up to 256 frames a round).
const INLINE_CHUNKS: usize = 64;

impl Agent for EngineStage {
    fn on_start(&mut self) {
        self.shared.engine_parker.register_current();
        tracing::info!("engine thread running");
    }

    fn do_work(&mut self) -> usize {
        let n = self.step(1, &mut NoDrain);
        if n == 0 {
            self.stop_when_drained();
        }
        n
    }

    fn sleep(&mut self) {
        let (rx, shared, queries) = (&self.rx, &self.shared, &self.queries);
        shared.engine_parker.park_unless(
            || {
                !rx.is_empty()
                    || queries.as_ref().is_some_and(|q| !q.rx.is_empty())
                    || shared.gateway.stop.load(Ordering::SeqCst)
            },
            Duration::from_millis(1),
        );
    }

    fn done(&self) -> bool {
        self.stopped
    }
}

/// `CALDERA_FAULT`'s engine fault (debug builds): `engine-stall@N` stops making progress after N
/// commands, `engine-panic@N` panics after N commands. Returns (stall, N).
#[cfg(debug_assertions)]
fn engine_fault() -> Option<(bool, u64)> {
    use caldera_journal::fault::injected;
    injected("engine-stall")
        .map(|n| (true, n))
        .or_else(|| injected("engine-panic").map(|n| (false, n)))
}
