//! The journal as the gateway's [`History`]: where a resend (`LogonWith{RESEND}`) reads an
//! account's past reports (docs/protocol.md, "Resend").

use crate::config::{Config, JournalUri};
use caldera_engine::Event;
use caldera_gateway::{History, HistoryError, HistoryReader};
use caldera_journal::history::{FileEvents, HistoryReadError, OffsetIndex};
use std::path::PathBuf;
use std::sync::Arc;

/// The history of the node's journal (None without one); `offsets`: where sequences sit in the
/// journal (resends start near their sequence instead of at the topic's, or their segment's,
/// beginning).
#[must_use]
pub fn of(cfg: &Config, offsets: Option<Arc<OffsetIndex>>) -> Option<Arc<dyn History>> {
    match cfg.journal.parsed().ok()? {
        JournalUri::None => None,
        JournalUri::File(dir) => Some(Arc::new(FileHistory { dir, offsets })),
        #[cfg(feature = "kafka")]
        JournalUri::Kafka { brokers, topic } => Some(Arc::new(KafkaHistory {
            brokers: cfg.journal.brokers(&brokers),
            topic,
            offsets,
        })),
        #[cfg(not(feature = "kafka"))]
        JournalUri::Kafka { .. } => None,
    }
}

fn error(e: HistoryReadError) -> HistoryError {
    match e {
        HistoryReadError::Dropped { oldest } => HistoryError::Dropped { oldest },
        other => HistoryError::Read(other.to_string()),
    }
}

/// The file journal's segment log, read while the node appends to it, from the last checkpoint
/// of `offsets` before the resend's sequence (from its segment's beginning without one).
struct FileHistory {
    dir: PathBuf,
    offsets: Option<Arc<OffsetIndex>>,
}

impl History for FileHistory {
    fn open(&self, after: u64) -> Result<Box<dyn HistoryReader>, HistoryError> {
        let events =
            FileEvents::open_indexed(&self.dir, after, self.offsets.as_deref()).map_err(error)?;
        tracing::debug!(after, from = ?events.position(), "resend reads the journal");
        Ok(Box::new(FileReader(events)))
    }
}

struct FileReader(FileEvents);

impl HistoryReader for FileReader {
    fn read(&mut self, out: &mut Vec<Event>) -> Result<bool, HistoryError> {
        self.0.read(out).map_err(error)
    }
}

/// The Kafka topic, read by a consumer of its own from the last checkpoint of `offsets` before
/// the resend's sequence (from the beginning without one).
#[cfg(feature = "kafka")]
struct KafkaHistory {
    brokers: caldera_journal::kafka::Brokers,
    topic: String,
    offsets: Option<Arc<OffsetIndex>>,
}

#[cfg(feature = "kafka")]
impl History for KafkaHistory {
    fn open(&self, after: u64) -> Result<Box<dyn HistoryReader>, HistoryError> {
        let events = caldera_journal::history::KafkaEvents::open(
            &self.brokers,
            &self.topic,
            after,
            self.offsets.as_deref(),
        )
        .map_err(error)?;
        tracing::debug!(
            after,
            from_offset = events.next_offset(),
            "resend reads the topic"
        );
        Ok(Box::new(KafkaReader(events)))
    }
}

#[cfg(feature = "kafka")]
struct KafkaReader(caldera_journal::history::KafkaEvents);

#[cfg(feature = "kafka")]
impl HistoryReader for KafkaReader {
    fn read(&mut self, out: &mut Vec<Event>) -> Result<bool, HistoryError> {
        self.0
            .read(out, std::time::Duration::from_millis(5))
            .map_err(error)
    }
}
