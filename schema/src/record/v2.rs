//! Journal format 2: a batch's commands and events as vectors of fixed-size FlatBuffers
//! structs (no table or vtable per item), built incrementally by [`BatchBuilder`].

use super::{bad, wall_ns, RecordError};
use crate::map::order_ref;
use crate::{convert, wire};
use caldera_engine::{
    Accepted, BookDelta, Cancel, Command, Done, Event, EventBody, InstrumentStatus, MassCancel,
    MassCancelled, NewOrder, OrderRef, Rejected, Replace, Replaced, Trade,
};
use flatbuffers::FlatBufferBuilder;

const POST_ONLY: u8 = 1;
const BY_CLIENT_ORDER_ID: u8 = 2;
const ALL_SYMBOLS: u8 = 4;

/// The batch being built: commands and events appended as the engine produced them.
///
/// Its vectors keep their capacity across batches ([`BatchBuilder::clear`]), so building a
/// batch allocates nothing once they have grown to the largest batch.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    cmds: Vec<wire::JCommand>,
    accepted: Vec<wire::JAccepted>,
    rejected: Vec<wire::JRejected>,
    trades: Vec<wire::JTrade>,
    dones: Vec<wire::JDone>,
    replaced: Vec<wire::JReplaced>,
    book_deltas: Vec<wire::JBookDelta>,
    mass_cancelled: Vec<wire::JMassCancelled>,
    statuses: Vec<wire::JInstrumentStatus>,
    first_seq: Option<u64>,
    last_seq: u64,
    events: usize,
}

impl BatchBuilder {
    /// An empty builder with room for `commands` commands and as many events of each common
    /// kind.
    #[must_use]
    pub fn with_capacity(commands: usize) -> Self {
        Self {
            cmds: Vec::with_capacity(commands),
            accepted: Vec::with_capacity(commands),
            rejected: Vec::with_capacity(commands / 4),
            trades: Vec::with_capacity(commands),
            dones: Vec::with_capacity(commands),
            replaced: Vec::with_capacity(commands),
            book_deltas: Vec::with_capacity(commands * 2),
            mass_cancelled: Vec::new(),
            statuses: Vec::new(),
            first_seq: None,
            last_seq: 0,
            events: 0,
        }
    }

    /// Forgets the batch (keeps the capacity).
    pub fn clear(&mut self) {
        self.cmds.clear();
        self.accepted.clear();
        self.rejected.clear();
        self.trades.clear();
        self.dones.clear();
        self.replaced.clear();
        self.book_deltas.clear();
        self.mass_cancelled.clear();
        self.statuses.clear();
        self.first_seq = None;
        self.last_seq = 0;
        self.events = 0;
    }

    /// Commands in the batch.
    #[must_use]
    pub fn commands(&self) -> usize {
        self.cmds.len()
    }

    /// Events in the batch.
    #[must_use]
    pub fn events(&self) -> usize {
        self.events
    }

    /// An upper bound of the encoded size so far, in bytes (the structs plus the table's
    /// fixed overhead).
    #[must_use]
    pub fn encoded_bound(&self) -> usize {
        use std::mem::size_of;
        256 + self.cmds.len() * size_of::<wire::JCommand>()
            + self.accepted.len() * size_of::<wire::JAccepted>()
            + self.rejected.len() * size_of::<wire::JRejected>()
            + self.trades.len() * size_of::<wire::JTrade>()
            + self.dones.len() * size_of::<wire::JDone>()
            + self.replaced.len() * size_of::<wire::JReplaced>()
            + self.book_deltas.len() * size_of::<wire::JBookDelta>()
            + self.mass_cancelled.len() * size_of::<wire::JMassCancelled>()
            + self.statuses.len() * size_of::<wire::JInstrumentStatus>()
    }

