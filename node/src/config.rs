//! The node's configuration: a TOML file, every field optional, plus command-line overrides.
//! The reference of every key is docs/configuration.md.

use caldera_engine::{EngineConfig, InstrumentSpec};
pub use caldera_gateway::GatewayConfig;
pub use caldera_pipeline::WaitStrategy;
use serde::Deserialize;
use std::path::Path;

/// One instrument (mirrors [`InstrumentSpec`]).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    /// Instrument id.
    pub id: u32,
    /// Price increment.
    pub tick_size: u64,
    /// Quantity increment.
    pub lot_size: u64,
    /// Lowest price (inclusive).
    pub min_price: u64,
    /// Highest price (inclusive).
    pub max_price: u64,
    /// Largest order quantity.
    pub max_qty: u64,
}

/// Engine capacities.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Resting orders, all instruments.
    pub max_orders: u32,
    /// Accounts that may rest orders.
    pub max_accounts: u32,
    /// Seed of the engine's hash tables. Unset (the default): a random secret per process —
    /// replicas need not agree (it changes no behaviour); set it only for reproducible
    /// benchmarks, and never publish it (known seeds let clients collide their ids).
    pub hash_seed: Option<u64>,
    /// Each account's accepted orders remembered by client order id after they are done, so
    /// a client's resend after a failover is rejected as a duplicate (0 = live orders only).
    /// Per account: other accounts' traffic does not shorten it.
    pub dedupe_window: u32,
    /// Accounts whose dedupe windows are kept (those with an order accepted most recently).
    pub dedupe_accounts: u32,
    /// Most live orders one account may have (0 = no limit beyond max_orders).
    pub max_orders_per_account: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            max_orders: 1 << 20,
            max_accounts: 1 << 16,
            hash_seed: None,
            dedupe_window: 1024,
            dedupe_accounts: 1024,
            max_orders_per_account: 1 << 16,
        }
    }
}

/// Threads, cores and rings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadsSection {
    /// Core for the engine thread (`None` = auto: the last core when there are 4+ cores).
    pub engine_core: Option<usize>,
    /// Core for the gateway thread (`None` = not pinned).
    pub gateway_core: Option<usize>,
    /// How idle threads wait.
    pub wait: WaitStrategy,
    /// Which thread runs the engine (ADR 0017).
    pub engine: EngineThread,
    /// Slots in each SPSC ring (commands in, events out).
    pub ring_capacity: usize,
}

/// Which thread runs the engine (ADR 0017).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineThread {
    /// A thread of its own (pinned with `engine_core`): the engine works while the gateway
    /// reads and routes, and keeps its own share of the CPU when the machine is overloaded.
    Own,
    /// The gateway's thread, between its rounds: no hand-off, no wake-up, one thread fewer to
    /// schedule; less CPU per request on a machine with fewer cores than threads, but one
    /// thread's share of an overloaded machine for both.
    Gateway,
}

impl Default for ThreadsSection {
    fn default() -> Self {
        Self {
            engine_core: None,
            gateway_core: None,
            wait: WaitStrategy::Auto,
            engine: EngineThread::Own,
            ring_capacity: 1 << 16,
        }
    }
}

/// fsync setting of the file journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncSetting {
    /// After every batch, before its reports are released (survives power loss).
    Always,
    /// Every `fsync_interval_ms`; reports released after the write (survives a process crash).
    Interval,
    /// Never forced (survives a process crash only).
    Never,
}

/// This process's secret hash seed (drawn once from the OS's randomness).
fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        // RandomState keys come from the OS's random source, fresh per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        h.finish()
    })
}

/// Why a `kafka://` journal cannot be used by a build without the `kafka` feature.
pub const NO_KAFKA: &str =
    "this build has no Kafka support (rebuild with the `kafka` feature, the default)";

/// Where the engine's commands and events are journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalUri {
    /// No journal (state is lost when the process stops).
    None,
    /// The embedded segment log in a directory.
    File(std::path::PathBuf),
    /// A Kafka topic (partition 0) on these bootstrap brokers.
    Kafka {
        /// `host:port[,host:port…]`.
        brokers: String,
        /// Topic.
        topic: String,
    },
}

