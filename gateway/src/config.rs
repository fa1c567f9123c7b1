//! The gateway's configuration (the `[gateway]` section of the node's TOML file; every key is
//! documented in docs/configuration.md).

use serde::Deserialize;

/// Sockets and limits of the gateway.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// ROUTER endpoint for order entry.
    pub order_entry: String,
    /// PUB endpoint for market data.
    pub market_data: String,
    /// Largest accepted request frame; larger frames get `FrameTooLarge`.
    pub max_frame_bytes: usize,
    /// Frames above this size make libzmq drop the connection (protection against abuse).
    pub max_message_bytes: i64,
    /// Most requests in one frame; more gets `BatchTooLarge`.
    pub max_batch: usize,
    /// Report frames queued for a session that is not reading before its requests get `Busy`.
    pub max_session_backlog: usize,
    /// ZeroMQ high-water marks (messages) for the order-entry socket.
    pub sndhwm: i32,
    /// See `sndhwm`.
    pub rcvhwm: i32,
    /// High-water mark of the market-data socket (slow subscribers lose messages beyond it).
    pub md_sndhwm: i32,
    /// Period of full L2 snapshots on the market-data socket (0 = never).
    pub md_snapshot_interval_ms: u64,
    /// How long to keep flushing reports after a shutdown signal.
    pub shutdown_linger_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            order_entry: "tcp://127.0.0.1:7001".into(),
            market_data: "tcp://127.0.0.1:7002".into(),
            max_frame_bytes: 1 << 20,
            max_message_bytes: 16 << 20,
            max_batch: 4096,
            max_session_backlog: 4096,
            sndhwm: 100_000,
            rcvhwm: 100_000,
            md_sndhwm: 100_000,
            md_snapshot_interval_ms: 1000,
            shutdown_linger_ms: 5000,
        }
    }
}

impl GatewayConfig {
    /// Checks the limits.
    ///
    /// # Errors
    /// A description of the first invalid value.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch == 0 || self.max_frame_bytes < 64 || self.max_session_backlog == 0 {
            return Err("gateway limits must be positive (max_frame_bytes >= 64)".into());
        }
        Ok(())
    }
}
