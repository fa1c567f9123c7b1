//! The engine thread: pops commands from the inbound SPSC ring, runs the engine, pushes events to
//! the outbound SPSC ring. Pinned to a core when configured; allocation-free after start-up.

use crate::alloc_count::thread_allocations;
use crate::config::WaitStrategy;
use crate::wait::Waiter;
use caldera_engine::{Command, Engine, Event, EventSink};
use rtrb::{Consumer, Producer};
use rustix::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// What the engine thread emits: the events a command produced, then the command itself. The
/// journal needs both (commands are re-run on replay, events are for consumers); the gateway
/// routes the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A command the engine executed; its events precede it.
    Command(Command),
    /// An event.
    Event(Event),
}

/// State shared by the gateway, engine and journal threads.
#[derive(Debug)]
pub struct Shared {
    /// Set by the gateway: exit once the inbound ring is empty.
    pub stop: AtomicBool,
    /// The engine thread is (about to be) parked.
    pub engine_sleeping: AtomicBool,
    /// The gateway thread is (about to be) blocked in `zmq_poll`.
    pub gateway_sleeping: AtomicBool,
    /// Commands the engine has finished.
    pub commands_processed: AtomicU64,
    /// The engine's last sequence number.
    pub engine_seq: AtomicU64,
    /// Last sequence the journal made durable and forwarded to the gateway.
    pub forwarded_seq: AtomicU64,
    /// Commands whose events the journal made durable and forwarded.
    pub commands_forwarded: AtomicU64,
    /// A journal thread sits between the engine and the gateway.
    pub journal_enabled: AtomicBool,
    /// The journal thread is (about to be) parked.
    pub journal_sleeping: AtomicBool,
    /// The journal failed: stop acknowledging (set by the journal thread).
    pub journal_failed: AtomicBool,
    /// The engine thread has exited.
    pub engine_stopped: AtomicBool,
    /// A newer primary fenced this one: release nothing more and stop (journal thread).
    pub fenced: AtomicBool,
    journal_thread: OnceLock<Thread>,
    /// eventfd the engine writes to wake the gateway's `zmq_poll`.
    pub wake_gateway: OwnedFd,
    engine_thread: OnceLock<Thread>,
}

impl Shared {
    /// New shared state with its eventfd.
    ///
    /// # Errors
    /// When the eventfd cannot be created.
    pub fn new() -> std::io::Result<Self> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )?;
        Ok(Self {
            stop: AtomicBool::new(false),
            engine_sleeping: AtomicBool::new(false),
            gateway_sleeping: AtomicBool::new(false),
            commands_processed: AtomicU64::new(0),
            engine_seq: AtomicU64::new(0),
            forwarded_seq: AtomicU64::new(0),
            commands_forwarded: AtomicU64::new(0),
            journal_enabled: AtomicBool::new(false),
            journal_sleeping: AtomicBool::new(false),
            journal_failed: AtomicBool::new(false),
            engine_stopped: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            journal_thread: OnceLock::new(),
            wake_gateway: fd,
            engine_thread: OnceLock::new(),
        })
    }

    /// Wakes the gateway if it is blocked (called after pushing events). No allocation.
    #[inline]
    pub fn notify_gateway(&self) {
        fence(Ordering::SeqCst);
        if self.gateway_sleeping.load(Ordering::Relaxed)
            && self.gateway_sleeping.swap(false, Ordering::SeqCst)
        {
            let _ = rustix::io::write(&self.wake_gateway, &1u64.to_ne_bytes());
        }
    }

    /// Wakes whoever consumes the engine's output: the journal thread if there is one, else
    /// the gateway. No allocation.
    #[inline]
    pub fn notify_downstream(&self) {
        if self.journal_enabled.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst);
            if self.journal_sleeping.load(Ordering::Relaxed) {
                if let Some(t) = self.journal_thread.get() {
                    t.unpark();
                }
            }
        } else {
            self.notify_gateway();
        }
    }

    /// Registers the calling thread as the journal thread.
    pub fn register_journal_thread(&self) {
        let _ = self.journal_thread.set(std::thread::current());
    }

    /// Wakes the engine if it is parked (called after pushing commands).
    #[inline]
    pub fn wake_engine(&self) {
        fence(Ordering::SeqCst);
        if self.engine_sleeping.load(Ordering::Relaxed) {
            if let Some(t) = self.engine_thread.get() {
                t.unpark();
            }
        }
    }

    /// Clears the gateway's eventfd after a wake-up.
    pub fn drain_gateway_wakeups(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.wake_gateway, &mut b);
    }
}

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
struct RingSink<'a> {
    tx: Producer<Output>,
    shared: &'a Shared,
    waiter: Waiter,
}

