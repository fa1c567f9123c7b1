//! One example test per matching rule.
mod common;
use caldera_engine::*;
use common::*;

#[test]
fn buy_crossing_two_ask_levels_rests_residual_at_its_own_price() {
    let mut e = engine();
    let a1 = accepted_id(&place(&mut e, limit(1, 1, Side::Sell, 100, 30)));
    let a2 = accepted_id(&place(&mut e, limit(1, 2, Side::Sell, 105, 30)));
    let evs = place(&mut e, limit(2, 1, Side::Buy, 110, 100));
    let t = trades(&evs);
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].maker_order_id, t[0].price, t[0].qty), (a1, 100, 30));
    assert_eq!((t[1].maker_order_id, t[1].price, t[1].qty), (a2, 105, 30));
    assert!(t
        .iter()
        .all(|t| t.aggressor == Side::Buy && t.taker_account == 2));
    assert!(t[0].trade_id < t[1].trade_id);
    // Both levels fully consumed are reported with quantity 0; the residual rests at 110.
    assert_eq!(
        deltas(&evs),
        vec![
            (Side::Sell, 100, 0),
            (Side::Sell, 105, 0),
            (Side::Buy, 110, 40)
        ]
    );
    assert_eq!(e.best_bid(SYM), Some((110, 40)));
    assert_eq!(e.best_ask(SYM), None);
    assert_eq!(
        done(&evs),
        vec![(a1, DoneReason::Filled, 0), (a2, DoneReason::Filled, 0)]
    );
}

#[test]
fn trades_execute_at_maker_price_in_price_then_time_order() {
    let mut e = engine();
    let b1 = accepted_id(&place(&mut e, limit(1, 1, Side::Buy, 100, 20)));
    let b2 = accepted_id(&place(&mut e, limit(2, 1, Side::Buy, 100, 20)));
    let b3 = accepted_id(&place(&mut e, limit(3, 1, Side::Buy, 105, 20)));
    let evs = place(&mut e, limit(4, 1, Side::Sell, 50, 50));
    let t: Vec<_> = trades(&evs)
        .iter()
        .map(|t| (t.maker_order_id, t.price, t.qty))
        .collect();
    assert_eq!(t, vec![(b3, 105, 20), (b1, 100, 20), (b2, 100, 10)]);
    assert_eq!(orders(&e, Side::Buy), vec![(b2, 100, 10)]);
}

#[test]
fn rejects_price_zero_quantity_zero_and_duplicate_client_order_id() {
    let mut e = engine();
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 1, Side::Buy, 0, 10))),
        Some(RejectReason::ZeroPrice)
    );
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 1, Side::Buy, 100, 0))),
        Some(RejectReason::ZeroQuantity)
    );
    place(&mut e, limit(1, 1, Side::Buy, 100, 10));
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 1, Side::Sell, 200, 10))),
        Some(RejectReason::DuplicateClientOrderId)
    );
    // Another account may use the same client id.
    assert!(reject_reason(&place(&mut e, limit(2, 1, Side::Sell, 200, 10))).is_none());
}

