//! The entitlements file: which client keys may use the node, in which role, for which
//! accounts.
//!
//! ```toml
//! [[client]]
//! name = "desk-1"                                        # for logs and ListSessions
//! key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"        # its CURVE public key (Z85)
//! role = "trade"                                         # trade | read | admin
//! accounts = ["1-100", 250]                              # ids and ranges; "*" = every account
//! ```
//!
//! Account 0 is the venue's own: no client trades or reads it; `admin` clients receive its
//! reports (instrument status, rejected admin requests).

use crate::key::{KeyError, PublicKey};
use foldhash::HashMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a client key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Order entry for its accounts (and their reports).
    Trade,
    /// Drop copy: the reports of its accounts, no order entry.
    Read,
    /// Venue operations: halt/resume an instrument, cancel all of an account's orders, list
    /// sessions.
    Admin,
    /// Another node of the pair (the node's own server key): may connect, may do nothing.
    #[serde(skip)]
    Peer,
}

impl Role {
    /// Its name in the file and in metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Trade => "trade",
            Role::Read => "read",
            Role::Admin => "admin",
            Role::Peer => "peer",
        }
    }
}

/// The accounts a client may act for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountSet {
    /// Every account (except the venue's account 0).
    All,
    /// These inclusive ranges (sorted, non-empty, never 0).
    Ranges(Vec<(u32, u32)>),
}

impl AccountSet {
    /// Whether `account` is in the set.
    #[must_use]
    pub fn contains(&self, account: u32) -> bool {
        if account == 0 {
            return false;
        }
        match self {
            AccountSet::All => true,
            AccountSet::Ranges(r) => {
                let i = r.partition_point(|&(lo, _)| lo <= account);
                i > 0 && account <= r[i - 1].1
            }
        }
    }
}

/// One listed client key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its name in the file.
    pub name: String,
    /// Its public key.
    pub key: PublicKey,
    /// What it may do.
    pub role: Role,
    /// Which accounts (ignored for `admin`).
    pub accounts: AccountSet,
}

impl Client {
    /// Whether this client may log on for `account` in its role.
    #[must_use]
    pub fn may_use(&self, account: u32) -> bool {
        matches!(self.role, Role::Trade | Role::Read) && self.accounts.contains(account)
    }
}

/// The entitlements file could not be used. The node keeps the entitlements it had.
#[derive(Debug, thiserror::Error)]
pub enum EntitlementsError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown field or role.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A client's key is not a CURVE public key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A client's accounts are not valid.
    #[error("{path}: client {client:?}: {message}")]
    Accounts {
        /// The file.
        path: PathBuf,
        /// The client.
        client: String,
        /// What is wrong.
        message: String,
    },
    /// The same key or name is listed twice.
    #[error("{path}: {what} listed twice")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// Which key or name.
        what: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    client: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    key: String,
    role: Role,
    #[serde(default)]
    accounts: Vec<AccountSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AccountSpec {
    Id(i64),
    Text(String),
}

fn parse_accounts(specs: &[AccountSpec]) -> Result<AccountSet, String> {
    let mut ranges = Vec::new();
    let id = |v: i64| -> Result<u32, String> {
        u32::try_from(v)
            .ok()
            .filter(|&a| a != 0)
            .ok_or_else(|| format!("account {v} is not in 1..=4294967295 (0 is the venue's)"))
    };
    for s in specs {
        match s {
            AccountSpec::Id(v) => {
                let a = id(*v)?;
                ranges.push((a, a));
            }
            AccountSpec::Text(t) if t.trim() == "*" => return Ok(AccountSet::All),
            AccountSpec::Text(t) => {
                let num = |x: &str| -> Result<u32, String> {
                    id(x.trim().parse::<i64>().map_err(|_| {
                        format!("{t:?} is not an account, a range \"A-B\" or \"*\"")
                    })?)
                };
                let (lo, hi) = match t.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => {
                        let a = num(t)?;
                        (a, a)
                    }
                };
                if lo > hi {
                    return Err(format!("range {t:?} is empty"));
                }
                ranges.push((lo, hi));
            }
        }
    }
    ranges.sort_unstable();
    // Merge overlaps so `contains` can binary-search.
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    Ok(AccountSet::Ranges(merged))
}

