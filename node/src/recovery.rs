//! Start-up as the primary: recover the engine from the journal and become its only writer.

use crate::config::{Config, JournalUri};
use crate::error::NodeError;
use crate::handover::Primary;
use crate::standby::file::FileFollower;
#[cfg(feature = "kafka")]
use crate::standby::kafka::KafkaFollower;
use caldera_engine::Engine;
use std::time::{Duration, Instant};

impl Primary {
    /// Opens the configured journal as its only writer and rebuilds the engine from it (what
    /// `caldera serve` does). Fails if another process holds a file journal.
    ///
    /// # Errors
    /// [`NodeError`] when the journal cannot be opened, replayed or written.
    pub fn open(cfg: &Config) -> Result<Primary, NodeError> {
        let engine_cfg = cfg.engine_config();
        match cfg.journal.parsed()? {
            JournalUri::None => {
                tracing::warn!("no journal: state is not durable");
                Ok(Primary {
                    engine: Engine::new(engine_cfg)
                        .map_err(crate::config::ConfigFileError::from)?,
                    journal: None,
                    journal_dir: None,
                    epoch: cfg.journal.epoch,
                    offsets: None,
                })
            }
            JournalUri::File(dir) => {
                let lock = caldera_journal::lock::WriterLock::try_acquire(&dir)
                    .map_err(NodeError::recover)?;
                let follower = FileFollower::start(&dir, &engine_cfg)?;
                follower.take_over(cfg, lock, Instant::now())
            }
            #[cfg(feature = "kafka")]
            JournalUri::Kafka { brokers, topic } => {
                let idle = Duration::from_millis(cfg.journal.kafka_catchup_idle_ms);
                let brokers = cfg.journal.brokers(&brokers);
                let follower = KafkaFollower::start(&brokers, &topic, &engine_cfg, idle)?;
                follower.take_over(cfg, Instant::now())
            }
            #[cfg(not(feature = "kafka"))]
            JournalUri::Kafka { .. } => {
                Err(crate::config::ConfigFileError::Invalid(crate::config::NO_KAFKA.into()).into())
            }
        }
    }
}
