//! A node's live entitlements: read at start, re-read on SIGHUP (a file that does not parse is
//! refused and the previous entitlements stay), versioned so the gateway notices a change and
//! logs out sessions that lost their entitlement.

use crate::entitlements::{AccountSet, Client, Entitlements, EntitlementsError, Role};
use crate::key::PublicKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// What the security layer counted (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct SecurityCounters {
    /// CURVE handshakes the ZAP handler refused: the client key is not listed.
    pub denied: AtomicU64,
    /// Connections whose handshake failed before authentication: no CURVE, a wrong server
    /// key, or bytes that are not ZMTP.
    pub handshake_failures: AtomicU64,
    /// Connections admitted (ZAP answered 200).
    pub admitted: AtomicU64,
    /// Entitlement reloads that took effect.
    pub reloads: AtomicU64,
    /// Entitlement reloads refused (the file did not parse; the old entitlements stay).
    pub reload_failures: AtomicU64,
}

/// The entitlements a node enforces, shared by the ZAP handler and the gateway.
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    own: PublicKey,
    current: RwLock<Arc<Entitlements>>,
    version: AtomicU64,
    /// Counters.
    pub counters: SecurityCounters,
}

fn with_own(mut e: Entitlements, own: PublicKey) -> Entitlements {
    e.insert(Client {
        name: "peer node".into(),
        key: own,
        role: Role::Peer,
        accounts: AccountSet::Ranges(Vec::new()),
    });
    e
}

impl Guard {
    /// Loads the entitlements file at `path`. `own` is the node's server public key: other
    /// nodes of the pair connect with it (role [`Role::Peer`]).
    ///
    /// # Errors
    /// [`EntitlementsError`] when the file cannot be read or is not valid.
    pub fn load(path: &Path, own: PublicKey) -> Result<Self, EntitlementsError> {
        let e = Entitlements::load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            own,
            current: RwLock::new(Arc::new(with_own(e, own))),
            version: AtomicU64::new(1),
            counters: SecurityCounters::default(),
        })
    }

    /// The file the entitlements come from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entitlements in force.
    #[must_use]
    pub fn current(&self) -> Arc<Entitlements> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Increases with every reload that took effect.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The listed client of `key`, if any.
    #[must_use]
    pub fn client(&self, key: &PublicKey) -> Option<Arc<Client>> {
        self.current().get(key).cloned()
    }

    /// Re-reads the file. On success the new entitlements are in force (returns how many keys
    /// are listed); on failure the old ones stay and the error says why.
    ///
    /// # Errors
    /// [`EntitlementsError`] when the file cannot be read or is not valid.
    pub fn reload(&self) -> Result<usize, EntitlementsError> {
        match Entitlements::load(&self.path) {
            Ok(e) => {
                let n = e.len();
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Arc::new(with_own(e, self.own));
                self.version.fetch_add(1, Ordering::AcqRel);
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}
