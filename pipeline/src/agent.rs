//! Agents: every endless loop of a node is a struct whose [`Agent::do_work`] calls named steps
//! and returns how much work they did, run by one loop with one idle strategy (as Aeron's
//! agents and the Disruptor's batch processor are).

use crate::idle::{Idle, WaitStrategy};
use std::thread::JoinHandle;

/// A unit of work run by a thread until it is done.
pub trait Agent {
    /// Called once on the agent's thread before the first round.
    fn on_start(&mut self) {}
    /// One round of work; returns how much was done (0 = nothing to do: the thread idles).
    fn do_work(&mut self) -> usize;
    /// Blocks until woken or a short timeout; called by the `park` strategy after spinning and
    /// yielding found nothing. Implementations announce that they sleep, re-check for work,
    /// then block (see [`crate::Parker`]).
    fn sleep(&mut self) {
        std::thread::park_timeout(std::time::Duration::from_millis(1));
    }
    /// True once the agent has finished: the loop returns.
    fn done(&self) -> bool;
}

/// Runs `agent` on the calling thread until it is done.
pub fn run<A: Agent + ?Sized>(agent: &mut A, wait: WaitStrategy) {
    run_with(agent, Idle::new(wait));
}

/// Runs `agent` on the calling thread until it is done, idling with `idle`.
pub fn run_with<A: Agent + ?Sized>(agent: &mut A, mut idle: Idle) {
    agent.on_start();
    loop {
        let work = agent.do_work();
        if agent.done() {
            return;
        }
        idle.after(work, || agent.sleep());
    }
}

/// Starts a named thread that pins itself to `core` (when given and possible; otherwise it runs
/// unpinned and logs why), runs `agent` until it is done, and hands the agent back with the
/// core it was pinned to.
///
/// # Errors
/// When the OS cannot spawn the thread.
pub fn spawn<A: Agent + Send + 'static>(
    name: &str,
    mut agent: A,
    idle: Idle,
    core: Option<usize>,
) -> std::io::Result<JoinHandle<(A, Option<usize>)>> {
    let thread = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let pinned = pin(&thread, core);
            run_with(&mut agent, idle);
            (agent, pinned)
        })
}

/// Pins the calling thread to `core`; `None` (with a warning) when that core does not exist.
#[must_use]
pub fn pin(thread: &str, core: Option<usize>) -> Option<usize> {
    let id = core?;
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == id) {
        Some(c) if core_affinity::set_for_current(c) => {
            tracing::info!(thread, core = id, "thread pinned");
            Some(id)
        }
        _ => {
            tracing::warn!(
                thread,
                core = id,
                "could not pin the thread; running unpinned"
            );
            None
        }
    }
}