impl RingSink<'_> {
    #[inline]
    fn push(&mut self, mut item: Output) {
        loop {
            match self.tx.push(item) {
                Ok(()) => {
                    self.waiter.reset();
                    return;
                }
                Err(rtrb::PushError::Full(back)) => {
                    // Back-pressure: downstream is behind. Wake it and wait for room.
                    item = back;
                    self.shared.notify_downstream();
                    self.waiter
                        .wait(|| std::thread::park_timeout(Duration::from_micros(50)));
                }
            }
        }
    }
}

impl EventSink for RingSink<'_> {
    #[inline]
    fn on_event(&mut self, event: &Event) {
        self.push(Output::Event(*event));
    }
}

/// Starts the engine thread.
///
/// # Errors
/// When the OS cannot spawn the thread.
pub fn spawn(
    engine: Engine,
    rx: Consumer<Command>,
    tx: Producer<Output>,
    shared: Arc<Shared>,
    wait: WaitStrategy,
    core: Option<usize>,
) -> std::io::Result<JoinHandle<EngineReport>> {
    std::thread::Builder::new()
        .name("caldera-engine".into())
        .spawn(move || run(engine, rx, tx, &shared, wait, core))
}

fn pin(core: Option<usize>) -> Option<usize> {
    let id = core?;
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == id) {
        Some(c) if core_affinity::set_for_current(c) => {
            tracing::info!(core = id, "engine thread pinned");
            Some(id)
        }
        _ => {
            tracing::warn!(
                core = id,
                "could not pin the engine thread; running unpinned"
            );
            None
        }
    }
}

fn run(
    mut engine: Engine,
    mut rx: Consumer<Command>,
    tx: Producer<Output>,
    shared: &Shared,
    wait: WaitStrategy,
    core: Option<usize>,
) -> EngineReport {
    let pinned_core = pin(core);
    let _ = shared.engine_thread.set(std::thread::current());
    tracing::info!(?wait, "engine thread running");
    let mut sink = RingSink {
        tx,
        shared,
        waiter: Waiter::new(wait),
    };
    let mut waiter = Waiter::new(wait);
    let mut commands = 0u64;
    // Everything above may allocate (thread name, logging); nothing below may.
    let base = thread_allocations();
    loop {
        if let Ok(cmd) = rx.pop() {
            waiter.reset();
            engine.process(&cmd, &mut sink);
            // The command follows its events: it marks a command boundary for the journal.
            sink.push(Output::Command(cmd));
            commands += 1;
            shared
                .engine_seq
                .store(engine.last_seq(), Ordering::Release);
            shared.commands_processed.store(commands, Ordering::Release);
            shared.notify_downstream();
            continue;
        }
        if shared.stop.load(Ordering::Acquire) && rx.is_empty() {
            break;
        }
        waiter.wait(|| {
            shared.engine_sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if rx.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            shared.engine_sleeping.store(false, Ordering::SeqCst);
        });
    }
    let allocations = thread_allocations() - base;
    shared.engine_stopped.store(true, Ordering::SeqCst);
    shared.notify_downstream();
    tracing::info!(commands, allocations, "engine thread stopped");
    EngineReport {
        engine,
        commands,
        allocations,
        pinned_core,
    }
}