#[test]
fn rejects_every_invalid_field_with_a_typed_reason() {
    let mut e = engine();
    let base = limit(1, 1, Side::Buy, 100, 10);
    let cases = [
        (NewOrder { symbol: 99, ..base }, RejectReason::UnknownSymbol),
        (NewOrder { price: 101, ..base }, RejectReason::PriceOffTick),
        (NewOrder { price: 45, ..base }, RejectReason::PriceOutOfBand),
        (
            NewOrder {
                price: 10_005,
                ..base
            },
            RejectReason::PriceOutOfBand,
        ),
        (NewOrder { qty: 15, ..base }, RejectReason::QuantityOffLot),
        (
            NewOrder {
                qty: 100_010,
                ..base
            },
            RejectReason::QuantityOverMax,
        ),
        (
            NewOrder {
                order_type: OrderType::Market,
                tif: TimeInForce::Gtc,
                price: 0,
                ..base
            },
            RejectReason::InvalidTimeInForce,
        ),
        (
            NewOrder {
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                ..base
            },
            RejectReason::MarketOrderHasPrice,
        ),
        (
            NewOrder {
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                price: 0,
                post_only: true,
                ..base
            },
            RejectReason::InvalidOrderType,
        ),
        (
            NewOrder {
                post_only: true,
                tif: TimeInForce::Ioc,
                ..base
            },
            RejectReason::InvalidTimeInForce,
        ),
    ];
    for (o, reason) in cases {
        let evs = place(&mut e, o);
        assert_eq!(reject_reason(&evs), Some(reason), "{o:?}");
        if let [EventBody::Rejected(r)] = evs.as_slice() {
            assert_eq!(
                (r.account, r.client_order_id, r.request),
                (1, 1, RequestKind::New)
            );
        }
    }
    assert_eq!(e.live_orders(), 0);
    assert!(!RejectReason::PriceOffTick.describe().is_empty());
}

#[test]
fn market_orders_never_rest_and_ioc_remainder_expires() {
    let mut e = engine();
    place(&mut e, limit(1, 1, Side::Sell, 100, 20));
    let m = NewOrder {
        order_type: OrderType::Market,
        tif: TimeInForce::Ioc,
        price: 0,
        ..limit(2, 1, Side::Buy, 0, 50)
    };
    let evs = place(&mut e, m);
    let id = accepted_id(&evs);
    assert_eq!(trades(&evs).len(), 1);
    assert_eq!(done(&evs).last(), Some(&(id, DoneReason::Expired, 30)));
    assert_eq!(e.live_orders(), 0);

    place(&mut e, limit(1, 2, Side::Sell, 100, 20));
    let ioc = NewOrder {
        tif: TimeInForce::Ioc,
        ..limit(2, 2, Side::Buy, 100, 30)
    };
    let evs = place(&mut e, ioc);
    let id = accepted_id(&evs);
    assert_eq!(done(&evs).last(), Some(&(id, DoneReason::Expired, 10)));
    assert_eq!(e.best_bid(SYM), None);
    // A market order into an empty book expires whole.
    let evs = place(
        &mut e,
        NewOrder {
            client_order_id: 3,
            ..m
        },
    );
    assert_eq!(
        done(&evs),
        vec![(accepted_id(&evs), DoneReason::Expired, 50)]
    );
}

#[test]
fn fok_fills_completely_or_trades_nothing() {
    let mut e = engine();
    place(&mut e, limit(1, 1, Side::Sell, 100, 20));
    place(&mut e, limit(1, 2, Side::Sell, 105, 20));
    let fok = NewOrder {
        tif: TimeInForce::Fok,
        ..limit(2, 1, Side::Buy, 105, 50)
    };
    let before = e.state_hash();
    let evs = place(&mut e, fok);
    assert_eq!(reject_reason(&evs), Some(RejectReason::FokNotFillable));
    assert_ne!(before, e.state_hash(), "sequence advanced");
    assert_eq!(e.best_ask(SYM), Some((100, 20)));
    let evs = place(&mut e, NewOrder { qty: 40, ..fok });
    assert_eq!(trades(&evs).len(), 2);
    assert_eq!(done(&evs).last().unwrap().1, DoneReason::Filled);
    assert_eq!(e.best_ask(SYM), None);
}

#[test]
fn post_only_never_takes() {
    let mut e = engine();
    place(&mut e, limit(1, 1, Side::Sell, 100, 20));
    let po = NewOrder {
        post_only: true,
        ..limit(2, 1, Side::Buy, 100, 10)
    };
    assert_eq!(
        reject_reason(&place(&mut e, po)),
        Some(RejectReason::PostOnlyWouldTake)
    );
    let evs = place(&mut e, NewOrder { price: 95, ..po });
    assert!(trades(&evs).is_empty());
    assert_eq!(e.best_bid(SYM), Some((95, 10)));
    // A post-only order cannot be replaced into a crossing price either.
    let r = Replace {
        account: 2,
        target: OrderRef::Client(1),
        price: 100,
        qty: 10,
    };
    assert_eq!(
        reject_reason(&run(&mut e, Command::Replace(r))),
        Some(RejectReason::PostOnlyWouldTake)
    );
    assert_eq!(e.best_bid(SYM), Some((95, 10)));
}