impl std::str::FromStr for JournalUri {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(JournalUri::None);
        }
        if let Some(p) = s.strip_prefix("file://") {
            if p.is_empty() {
                return Err("file:// needs a directory, e.g. file://./journal".into());
            }
            return Ok(JournalUri::File(p.into()));
        }
        if let Some(rest) = s.strip_prefix("kafka://") {
            let (brokers, topic) = rest
                .split_once('/')
                .ok_or("kafka URI must be kafka://HOST:PORT/TOPIC")?;
            if brokers.is_empty() || topic.is_empty() {
                return Err("kafka URI must be kafka://HOST:PORT/TOPIC".into());
            }
            return Ok(JournalUri::Kafka {
                brokers: brokers.into(),
                topic: topic.into(),
            });
        }
        Err(format!(
            "unknown journal URI {s:?}: use file://DIR, kafka://HOST:PORT/TOPIC or none"
        ))
    }
}

/// Journal settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    /// `file://DIR` (default `file://caldera-journal`), `kafka://HOST:PORT/TOPIC`, or `none`.
    pub uri: String,
    /// File journal fsync policy.
    pub fsync: FsyncSetting,
    /// Period for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Roll segments at this size.
    pub segment_bytes: u64,
    /// File journal: write each new segment full of zeros before appending to it, so an
    /// `fdatasync` writes data only (ADR 0018). Off for copy-on-write filesystems (btrfs, ZFS),
    /// where overwriting in place saves nothing.
    pub preallocate: bool,
    /// Snapshot every this many events (0 = only at shutdown).
    pub snapshot_every_events: u64,
    /// Delete old segments (already covered by a snapshot) beyond this total size.
    pub retention_bytes: Option<u64>,
    /// Delete old segments (already covered by a snapshot) older than this.
    pub retention_age_s: Option<u64>,
    /// Lowest writer epoch. A primary writes with the highest epoch found in the journal + 1
    /// (at least this), stamped on every batch.
    pub epoch: u64,
    /// Group commit under load: after a large batch, wait up to this long (µs) for the next
    /// batch to fill before appending it (0 = append at once). Light loads never wait.
    pub group_commit_us: u64,
    /// Kafka: start-up catch-up stops after this long without a new record.
    pub kafka_catchup_idle_ms: u64,
    /// Kafka: no acknowledgement for this long while batches are pending = journal unavailable
    /// (new requests rejected with `JournalUnavailable`; pending ones held and retried).
    pub kafka_stall_ms: u64,
    /// Kafka: largest record the node writes. A batch larger than this (one command's events:
    /// a mass cancel of ~10K orders, a sweep of ~5K resting orders) is split into several
    /// records that readers reassemble (docs/journal.md). Keep it under the broker's
    /// `message.max.bytes` / the topic's `max.message.bytes` (1 MB by default).
    pub kafka_max_record_bytes: usize,
    /// Kafka: librdkafka properties for the connection's security, passed through as given
    /// (`[journal.kafka]`: `security.protocol`, `sasl.*`, `ssl.*`, `client.id`).
    pub kafka: std::collections::BTreeMap<String, String>,
}

impl Default for JournalSection {
    fn default() -> Self {
        Self {
            uri: "file://caldera-journal".into(),
            fsync: FsyncSetting::Always,
            fsync_interval_ms: 10,
            segment_bytes: 64 << 20,
            preallocate: true,
            snapshot_every_events: 5_000_000,
            retention_bytes: None,
            retention_age_s: None,
            epoch: 1,
            group_commit_us: 0,
            kafka_catchup_idle_ms: 1000,
            kafka_stall_ms: 1000,
            kafka_max_record_bytes: 900_000,
            kafka: std::collections::BTreeMap::new(),
        }
    }
}

impl JournalSection {
    /// The parsed URI.
    ///
    /// # Errors
    /// An invalid URI.
    pub fn parsed(&self) -> Result<JournalUri, ConfigFileError> {
        self.uri.parse().map_err(ConfigFileError::Invalid)
    }