    /// The sequence range of the events (`None` without events).
    #[must_use]
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        self.first_seq.map(|f| (f, self.last_seq))
    }

    /// Appends a command (after its events).
    #[inline]
    pub fn push_command(&mut self, c: &Command) {
        self.cmds.push(jcommand(c));
    }

    /// Appends an event.
    #[inline]
    pub fn push_event(&mut self, e: &Event) {
        let s = e.seq;
        self.first_seq.get_or_insert(s);
        self.last_seq = s;
        self.events += 1;
        match &e.body {
            EventBody::Accepted(x) => self.accepted.push(wire::JAccepted::new(
                s,
                x.order_id,
                x.client_order_id,
                x.price,
                x.qty,
                x.account,
                x.symbol,
                convert::side(x.side),
                convert::order_type(x.order_type),
                convert::tif(x.tif),
            )),
            EventBody::Rejected(x) => self.rejected.push(wire::JRejected::new(
                s,
                x.order_id,
                x.client_order_id,
                x.account,
                x.symbol,
                convert::reject_reason(x.reason),
                convert::request_kind(x.request),
            )),
            EventBody::Trade(x) => self.trades.push(wire::JTrade::new(
                s,
                x.trade_id,
                x.price,
                x.qty,
                x.maker_order_id,
                x.maker_client_order_id,
                x.maker_leaves,
                x.taker_order_id,
                x.taker_client_order_id,
                x.taker_leaves,
                x.maker_account,
                x.taker_account,
                x.symbol,
                convert::side(x.aggressor),
            )),
            EventBody::Done(x) => self.dones.push(wire::JDone::new(
                s,
                x.order_id,
                x.client_order_id,
                x.leaves,
                x.account,
                x.symbol,
                convert::side(x.side),
                convert::done_reason(x.reason),
            )),
            EventBody::Replaced(x) => self.replaced.push(wire::JReplaced::new(
                s,
                x.order_id,
                x.client_order_id,
                x.price,
                x.qty,
                x.account,
                x.symbol,
                convert::side(x.side),
                x.kept_priority,
            )),
            EventBody::BookDelta(x) => self.book_deltas.push(wire::JBookDelta::new(
                s,
                x.price,
                x.qty,
                x.symbol,
                convert::side(x.side),
            )),
            EventBody::MassCancelled(x) => self.mass_cancelled.push(wire::JMassCancelled::new(
                s,
                x.account,
                x.symbol.unwrap_or(0),
                x.count,
                x.symbol.is_none(),
            )),
            EventBody::InstrumentStatus(x) => self
                .statuses
                .push(wire::JInstrumentStatus::new(s, x.symbol, x.halted)),
        }
    }

    /// Encodes the batch (format 2) into `fbb` (reset first) and returns the bytes. The
    /// sequence range is the events' (`first_seq`, `last_seq`) as given: for a batch without
    /// events, `first_seq = last_seq + 1`.
    pub fn finish<'a>(
        &self,
        fbb: &'a mut FlatBufferBuilder<'static>,
        epoch: u64,
        first_seq: u64,
        last_seq: u64,
    ) -> &'a [u8] {
        self.finish_as(fbb, epoch, first_seq, last_seq, super::FORMAT)
    }

    /// [`BatchBuilder::finish`] with an explicit format: [`super::FORMAT_SPLIT_FINAL`] for the
    /// final record of a split batch (its events are a suffix of its range).
    pub fn finish_as<'a>(
        &self,
        fbb: &'a mut FlatBufferBuilder<'static>,
        epoch: u64,
        first_seq: u64,
        last_seq: u64,
        format: u16,
    ) -> &'a [u8] {
        fbb.reset();
        let cmds = fbb.create_vector(&self.cmds);
        let accepted = fbb.create_vector(&self.accepted);
        let rejected = fbb.create_vector(&self.rejected);
        let trades = fbb.create_vector(&self.trades);
        let dones = fbb.create_vector(&self.dones);
        let replaced = fbb.create_vector(&self.replaced);
        let book_deltas = fbb.create_vector(&self.book_deltas);
        let mass_cancelled = fbb.create_vector(&self.mass_cancelled);
        let statuses = fbb.create_vector(&self.statuses);
        let root = wire::JournalBatch::create(
            fbb,
            &wire::JournalBatchArgs {
                epoch,
                first_seq,
                last_seq,
                written_ns: wall_ns(),
                format,
                cmds: Some(cmds),
                accepted: Some(accepted),
                rejected: Some(rejected),
                trades: Some(trades),
                dones: Some(dones),
                replaced: Some(replaced),
                book_deltas: Some(book_deltas),
                mass_cancelled: Some(mass_cancelled),
                statuses: Some(statuses),
                ..Default::default()
            },
        );
        fbb.finish(root, None);
        fbb.finished_data()
    }
}

fn target(t: OrderRef) -> (u64, u64, u8) {
    match t {
        OrderRef::Id(id) => (id, 0, 0),
        OrderRef::Client(c) => (0, c, BY_CLIENT_ORDER_ID),
    }
}

