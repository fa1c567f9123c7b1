//! `QueryOrders` against the real binary: the live orders of the session's account as of an
//! `engine_seq`, answered by the engine thread off the journal's path, each row after every
//! report it reflects — so a client that lost its state rebuilds it without reading history.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{RejectReason, RequestKind, Side, TimeInForce};
use caldera_client::{engine_seq, OrderClient, ServerReport};
use caldera_testkit::harness::{drain, Keys, Node};
use std::collections::BTreeMap;
use std::time::Duration;

fn ask(c: &mut OrderClient, request_id: u64) -> Vec<ServerReport> {
    c.push(requests::query_orders(request_id));
    c.flush().unwrap();
    let mut out = Vec::new();
    drain(c, &mut out, Duration::from_millis(300));
    out
}

#[test]
fn a_session_gets_its_accounts_live_orders_as_of_a_sequence() {
    let keys = Keys::create("order-status");
    let risk = keys.add("risk", "read", &["71"]);
    let node = Node::start_with_keys("order-status", "", keys);
    let ctx = zmq::Context::new();
    let mut maker = node.client(&ctx);
    maker.push(requests::logon(71));
    for i in 0..20 {
        maker.push(limit(1 + i, 1, Side::Sell, TimeInForce::Gtc, 1000 + i, 10));
    }
    maker.push(requests::cancel_client(5));
    maker.flush().unwrap();
    let mut seen = Vec::new();
    drain(&mut maker, &mut seen, Duration::from_millis(300));
    // A taker fills orders 1 and 2 and half of 3.
    let mut taker = node.client(&ctx);
    taker.push(requests::logon(72));
    taker.push(limit(1, 1, Side::Buy, TimeInForce::Ioc, 1002, 25));
    taker.flush().unwrap();
    drain(&mut taker, &mut Vec::new(), Duration::from_millis(300));
    drain(&mut maker, &mut seen, Duration::from_millis(300));

    // The maker lost its state: it asks, from a new session.
    drop(maker);
    let mut again = node.client(&ctx);
    again.push(requests::logon(71));
    again.flush().unwrap();
    drain(&mut again, &mut Vec::new(), Duration::from_millis(200));
    let rows: Vec<_> = ask(&mut again, 9)
        .into_iter()
        .map(|r| match r {
            ServerReport::OpenOrder(o) => o,
            other => panic!("{other:?}"),
        })
        .collect();
    // 20 placed, 1 cancelled, 2 filled: 17 live; order 3 has 5 of 10 left.
    assert_eq!(rows.len(), 17);
    let last = seen.iter().filter_map(engine_seq).max().unwrap();
    let live: BTreeMap<u64, u64> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r.request_id(), 9);
            assert_eq!((r.index(), r.count()), (i as u32, 17));
            assert!(r.as_of_seq() >= last, "as of the last event");
            assert_eq!(r.symbol(), 1);
            assert_eq!(r.side(), caldera_client::wire::Side::Sell);
            assert_eq!(r.price(), 999 + r.client_order_id());
            (r.client_order_id(), r.open_qty())
        })
        .collect();
    let want: BTreeMap<u64, u64> = (3..=20)
        .filter(|&cl| cl != 5)
        .map(|cl| (cl, if cl == 3 { 5 } else { 10 }))
        .collect();
    assert_eq!(live, want);

    // An account with no live order: one row, count 0.
    let mut empty = node.client(&ctx);
    empty.push(requests::logon(73));
    empty.flush().unwrap();
    drain(&mut empty, &mut Vec::new(), Duration::from_millis(200));
    match ask(&mut empty, 4).as_slice() {
        [ServerReport::OpenOrder(o)] => {
            assert_eq!((o.request_id(), o.count(), o.order_id()), (4, 0, 0));
            assert!(o.as_of_seq() >= last);
        }
        other => panic!("{other:?}"),
    }
    // Before a logon, and for a read key: typed rejects.
    let mut anon = node.client(&ctx);
    match ask(&mut anon, 1).as_slice() {
        [ServerReport::Rejected(r)] => {
            assert_eq!(r.reason(), RejectReason::NotLoggedOn);
            assert_eq!(r.request(), RequestKind::QueryOrders);
        }
        other => panic!("{other:?}"),
    }
    let mut reader = OrderClient::connect(&ctx, &node.order_entry, &risk).unwrap();
    assert!(matches!(ask(&mut reader, 1).as_slice(),
        [ServerReport::Rejected(r)] if r.reason() == RejectReason::NotEntitled));
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(
        summary["engine_allocations"], 0,
        "queries allocate nothing on the engine thread"
    );
}