#[test]
fn self_trade_prevention_modes() {
    use SelfTradePrevention::*;
    // cancel-newest: the incoming remainder is cancelled, the resting order stays.
    let mut e = engine();
    let r = accepted_id(&place(&mut e, limit(1, 1, Side::Sell, 100, 20)));
    let evs = place(
        &mut e,
        NewOrder {
            stp: CancelNewest,
            ..limit(1, 2, Side::Buy, 100, 10)
        },
    );
    let t = accepted_id(&evs);
    assert!(trades(&evs).is_empty());
    assert_eq!(done(&evs), vec![(t, DoneReason::SelfTradePrevented, 10)]);
    assert_eq!(e.best_ask(SYM), Some((100, 20)));

    // cancel-oldest: the resting own order is cancelled and matching continues.
    let mut e = engine();
    let own = accepted_id(&place(&mut e, limit(1, 1, Side::Sell, 100, 20)));
    let other = accepted_id(&place(&mut e, limit(2, 1, Side::Sell, 100, 20)));
    let evs = place(
        &mut e,
        NewOrder {
            stp: CancelOldest,
            ..limit(1, 2, Side::Buy, 100, 10)
        },
    );
    assert_eq!(done(&evs)[0], (own, DoneReason::SelfTradePrevented, 20));
    assert_eq!(trades(&evs)[0].maker_order_id, other);
    assert_eq!(e.best_ask(SYM), Some((100, 10)));

    // cancel-both.
    let mut e = engine();
    let own = accepted_id(&place(&mut e, limit(1, 1, Side::Sell, 100, 20)));
    let evs = place(
        &mut e,
        NewOrder {
            stp: CancelBoth,
            ..limit(1, 2, Side::Buy, 100, 10)
        },
    );
    let t = accepted_id(&evs);
    assert_eq!(
        done(&evs),
        vec![
            (own, DoneReason::SelfTradePrevented, 20),
            (t, DoneReason::SelfTradePrevented, 10)
        ]
    );
    assert_eq!(e.live_orders(), 0);

    // allow: same account trades with itself.
    let mut e = engine();
    place(&mut e, limit(1, 1, Side::Sell, 100, 20));
    assert_eq!(
        trades(&place(&mut e, limit(1, 2, Side::Buy, 100, 10))).len(),
        1
    );
    let _ = r;
}

#[test]
fn cancel_by_id_and_by_client_id_and_only_by_owner() {
    let mut e = engine();
    let id = accepted_id(&place(&mut e, limit(1, 7, Side::Buy, 100, 20)));
    place(&mut e, limit(1, 8, Side::Buy, 100, 30));
    let c = |account, target| Command::Cancel(Cancel { account, target });
    assert_eq!(
        reject_reason(&run(&mut e, c(2, OrderRef::Id(id)))),
        Some(RejectReason::UnknownOrder)
    );
    let evs = run(&mut e, c(1, OrderRef::Id(id)));
    assert_eq!(done(&evs), vec![(id, DoneReason::Cancelled, 20)]);
    assert_eq!(deltas(&evs), vec![(Side::Buy, 100, 30)]);
    assert_eq!(
        reject_reason(&run(&mut e, c(1, OrderRef::Id(id)))),
        Some(RejectReason::UnknownOrder)
    );
    let evs = run(&mut e, c(1, OrderRef::Client(8)));
    assert_eq!(deltas(&evs), vec![(Side::Buy, 100, 0)]);
    assert_eq!(e.best_bid(SYM), None);
    // The client id is free again once the order is gone.
    assert!(reject_reason(&place(&mut e, limit(1, 7, Side::Buy, 100, 20))).is_none());
}

