//! What recovery or a standby's promotion hands to the serving primary.

use caldera_engine::Engine;
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::JournalWriter;

/// An engine and the journal it may write: what a primary serves with.
pub struct Primary {
    /// The engine, holding every batch of the journal.
    pub engine: Engine,
    /// The journal writer and (file journal) the snapshot store; `None` without a journal.
    pub journal: Option<(Box<dyn JournalWriter>, Option<SnapshotStore>)>,
    /// This primary's epoch (its first record is already in the journal).
    pub epoch: u64,
    /// A copy of `engine` for the journal stage's snapshots, if one is at hand (a standby
    /// keeps one in step so promotion copies nothing); otherwise `engine` is cloned.
    pub shadow: Option<Engine>,
}
