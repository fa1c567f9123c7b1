//! Rust client for Caldera: order entry over a ZeroMQ DEALER socket (pipelined: many requests
//! in flight, batched per frame) and market data over SUB with an L2 book rebuilt from deltas.
//!
//! ```no_run
//! use caldera_client::{OrderClient, requests};
//! use caldera_client::wire::{Side, TimeInForce};
//! let ctx = zmq::Context::new();
//! let mut c = OrderClient::connect(&ctx, "tcp://127.0.0.1:7001").unwrap();
//! c.push(requests::logon(42));
//! c.push(requests::limit(1, 1, Side::Buy, TimeInForce::Gtc, 100, 10));
//! c.flush().unwrap();
//! let mut reports = Vec::new();
//! c.recv(&mut reports, std::time::Duration::from_secs(1)).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use caldera_schema::codec;
pub use caldera_schema::codec::{ClientRequest, ServerReport};
pub use caldera_schema::wire;
use flatbuffers::FlatBufferBuilder;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// ZeroMQ failed.
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    /// The gateway sent something that is not a valid frame.
    #[error("bad frame from gateway: {0}")]
    BadFrame(#[from] codec::FrameError),
    /// Session sequence numbers skipped: reports were lost.
    #[error("session sequence gap: expected {expected}, got {got}")]
    SequenceGap {
        /// Expected next sequence.
        expected: u64,
        /// Received.
        got: u64,
    },
}

/// Request builders.
pub mod requests {
    use super::{wire, ClientRequest};

    /// Logon for an account.
    #[must_use]
    pub fn logon(account: u32) -> ClientRequest {
        ClientRequest::Logon(wire::Logon::new(account))
    }

    /// A limit order (no self-trade prevention, not post-only).
    #[must_use]
    pub fn limit(
        client_order_id: u64,
        symbol: u32,
        side: wire::Side,
        tif: wire::TimeInForce,
        price: u64,
        qty: u64,
    ) -> ClientRequest {
        ClientRequest::NewOrder(wire::NewOrder::new(
            client_order_id,
            price,
            qty,
            symbol,
            side,
            wire::OrderType::Limit,
            tif,
            wire::SelfTradePrevention::Allow,
            false,
        ))
    }

    /// A market IOC order.
    #[must_use]
    pub fn market(client_order_id: u64, symbol: u32, side: wire::Side, qty: u64) -> ClientRequest {
        ClientRequest::NewOrder(wire::NewOrder::new(
            client_order_id,
            0,
            qty,
            symbol,
            side,
            wire::OrderType::Market,
            wire::TimeInForce::Ioc,
            wire::SelfTradePrevention::Allow,
            false,
        ))
    }

    /// Cancel by engine order id.
    #[must_use]
    pub fn cancel(order_id: u64) -> ClientRequest {
        ClientRequest::Cancel(wire::Cancel::new(order_id, 0, false))
    }

    /// Cancel by client order id.
    #[must_use]
    pub fn cancel_client(client_order_id: u64) -> ClientRequest {
        ClientRequest::Cancel(wire::Cancel::new(0, client_order_id, true))
    }

    /// Replace by engine order id.
    #[must_use]
    pub fn replace(order_id: u64, price: u64, qty: u64) -> ClientRequest {
        ClientRequest::Replace(wire::Replace::new(order_id, 0, price, qty, false))
    }

    /// Mass cancel (all symbols when `symbol` is `None`).
    #[must_use]
    pub fn mass_cancel(symbol: Option<u32>) -> ClientRequest {
        ClientRequest::MassCancel(wire::MassCancel::new(symbol.unwrap_or(0), symbol.is_none()))
    }

    /// Heartbeat.
    #[must_use]
    pub fn heartbeat(client_time_ns: u64) -> ClientRequest {
        ClientRequest::Heartbeat(wire::Heartbeat::new(client_time_ns))
    }
}

/// An order-entry session.
pub struct OrderClient {
    socket: zmq::Socket,
    fbb: FlatBufferBuilder<'static>,
    pending: Vec<ClientRequest>,
    next_seq: u64,
    msg: zmq::Message,
}

impl OrderClient {
    /// Connects a DEALER socket to the gateway's ROUTER endpoint.
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn connect(ctx: &zmq::Context, endpoint: &str) -> Result<Self, ClientError> {
        let socket = ctx.socket(zmq::DEALER)?;
        socket.set_linger(1000)?;
        socket.set_sndhwm(100_000)?;
        socket.set_rcvhwm(100_000)?;
        socket.connect(endpoint)?;
        Ok(Self {
            socket,
            fbb: FlatBufferBuilder::with_capacity(1 << 16),
            pending: Vec::with_capacity(1024),
            next_seq: 1,
            msg: zmq::Message::new(),
        })
    }

    /// The socket (to poll it together with others).
    #[must_use]
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Queues a request for the next frame.
    pub fn push(&mut self, r: ClientRequest) {
        self.pending.push(r);
    }

