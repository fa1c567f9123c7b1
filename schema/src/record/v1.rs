//! Journal format 1: one FlatBuffers table per command (`CommandRecord`) and per event
//! (`EventRecord`). Written by Caldera before journal format 2; still read (old journals
//! replay), and still written by [`encode_batch_v1`] to test that they do.

use super::{bad, wall_ns, RecordError};
use crate::map::order_ref;
use crate::{convert, wire};
use caldera_engine::{
    Accepted, BookDelta, Cancel, Command, Done, Event, EventBody, InstrumentStatus, MassCancel,
    MassCancelled, NewOrder, OrderRef, Rejected, Replace, Replaced, Trade,
};
use flatbuffers::{FlatBufferBuilder, WIPOffset};

/// Encodes a batch in format 1 into `fbb` (reset first) and returns the bytes.
pub fn encode_batch_v1<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    epoch: u64,
    commands: &[Command],
    events: &[Event],
    first_seq: u64,
    last_seq: u64,
) -> &'a [u8] {
    fbb.reset();
    let mut cmd_offs: Vec<WIPOffset<wire::CommandRecord>> = Vec::with_capacity(commands.len());
    for c in commands {
        let mut a = wire::CommandRecordArgs::default();
        let (n, ca, r, m, i);
        match c {
            Command::New(o) => {
                n = wire::JNewOrder::new(
                    o.client_order_id,
                    o.price,
                    o.qty,
                    o.account,
                    o.symbol,
                    convert::side(o.side),
                    convert::order_type(o.order_type),
                    convert::tif(o.tif),
                    convert::stp(o.stp),
                    o.post_only,
                );
                a.new_order = Some(&n);
            }
            Command::Cancel(x) => {
                let (id, cl, by) = target(x.target);
                ca = wire::JCancel::new(id, cl, x.account, by);
                a.cancel = Some(&ca);
            }
            Command::Replace(x) => {
                let (id, cl, by) = target(x.target);
                r = wire::JReplace::new(id, cl, x.price, x.qty, x.account, by);
                a.replace = Some(&r);
            }
            Command::MassCancel(x) => {
                m = wire::JMassCancel::new(x.account, x.symbol.unwrap_or(0), x.symbol.is_none());
                a.mass_cancel = Some(&m);
            }
            Command::Halt(s) | Command::Resume(s) => {
                i = wire::JInstrumentControl::new(*s, matches!(c, Command::Halt(_)));
                a.instrument = Some(&i);
            }
        }
        cmd_offs.push(wire::CommandRecord::create(fbb, &a));
    }
    let mut ev_offs: Vec<WIPOffset<wire::EventRecord>> = Vec::with_capacity(events.len());
    for e in events {
        let s = e.seq;
        let mut a = wire::EventRecordArgs::default();
        let (ac, rj, tr, dn, rp, bd, mc, st);
        match &e.body {
            EventBody::Accepted(x) => {
                ac = wire::JAccepted::new(
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
                );
                a.accepted = Some(&ac);
            }
            EventBody::Rejected(x) => {
                rj = wire::JRejected::new(
                    s,
                    x.order_id,
                    x.client_order_id,
                    x.account,
                    x.symbol,
                    convert::reject_reason(x.reason),
                    convert::request_kind(x.request),
                );
                a.rejected = Some(&rj);
            }
            EventBody::Trade(x) => {
                tr = wire::JTrade::new(
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
                );
                a.trade = Some(&tr);
            }
            EventBody::Done(x) => {
                dn = wire::JDone::new(
                    s,
                    x.order_id,
                    x.client_order_id,
                    x.leaves,
                    x.account,
                    x.symbol,
                    convert::side(x.side),
                    convert::done_reason(x.reason),
                );
                a.done = Some(&dn);
            }
            EventBody::Replaced(x) => {
                rp = wire::JReplaced::new(
                    s,
                    x.order_id,
                    x.client_order_id,
                    x.price,
                    x.qty,
                    x.account,
                    x.symbol,
                    convert::side(x.side),
                    x.kept_priority,
                );
                a.replaced = Some(&rp);
            }
            EventBody::BookDelta(x) => {
                bd = wire::JBookDelta::new(s, x.price, x.qty, x.symbol, convert::side(x.side));
                a.book_delta = Some(&bd);
            }
            EventBody::MassCancelled(x) => {
                mc = wire::JMassCancelled::new(
                    s,
                    x.account,
                    x.symbol.unwrap_or(0),
                    x.count,
                    x.symbol.is_none(),
                );
                a.mass_cancelled = Some(&mc);
            }
            EventBody::InstrumentStatus(x) => {
                st = wire::JInstrumentStatus::new(s, x.symbol, x.halted);
                a.instrument_status = Some(&st);
            }
        }
        ev_offs.push(wire::EventRecord::create(fbb, &a));
    }
    let commands = fbb.create_vector(&cmd_offs);
    let events = fbb.create_vector(&ev_offs);
    let root = wire::JournalBatch::create(
        fbb,
        &wire::JournalBatchArgs {
            epoch,
            first_seq,
            last_seq,
            commands: Some(commands),
            events: Some(events),
            written_ns: wall_ns(),
            format: 1,
            ..Default::default()
        },
    );
    fbb.finish(root, None);
    fbb.finished_data()
}