#[test]
fn replace_size_down_keeps_priority_price_change_or_size_up_loses_it() {
    let mut e = engine();
    let a = accepted_id(&place(&mut e, limit(1, 1, Side::Buy, 100, 50)));
    let b = accepted_id(&place(&mut e, limit(2, 1, Side::Buy, 100, 50)));
    let rep = |account, price, qty| {
        Command::Replace(Replace {
            account,
            target: OrderRef::Client(1),
            price,
            qty,
        })
    };
    let evs = run(&mut e, rep(1, 100, 30));
    assert!(matches!(
        evs[0],
        EventBody::Replaced(Replaced {
            kept_priority: true,
            qty: 30,
            ..
        })
    ));
    assert_eq!(orders(&e, Side::Buy), vec![(a, 100, 30), (b, 100, 50)]);
    let evs = run(&mut e, rep(1, 100, 40));
    assert!(matches!(
        evs[0],
        EventBody::Replaced(Replaced {
            kept_priority: false,
            ..
        })
    ));
    assert_eq!(orders(&e, Side::Buy), vec![(b, 100, 50), (a, 100, 40)]);
    run(&mut e, rep(2, 105, 50));
    assert_eq!(orders(&e, Side::Buy), vec![(b, 105, 50), (a, 100, 40)]);
    // A replace that crosses trades at the maker's price.
    place(&mut e, limit(3, 1, Side::Sell, 110, 20));
    let evs = run(&mut e, rep(1, 115, 40));
    let t = trades(&evs);
    assert_eq!(
        (
            t[0].maker_account,
            t[0].price,
            t[0].qty,
            t[0].taker_order_id
        ),
        (3, 110, 20, a)
    );
    assert_eq!(e.best_bid(SYM), Some((115, 20)));
    assert_eq!(e.order(a).unwrap().leaves, 20);
    // Invalid replace values are rejected and change nothing.
    assert_eq!(
        reject_reason(&run(&mut e, rep(1, 115, 0))),
        Some(RejectReason::ZeroQuantity)
    );
    assert_eq!(
        reject_reason(&run(&mut e, rep(1, 113, 10))),
        Some(RejectReason::PriceOffTick)
    );
    assert_eq!(
        reject_reason(&run(&mut e, rep(9, 115, 10))),
        Some(RejectReason::UnknownOrder)
    );
}

#[test]
fn mass_cancel_by_account_and_symbol() {
    let mut e = engine();
    let a = accepted_id(&place(&mut e, limit(1, 1, Side::Buy, 100, 10)));
    let b = accepted_id(&place(
        &mut e,
        NewOrder {
            symbol: 2,
            ..limit(1, 2, Side::Buy, 100, 10)
        },
    ));
    let c = accepted_id(&place(&mut e, limit(1, 3, Side::Sell, 200, 10)));
    place(&mut e, limit(2, 1, Side::Sell, 300, 10));
    let evs = run(
        &mut e,
        Command::MassCancel(MassCancel {
            account: 1,
            symbol: Some(SYM),
        }),
    );
    assert_eq!(
        done(&evs),
        vec![
            (a, DoneReason::Cancelled, 10),
            (c, DoneReason::Cancelled, 10)
        ]
    );
    assert!(matches!(
        evs.last(),
        Some(EventBody::MassCancelled(MassCancelled { count: 2, .. }))
    ));
    let evs = run(
        &mut e,
        Command::MassCancel(MassCancel {
            account: 1,
            symbol: None,
        }),
    );
    assert_eq!(done(&evs), vec![(b, DoneReason::Cancelled, 10)]);
    assert_eq!(e.live_orders(), 1);
    let evs = run(
        &mut e,
        Command::MassCancel(MassCancel {
            account: 1,
            symbol: Some(42),
        }),
    );
    assert_eq!(reject_reason(&evs), Some(RejectReason::UnknownSymbol));
}

