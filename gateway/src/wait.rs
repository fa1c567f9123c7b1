//! Idle waiting for the engine and gateway threads.

use crate::config::WaitStrategy;

/// Spins this many idle rounds before yielding (spin-yield, park).
const SPINS: u32 = 200;
/// Yields this many more rounds before sleeping (park).
const YIELDS: u32 = 50;

/// Tracks how long a thread has been idle and waits accordingly.
#[derive(Debug)]
pub struct Waiter {
    strategy: WaitStrategy,
    idle: u32,
}

impl Waiter {
    /// A waiter for a resolved strategy (`Auto` behaves like `SpinYield`).
    #[must_use]
    pub fn new(strategy: WaitStrategy) -> Self {
        Self { strategy, idle: 0 }
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
                if self.idle < SPINS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            WaitStrategy::Park => {
                if self.idle < SPINS {
                    std::hint::spin_loop();
                } else if self.idle < SPINS + YIELDS {
                    std::thread::yield_now();
                } else {
                    sleep();
                }
            }
        }
    }

    /// Whether the thread has been idle long enough to sleep (for strategies that sleep).
    #[must_use]
    pub fn would_sleep(&self) -> bool {
        self.strategy == WaitStrategy::Park && self.idle >= SPINS + YIELDS
    }
}