/// A command as a journal struct.
#[must_use]
pub fn jcommand(c: &Command) -> wire::JCommand {
    let none = (
        wire::Side::Buy,
        wire::OrderType::Limit,
        wire::TimeInForce::Gtc,
        wire::SelfTradePrevention::Allow,
    );
    let j = |kind, cl, id, price, qty, account, symbol, enums: (_, _, _, _), flags| {
        wire::JCommand::new(
            cl, id, price, qty, account, symbol, kind, enums.0, enums.1, enums.2, enums.3, flags,
        )
    };
    match c {
        Command::New(o) => j(
            wire::CommandKind::New,
            o.client_order_id,
            0,
            o.price,
            o.qty,
            o.account,
            o.symbol,
            (
                convert::side(o.side),
                convert::order_type(o.order_type),
                convert::tif(o.tif),
                convert::stp(o.stp),
            ),
            if o.post_only { POST_ONLY } else { 0 },
        ),
        Command::Cancel(x) => {
            let (id, cl, flags) = target(x.target);
            j(
                wire::CommandKind::Cancel,
                cl,
                id,
                0,
                0,
                x.account,
                0,
                none,
                flags,
            )
        }
        Command::Replace(x) => {
            let (id, cl, flags) = target(x.target);
            j(
                wire::CommandKind::Replace,
                cl,
                id,
                x.price,
                x.qty,
                x.account,
                0,
                none,
                flags,
            )
        }
        Command::MassCancel(x) => j(
            wire::CommandKind::MassCancel,
            0,
            0,
            0,
            0,
            x.account,
            x.symbol.unwrap_or(0),
            none,
            if x.symbol.is_none() { ALL_SYMBOLS } else { 0 },
        ),
        Command::Halt(s) => j(wire::CommandKind::Halt, 0, 0, 0, 0, 0, *s, none, 0),
        Command::Resume(s) => j(wire::CommandKind::Resume, 0, 0, 0, 0, 0, *s, none, 0),
    }
}

/// A journal struct back as a command.
///
/// # Errors
/// [`RecordError::Invalid`] when a field is out of range.
pub fn command(j: &wire::JCommand) -> Result<Command, RecordError> {
    let by_client = j.flags() & BY_CLIENT_ORDER_ID != 0;
    Ok(match j.kind() {
        wire::CommandKind::New => Command::New(NewOrder {
            account: j.account(),
            client_order_id: j.client_order_id(),
            symbol: j.symbol(),
            side: convert::side_from(j.side()).ok_or(bad("side"))?,
            order_type: convert::order_type_from(j.order_type()).ok_or(bad("order type"))?,
            tif: convert::tif_from(j.tif()).ok_or(bad("time in force"))?,
            post_only: j.flags() & POST_ONLY != 0,
            price: j.price(),
            qty: j.qty(),
            stp: convert::stp_from(j.stp()).ok_or(bad("self-trade prevention"))?,
        }),
        wire::CommandKind::Cancel => Command::Cancel(Cancel {
            account: j.account(),
            target: order_ref(by_client, j.order_id(), j.client_order_id()),
        }),
        wire::CommandKind::Replace => Command::Replace(Replace {
            account: j.account(),
            target: order_ref(by_client, j.order_id(), j.client_order_id()),
            price: j.price(),
            qty: j.qty(),
        }),
        wire::CommandKind::MassCancel => Command::MassCancel(MassCancel {
            account: j.account(),
            symbol: (j.flags() & ALL_SYMBOLS == 0).then(|| j.symbol()),
        }),
        wire::CommandKind::Halt => Command::Halt(j.symbol()),
        wire::CommandKind::Resume => Command::Resume(j.symbol()),
        _ => return Err(bad("command kind")),
    })
}

/// The commands of a format-2 batch.
pub(super) fn commands(
    b: &wire::JournalBatch<'_>,
    out: &mut Vec<Command>,
) -> Result<(), RecordError> {
    if let Some(cs) = b.cmds() {
        out.reserve(cs.len());
        for c in cs {
            out.push(command(c)?);
        }
    }
    Ok(())
}

