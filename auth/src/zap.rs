//! The ZAP handler: libzmq asks it, for every CURVE handshake on the node's server sockets,
//! whether the client's public key may connect (ZeroMQ RFC 27). Only listed keys are admitted;
//! an admitted connection carries the key's Z85 text as its `User-Id`, which the gateway reads
//! from every frame. The same agent reads the server sockets' monitor events to count failed
//! handshakes (a client without CURVE, with the wrong server key, or sending garbage), and
//! re-reads the entitlements when SIGHUP asks for it.
//!
//! libzmq admits every CURVE client when no ZAP handler is bound, so the handler is bound
//! before any server socket, and the gateway independently refuses frames whose `User-Id` is
//! not a listed key.

use crate::guard::Guard;
use crate::key::PublicKey;
use caldera_pipeline::Agent;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// libzmq's fixed ZAP endpoint (per context).
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

const HANDSHAKE_FAILURES: u16 = 0x0800 | 0x2000; // HANDSHAKE_FAILED_NO_DETAIL | _PROTOCOL

/// The ZAP handler agent (thread `caldera-auth`).
pub struct Authenticator {
    zap: zmq::Socket,
    monitors: Vec<zmq::Socket>,
    guard: Arc<Guard>,
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Authenticator {
    /// Binds the ZAP endpoint in `ctx`. Call before binding any server socket of `ctx`.
    ///
    /// # Errors
    /// The libzmq error when the endpoint cannot be bound (another handler is bound).
    pub fn bind(
        ctx: &zmq::Context,
        guard: Arc<Guard>,
        reload: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, zmq::Error> {
        let zap = ctx.socket(zmq::REP)?;
        zap.set_linger(0)?;
        zap.bind(ZAP_ENDPOINT)?;
        Ok(Self {
            zap,
            monitors: Vec::new(),
            guard,
            reload,
            stop,
        })
    }

    /// Counts the failed handshakes of `socket` (a server socket of the same context).
    ///
    /// # Errors
    /// The libzmq error when the monitor cannot be set up.
    pub fn watch(
        &mut self,
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        name: &str,
    ) -> Result<(), zmq::Error> {
        let endpoint = format!("inproc://caldera-auth-monitor-{name}");
        socket.monitor(&endpoint, i32::from(HANDSHAKE_FAILURES))?;
        let pair = ctx.socket(zmq::PAIR)?;
        pair.set_linger(0)?;
        pair.connect(&endpoint)?;
        self.monitors.push(pair);
        Ok(())
    }

    /// Answers waiting ZAP requests. Returns how many.
    fn answer_requests(&mut self) -> usize {
        let mut n = 0;
        while let Ok(frames) = self.zap.recv_multipart(zmq::DONTWAIT) {
            n += 1;
            let reply = self.decide(&frames);
            if let Err(e) = self.zap.send_multipart(reply, 0) {
                tracing::error!(error = %e, "ZAP reply failed");
            }
        }
        n
    }

    /// The reply to one ZAP request: [version, request id, status, text, user id, metadata].
    fn decide(&self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let reply = |id: &[u8], code: &str, text: &str, user: &str| {
            vec![
                b"1.0".to_vec(),
                id.to_vec(),
                code.as_bytes().to_vec(),
                text.as_bytes().to_vec(),
                user.as_bytes().to_vec(),
                Vec::new(),
            ]
        };
        let id = frames.get(1).map_or(&[][..], Vec::as_slice);
        if frames.len() < 6 || frames[0] != b"1.0" {
            return reply(id, "500", "malformed ZAP request", "");
        }
        let address = String::from_utf8_lossy(&frames[3]);
        if frames[5] != b"CURVE" || frames.len() < 7 || frames[6].len() != 32 {
            self.guard.counters.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%address, mechanism = %String::from_utf8_lossy(&frames[5]), "connection refused: CURVE required");
            return reply(id, "400", "CURVE required", "");
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&frames[6]);
        let key = PublicKey(key);
        if let Some(client) = self.guard.client(&key) {
            self.guard.counters.admitted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%address, client = %client.name, role = client.role.name(), "connection admitted");
            reply(id, "200", "OK", &key.z85())
        } else {
            self.guard.counters.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%address, %key, "connection refused: key not in the entitlements");
            reply(id, "400", "unknown key", "")
        }
    }

    /// Counts failed handshakes reported by the monitors. Returns the events read.
    fn read_monitors(&mut self) -> usize {
        let mut n = 0;
        for m in &self.monitors {
            while let Ok(frames) = m.recv_multipart(zmq::DONTWAIT) {
                n += 1;
                let Some(ev) = frames.first().filter(|f| f.len() >= 6) else {
                    continue;
                };
                let event = u16::from_le_bytes([ev[0], ev[1]]);
                if event & HANDSHAKE_FAILURES != 0 {
                    self.guard
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let peer = frames
                        .get(1)
                        .map(|f| String::from_utf8_lossy(f).into_owned());
                    tracing::warn!(endpoint = ?peer, code = u32::from_le_bytes([ev[2], ev[3], ev[4], ev[5]]), "handshake failed (no CURVE, wrong server key, or not ZMTP)");
                }
            }
        }
        n
    }

    /// Re-reads the entitlements when SIGHUP asked for it.
    fn maybe_reload(&mut self) -> usize {
        if !self.reload.swap(false, Ordering::AcqRel) {
            return 0;
        }
        match self.guard.reload() {
            Ok(n) => {
                tracing::info!(file = %self.guard.path().display(), keys = n, "entitlements reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "entitlements NOT reloaded; the previous ones stay in force")
            }
        }
        1
    }
}

impl Agent for Authenticator {
    fn do_work(&mut self) -> usize {
        self.answer_requests() + self.read_monitors() + self.maybe_reload()
    }

    /// Waits in `zmq_poll` for a request or a monitor event, at most 50 ms (the reload flag
    /// and the stop flag are checked after each wait).
    fn sleep(&mut self) {
        let mut items: Vec<zmq::PollItem<'_>> = Vec::with_capacity(1 + self.monitors.len());
        items.push(self.zap.as_poll_item(zmq::POLLIN));
        for m in &self.monitors {
            items.push(m.as_poll_item(zmq::POLLIN));
        }
        let _ = zmq::poll(&mut items, 50);
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}