    /// Requests queued and not yet sent.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends every queued request as one frame (blocks while the socket is at its high-water mark).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = codec::encode_client_batch(&mut self.fbb, &self.pending);
        self.socket.send(bytes, 0)?;
        self.pending.clear();
        Ok(())
    }

    /// Like [`OrderClient::flush`] but never blocks: `Ok(false)` (requests kept) when the socket
    /// is at its high-water mark.
    ///
    /// # Errors
    /// ZeroMQ errors other than EAGAIN.
    pub fn try_flush(&mut self) -> Result<bool, ClientError> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let bytes = codec::encode_client_batch(&mut self.fbb, &self.pending);
        match self.socket.send(bytes, zmq::DONTWAIT) {
            Ok(()) => {
                self.pending.clear();
                Ok(true)
            }
            Err(zmq::Error::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends raw bytes as one frame (tests of malformed input).
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.socket.send(bytes, 0)?;
        Ok(())
    }

    /// Waits up to `timeout` for one report frame; appends its reports to `out` and returns how
    /// many. Checks that session sequence numbers continue without a gap.
    ///
    /// # Errors
    /// ZeroMQ errors, a bad frame, or a sequence gap.
    pub fn recv(
        &mut self,
        out: &mut Vec<ServerReport>,
        timeout: Duration,
    ) -> Result<usize, ClientError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if self.socket.poll(zmq::POLLIN, ms)? == 0 {
            return Ok(0);
        }
        self.recv_ready(out)
    }

    /// Reads one frame if one is ready (never blocks).
    ///
    /// # Errors
    /// As [`OrderClient::recv`].
    pub fn try_recv(&mut self, out: &mut Vec<ServerReport>) -> Result<usize, ClientError> {
        self.recv_ready(out)
    }

    fn recv_ready(&mut self, out: &mut Vec<ServerReport>) -> Result<usize, ClientError> {
        match self.socket.recv(&mut self.msg, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        let before = out.len();
        let (first, _unknown) = codec::decode_report_batch(&self.msg, out)?;
        if first != self.next_seq {
            return Err(ClientError::SequenceGap {
                expected: self.next_seq,
                got: first,
            });
        }
        let n = out.len() - before;
        self.next_seq += n as u64;
        Ok(n)
    }

    /// The session sequence number expected next.
    #[must_use]
    pub fn next_session_seq(&self) -> u64 {
        self.next_seq
    }
}

/// One symbol's L2 book rebuilt from market data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct L2Book {
    /// Bid levels price → quantity.
    pub bids: BTreeMap<u64, u64>,
    /// Ask levels price → quantity.
    pub asks: BTreeMap<u64, u64>,
    /// Halted.
    pub halted: bool,
    /// Last md_seq applied.
    pub md_seq: u64,
    /// Last engine sequence number reflected.
    pub engine_seq: u64,
    /// False after a gap until the next snapshot.
    pub synced: bool,
}

/// A market-data subscriber that rebuilds L2 books.
pub struct MarketDataClient {
    socket: zmq::Socket,
    /// Books by symbol.
    pub books: HashMap<u32, L2Book>,
    /// Gaps detected (messages lost).
    pub gaps: u64,
    /// Trades seen (trade id, symbol, price, qty).
    pub trades: Vec<(u64, u32, u64, u64)>,
}

impl MarketDataClient {
    /// Subscribes to `symbols` (all when empty) on the gateway's PUB endpoint.
    ///
    /// # Errors
    /// ZeroMQ errors.
    pub fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        symbols: &[u32],
    ) -> Result<Self, ClientError> {
        let socket = ctx.socket(zmq::SUB)?;
        socket.set_rcvhwm(1_000_000)?;
        if symbols.is_empty() {
            socket.set_subscribe(b"md.")?;
        }
        for s in symbols {
            socket.set_subscribe(&codec::md_topic(*s))?;
        }
        socket.connect(endpoint)?;
        Ok(Self {
            socket,
            books: HashMap::new(),
            gaps: 0,
            trades: Vec::new(),
        })
    }

    /// Applies every message that arrives within `timeout` of the previous one; returns the
    /// number of messages applied.
    ///
    /// # Errors
    /// ZeroMQ errors or a bad frame.
    pub fn pump(&mut self, timeout: Duration) -> Result<usize, ClientError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let mut n = 0;
        while self.socket.poll(zmq::POLLIN, ms)? > 0 {
            let parts = self.socket.recv_multipart(0)?;
            if parts.len() != 2 {
                continue;
            }
            self.apply(&parts[1])?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies one market-data payload.
    ///
    /// # Errors
    /// A bad frame.
    pub fn apply(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let opts = flatbuffers::VerifierOptions {
            max_tables: 10_000_000,
            max_apparent_size: 1 << 31,
            ..Default::default()
        };
        let m = flatbuffers::root_with_opts::<wire::MarketData>(&opts, payload)
            .map_err(|e| codec::FrameError::Malformed(e.to_string()))?;
        let book = self.books.entry(m.symbol()).or_default();
        if book.md_seq != 0 && m.md_seq() != book.md_seq + 1 {
            self.gaps += 1;
            book.synced = false;
        }
        book.md_seq = m.md_seq();
        if m.is_snapshot() {
            book.bids = m
                .bids()
                .map(|v| v.iter().map(|l| (l.price(), l.qty())).collect())
                .unwrap_or_default();
            book.asks = m
                .asks()
                .map(|v| v.iter().map(|l| (l.price(), l.qty())).collect())
                .unwrap_or_default();
            book.halted = m.halted();
            book.engine_seq = m.snapshot_engine_seq();
            book.synced = true;
            return Ok(());
        }
        if let Some(ds) = m.deltas() {
            for d in ds {
                if d.engine_seq() <= book.engine_seq && book.engine_seq != 0 {
                    continue;
                }
                let side = if d.side() == wire::Side::Buy {
                    &mut book.bids
                } else {
                    &mut book.asks
                };
                if d.qty() == 0 {
                    side.remove(&d.price());
                } else {
                    side.insert(d.price(), d.qty());
                }
                book.engine_seq = d.engine_seq();
            }
        }
        if let Some(ts) = m.trades() {
            self.trades.extend(
                ts.iter()
                    .map(|t| (t.trade_id(), m.symbol(), t.price(), t.qty())),
            );
        }
        if let Some(ss) = m.statuses() {
            for s in ss {
                book.halted = s.halted();
            }
        }
        Ok(())
    }
}