/// The events of a format-2 batch, in sequence order: each of `first_seq..=last_seq` exactly
/// once, or [`RecordError::Invalid`].
pub(super) fn events(b: &wire::JournalBatch<'_>, out: &mut Vec<Event>) -> Result<(), RecordError> {
    let (first, last) = (b.first_seq(), b.last_seq());
    if last.wrapping_add(1) < first {
        return Err(bad("sequence range"));
    }
    let n = usize::try_from(last.wrapping_add(1) - first).map_err(|_| bad("sequence range"))?;
    let total = [
        b.accepted().map_or(0, |v| v.len()),
        b.rejected().map_or(0, |v| v.len()),
        b.trades().map_or(0, |v| v.len()),
        b.dones().map_or(0, |v| v.len()),
        b.replaced().map_or(0, |v| v.len()),
        b.book_deltas().map_or(0, |v| v.len()),
        b.mass_cancelled().map_or(0, |v| v.len()),
        b.statuses().map_or(0, |v| v.len()),
    ]
    .iter()
    .sum::<usize>();
    // The final record of a split batch (format 3) holds the last `total` events of its range
    // (the parts before it hold the others); every other batch holds all of them.
    let first = if b.format() == super::FORMAT_SPLIT_FINAL && total <= n {
        last.wrapping_add(1) - total as u64
    } else {
        first
    };
    let n = if b.format() == super::FORMAT_SPLIT_FINAL {
        total
    } else {
        n
    };
    if total != n {
        return Err(bad("event count (does not match the sequence range)"));
    }
    let base = out.len();
    let mut slots: Vec<Option<Event>> = vec![None; n];
    let mut place = |seq: u64, body: EventBody| -> Result<(), RecordError> {
        let i = seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < n)
            .ok_or(bad("event sequence (outside the batch)"))?;
        if slots[i].replace(Event { seq, body }).is_some() {
            return Err(bad("event sequence (twice)"));
        }
        Ok(())
    };
    let side = |s| convert::side_from(s).ok_or(bad("side"));
    for x in b.accepted().iter().flatten() {
        place(
            x.seq(),
            EventBody::Accepted(Accepted {
                order_id: x.order_id(),
                account: x.account(),
                client_order_id: x.client_order_id(),
                symbol: x.symbol(),
                side: side(x.side())?,
                order_type: convert::order_type_from(x.order_type()).ok_or(bad("order type"))?,
                tif: convert::tif_from(x.tif()).ok_or(bad("tif"))?,
                price: x.price(),
                qty: x.qty(),
            }),
        )?;
    }
    for x in b.rejected().iter().flatten() {
        place(
            x.seq(),
            EventBody::Rejected(Rejected {
                account: x.account(),
                client_order_id: x.client_order_id(),
                order_id: x.order_id(),
                symbol: x.symbol(),
                request: convert::request_kind_from(x.request()).ok_or(bad("request kind"))?,
                reason: convert::engine_reject_reason_from(x.reason())
                    .ok_or(bad("reject reason"))?,
            }),
        )?;
    }
    for x in b.trades().iter().flatten() {
        place(
            x.seq(),
            EventBody::Trade(Trade {
                trade_id: x.trade_id(),
                symbol: x.symbol(),
                price: x.price(),
                qty: x.qty(),
                aggressor: side(x.aggressor())?,
                maker_order_id: x.maker_order_id(),
                maker_account: x.maker_account(),
                maker_client_order_id: x.maker_client_order_id(),
                maker_leaves: x.maker_leaves(),
                taker_order_id: x.taker_order_id(),
                taker_account: x.taker_account(),
                taker_client_order_id: x.taker_client_order_id(),
                taker_leaves: x.taker_leaves(),
            }),
        )?;
    }
    for x in b.dones().iter().flatten() {
        place(
            x.seq(),
            EventBody::Done(Done {
                order_id: x.order_id(),
                account: x.account(),
                client_order_id: x.client_order_id(),
                symbol: x.symbol(),
                side: side(x.side())?,
                reason: convert::done_reason_from(x.reason()).ok_or(bad("done reason"))?,
                leaves: x.leaves(),
            }),
        )?;
    }
    for x in b.replaced().iter().flatten() {
        place(
            x.seq(),
            EventBody::Replaced(Replaced {
                order_id: x.order_id(),
                account: x.account(),
                client_order_id: x.client_order_id(),
                symbol: x.symbol(),
                side: side(x.side())?,
                price: x.price(),
                qty: x.qty(),
                kept_priority: x.kept_priority(),
            }),
        )?;
    }
    for x in b.book_deltas().iter().flatten() {
        place(
            x.seq(),
            EventBody::BookDelta(BookDelta {
                symbol: x.symbol(),
                side: side(x.side())?,
                price: x.price(),
                qty: x.qty(),
            }),
        )?;
    }
    for x in b.mass_cancelled().iter().flatten() {
        place(
            x.seq(),
            EventBody::MassCancelled(MassCancelled {
                account: x.account(),
                symbol: (!x.all_symbols()).then(|| x.symbol()),
                count: x.count(),
            }),
        )?;
    }
    for x in b.statuses().iter().flatten() {
        place(
            x.seq(),
            EventBody::InstrumentStatus(InstrumentStatus {
                symbol: x.symbol(),
                halted: x.halted(),
            }),
        )?;
    }
    out.reserve(n);
    for e in slots {
        // Every slot is filled: n events were placed, none twice, all inside the range.
        out.push(e.ok_or(bad("event sequence (missing)"))?);
    }
    debug_assert_eq!(out.len() - base, n);
    Ok(())
}