#[test]
fn halt_rejects_new_orders_and_replaces_but_allows_cancels() {
    let mut e = engine();
    place(&mut e, limit(1, 1, Side::Buy, 100, 10));
    let evs = run(&mut e, Command::Halt(SYM));
    assert!(matches!(
        evs[0],
        EventBody::InstrumentStatus(InstrumentStatus { halted: true, .. })
    ));
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 2, Side::Buy, 100, 10))),
        Some(RejectReason::InstrumentHalted)
    );
    let r = Command::Replace(Replace {
        account: 1,
        target: OrderRef::Client(1),
        price: 100,
        qty: 10,
    });
    assert_eq!(
        reject_reason(&run(&mut e, r)),
        Some(RejectReason::InstrumentHalted)
    );
    assert_eq!(
        done(&run(
            &mut e,
            Command::Cancel(Cancel {
                account: 1,
                target: OrderRef::Client(1)
            })
        ))
        .len(),
        1
    );
    run(&mut e, Command::Resume(SYM));
    assert!(reject_reason(&place(&mut e, limit(1, 2, Side::Buy, 100, 10))).is_none());
    assert_eq!(
        reject_reason(&run(&mut e, Command::Halt(77))),
        Some(RejectReason::UnknownSymbol)
    );
}

#[test]
fn capacity_reached_is_a_reject_not_a_panic() {
    let mut e = Engine::new(EngineConfig {
        max_orders: 2,
        max_accounts: 1,
        hash_seed: 0,
        dedupe_window: 0,
        dedupe_accounts: 0,
        max_orders_per_account: 0,
        instruments: vec![spec(SYM)],
    })
    .unwrap();
    place(&mut e, limit(1, 1, Side::Buy, 100, 10));
    assert_eq!(
        reject_reason(&place(&mut e, limit(2, 1, Side::Buy, 100, 10))),
        Some(RejectReason::AccountCapacityReached)
    );
    place(&mut e, limit(1, 2, Side::Buy, 100, 10));
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 3, Side::Buy, 100, 10))),
        Some(RejectReason::OrderCapacityReached)
    );
    // IOC orders need no slot and still trade.
    let evs = place(
        &mut e,
        NewOrder {
            tif: TimeInForce::Ioc,
            ..limit(2, 1, Side::Sell, 100, 10)
        },
    );
    assert_eq!(trades(&evs).len(), 1);
}

#[test]
fn sequence_numbers_are_strictly_increasing_without_gaps() {
    let mut e = engine();
    let mut all = Vec::new();
    for cmd in flow_sample() {
        e.process(&cmd, &mut all);
    }
    assert!(!all.is_empty());
    for (i, ev) in all.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1);
    }
    assert_eq!(e.last_seq(), all.len() as u64);
}

fn flow_sample() -> Vec<Command> {
    let mut v = vec![];
    for i in 0..20u64 {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        v.push(Command::New(limit(
            1 + (i % 3) as u32,
            i,
            side,
            100 + 5 * (i % 4),
            10 * (1 + i % 5),
        )));
    }
    v
}

#[test]
fn invalid_config_is_an_error() {
    let bad = |s: InstrumentSpec| {
        Engine::new(EngineConfig {
            max_orders: 4,
            max_accounts: 4,
            hash_seed: 0,
            dedupe_window: 0,
            dedupe_accounts: 0,
            max_orders_per_account: 0,
            instruments: vec![s],
        })
        .unwrap_err()
    };
    assert!(matches!(
        bad(InstrumentSpec {
            tick_size: 0,
            ..spec(1)
        }),
        ConfigError::InvalidInstrument { .. }
    ));
    assert!(matches!(
        bad(InstrumentSpec {
            min_price: 51,
            ..spec(1)
        }),
        ConfigError::InvalidInstrument { .. }
    ));
    assert!(matches!(
        bad(InstrumentSpec {
            max_price: 5 << 30,
            ..spec(1)
        }),
        ConfigError::InvalidInstrument { .. }
    ));
}

