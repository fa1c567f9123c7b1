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
    /// Frames above this size make libzmq drop the connection before the gateway sees them
    /// (0 = `max_frame_bytes`).
    pub max_message_bytes: i64,
    /// Most requests in one frame; more gets `BatchTooLarge`.
    pub max_batch: usize,
    /// Report frames queued for a session that is not reading before its requests get `Busy`
    /// (also once half of `max_session_backlog_bytes` is queued).
    pub max_session_backlog: usize,
    /// Unread report bytes queued for a session beyond which the session ends (its queued
    /// reports are discarded; they are in the journal).
    pub max_session_backlog_bytes: usize,
    /// Most sessions at once; a new connection beyond gets `SessionLimit`.
    pub max_sessions: usize,
    /// Most sessions from one IP address.
    pub max_sessions_per_peer: usize,
    /// A session that never logged on ends after this long without a frame.
    pub session_idle_timeout_ms: u64,
    /// Requests a second one session may send (0 = no limit); beyond, `Throttled`.
    pub session_rate: u64,
    /// Requests a session may send at once above its rate (the token bucket's size).
    pub session_burst: u64,
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
            max_frame_bytes: 256 << 10,
            max_message_bytes: 0,
            max_batch: 4096,
            max_session_backlog: 1024,
            max_session_backlog_bytes: 16 << 20,
            max_sessions: 10_000,
            max_sessions_per_peer: 256,
            session_idle_timeout_ms: 30_000,
            session_rate: 500_000,
            session_burst: 100_000,
            sndhwm: 256,
            rcvhwm: 64,
            md_sndhwm: 10_000,
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
        if self.max_batch == 0
            || self.max_frame_bytes < 64
            || self.max_session_backlog == 0
            || self.max_sessions == 0
            || self.max_sessions_per_peer == 0
            || self.max_session_backlog_bytes < (64 << 10)
            || self.sndhwm <= 0
            || self.rcvhwm <= 0
        {
            return Err("gateway limits must be positive (max_frame_bytes >= 64, max_session_backlog_bytes >= 65536)".into());
        }
        if self.session_rate > 0 && self.session_burst == 0 {
            return Err("gateway.session_burst must be > 0 when session_rate is set".into());
        }
        if self.max_message_bytes != 0
            && (self.max_message_bytes as u64) < self.max_frame_bytes as u64
        {
            return Err("gateway.max_message_bytes must be 0 or >= max_frame_bytes".into());
        }
        Ok(())
    }

    /// The largest message libzmq accepts.
    #[must_use]
    pub fn message_limit(&self) -> i64 {
        if self.max_message_bytes == 0 {
            i64::try_from(self.max_frame_bytes).unwrap_or(i64::MAX)
        } else {
            self.max_message_bytes
        }
    }

    /// What a session may use (for [`crate::session::Sessions`]).
    pub(crate) fn session_limits(&self) -> crate::session::SessionLimits {
        crate::session::SessionLimits {
            rate: self.session_rate,
            burst: self.session_burst,
            max_sessions: self.max_sessions,
            max_per_peer: self.max_sessions_per_peer,
            max_backlog_bytes: self.max_session_backlog_bytes,
            idle_timeout: std::time::Duration::from_millis(self.session_idle_timeout_ms),
        }
    }
}
