//! Who may use a Caldera node.
//!
//! Order entry runs over ZeroMQ CURVE: every connection is encrypted and the client proves it
//! holds a secret key. The node admits only the public keys listed in its entitlements file,
//! each with a [`Role`] and the accounts it may act for (docs/protocol.md, "Security").
//!
//! - [`key`]: CURVE key pairs in ZeroMQ's certificate file format (the one pyzmq and czmq read).
//! - [`entitlements`]: the entitlements file: key → role, accounts.
//! - [`guard`]: the live entitlements of a node, re-read on SIGHUP, and its security counters.
//! - [`zap`]: the ZAP handler (ZeroMQ's authentication protocol) and the handshake monitor.
//! - [`socket`]: setting a server or client socket up for CURVE.
//! - [`init`]: a new deployment's keys and entitlements in one directory (`caldera init`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod entitlements;
pub mod guard;
pub mod init;
pub mod key;
pub mod socket;
pub mod zap;

pub use entitlements::{AccountSet, Client, Entitlements, EntitlementsError, Role};
pub use guard::{Guard, SecurityCounters};
pub use key::{Certificate, KeyError, PublicKey, SecretKey};
pub use socket::{ClientCredentials, ServerKeys};
pub use zap::Authenticator;