#[test]
fn snapshot_of_fresh_engine_round_trips() {
    let mut e = engine();
    place(
        &mut e,
        NewOrder {
            order_type: OrderType::Market,
            tif: TimeInForce::Ioc,
            price: 0,
            ..limit(1, 1, Side::Buy, 0, 10)
        },
    );
    let s = e.snapshot();
    let r = Engine::restore(&s).unwrap();
    assert_eq!(r.snapshot(), s);
    assert_eq!(r.state_hash(), e.state_hash());
}

fn windowed(window: u32) -> Engine {
    Engine::new(EngineConfig {
        max_orders: 64,
        max_accounts: 8,
        hash_seed: 3,
        dedupe_window: window,
        dedupe_accounts: 4,
        max_orders_per_account: 0,
        instruments: vec![spec(SYM)],
    })
    .unwrap()
}

fn rejected(evs: &[EventBody]) -> Option<Rejected> {
    evs.iter().find_map(|e| match e {
        EventBody::Rejected(r) => Some(*r),
        _ => None,
    })
}

#[test]
fn a_resent_order_that_already_traded_is_a_duplicate_not_a_second_execution() {
    let mut e = windowed(16);
    place(&mut e, limit(1, 7, Side::Sell, 100, 10));
    let first = place(&mut e, limit(2, 42, Side::Buy, 100, 10));
    assert_eq!(trades(&first).len(), 1);
    let original = match first[0] {
        EventBody::Accepted(a) => a.order_id,
        ref other => panic!("expected Accepted, got {other:?}"),
    };
    // The buy is done (filled). A client resending it after a failover must not buy again.
    place(&mut e, limit(1, 8, Side::Sell, 100, 10));
    let again = place(&mut e, limit(2, 42, Side::Buy, 100, 10));
    let r = rejected(&again).expect("a reject");
    assert_eq!(r.reason, RejectReason::DuplicateClientOrderId);
    assert_eq!(r.order_id, original, "the reject names the original order");
    assert!(trades(&again).is_empty());
    // Another account may use the same client order id.
    assert_eq!(
        trades(&place(&mut e, limit(3, 42, Side::Buy, 100, 10))).len(),
        1
    );
}

#[test]
fn the_dedupe_window_forgets_the_oldest_order_and_survives_a_snapshot() {
    let mut e = windowed(2);
    for cl in 1..=3 {
        place(
            &mut e,
            NewOrder {
                tif: TimeInForce::Ioc,
                ..limit(1, cl, Side::Buy, 100, 10)
            },
        );
    }
    // Window of 2: client order id 1 was forgotten, 2 and 3 are remembered.
    assert_eq!(e.recently_accepted(1, 1), None);
    assert!(e.recently_accepted(1, 2).is_some());
    let mut restored = Engine::restore(&e.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), e.state_hash());
    for engine in [&mut e, &mut restored] {
        let ioc = |cl| NewOrder {
            tif: TimeInForce::Ioc,
            ..limit(1, cl, Side::Buy, 100, 10)
        };
        assert_eq!(
            rejected(&place(engine, ioc(3))).map(|r| r.reason),
            Some(RejectReason::DuplicateClientOrderId)
        );
        assert!(
            rejected(&place(engine, ioc(1))).is_none(),
            "1 was forgotten"
        );
    }
    assert_eq!(restored.state_hash(), e.state_hash());
}

#[test]
fn client_order_id_zero_is_rejected() {
    let mut e = engine();
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 0, Side::Buy, 100, 10))),
        Some(RejectReason::ZeroClientOrderId)
    );
    assert_eq!(e.live_orders(), 0);
}

