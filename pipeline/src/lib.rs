//! How a Caldera node's threads run and hand work to each other.
//!
//! - [`agent`]: the [`Agent`] trait (a `do_work` that returns a work count) and the loop and
//!   thread that run one with an idle strategy.
//! - [`idle`]: [`WaitStrategy`] (spin, spin-then-yield, park) and the [`Idle`] state that
//!   applies it.
//! - [`wake`]: waking a parked thread ([`Parker`]) or a thread blocked in `poll` ([`EventFdWaker`]).
//! - [`message`]: what the rings carry ([`Output`]).
//! - [`shared`]: the state the pipeline threads share ([`Shared`]), grouped by the thread that
//!   writes it and padded to cache lines.
//! - [`padded`]: values padded to their own cache lines.
//! - [`histogram`]: a lock-free fixed-bucket latency histogram.
//! - [`alloc_count`]: a counting global allocator (proves the engine thread allocates nothing).
//! - [`cpu`]: CPU time and memory of the process and of each thread (what a request costs).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod alloc_count;
pub mod cpu;
pub mod histogram;
pub mod idle;
pub mod message;
pub mod padded;
pub mod shared;
pub mod wake;

pub use agent::{run, run_with, spawn, Agent};
pub use histogram::Histogram;
pub use idle::{Idle, WaitStrategy};
pub use message::{OrderRow, OrdersQuery, Output};
pub use padded::CachePadded;
pub use shared::Shared;
pub use wake::{EventFdWaker, Parker};