    /// The Kafka cluster at `servers`, with the `[journal.kafka]` properties.
    #[cfg(feature = "kafka")]
    #[must_use]
    pub fn brokers(&self, servers: &str) -> caldera_journal::kafka::Brokers {
        caldera_journal::kafka::Brokers {
            servers: servers.into(),
            properties: self
                .kafka
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Hot standby and failover.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverSection {
    /// The primary appends a heartbeat batch after this long without a journal append.
    pub heartbeat_ms: u64,
    /// A standby promotes itself after this long without any journal record (a stopped or
    /// partitioned primary). With the file journal a crashed primary is detected at once
    /// through the writer lock, whatever this is. With Kafka the broker must confirm that the
    /// topic has not grown; while it does not answer, the standby waits (docs/failover.md).
    pub timeout_ms: u64,
    /// File journal: when the primary is silent for `timeout_ms` but still holds the writer
    /// lock (stopped, not dead), kill it (SIGKILL; same host) so the lock is released. Without
    /// this the standby waits for the lock.
    pub kill_silent_primary: bool,
    /// How often the standby logs its status (role, applied sequence, lag, state hash).
    pub status_every_ms: u64,
    /// A pipeline thread (engine, journal) that makes no progress for this long while work
    /// waits for it makes the node unready and ends the process (exit code 5) so that a
    /// standby takes over. A thread that dies ends it at once (exit code 6).
    pub stall_ms: u64,
    /// Order-entry endpoints of the other nodes. A standby keeps a ZeroMQ connection to
    /// whichever of them is bound (the primary); when that connection drops — the primary's
    /// process died and the kernel reset it — the standby takes over at once instead of
    /// waiting for `timeout_ms` (Kafka journal; the new epoch fences a primary that is in fact
    /// alive).
    pub peers: Vec<String>,
}

impl Default for FailoverSection {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            timeout_ms: 500,
            kill_silent_primary: true,
            status_every_ms: 5000,
            stall_ms: 3000,
            peers: Vec::new(),
        }
    }
}

/// How clients are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// CURVE encryption and keys; only keys in the entitlements file may connect.
    #[default]
    Curve,
    /// Plain TCP, no authentication: anyone who reaches the port may trade as any account.
    None,
}

impl AuthMode {
    /// Its name in the configuration and in metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Curve => "curve",
            AuthMode::None => "none",
        }
    }
}

/// Who may use the node (docs/protocol.md, "Security").
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// `curve` (default) or `none` (insecure; also `--insecure`).
    pub auth: AuthMode,
    /// Directory made by `caldera init`: `server.key_secret` and `entitlements.toml` are
    /// looked for here unless named below (also `--keys`).
    pub keys_dir: String,
    /// The server's secret key file (default `KEYS_DIR/server.key_secret`).
    pub server_key: Option<String>,
    /// The entitlements file (default `KEYS_DIR/entitlements.toml`); re-read on SIGHUP.
    pub entitlements: Option<String>,
    /// Market data over CURVE too: subscribers need a listed key (any role).
    pub market_data_curve: bool,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            auth: AuthMode::Curve,
            keys_dir: "caldera-keys".into(),
            server_key: None,
            entitlements: None,
            market_data_curve: false,
        }
    }
}

impl SecuritySection {
    /// The server's secret key file.
    #[must_use]
    pub fn server_key_path(&self) -> std::path::PathBuf {
        self.server_key.as_ref().map_or_else(
            || Path::new(&self.keys_dir).join("server.key_secret"),
            Into::into,
        )
    }

    /// The entitlements file.
    #[must_use]
    pub fn entitlements_path(&self) -> std::path::PathBuf {
        self.entitlements.as_ref().map_or_else(
            || Path::new(&self.keys_dir).join("entitlements.toml"),
            Into::into,
        )
    }
}

