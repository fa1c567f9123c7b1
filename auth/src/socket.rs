//! Setting sockets up for CURVE.

use crate::key::{Certificate, KeyError, PublicKey, SecretKey};
use std::path::Path;

/// The ZAP domain Caldera's server sockets announce.
pub const ZAP_DOMAIN: &str = "caldera";

/// A node's server key pair: clients trust its public key.
#[derive(Clone, Debug)]
pub struct ServerKeys {
    /// Public key (clients need it: `server.key`).
    pub public: PublicKey,
    secret: SecretKey,
}

impl ServerKeys {
    /// Reads the server's secret certificate (`server.key_secret`).
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or has no secret key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let (public, secret) = Certificate::read_secret(path)?;
        Ok(Self { public, secret })
    }

    /// A fresh random server key pair (benchmarks' own echo servers).
    ///
    /// # Errors
    /// [`KeyError::Generate`] when libzmq has no CURVE.
    pub fn generate() -> Result<Self, KeyError> {
        let c = Certificate::generate()?;
        Ok(Self {
            public: c.public,
            secret: c.secret.expect("generated with its secret"),
        })
    }

    /// Makes `socket` a CURVE server (ZAP authenticates its clients).
    ///
    /// # Errors
    /// The libzmq error when an option cannot be set.
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        socket.set_curve_server(true)?;
        socket.set_curve_secretkey(&self.secret.0)?;
        socket.set_zap_domain(ZAP_DOMAIN)
    }

    /// These keys as a client's: how one node connects to another's server socket.
    #[must_use]
    pub fn as_client(&self) -> ClientCredentials {
        ClientCredentials::Curve {
            public: self.public,
            secret: self.secret.clone(),
            server: self.public,
        }
    }
}

/// How a client connects.
#[derive(Clone, Debug)]
pub enum ClientCredentials {
    /// Plain TCP: only to a node started with `auth = "none"`.
    Insecure,
    /// CURVE with the client's key pair, trusting the server's public key.
    Curve {
        /// The client's public key (listed in the node's entitlements).
        public: PublicKey,
        /// The client's secret key.
        secret: SecretKey,
        /// The server's public key.
        server: PublicKey,
    },
}

impl ClientCredentials {
    /// Reads the client's secret certificate (`NAME.key_secret`) and the server's public
    /// certificate (`server.key`).
    ///
    /// # Errors
    /// [`KeyError`] when a file cannot be read or lacks the key needed.
    pub fn read(client_secret: &Path, server_public: &Path) -> Result<Self, KeyError> {
        let (public, secret) = Certificate::read_secret(client_secret)?;
        let server = Certificate::read(server_public)?.public;
        Ok(Self::Curve {
            public,
            secret,
            server,
        })
    }

    /// The credentials in a keys directory made by `caldera init`: `DIR/NAME.key_secret` and
    /// `DIR/server.key`.
    ///
    /// # Errors
    /// As [`ClientCredentials::read`].
    pub fn from_dir(dir: &Path, name: &str) -> Result<Self, KeyError> {
        Self::read(
            &dir.join(format!("{name}.key_secret")),
            &dir.join("server.key"),
        )
    }

    /// Sets `socket` up to connect with these credentials (call before `connect`).
    ///
    /// # Errors
    /// The libzmq error when an option cannot be set.
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        match self {
            ClientCredentials::Insecure => Ok(()),
            ClientCredentials::Curve {
                public,
                secret,
                server,
            } => {
                socket.set_curve_serverkey(&server.0)?;
                socket.set_curve_publickey(&public.0)?;
                socket.set_curve_secretkey(&secret.0)
            }
        }
    }
}