#[test]
fn an_account_holds_capacity_only_while_it_has_live_orders() {
    // 8 account slots: eight throw-away accounts that rest and cancel an order each used to
    // take them for good; now a slot is free again once its account has no live order.
    let mut e = engine();
    for account in 1..=8u32 {
        let id = accepted_id(&place(&mut e, limit(account, 1, Side::Buy, 100, 10)));
        run(
            &mut e,
            Command::Cancel(Cancel {
                account,
                target: OrderRef::Id(id),
            }),
        );
    }
    for account in 100..108u32 {
        place(&mut e, limit(account, 1, Side::Buy, 100, 10));
    }
    assert_eq!(e.live_orders(), 8);
    // Nine accounts with live orders do not fit.
    assert_eq!(
        reject_reason(&place(&mut e, limit(200, 1, Side::Buy, 100, 10))),
        Some(RejectReason::AccountCapacityReached)
    );
    // A filled order frees its account's slot too (the taker is IOC: a GTC order of a ninth
    // account is refused before it could match).
    let mut ioc = limit(300, 1, Side::Sell, 100, 10);
    ioc.tif = TimeInForce::Ioc;
    place(&mut e, ioc);
    assert_eq!(e.live_orders(), 7);
    assert_eq!(
        reject_reason(&place(&mut e, limit(200, 2, Side::Buy, 100, 10))),
        None
    );
    e.check_integrity().unwrap();
    let restored = Engine::restore(&e.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), e.state_hash());
    restored.check_integrity().unwrap();
}

#[test]
fn an_account_may_have_at_most_max_orders_per_account_live_orders() {
    let mut e = Engine::new(EngineConfig {
        max_orders_per_account: 3,
        ..config()
    })
    .unwrap();
    for cl in 1..=3 {
        accepted_id(&place(&mut e, limit(1, cl, Side::Buy, 100, 10)));
    }
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 4, Side::Buy, 100, 10))),
        Some(RejectReason::AccountOrderLimit)
    );
    // Orders that cannot rest are not limited; other accounts are not affected.
    let mut ioc = limit(1, 5, Side::Sell, 200, 10);
    ioc.tif = TimeInForce::Ioc;
    assert_eq!(reject_reason(&place(&mut e, ioc)), None);
    assert_eq!(
        reject_reason(&place(&mut e, limit(2, 1, Side::Buy, 100, 10))),
        None
    );
    // One done: room for one more.
    place(&mut e, limit(9, 1, Side::Sell, 100, 10));
    assert_eq!(
        reject_reason(&place(&mut e, limit(1, 6, Side::Buy, 95, 10))),
        None
    );
    e.check_integrity().unwrap();
}

#[test]
fn a_fill_or_kill_is_exact_over_a_deep_book_and_bounded_with_own_orders_in_the_way() {
    // 1,100 asks of one lot (10) on 1,100 levels (account 1).
    let deep = || {
        let mut e = Engine::new(EngineConfig {
            max_orders: 4096,
            max_accounts: 16,
            ..config()
        })
        .unwrap();
        for i in 0..1100u64 {
            accepted_id(&place(
                &mut e,
                limit(1, i + 1, Side::Sell, 1000 + 5 * i, 10),
            ));
        }
        e
    };
    let fok = |cl, price, qty, stp| {
        let mut o = limit(2, cl, Side::Buy, price, qty);
        o.tif = TimeInForce::Fok;
        o.stp = stp;
        o
    };
    // Without self-trade prevention, or without own orders, the check is exact however deep:
    // one lot more than the book holds is refused, all of it fills.
    for stp in [
        SelfTradePrevention::Allow,
        SelfTradePrevention::CancelNewest,
    ] {
        let mut e = deep();
        assert_eq!(
            reject_reason(&place(&mut e, fok(1, 10_000, 11_010, stp))),
            Some(RejectReason::FokNotFillable)
        );
        // The limit is honoured: up to price 1000 + 5 × 799 there are 800 levels.
        assert_eq!(
            reject_reason(&place(&mut e, fok(2, 1000 + 5 * 799, 8_010, stp))),
            Some(RejectReason::FokNotFillable)
        );
        assert_eq!(
            trades(&place(&mut e, fok(3, 1000 + 5 * 799, 8_000, stp))).len(),
            800
        );
        assert_eq!(
            trades(&place(&mut e, fok(4, 10_000, 3_000, stp))).len(),
            300
        );
        e.check_integrity().unwrap();
    }
    // With self-trade prevention on and an own resting order on the side, the makers are
    // walked (the own order would stop the match), at most 1,024 of them.
    let mut e = deep();
    accepted_id(&place(&mut e, limit(2, 99, Side::Sell, 9_000, 10)));
    assert_eq!(
        reject_reason(&place(
            &mut e,
            fok(1, 10_000, 10_500, SelfTradePrevention::CancelNewest)
        )),
        Some(RejectReason::FokNotFillable),
        "1,050 makers: beyond the walk's bound"
    );
    assert_eq!(
        trades(&place(
            &mut e,
            fok(2, 10_000, 10_000, SelfTradePrevention::CancelNewest)
        ))
        .len(),
        1000
    );
    // Reaching an own order stops it, as matching would: 100 makers are left (levels
    // 1,000..1,099); an own order behind the maker at level 1,050 stops a FOK needing 60.
    accepted_id(&place(
        &mut e,
        limit(2, 98, Side::Sell, 1000 + 5 * 1050, 10),
    ));
    assert_eq!(
        reject_reason(&place(
            &mut e,
            fok(3, 10_000, 600, SelfTradePrevention::CancelNewest)
        )),
        Some(RejectReason::FokNotFillable)
    );
    assert_eq!(
        trades(&place(
            &mut e,
            fok(4, 10_000, 600, SelfTradePrevention::Allow)
        ))
        .len(),
        60
    );
    e.check_integrity().unwrap();
}

