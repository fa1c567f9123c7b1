//! Watching the other nodes' order-entry endpoints (`failover.peers`): only the primary binds
//! its endpoint, so a live ZeroMQ connection from here means "a primary is up", and its drop
//! (the kernel resets the TCP connections of a dead process) is a crash signal that needs no
//! timeout.

use crate::error::NodeError;

pub(crate) struct PeerWatch {
    _probe: zmq::Socket,
    monitor: zmq::Socket,
    up: usize,
}

impl PeerWatch {
    /// `None` when no peers are configured.
    /// `credentials`: the pair's server key as a client key (the other node admits it as a
    /// peer, which may connect and do nothing else).
    pub(crate) fn new(
        peers: &[String],
        credentials: &caldera_auth::ClientCredentials,
    ) -> Result<Option<Self>, NodeError> {
        if peers.is_empty() {
            return Ok(None);
        }
        let zerr = |e: zmq::Error| NodeError::Recover(format!("peer watch: {e}"));
        let ctx = zmq::Context::new();
        let probe = ctx.socket(zmq::DEALER).map_err(zerr)?;
        probe.set_linger(0).map_err(zerr)?;
        probe.set_reconnect_ivl(1).map_err(zerr)?;
        probe.set_reconnect_ivl_max(10).map_err(zerr)?;
        credentials.apply(&probe).map_err(zerr)?;
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        probe
            .monitor("inproc://caldera-peer-watch", i32::from(events))
            .map_err(zerr)?;
        let monitor = ctx.socket(zmq::PAIR).map_err(zerr)?;
        monitor
            .connect("inproc://caldera-peer-watch")
            .map_err(zerr)?;
        for p in peers {
            probe.connect(p).map_err(zerr)?;
        }
        Ok(Some(Self {
            _probe: probe,
            monitor,
            up: 0,
        }))
    }

    /// Whether a connection to a primary dropped since the last call.
    pub(crate) fn lost(&mut self) -> bool {
        let mut lost = false;
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(ev) = frames.first().filter(|f| f.len() >= 2) else {
                continue;
            };
            let ev = u16::from_le_bytes([ev[0], ev[1]]);
            if ev == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                self.up += 1;
            } else if ev == zmq::SocketEvent::DISCONNECTED.to_raw() && self.up > 0 {
                self.up -= 1;
                lost = true;
            }
        }
        lost
    }
}
