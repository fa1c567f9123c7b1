//! Why a node could not start, serve or follow.

use caldera_journal::JournalError;

/// Errors that stop a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigFileError),
    /// A socket could not be created or bound.
    #[error(transparent)]
    Socket(#[from] caldera_gateway::SocketError),
    /// Thread or eventfd creation failed.
    #[error("start-up: {0}")]
    Io(#[from] std::io::Error),
    /// A pipeline thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The journal could not be opened, replayed or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal could not be read back (recovery, following).
    #[error("journal: {0}")]
    Recover(String),
    /// The server key or the entitlements cannot be used.
    #[error("security: {0}")]
    Security(String),
    /// A newer primary took over; this one stopped without releasing anything more.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl NodeError {
    /// A recovery or following error (the journal could not be read back as history).
    pub(crate) fn recover(e: impl std::fmt::Display) -> Self {
        NodeError::Recover(e.to_string())
    }
}
