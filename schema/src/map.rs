//! Where engine types meet wire types: order-entry requests become engine commands, engine
//! events become execution reports for the accounts they concern. (Commands and events become
//! journal records in [`crate::record`].)

use crate::codec::{ClientRequest, ServerReport};
use crate::{convert, wire};
use caldera_engine::{
    AccountId, Cancel, Command, Event, EventBody, MassCancel, NewOrder, OrderRef, Replace,
};

/// The venue's own account: instrument status and rejected admin requests (the engine rejects
/// a halt of an unknown symbol on account 0) are its reports; admin sessions receive them.
pub const VENUE: AccountId = 0;

/// A request field that does not map to an engine value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// An enum field is out of range.
    #[error("an enum field is out of range")]
    InvalidEnumValue,
    /// The request is not an engine command (logon, heartbeat).
    #[error("not an engine command")]
    NotACommand,
}

/// The engine command for an order-entry request of `account` (admin requests name their own
/// instrument or account).
///
/// # Errors
/// [`MapError`] when an enum field is out of range or the request is not an engine command.
pub fn command(account: AccountId, req: &ClientRequest) -> Result<Command, MapError> {
    let bad = MapError::InvalidEnumValue;
    Ok(match req {
        ClientRequest::NewOrder(o) => Command::New(NewOrder {
            account,
            client_order_id: o.client_order_id(),
            symbol: o.symbol(),
            side: convert::side_from(o.side()).ok_or(bad)?,
            order_type: convert::order_type_from(o.order_type()).ok_or(bad)?,
            tif: convert::tif_from(o.tif()).ok_or(bad)?,
            post_only: o.post_only(),
            price: o.price(),
            qty: o.qty(),
            stp: convert::stp_from(o.stp()).ok_or(bad)?,
        }),
        ClientRequest::Cancel(c) => Command::Cancel(Cancel {
            account,
            target: order_ref(c.by_client_order_id(), c.order_id(), c.client_order_id()),
        }),
        ClientRequest::Replace(r) => Command::Replace(Replace {
            account,
            target: order_ref(r.by_client_order_id(), r.order_id(), r.client_order_id()),
            price: r.price(),
            qty: r.qty(),
        }),
        ClientRequest::MassCancel(m) => Command::MassCancel(MassCancel {
            account,
            symbol: (!m.all_symbols()).then(|| m.symbol()),
        }),
        ClientRequest::HaltInstrument(h) => Command::Halt(h.symbol()),
        ClientRequest::ResumeInstrument(r) => Command::Resume(r.symbol()),
        // An admin's cancel-all names the account; it is that account's own mass cancel.
        ClientRequest::CancelAll(c) => Command::MassCancel(MassCancel {
            account: c.account(),
            symbol: None,
        }),
        ClientRequest::Logon(_)
        | ClientRequest::Logout(_)
        | ClientRequest::Heartbeat(_)
        | ClientRequest::ListSessions(_) => return Err(MapError::NotACommand),
    })
}

/// How a request names an order: by client order id when `by_client`, else by engine id.
#[must_use]
pub fn order_ref(by_client: bool, order_id: u64, client_order_id: u64) -> OrderRef {
    if by_client {
        OrderRef::Client(client_order_id)
    } else {
        OrderRef::Id(order_id)
    }
}

/// The execution reports an event produces, each with the account it belongs to (a trade
/// produces one for the maker and one for the taker; market-data-only events none).
pub fn reports(ev: &Event, mut deliver: impl FnMut(AccountId, ServerReport)) {
    let seq = ev.seq;
    match &ev.body {
        EventBody::Accepted(a) => deliver(
            a.account,
            ServerReport::Accepted(wire::Accepted::new(
                a.order_id,
                a.client_order_id,
                a.price,
                a.qty,
                seq,
                a.symbol,
                convert::side(a.side),
                convert::order_type(a.order_type),
                convert::tif(a.tif),
            )),
        ),
        EventBody::Rejected(r) => deliver(
            r.account,
            ServerReport::Rejected(wire::Rejected::new(
                r.order_id,
                r.client_order_id,
                seq,
                r.symbol,
                0,
                convert::reject_reason(r.reason),
                convert::request_kind(r.request),
            )),
        ),
        EventBody::Trade(t) => {
            let maker = wire::Fill::new(
                t.trade_id,
                t.maker_order_id,
                t.maker_client_order_id,
                t.price,
                t.qty,
                t.maker_leaves,
                seq,
                t.symbol,
                convert::side(t.aggressor.opposite()),
                wire::Liquidity::Maker,
            );
            let taker = wire::Fill::new(
                t.trade_id,
                t.taker_order_id,
                t.taker_client_order_id,
                t.price,
                t.qty,
                t.taker_leaves,
                seq,
                t.symbol,
                convert::side(t.aggressor),
                wire::Liquidity::Taker,
            );
            deliver(t.maker_account, ServerReport::Fill(maker));
            deliver(t.taker_account, ServerReport::Fill(taker));
        }
        EventBody::Done(d) => deliver(
            d.account,
            ServerReport::Done(wire::Done::new(
                d.order_id,
                d.client_order_id,
                d.leaves,
                seq,
                d.symbol,
                convert::side(d.side),
                convert::done_reason(d.reason),
            )),
        ),
        EventBody::Replaced(r) => deliver(
            r.account,
            ServerReport::Replaced(wire::Replaced::new(
                r.order_id,
                r.client_order_id,
                r.price,
                r.qty,
                seq,
                r.symbol,
                convert::side(r.side),
                r.kept_priority,
            )),
        ),
        EventBody::MassCancelled(m) => deliver(
            m.account,
            ServerReport::MassCancelled(wire::MassCancelled::new(
                seq,
                m.count,
                m.symbol.unwrap_or(0),
                m.symbol.is_none(),
            )),
        ),
        // The venue's own account: admin sessions receive it.
        EventBody::InstrumentStatus(s) => deliver(
            VENUE,
            ServerReport::InstrumentStatus(wire::InstrumentStatus::new(seq, s.symbol, s.halted)),
        ),
        EventBody::BookDelta(_) => {}
    }
}
