//! Caldera's gateway: ZeroMQ order entry (ROUTER) and market data (PUB), two lock-free SPSC
//! rings, and the core-pinned, allocation-free engine thread. `caldera serve` runs [`serve`].
//!
//! The wire protocol is specified in `docs/protocol.md`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc_count;
pub mod config;
pub mod engine_thread;
pub mod failover;
pub mod journal_thread;
pub mod market_data;
pub mod metrics;
pub mod server;
pub mod wait;

pub use config::{Config, WaitStrategy};
pub use failover::{
    open_primary, run_standby, NodeStatus, Primary, Role, StandbyExit, StandbySummary,
};
pub use metrics::Metrics;
pub use server::{
    serve, serve_primary, serve_primary_with, serve_with_ready, GatewayStats, ServeError,
    ServeSummary,
};
