//! What a node is doing: its role and, as a standby, how far it has followed the journal.
//! Shared with the metrics endpoint.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Starting up / recovering.
    Starting = 0,
    /// Following the journal.
    Standby = 1,
    /// Serving clients and writing the journal.
    Primary = 2,
    /// Fenced by a newer primary; stopping.
    Fenced = 3,
    /// A pipeline thread died or stalled, or the journal failed for good; exiting.
    Failed = 4,
}

impl Role {
    /// Lower-case name (`starting`, `standby`, `primary`, `fenced`, `failed`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Primary => "primary",
            Role::Fenced => "fenced",
            Role::Failed => "failed",
        }
    }
}

/// A node's role and standby progress.
#[derive(Debug, Default)]
pub struct NodeStatus {
    role: AtomicU8,
    /// Current epoch (the one followed, or the one written).
    pub epoch: AtomicU64,
    /// Last sequence applied (standby) or recovered (primary at start).
    pub applied_seq: AtomicU64,
    /// Standby: age of the newest applied batch when it was applied (write → apply), ms.
    pub lag_ms: AtomicU64,
    /// Standby: time since the last journal record, ms.
    pub silence_ms: AtomicU64,
    /// Standby: batches applied.
    pub batches_applied: AtomicU64,
    /// Batches skipped under the epoch rule (a fenced writer's late appends).
    pub stale_batches: AtomicU64,
    /// Journal records skipped as not history: an impossible epoch jump, or (Kafka) not a
    /// journal batch at all — forged or corrupted records (ADR 0014).
    pub skipped_records: AtomicU64,
    /// Last promotion: detection → serving, µs.
    pub promotion_us: AtomicU64,
}

impl NodeStatus {
    /// Current role.
    #[must_use]
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Primary,
            3 => Role::Fenced,
            4 => Role::Failed,
            _ => Role::Starting,
        }
    }

    /// Sets the role.
    pub fn set_role(&self, r: Role) {
        self.role.store(r as u8, Ordering::Relaxed);
    }
}