#[test]
fn level_totals_cannot_overflow() {
    let mut s = spec(SYM);
    s.max_qty = u64::MAX / 8;
    let err = Engine::new(EngineConfig {
        max_orders: 64,
        instruments: vec![s],
        ..config()
    })
    .unwrap_err();
    assert!(err.to_string().contains("64 bits"), "{err}");
}

#[test]
fn another_accounts_flood_of_ioc_orders_does_not_push_an_order_out_of_the_dedupe_window() {
    // Windows of 16 orders per account, for 4 accounts. The old global window of 64 orders
    // forgot account 1's order after 64 orders of anyone.
    let mut e = Engine::new(EngineConfig {
        max_orders: 64,
        max_accounts: 8,
        hash_seed: 3,
        dedupe_window: 16,
        dedupe_accounts: 4,
        max_orders_per_account: 0,
        instruments: vec![spec(SYM)],
    })
    .unwrap();
    let ioc = |account, cl| NewOrder {
        tif: TimeInForce::Ioc,
        ..limit(account, cl, Side::Buy, 100, 10)
    };
    let original = match place(&mut e, ioc(1, 7))[0] {
        EventBody::Accepted(a) => a.order_id,
        ref other => panic!("expected Accepted, got {other:?}"),
    };
    // Account 2 floods: 100,000 IOC orders, each accepted (and expired).
    for cl in 1..=100_000 {
        place(&mut e, ioc(2, cl));
    }
    // Account 1's resend is still a duplicate, naming the original.
    let r = rejected(&place(&mut e, ioc(1, 7))).expect("a reject");
    assert_eq!(r.reason, RejectReason::DuplicateClientOrderId);
    assert_eq!(r.order_id, original);
    // Account 2's own window holds its last 16.
    assert!(e.recently_accepted(2, 100_000 - 15).is_some());
    assert_eq!(e.recently_accepted(2, 100_000 - 16), None);
    // Windows are forgotten whole, least recently active account first: accounts 3 and 4
    // take the two free windows; account 5 takes account 1's.
    for account in 3..=4 {
        place(&mut e, ioc(account, 1));
    }
    assert!(
        e.recently_accepted(1, 7).is_some(),
        "free windows left: still kept"
    );
    place(&mut e, ioc(5, 1));
    assert_eq!(
        e.recently_accepted(1, 7),
        None,
        "the least recently active: forgotten"
    );
    assert!(e.recently_accepted(2, 100_000).is_some());
    let restored = Engine::restore(&e.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), e.snapshot());
    assert_eq!(restored.state_hash(), e.state_hash());
}
