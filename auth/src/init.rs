//! A new deployment's keys: `caldera init DIR` writes the server's key pair, one key pair per
//! starting client (an admin, a trader, a drop-copy reader) and an entitlements file listing
//! them. Existing files are never overwritten.

use crate::key::{Certificate, KeyError};
use std::path::{Path, PathBuf};

/// What [`init`] created.
#[derive(Debug)]
pub struct Created {
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// `init` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A key could not be generated or written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The directory already holds a deployment's keys.
    #[error("{0} already exists: refusing to overwrite keys (pick another directory)")]
    Exists(PathBuf),
    /// Writing the entitlements failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `server`, `admin`, `trader` and `reader` key pairs and `entitlements.toml` into
/// `dir`: the trader may trade and the reader may read `accounts` (e.g. `"1-1000"`).
///
/// # Errors
/// [`InitError`] when `dir` already has keys or a file cannot be written.
pub fn init(dir: &Path, accounts: &str) -> Result<Created, InitError> {
    let entitlements = dir.join("entitlements.toml");
    for name in ["server.key_secret", "entitlements.toml"] {
        let p = dir.join(name);
        if p.exists() {
            return Err(InitError::Exists(p));
        }
    }
    let mut files = Vec::new();
    let mut keys = Vec::new();
    for name in ["server", "admin", "trader", "reader"] {
        let cert = Certificate::generate()?;
        let (public, secret) = cert.write(dir, name)?;
        files.push(public);
        files.push(secret);
        keys.push((name, cert.public));
    }
    let mut text = String::from(
        "# Who may use this node: one [[client]] per CURVE public key. Re-read on SIGHUP;\n\
         # a key removed here is logged out and refused. Roles: trade (order entry for its\n\
         # accounts), read (reports of its accounts), admin (halt/resume, cancel all, list\n\
         # sessions). accounts: ids and \"A-B\" ranges, \"*\" = every account.\n",
    );
    for (name, key) in &keys[1..] {
        let (role, accts) = match *name {
            "admin" => ("admin", String::new()),
            "trader" => ("trade", format!("accounts = [\"{accounts}\"]\n")),
            _ => ("read", format!("accounts = [\"{accounts}\"]\n")),
        };
        text.push_str(&format!(
            "\n[[client]]\nname = \"{name}\"\nkey = \"{key}\"\nrole = \"{role}\"\n{accts}"
        ));
    }
    std::fs::write(&entitlements, text).map_err(|source| InitError::Io {
        path: entitlements.clone(),
        source,
    })?;
    files.push(entitlements);
    Ok(Created { files })
}