fn target(t: OrderRef) -> (u64, u64, bool) {
    match t {
        OrderRef::Id(id) => (id, 0, false),
        OrderRef::Client(c) => (0, c, true),
    }
}

/// The commands of a format-1 batch.
pub(super) fn commands(
    b: &wire::JournalBatch<'_>,
    out: &mut Vec<Command>,
) -> Result<(), RecordError> {
    if let Some(cs) = b.commands() {
        for c in cs {
            out.push(command_of(&c)?);
        }
    }
    Ok(())
}

fn command_of(c: &wire::CommandRecord<'_>) -> Result<Command, RecordError> {
    if let Some(o) = c.new_order() {
        return Ok(Command::New(NewOrder {
            account: o.account(),
            client_order_id: o.client_order_id(),
            symbol: o.symbol(),
            side: convert::side_from(o.side()).ok_or(bad("side"))?,
            order_type: convert::order_type_from(o.order_type()).ok_or(bad("order type"))?,
            tif: convert::tif_from(o.tif()).ok_or(bad("time in force"))?,
            post_only: o.post_only(),
            price: o.price(),
            qty: o.qty(),
            stp: convert::stp_from(o.stp()).ok_or(bad("self-trade prevention"))?,
        }));
    }
    if let Some(x) = c.cancel() {
        return Ok(Command::Cancel(Cancel {
            account: x.account(),
            target: order_ref(x.by_client_order_id(), x.order_id(), x.client_order_id()),
        }));
    }
    if let Some(x) = c.replace() {
        return Ok(Command::Replace(Replace {
            account: x.account(),
            target: order_ref(x.by_client_order_id(), x.order_id(), x.client_order_id()),
            price: x.price(),
            qty: x.qty(),
        }));
    }
    if let Some(x) = c.mass_cancel() {
        return Ok(Command::MassCancel(MassCancel {
            account: x.account(),
            symbol: (!x.all_symbols()).then(|| x.symbol()),
        }));
    }
    if let Some(x) = c.instrument() {
        return Ok(if x.halt() {
            Command::Halt(x.symbol())
        } else {
            Command::Resume(x.symbol())
        });
    }
    Err(bad("command record (no field set)"))
}

/// The events of a format-1 batch.
/// The events of a format-1 batch: exactly `first_seq..=last_seq`, in order, or
/// [`RecordError::Invalid`] (as format 2 requires).
pub(super) fn events(b: &wire::JournalBatch<'_>, out: &mut Vec<Event>) -> Result<(), RecordError> {
    let (first, last) = (b.first_seq(), b.last_seq());
    if last.wrapping_add(1) < first {
        return Err(bad("sequence range"));
    }
    let n = last.wrapping_add(1) - first;
    let es = b.events();
    if es.map_or(0, |v| v.len()) as u64 != n {
        return Err(bad("event count (does not match the sequence range)"));
    }
    let base = out.len();
    for (i, e) in es.iter().flatten().enumerate() {
        let ev = event_of(&e)?;
        if ev.seq != first + i as u64 {
            out.truncate(base);
            return Err(bad("event sequence (not in order from first_seq)"));
        }
        out.push(ev);
    }
    Ok(())
}

fn event_of(e: &wire::EventRecord<'_>) -> Result<Event, RecordError> {
    let side = |s| convert::side_from(s).ok_or(bad("side"));
    if let Some(x) = e.accepted() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::Accepted(Accepted {
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
        });
    }
    if let Some(x) = e.rejected() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::Rejected(Rejected {
                account: x.account(),
                client_order_id: x.client_order_id(),
                order_id: x.order_id(),
                symbol: x.symbol(),
                request: convert::request_kind_from(x.request()).ok_or(bad("request kind"))?,
                reason: convert::engine_reject_reason_from(x.reason())
                    .ok_or(bad("reject reason"))?,
            }),
        });
    }
    if let Some(x) = e.trade() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::Trade(Trade {
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
        });
    }
    if let Some(x) = e.done() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::Done(Done {
                order_id: x.order_id(),
                account: x.account(),
                client_order_id: x.client_order_id(),
                symbol: x.symbol(),
                side: side(x.side())?,
                reason: convert::done_reason_from(x.reason()).ok_or(bad("done reason"))?,
                leaves: x.leaves(),
            }),
        });
    }
    if let Some(x) = e.replaced() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::Replaced(Replaced {
                order_id: x.order_id(),
                account: x.account(),
                client_order_id: x.client_order_id(),
                symbol: x.symbol(),
                side: side(x.side())?,
                price: x.price(),
                qty: x.qty(),
                kept_priority: x.kept_priority(),
            }),
        });
    }
    if let Some(x) = e.book_delta() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::BookDelta(BookDelta {
                symbol: x.symbol(),
                side: side(x.side())?,
                price: x.price(),
                qty: x.qty(),
            }),
        });
    }
    if let Some(x) = e.mass_cancelled() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::MassCancelled(MassCancelled {
                account: x.account(),
                symbol: (!x.all_symbols()).then(|| x.symbol()),
                count: x.count(),
            }),
        });
    }
    if let Some(x) = e.instrument_status() {
        return Ok(Event {
            seq: x.seq(),
            body: EventBody::InstrumentStatus(InstrumentStatus {
                symbol: x.symbol(),
                halted: x.halted(),
            }),
        });
    }
    Err(bad("event record (no field set)"))
}