/// Metrics and health HTTP listener.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `HOST:PORT` for `/metrics`, `/healthz`, `/readyz` (empty = off).
    pub listen: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Engine capacities.
    pub engine: EngineSection,
    /// Instruments (default: ids 1..=8, tick 1, lot 1, prices 1..=200000, max qty 1000000).
    pub instruments: Vec<Instrument>,
    /// Gateway sockets and limits.
    pub gateway: GatewayConfig,
    /// Threads.
    pub threads: ThreadsSection,
    /// Journal.
    pub journal: JournalSection,
    /// Hot standby and failover.
    pub failover: FailoverSection,
    /// Metrics and health endpoints.
    pub metrics: MetricsSection,
    /// Authentication and entitlements.
    pub security: SecuritySection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: EngineSection::default(),
            instruments: (1..=8)
                .map(|id| Instrument {
                    id,
                    tick_size: 1,
                    lot_size: 1,
                    min_price: 1,
                    max_price: 200_000,
                    max_qty: 1_000_000,
                })
                .collect(),
            gateway: GatewayConfig::default(),
            threads: ThreadsSection::default(),
            journal: JournalSection::default(),
            failover: FailoverSection::default(),
            metrics: MetricsSection::default(),
            security: SecuritySection::default(),
        }
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("parsing {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        source: toml::de::Error,
    },
    /// The engine rejected the configuration.
    #[error("invalid engine configuration: {0}")]
    Engine(#[from] caldera_engine::ConfigError),
    /// Another invalid value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// I/O, TOML syntax or unknown keys.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
            path: p.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigFileError::Parse { path: p, source })
    }

    /// The engine's configuration.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_orders: self.engine.max_orders,
            max_accounts: self.engine.max_accounts,
            hash_seed: self.engine.hash_seed.unwrap_or_else(process_seed),
            dedupe_window: self.engine.dedupe_window,
            dedupe_accounts: self.engine.dedupe_accounts,
            max_orders_per_account: self.engine.max_orders_per_account,
            instruments: self
                .instruments
                .iter()
                .map(|i| InstrumentSpec {
                    id: i.id,
                    tick_size: i.tick_size,
                    lot_size: i.lot_size,
                    min_price: i.min_price,
                    max_price: i.max_price,
                    max_qty: i.max_qty,
                })
                .collect(),
        }
    }

    /// Checks everything that can be checked before start-up.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let engine = self.engine_config();
        engine.validate()?;
        // A node whose own snapshots could not be restored (their memory budget) is refused at
        // start. The usual cause: a `dedupe_window` written for the old global window, now per
        // account (× dedupe_accounts).
        let needed = engine.estimated_memory_bytes();
        let limit = caldera_engine::DEFAULT_RESTORE_MEMORY_LIMIT;
        if needed > limit {
            return Err(ConfigFileError::Invalid(format!(
                "the engine would preallocate about {} MiB, more than {} MiB: lower max_orders, max_accounts or the dedupe windows (dedupe_window is per account, kept for dedupe_accounts accounts: {} × {} entries)",
                needed >> 20,
                limit >> 20,
                engine.dedupe_window,
                engine.dedupe_accounts
            )));
        }
        self.gateway.validate().map_err(ConfigFileError::Invalid)?;
        self.journal.parsed()?;
        #[cfg(feature = "kafka")]
        for key in self.journal.kafka.keys() {
            caldera_journal::kafka::Brokers::check_property(key)
                .map_err(ConfigFileError::Invalid)?;
        }
        if self.threads.ring_capacity < 16 {
            return Err(ConfigFileError::Invalid(
                "threads.ring_capacity must be >= 16".into(),
            ));
        }
        // The gateway reads a frame only when the command ring has room for a whole one.
        if self.threads.ring_capacity < self.gateway.max_batch {
            return Err(ConfigFileError::Invalid(format!(
                "threads.ring_capacity ({}) must be >= max_batch ({}): the gateway reads a frame only when the ring has room for all of its requests",
                self.threads.ring_capacity, self.gateway.max_batch
            )));
        }
        let f = &self.failover;
        if f.heartbeat_ms == 0 || f.timeout_ms <= f.heartbeat_ms {
            return Err(ConfigFileError::Invalid(
                "failover: heartbeat_ms must be > 0 and timeout_ms > heartbeat_ms".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dedupe_window_sized_for_the_old_global_window_is_refused_with_the_reason() {
        let mut c = Config::default();
        c.validate().unwrap();
        c.engine.dedupe_window = 262_144;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("dedupe_window is per account"), "{e}");
    }

    #[test]
    fn example_config_parses_and_unknown_keys_are_errors() {
        let text = include_str!("../../infra/caldera.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.instruments.len(), 2);
        assert!(toml::from_str::<Config>("[gateway]\nnope = 1\n").is_err());
        assert_eq!(Config::default().engine_config().instruments.len(), 8);
        assert_eq!(WaitStrategy::Auto.resolve(2), WaitStrategy::Park);
        assert_eq!(WaitStrategy::Auto.resolve(8), WaitStrategy::Spin);
        assert_eq!(Config::default().threads.engine, EngineThread::Own);
        let c: Config = toml::from_str("[threads]\nengine = \"gateway\"\n").unwrap();
        assert_eq!(c.threads.engine, EngineThread::Gateway);
    }

    #[test]
    fn rings_smaller_than_a_frame_are_refused_with_the_reason() {
        let mut c = Config::default();
        c.threads.ring_capacity = 1024;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("must be >= max_batch (4096)"), "{e}");
        c.gateway.max_batch = 1024;
        c.validate().unwrap();
    }
}
