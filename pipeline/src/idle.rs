//! Idle strategies: what a thread does when a round of work found nothing to do.

use serde::Deserialize;

/// How an idle thread waits for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitStrategy {
    /// Busy-spin: lowest latency, burns a whole core. Needs a core per spinning thread.
    Spin,
    /// Spin briefly, then `sched_yield`: low latency, gives the core to other runnable threads.
    SpinYield,
    /// Spin briefly, then sleep until woken (futex/eventfd): lowest CPU, adds wake-up latency.
    Park,
    /// `spin` with 4+ cores, else `park` (on 2 cores spinning and yielding threads take the CPU
    /// the others need: `park` gave both more throughput and a lower tail; docs/benchmarks.md).
    Auto,
}

impl WaitStrategy {
    /// Resolves `Auto` for this machine's core count.
    #[must_use]
    pub fn resolve(self, cores: usize) -> WaitStrategy {
        match self {
            WaitStrategy::Auto if cores >= 4 => WaitStrategy::Spin,
            WaitStrategy::Auto => WaitStrategy::Park,
            other => other,
        }
    }

    /// The configuration spelling (`spin`, `spin-yield`, `park`, `auto`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WaitStrategy::Spin => "spin",
            WaitStrategy::SpinYield => "spin-yield",
            WaitStrategy::Park => "park",
            WaitStrategy::Auto => "auto",
        }
    }
}

impl std::str::FromStr for WaitStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "spin" => WaitStrategy::Spin,
            "spin-yield" => WaitStrategy::SpinYield,
            "park" => WaitStrategy::Park,
            "auto" => WaitStrategy::Auto,
            _ => {
                return Err(format!(
                    "unknown wait strategy {s:?}: use spin, spin-yield, park or auto"
                ))
            }
        })
    }
}

impl std::fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Spins this many idle rounds before yielding (spin-yield) or sleeping (park).
const SPINS: u32 = 200;
/// Yields this many more rounds before sleeping (park): none — on a small machine a yield is a
/// context switch the other threads pay for.
const YIELDS: u32 = 0;

/// Applies a [`WaitStrategy`]: tracks how long a thread has been idle and waits accordingly.
#[derive(Debug)]
pub struct Idle {
    strategy: WaitStrategy,
    idle: u32,
    spins: u32,
    yields: u32,
}

impl Idle {
    /// Idle state for a resolved strategy (`Auto` behaves like `SpinYield`; resolve it first).
    #[must_use]
    pub fn new(strategy: WaitStrategy) -> Self {
        Self::with_phases(strategy, SPINS, YIELDS)
    }

    /// Like [`Idle::new`] with other lengths of the spin and yield phases.
    #[must_use]
    pub fn with_phases(strategy: WaitStrategy, spins: u32, yields: u32) -> Self {
        Self {
            strategy,
            idle: 0,
            spins,
            yields,
        }
    }

    /// Work was found: the next wait starts from the spin phase again.
    #[inline]
    pub fn reset(&mut self) {
        self.idle = 0;
    }

    /// No work: wait a little. `sleep` is called (only by `Park`) once spinning and yielding
    /// have not found work; it must block until woken or a short timeout.
    #[inline]
    pub fn wait(&mut self, sleep: impl FnOnce()) {
        self.idle = self.idle.saturating_add(1);
        match self.strategy {
            WaitStrategy::Spin => std::hint::spin_loop(),
            WaitStrategy::SpinYield | WaitStrategy::Auto => {
                if self.idle < self.spins {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            WaitStrategy::Park => {
                if self.idle < self.spins {
                    std::hint::spin_loop();
                } else if self.idle < self.spins + self.yields {
                    std::thread::yield_now();
                } else {
                    sleep();
                }
            }
        }
    }

    /// Records a round's work count: resets after work, waits after none.
    #[inline]
    pub fn after(&mut self, work: usize, sleep: impl FnOnce()) {
        if work > 0 {
            self.reset();
        } else {
            self.wait(sleep);
        }
    }
}
