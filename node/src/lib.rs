//! A Caldera node: the process around the engine.
//!
//! - [`config`]: the TOML configuration and its command-line overrides.
//! - [`handover`]: [`Primary`], what recovery or a promotion hands to the serving primary.
//! - [`recovery`]: start-up as the primary ([`Primary::open`]).
//! - [`primary`]: serving as the primary ([`PrimaryNode`]): the gateway on the calling thread,
//!   the engine and journal stages on their own threads, and the orderly shutdown.
//! - [`engine_stage`]: the engine thread's agent (core-pinned, allocation-free).
//! - [`journal_stage`]: the journal thread's agent (batch, append, release when durable).
//! - [`history`]: the journal as the gateway's resend history (`LogonWith{RESEND}`).
//! - [`snapshotter`]: snapshots off the request path, from the durable log, at low priority.
//! - [`security`]: the server key, the entitlements and the ZAP handler's thread.
//! - [`standby`]: the hot standby following the journal, and its promotion.
//! - [`metrics`]: Prometheus metrics and the health endpoints.
//! - [`status`]: the node's role and standby progress.
//! - [`summary`]: what the binary prints as JSON.
//! - [`error`]: why a node stops ([`NodeError`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod engine_stage;
pub mod error;
pub mod handover;
pub mod history;
pub mod journal_stage;
pub mod metrics;
pub mod primary;
pub mod recovery;
pub mod security;
pub mod snapshotter;
pub mod standby;
pub mod status;
pub mod summary;
pub mod supervisor;

pub use config::Config;
pub use error::NodeError;
pub use handover::Primary;
pub use metrics::Metrics;
pub use primary::{PrimaryNode, ServeSummary};
pub use security::NodeSecurity;
pub use standby::{run_standby, StandbyExit, StandbySummary};
pub use status::{NodeStatus, Role};
