//! The node's security set-up: the server key and the entitlements loaded at start (a node
//! that cannot load them does not start), the ZAP handler's thread while serving, and the
//! credentials a standby uses to watch its peers.

use crate::config::{AuthMode, SecuritySection};
use crate::error::NodeError;
use caldera_auth::{Authenticator, ClientCredentials, Guard, ServerKeys};
use caldera_gateway::Security;
use caldera_pipeline::{Idle, WaitStrategy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a node needs to authenticate its clients (nothing with `auth = "none"`).
#[derive(Clone, Debug)]
pub struct NodeSecurity {
    /// The gateway's settings; None = no authentication.
    pub gateway: Option<Security>,
    /// Set (by SIGHUP) to re-read the entitlements.
    pub reload: Arc<AtomicBool>,
}

impl NodeSecurity {
    /// No authentication (`auth = "none"`).
    #[must_use]
    pub fn insecure() -> Self {
        Self {
            gateway: None,
            reload: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Loads the server key and the entitlements the configuration names.
    ///
    /// # Errors
    /// [`NodeError::Security`] naming the file and the way forward (`caldera init`, or
    /// `--insecure`).
    pub fn load(cfg: &SecuritySection) -> Result<Self, NodeError> {
        if cfg.auth == AuthMode::None {
            return Ok(Self::insecure());
        }
        if zmq::has("curve") != Some(true) {
            return Err(NodeError::Security(
                "this libzmq has no CURVE support (build with the workspace's zmq-sys patch)"
                    .into(),
            ));
        }
        let key_path = cfg.server_key_path();
        let ent_path = cfg.entitlements_path();
        if !key_path.exists() {
            return Err(NodeError::Security(format!(
                "no server key at {}: run `caldera init {}` to create the keys and entitlements \
                 of a new deployment, point [security] keys_dir (or --keys) at yours, or run \
                 with --insecure (plain TCP: anyone can trade as any account)",
                key_path.display(),
                cfg.keys_dir
            )));
        }
        let keys = ServerKeys::read(&key_path).map_err(|e| NodeError::Security(e.to_string()))?;
        let guard = Guard::load(&ent_path, keys.public)
            .map_err(|e| NodeError::Security(format!("entitlements: {e}")))?;
        Ok(Self {
            gateway: Some(Security {
                keys,
                guard: Arc::new(guard),
                market_data: cfg.market_data_curve,
            }),
            reload: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The authentication mode in force.
    #[must_use]
    pub fn mode(&self) -> AuthMode {
        if self.gateway.is_some() {
            AuthMode::Curve
        } else {
            AuthMode::None
        }
    }

    /// How this node connects to another node's server socket (the pair shares a server key).
    #[must_use]
    pub fn peer_credentials(&self) -> ClientCredentials {
        self.gateway
            .as_ref()
            .map_or(ClientCredentials::Insecure, |s| s.keys.as_client())
    }
}

/// The ZAP handler's thread while the node serves.
pub(crate) struct AuthThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Authenticator, Option<usize>)>>,
}

impl AuthThread {
    /// Binds the ZAP handler in `ctx` (before any server socket is bound).
    pub(crate) fn bind(
        ctx: &zmq::Context,
        sec: &NodeSecurity,
    ) -> Result<Option<(Authenticator, Arc<AtomicBool>)>, NodeError> {
        let Some(s) = &sec.gateway else {
            return Ok(None);
        };
        let stop = Arc::new(AtomicBool::new(false));
        let auth = Authenticator::bind(
            ctx,
            Arc::clone(&s.guard),
            Arc::clone(&sec.reload),
            Arc::clone(&stop),
        )
        .map_err(|e| NodeError::Security(format!("binding the ZAP handler: {e}")))?;
        Ok(Some((auth, stop)))
    }

    /// Starts the handler's thread (`caldera-auth`).
    pub(crate) fn start(auth: Authenticator, stop: Arc<AtomicBool>) -> Result<Self, NodeError> {
        let handle = caldera_pipeline::spawn(
            "caldera-auth",
            auth,
            Idle::with_phases(WaitStrategy::Park, 0, 0),
            None,
        )?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for AuthThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
