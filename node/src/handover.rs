//! What recovery or a standby's promotion hands to the serving primary.

use caldera_engine::Engine;
use caldera_journal::JournalWriter;
use std::path::PathBuf;

/// An engine and the journal it may write: what a primary serves with.
pub struct Primary {
    /// The engine, holding every batch of the journal.
    pub engine: Engine,
    /// The journal writer; `None` without a journal.
    pub journal: Option<Box<dyn JournalWriter>>,
    /// The file journal's directory (where snapshots go); `None` for Kafka or no journal.
    pub journal_dir: Option<PathBuf>,
    /// This primary's epoch (its first record is already in the journal).
    pub epoch: u64,
    /// Where sequences sit in the Kafka topic (recovery and the standby filled it; the writer
    /// adds to it): resends start near their sequence. `None` for the other journals.
    pub offsets: Option<std::sync::Arc<caldera_journal::history::OffsetIndex>>,
}
