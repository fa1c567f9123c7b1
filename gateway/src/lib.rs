//! Caldera's wire side: ZeroMQ order entry (ROUTER) and market data (PUB).
//!
//! The [`Gateway`] agent reads client frames, verifies and validates them, and pushes engine
//! commands into the inbound ring; it routes the durable events it is handed back to the
//! sessions they concern as execution reports, and publishes market data. It knows nothing of
//! the engine thread or the journal beyond the rings and the shared pipeline state. The wire
//! protocol is specified in `docs/protocol.md`.
//!
//! - [`gateway`]: the agent, its sockets and the back-pressure rules.
//! - `session` (private): sessions, logon, per-session report sequence and backlog.
//! - [`market_data`]: per-symbol market data and periodic L2 snapshots.
//! - [`resend`]: resend on logon (`LogonWith{RESEND}`): the account's past reports from the journal
//!   (read through the [`History`] the node provides), then the live ones.
//! - [`config`]: the `[gateway]` configuration section.
//! - [`counters`]: what the gateway counts, for metrics and the exit summary.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod counters;
pub mod gateway;
pub mod market_data;
pub mod resend;
mod session;

pub use config::GatewayConfig;
pub use counters::{GatewayCounters, GatewayStats, Stage};
pub use gateway::{
    Gateway, GatewayRings, Security, SocketError, LOGON_CANCEL_ON_DISCONNECT, LOGON_RESEND,
    MAX_RESENDS,
};
pub use resend::{History, HistoryError, HistoryReader};
pub use session::SessionEnd;