/// The listed clients, by public key.
#[derive(Clone, Debug, Default)]
pub struct Entitlements {
    clients: HashMap<PublicKey, Arc<Client>>,
}

impl Entitlements {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`EntitlementsError`] naming the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, EntitlementsError> {
        let text = std::fs::read_to_string(path).map_err(|source| EntitlementsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of an entitlements file (`path` names it in errors).
    ///
    /// # Errors
    /// [`EntitlementsError`] naming what is wrong.
    pub fn parse(text: &str, path: &Path) -> Result<Self, EntitlementsError> {
        let file: File = toml::from_str(text).map_err(|e| EntitlementsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut clients = HashMap::default();
        let mut names = std::collections::HashSet::new();
        for e in file.client {
            let key =
                PublicKey::from_z85(&e.key, &format!("{}: client {:?}", path.display(), e.name))?;
            let accounts = if e.role == Role::Admin {
                AccountSet::Ranges(Vec::new())
            } else {
                parse_accounts(&e.accounts).map_err(|message| EntitlementsError::Accounts {
                    path: path.to_path_buf(),
                    client: e.name.clone(),
                    message,
                })?
            };
            if !names.insert(e.name.clone()) {
                return Err(EntitlementsError::Duplicate {
                    path: path.to_path_buf(),
                    what: format!("client name {:?}", e.name),
                });
            }
            let client = Client {
                name: e.name,
                key,
                role: e.role,
                accounts,
            };
            if clients.insert(key, Arc::new(client)).is_some() {
                return Err(EntitlementsError::Duplicate {
                    path: path.to_path_buf(),
                    what: format!("key {key}"),
                });
            }
        }
        Ok(Self { clients })
    }

    /// Lists `client` (used for the node's own key, role [`Role::Peer`]).
    pub fn insert(&mut self, client: Client) {
        self.clients.insert(client.key, Arc::new(client));
    }

    /// The client with this public key.
    #[must_use]
    pub fn get(&self, key: &PublicKey) -> Option<&Arc<Client>> {
        self.clients.get(key)
    }

    /// Number of listed keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no key is listed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    const K2: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

    fn parse(text: &str) -> Result<Entitlements, EntitlementsError> {
        Entitlements::parse(text, Path::new("entitlements.toml"))
    }

    #[test]
    fn accounts_ranges_and_star() {
        let e = parse(&format!(
            "[[client]]\nname = \"a\"\nkey = \"{K1}\"\nrole = \"trade\"\naccounts = [\"10-20\", 5, \"19-30\"]\n\
             [[client]]\nname = \"b\"\nkey = \"{K2}\"\nrole = \"read\"\naccounts = [\"*\"]\n"
        ))
        .unwrap();
        let a = e.get(&PublicKey::from_z85(K1, "k").unwrap()).unwrap();
        assert_eq!(a.role, Role::Trade);
        assert_eq!(a.accounts, AccountSet::Ranges(vec![(5, 5), (10, 30)]));
        for (acct, ok) in [
            (5, true),
            (6, false),
            (10, true),
            (25, true),
            (30, true),
            (31, false),
            (0, false),
        ] {
            assert_eq!(a.may_use(acct), ok, "account {acct}");
        }
        let b = e.get(&PublicKey::from_z85(K2, "k").unwrap()).unwrap();
        assert!(b.may_use(u32::MAX) && !b.may_use(0));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            ("[[client]]\nname = \"a\"\nkey = \"short\"\nrole = \"trade\"\n".to_string(), "not a Z85"),
            (format!("[[client]]\nname = \"a\"\nkey = \"{K1}\"\nrole = \"god\"\n"), "unknown variant"),
            (format!("[[client]]\nname = \"a\"\nkey = \"{K1}\"\nrole = \"trade\"\naccounts = [0]\n"), "venue"),
            (format!("[[client]]\nname = \"a\"\nkey = \"{K1}\"\nrole = \"trade\"\naccounts = [\"9-3\"]\n"), "empty"),
            (format!("[[client]]\nname = \"a\"\nkey = \"{K1}\"\nrole = \"trade\"\n[[client]]\nname = \"b\"\nkey = \"{K1}\"\nrole = \"read\"\n"), "twice"),
            (format!("[[client]]\nname = \"a\"\nkey = \"{K1}\"\nrole = \"trade\"\nextra = 1\n"), "unknown field"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }
}
