//! CURVE keys and ZeroMQ's certificate files.
//!
//! A key pair is stored as two files, the layout czmq's `zcert` and pyzmq's
//! `zmq.auth.create_certificates` use (so `zmq.auth.load_certificate` reads them):
//! `NAME.key` holds the public key and can be handed out; `NAME.key_secret` holds both keys and
//! is created readable by its owner only.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A key file could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid Z85-encoded 32-byte key.
    #[error("{what}: not a Z85-encoded CURVE key (40 characters)")]
    BadKey {
        /// Where the key came from.
        what: String,
    },
    /// The certificate file names no `public-key`.
    #[error("{0}: no public-key line (expected a ZeroMQ certificate file)")]
    NoPublicKey(PathBuf),
    /// A secret key was needed, the file holds only the public one.
    #[error("{0}: no secret-key line (use the NAME.key_secret file, not NAME.key)")]
    NoSecretKey(PathBuf),
    /// libzmq could not generate a key pair (it was built without CURVE).
    #[error("libzmq cannot generate CURVE keys: {0}")]
    Generate(zmq::Error),
}

/// A CURVE public key (32 bytes). Shown as its Z85 text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A CURVE secret key (32 bytes). Never printed.
/// (Not `Copy`: copies of a secret are made on purpose, with `clone`.)
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; 32]);

fn decode(text: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let bad = || KeyError::BadKey { what: what.into() };
    if text.len() != 40 {
        return Err(bad());
    }
    let bytes = zmq::z85_decode(text).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

fn encode(bytes: &[u8; 32]) -> String {
    zmq::z85_encode(bytes).expect("32 bytes is a multiple of 4")
}

impl PublicKey {
    /// Parses the 40-character Z85 text of a key.
    ///
    /// # Errors
    /// [`KeyError::BadKey`] naming `what`.
    pub fn from_z85(text: &str, what: &str) -> Result<Self, KeyError> {
        decode(text.trim(), what).map(Self)
    }

    /// The Z85 text (40 characters; what ZeroMQ reports as a connection's `User-Id`).
    #[must_use]
    pub fn z85(&self) -> String {
        encode(&self.0)
    }

    /// A short stable id for logs and `ListSessions` (the key's first 8 bytes, little-endian).
    #[must_use]
    pub fn id(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.z85())
    }
}

impl SecretKey {
    /// The Z85 text.
    #[must_use]
    pub fn z85(&self) -> String {
        encode(&self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A public key, with its secret key when this side owns it.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// The public key.
    pub public: PublicKey,
    /// The secret key (None for someone else's certificate).
    pub secret: Option<SecretKey>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Certificate {
    /// A new random key pair.
    ///
    /// # Errors
    /// [`KeyError::Generate`] when libzmq was built without CURVE.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = zmq::CurveKeyPair::new().map_err(KeyError::Generate)?;
        Ok(Self {
            public: PublicKey(pair.public_key),
            secret: Some(SecretKey(pair.secret_key)),
        })
    }

    /// Reads a certificate file (`NAME.key` or `NAME.key_secret`).
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or holds no valid public key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut public = None;
        let mut secret = None;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            let what = format!("{}: {}", path.display(), name.trim());
            match name.trim() {
                "public-key" => public = Some(PublicKey::from_z85(value, &what)?),
                "secret-key" => secret = Some(SecretKey(decode(value, &what)?)),
                _ => {}
            }
        }
        let public = public.ok_or_else(|| KeyError::NoPublicKey(path.to_path_buf()))?;
        Ok(Self { public, secret })
    }

    /// Reads a certificate that must hold a secret key.
    ///
    /// # Errors
    /// As [`Certificate::read`], and [`KeyError::NoSecretKey`] for a public-only file.
    pub fn read_secret(path: &Path) -> Result<(PublicKey, SecretKey), KeyError> {
        let c = Self::read(path)?;
        match c.secret {
            Some(s) => Ok((c.public, s)),
            None => Err(KeyError::NoSecretKey(path.to_path_buf())),
        }
    }

    /// Writes `DIR/NAME.key` (public key only) and, when this certificate has its secret key,
    /// `DIR/NAME.key_secret` (both keys, mode 0600). Returns the two paths.
    ///
    /// # Errors
    /// [`KeyError::Io`] when a file cannot be written.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let public = dir.join(format!("{name}.key"));
        let secret = dir.join(format!("{name}.key_secret"));
        let head = |kind: &str| {
            format!(
                "#   ****  Generated by caldera keygen  ****\n#   ZeroMQ CURVE {kind} Certificate\n"
            )
        };
        let body = format!(
            "{}#   Exchange securely, or use a secure mechanism to verify the contents\n#   of this file after exchange. Store public certificates in your home\n#   directory, in the .curve subdirectory.\n\nmetadata\ncurve\n    public-key = \"{}\"\n",
            head("Public"),
            self.public.z85()
        );
        write_file(&public, body.as_bytes(), 0o644)?;
        if let Some(s) = &self.secret {
            let body = format!(
                "{}#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\nmetadata\ncurve\n    public-key = \"{}\"\n    secret-key = \"{}\"\n",
                head("**Secret**"),
                self.public.z85(),
                s.z85()
            );
            write_file(&secret, body.as_bytes(), 0o600)?;
        }
        Ok((public, secret))
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}
