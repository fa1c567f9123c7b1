//! Market data: per-symbol batches of trades, L2 deltas and status changes on a PUB socket, with a
//! per-symbol message sequence number, and periodic full L2 snapshots from a mirror of the book
//! kept from the engine's own deltas.

use caldera_engine::{BookDelta, InstrumentStatus, Seq, Side, SymbolId, Trade};
use caldera_schema::codec::md_topic;
use caldera_schema::convert;
use caldera_schema::wire;
use flatbuffers::FlatBufferBuilder;
use foldhash::HashMap;

struct SymbolState {
    symbol: SymbolId,
    topic: [u8; 13],
    md_seq: u64,
    deltas: Vec<wire::MdDelta>,
    trades: Vec<wire::MdTrade>,
    statuses: Vec<wire::MdStatus>,
    /// The book mirrored from the engine's deltas (price → quantity), sorted only when a
    /// snapshot is published.
    bids: HashMap<u64, u64>,
    asks: HashMap<u64, u64>,
    halted: bool,
    dirty: bool,
}

/// Market-data state of the gateway.
pub struct MarketData {
    symbols: Vec<SymbolState>,
    index: HashMap<SymbolId, usize>,
    dirty: Vec<usize>,
    fbb: FlatBufferBuilder<'static>,
    last_engine_seq: Seq,
    /// Messages the PUB socket refused (only if it ever reports back-pressure).
    pub dropped: u64,
    /// Messages published.
    pub published: u64,
}

impl MarketData {
    /// State for these instruments.
    #[must_use]
    pub fn new(symbols: impl IntoIterator<Item = SymbolId>) -> Self {
        let symbols: Vec<SymbolState> = symbols
            .into_iter()
            .map(|symbol| SymbolState {
                symbol,
                topic: md_topic(symbol),
                md_seq: 0,
                deltas: Vec::with_capacity(1024),
                trades: Vec::with_capacity(1024),
                statuses: Vec::new(),
                bids: HashMap::default(),
                asks: HashMap::default(),
                halted: false,
                dirty: false,
            })
            .collect();
        let index = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.symbol, i))
            .collect::<HashMap<_, _>>();
        Self {
            symbols,
            index,
            dirty: Vec::new(),
            fbb: FlatBufferBuilder::with_capacity(1 << 16),
            last_engine_seq: 0,
            dropped: 0,
            published: 0,
        }
    }

    fn state(&mut self, symbol: SymbolId) -> Option<&mut SymbolState> {
        let i = *self.index.get(&symbol)?;
        let s = &mut self.symbols[i];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(i);
        }
        Some(s)
    }

    /// Records the engine sequence number of the last event seen (for snapshots).
    pub fn saw(&mut self, seq: Seq) {
        self.last_engine_seq = seq;
    }

    /// A level changed.
    pub fn delta(&mut self, seq: Seq, d: &BookDelta) {
        if let Some(s) = self.state(d.symbol) {
            s.deltas.push(wire::MdDelta::new(
                d.price,
                d.qty,
                seq,
                convert::side(d.side),
            ));
            let book = if d.side == Side::Buy {
                &mut s.bids
            } else {
                &mut s.asks
            };
            if d.qty == 0 {
                book.remove(&d.price);
            } else {
                book.insert(d.price, d.qty);
            }
        }
    }

    /// A trade happened.
    pub fn trade(&mut self, seq: Seq, t: &Trade) {
        if let Some(s) = self.state(t.symbol) {
            s.trades.push(wire::MdTrade::new(
                t.trade_id,
                t.price,
                t.qty,
                seq,
                convert::side(t.aggressor),
            ));
        }
    }

    /// Halted or resumed.
    pub fn status(&mut self, seq: Seq, st: &InstrumentStatus) {
        if let Some(s) = self.state(st.symbol) {
            s.statuses.push(wire::MdStatus::new(seq, st.halted));
            s.halted = st.halted;
        }
    }

    /// Publishes one message per symbol that changed since the last flush.
    pub fn flush(&mut self, publisher: &zmq::Socket) {
        while let Some(i) = self.dirty.pop() {
            let s = &mut self.symbols[i];
            s.dirty = false;
            s.md_seq += 1;
            self.fbb.reset();
            let deltas = self.fbb.create_vector(&s.deltas);
            let trades = self.fbb.create_vector(&s.trades);
            let statuses = self.fbb.create_vector(&s.statuses);
            let root = wire::MarketData::create(
                &mut self.fbb,
                &wire::MarketDataArgs {
                    symbol: s.symbol,
                    md_seq: s.md_seq,
                    deltas: Some(deltas),
                    trades: Some(trades),
                    statuses: Some(statuses),
                    ..Default::default()
                },
            );
            self.fbb.finish(root, None);
            s.deltas.clear();
            s.trades.clear();
            s.statuses.clear();
            send(
                publisher,
                &s.topic,
                self.fbb.finished_data(),
                &mut self.published,
                &mut self.dropped,
            );
        }
    }

    /// Publishes a full L2 snapshot of every symbol (call after `flush`).
    pub fn snapshot(&mut self, publisher: &zmq::Socket) {
        let mut levels: Vec<(u64, u64)> = Vec::new();
        let mut wire_levels: Vec<wire::MdLevel> = Vec::new();
        for s in &mut self.symbols {
            s.md_seq += 1;
            self.fbb.reset();
            // Best first: bids by descending price, asks ascending.
            levels.clear();
            levels.extend(s.bids.iter().map(|(p, q)| (*p, *q)));
            levels.sort_unstable_by_key(|l| std::cmp::Reverse(l.0));
            wire_levels.clear();
            wire_levels.extend(levels.iter().map(|(p, q)| wire::MdLevel::new(*p, *q)));
            let bids = self.fbb.create_vector(&wire_levels);
            levels.clear();
            levels.extend(s.asks.iter().map(|(p, q)| (*p, *q)));
            levels.sort_unstable_by_key(|l| l.0);
            wire_levels.clear();
            wire_levels.extend(levels.iter().map(|(p, q)| wire::MdLevel::new(*p, *q)));
            let asks = self.fbb.create_vector(&wire_levels);
            let root = wire::MarketData::create(
                &mut self.fbb,
                &wire::MarketDataArgs {
                    symbol: s.symbol,
                    md_seq: s.md_seq,
                    is_snapshot: true,
                    snapshot_engine_seq: self.last_engine_seq,
                    bids: Some(bids),
                    asks: Some(asks),
                    halted: s.halted,
                    ..Default::default()
                },
            );
            self.fbb.finish(root, None);
            send(
                publisher,
                &s.topic,
                self.fbb.finished_data(),
                &mut self.published,
                &mut self.dropped,
            );
        }
    }
}

fn send(
    publisher: &zmq::Socket,
    topic: &[u8],
    payload: &[u8],
    published: &mut u64,
    dropped: &mut u64,
) {
    // PUB never blocks: beyond the high-water mark libzmq drops for that subscriber, which
    // detects it from md_seq and resynchronises from the next snapshot.
    let ok = publisher.send(topic, zmq::SNDMORE | zmq::DONTWAIT).is_ok()
        && publisher.send(payload, zmq::DONTWAIT).is_ok();
    if ok {
        *published += 1;
    } else {
        *dropped += 1;
    }
}
