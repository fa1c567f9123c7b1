#![allow(dead_code)]
use caldera_engine::*;

pub const SYM: SymbolId = 1;

pub fn spec(id: SymbolId) -> InstrumentSpec {
    InstrumentSpec {
        id,
        tick_size: 5,
        lot_size: 10,
        min_price: 50,
        max_price: 10_000,
        max_qty: 100_000,
    }
}

/// The configuration of [`engine`]: two instruments, 64 orders, 8 accounts.
pub fn config() -> EngineConfig {
    EngineConfig {
        max_orders: 64,
        max_accounts: 8,
        hash_seed: 3,
        dedupe_window: 0,
        dedupe_accounts: 0,
        max_orders_per_account: 0,
        instruments: vec![spec(SYM), spec(2)],
    }
}

pub fn engine() -> Engine {
    Engine::new(config()).unwrap()
}

pub fn limit(
    account: AccountId,
    cl: ClientOrderId,
    side: Side,
    price: Price,
    qty: Qty,
) -> NewOrder {
    NewOrder {
        account,
        client_order_id: cl,
        symbol: SYM,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        post_only: false,
        price,
        qty,
        stp: SelfTradePrevention::Allow,
    }
}

pub fn run(e: &mut Engine, cmd: Command) -> Vec<EventBody> {
    let mut v = Vec::new();
    e.process(&cmd, &mut v);
    e.check_integrity().unwrap();
    v.into_iter().map(|e| e.body).collect()
}

pub fn place(e: &mut Engine, o: NewOrder) -> Vec<EventBody> {
    run(e, Command::New(o))
}

pub fn trades(evs: &[EventBody]) -> Vec<Trade> {
    evs.iter()
        .filter_map(|e| {
            if let EventBody::Trade(t) = e {
                Some(*t)
            } else {
                None
            }
        })
        .collect()
}

pub fn deltas(evs: &[EventBody]) -> Vec<(Side, Price, Qty)> {
    evs.iter()
        .filter_map(|e| {
            if let EventBody::BookDelta(d) = e {
                Some((d.side, d.price, d.qty))
            } else {
                None
            }
        })
        .collect()
}

pub fn reject_reason(evs: &[EventBody]) -> Option<RejectReason> {
    match evs {
        [EventBody::Rejected(r)] => Some(r.reason),
        _ => None,
    }
}

pub fn accepted_id(evs: &[EventBody]) -> OrderId {
    match evs.first() {
        Some(EventBody::Accepted(a)) => a.order_id,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

pub fn done(evs: &[EventBody]) -> Vec<(OrderId, DoneReason, Qty)> {
    evs.iter()
        .filter_map(|e| {
            if let EventBody::Done(d) = e {
                Some((d.order_id, d.reason, d.leaves))
            } else {
                None
            }
        })
        .collect()
}

pub fn orders(e: &Engine, side: Side) -> Vec<(OrderId, Price, Qty)> {
    let mut v = Vec::new();
    e.for_each_order(SYM, side, |o| v.push((o.order_id, o.price, o.leaves)));
    v
}
