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
    #[error("an enum or bool field is out of range")]
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
    if !bools_valid(req) {
        return Err(bad);
    }
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
        | ClientRequest::LogonWith(_)
        | ClientRequest::QueryOrders(_)
        | ClientRequest::Logout(_)
        | ClientRequest::Heartbeat(_)
        | ClientRequest::ListSessions(_) => return Err(MapError::NotACommand),
    })
}

/// Whether every bool field of the request is 0 or 1 (FlatBuffers reads any other byte as
/// true; the protocol does not accept them).
#[must_use]
pub fn bools_valid(req: &ClientRequest) -> bool {
    let ok = |b: u8| b <= 1;
    match req {
        ClientRequest::NewOrder(o) => ok(o.0[32]),
        ClientRequest::Cancel(c) => ok(c.0[16]),
        ClientRequest::Replace(r) => ok(r.0[32]),
        ClientRequest::MassCancel(m) => ok(m.0[4]),
        _ => true,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_fields_other_than_0_and_1_are_invalid() {
        let mut o = wire::NewOrder::new(
            1,
            100,
            1,
            1,
            wire::Side::Buy,
            wire::OrderType::Limit,
            wire::TimeInForce::Gtc,
            wire::SelfTradePrevention::Allow,
            true,
        );
        assert_eq!(o.0[32], 1, "post_only is byte 32");
        assert!(command(1, &ClientRequest::NewOrder(o)).is_ok());
        o.0[32] = 2;
        assert_eq!(
            command(1, &ClientRequest::NewOrder(o)),
            Err(MapError::InvalidEnumValue)
        );
        let mut c = wire::Cancel::new(1, 2, true);
        assert_eq!(c.0[16], 1);
        c.0[16] = 7;
        assert!(command(1, &ClientRequest::Cancel(c)).is_err());
        let mut r = wire::Replace::new(1, 2, 3, 4, true);
        assert_eq!(r.0[32], 1);
        r.0[32] = 9;
        assert!(command(1, &ClientRequest::Replace(r)).is_err());
        let mut m = wire::MassCancel::new(1, true);
        assert_eq!(m.0[4], 1);
        m.0[4] = 3;
        assert!(command(1, &ClientRequest::MassCancel(m)).is_err());
    }
}
