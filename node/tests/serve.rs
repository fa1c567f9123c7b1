//! The real `caldera` binary over real ZeroMQ TCP sockets on 127.0.0.1.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{self, Side, TimeInForce};
use caldera_client::{
    ClientCredentials, ClientRequest, MarketDataClient, OrderClient, ServerReport,
};
use caldera_engine::Engine;
use caldera_testkit::harness::{drain, Node};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Per client: what each of its orders went through.
#[derive(Default, Debug)]
struct OrderLog {
    accepted: HashMap<u64, u64>, // client order id -> order id
    rejected: HashMap<u64, wire::RejectReason>,
    done: HashSet<u64>, // order ids
    filled_qty: HashMap<u64, u64>,
}

fn account_of(cl: u64) -> u64 {
    cl / 1_000_000
}

#[test]
fn clients_trade_with_each_other_and_each_gets_exactly_its_own_reports_in_order() {
    let node = Node::start("trade", "");
    let ctx = zmq::Context::new();
    let mut md =
        MarketDataClient::connect(&ctx, &node.market_data, &ClientCredentials::Insecure, &[])
            .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // PUB/SUB slow joiner
    let accounts = [1u32, 2, 3, 4];
    let mut clients: Vec<OrderClient> = accounts.iter().map(|_| node.client(&ctx)).collect();
    let mut logs: Vec<OrderLog> = accounts.iter().map(|_| OrderLog::default()).collect();
    let mut reports: Vec<Vec<ServerReport>> = vec![Vec::new(); accounts.len()];
    for (c, a) in clients.iter_mut().zip(accounts) {
        c.push(requests::logon(a));
        c.flush().unwrap();
    }
    // Pipelined, interleaved flow: every client sends batches of crossing limit orders on two
    // symbols; client order ids encode the account so ownership can be checked.
    let mut x: u64 = 12345;
    let mut sent = vec![0u64; accounts.len()];
    for round in 0..60 {
        for (i, c) in clients.iter_mut().enumerate() {
            for _ in 0..20 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                sent[i] += 1;
                let cl = u64::from(accounts[i]) * 1_000_000 + sent[i];
                let side = if (x >> 40) & 1 == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let symbol = 1 + ((x >> 41) & 1) as u32;
                let price = 1000 + (x >> 42) % 11 - 5 + if side == Side::Buy { 0 } else { 1 };
                let tif = if (x >> 50) % 10 == 0 {
                    TimeInForce::Ioc
                } else {
                    TimeInForce::Gtc
                };
                c.push(limit(cl, symbol, side, tif, price, 1 + (x >> 52) % 50));
            }
            if round % 7 == 3 {
                c.push(requests::cancel_client(
                    u64::from(accounts[i]) * 1_000_000 + sent[i] - 3,
                ));
            }
            c.flush().unwrap();
            let _ = c.try_recv(&mut reports[i]).unwrap();
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        drain(c, &mut reports[i], Duration::from_millis(500));
    }
    md.pump(Duration::from_millis(500)).unwrap();
    let (code, summary, snap) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(
        summary["engine_allocations"], 0,
        "engine thread allocated while serving"
    );
    let engine = Engine::restore(&std::fs::read(snap).unwrap()).unwrap();

    // Each client received only reports about its own orders, in a coherent order.
    let mut fills_by_trade: HashMap<u64, Vec<(u64, u64, u64, wire::Liquidity)>> = HashMap::new();
    for (i, reps) in reports.iter().enumerate() {
        let me = u64::from(accounts[i]);
        let log = &mut logs[i];
        let mut open: HashMap<u64, u64> = HashMap::new(); // order id -> open qty
        assert!(matches!(reps[0], ServerReport::LoggedOn(_)));
        for r in &reps[1..] {
            match r {
                ServerReport::Accepted(a) => {
                    assert_eq!(account_of(a.client_order_id()), me, "foreign Accepted");
                    assert!(log
                        .accepted
                        .insert(a.client_order_id(), a.order_id())
                        .is_none());
                    open.insert(a.order_id(), a.qty());
                }
                ServerReport::Rejected(r) => {
                    assert_eq!(account_of(r.client_order_id()), me, "foreign Rejected");
                    if r.request() == wire::RequestKind::New {
                        assert!(log
                            .rejected
                            .insert(r.client_order_id(), r.reason())
                            .is_none());
                    }
                }
                ServerReport::Fill(f) => {
                    assert_eq!(account_of(f.client_order_id()), me, "foreign Fill");
                    let o = open
                        .get_mut(&f.order_id())
                        .expect("fill before accept or after done");
                    *o -= f.qty();
                    assert_eq!(*o, f.leaves());
                    *log.filled_qty.entry(f.order_id()).or_default() += f.qty();
                    fills_by_trade.entry(f.trade_id()).or_default().push((
                        f.price(),
                        f.qty(),
                        f.engine_seq(),
                        f.liquidity(),
                    ));
                }
                ServerReport::Done(d) => {
                    assert_eq!(account_of(d.client_order_id()), me, "foreign Done");
                    assert_eq!(open.remove(&d.order_id()), Some(d.leaves()), "Done leaves");
                    log.done.insert(d.order_id());
                }
                other => panic!("unexpected report {other:?}"),
            }
        }
        // Every order got exactly one answer; every accepted order is done or resting now.
        for n in 1..=sent[i] {
            let cl = me * 1_000_000 + n;
            assert!(
                log.accepted.contains_key(&cl) ^ log.rejected.contains_key(&cl),
                "order {cl} answered once"
            );
        }
        for (oid, left) in &open {
            let v = engine
                .order(*oid)
                .unwrap_or_else(|| panic!("order {oid} neither done nor resting"));
            assert_eq!(v.leaves, *left);
            assert_eq!(u64::from(v.account), me);
        }
    }
    // Every trade reached both sides (all participants are our clients), same price and qty.
    assert!(
        fills_by_trade.len() > 100,
        "the flow traded: {}",
        fills_by_trade.len()
    );
    for (tid, fills) in &fills_by_trade {
        assert_eq!(fills.len(), 2, "trade {tid}");
        assert_eq!(
            (fills[0].0, fills[0].1, fills[0].2),
            (fills[1].0, fills[1].1, fills[1].2)
        );
        assert_ne!(fills[0].3, fills[1].3);
    }
    // The market-data subscriber's L2, rebuilt from deltas alone, equals the engine's book.
    assert_eq!(md.gaps, 0);
    for symbol in [1u32, 2] {
        let mut bids = BTreeMap::new();
        let mut asks = BTreeMap::new();
        engine.for_each_level(symbol, caldera_engine::Side::Buy, |p, q| {
            bids.insert(p, q);
        });
        engine.for_each_level(symbol, caldera_engine::Side::Sell, |p, q| {
            asks.insert(p, q);
        });
        let book = &md.books[&symbol];
        assert_eq!(book.bids, bids, "symbol {symbol} bids");
        assert_eq!(book.asks, asks, "symbol {symbol} asks");
        assert!(!bids.is_empty() && !asks.is_empty());
    }
    assert_eq!(md.trades.len(), fills_by_trade.len());
}

fn reject_of(r: &ServerReport) -> Option<(wire::RejectReason, wire::RequestKind, u32)> {
    if let ServerReport::Rejected(x) = r {
        Some((x.reason(), x.request(), x.request_index()))
    } else {
        None
    }
}

#[test]
fn malformed_frames_get_typed_rejects_and_the_process_stays_up() {
    // max_message_bytes above max_frame_bytes, so an oversized frame reaches the gateway and
    // gets FrameTooLarge (by default libzmq drops the connection first: limits.rs).
    let node = Node::start(
        "malformed",
        "max_frame_bytes = 4096\nmax_message_bytes = 16384\nmax_batch = 64\n",
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let expect = |c: &mut OrderClient, what: &str, check: &dyn Fn(&[ServerReport]) -> bool| {
        let mut got = Vec::new();
        c.recv(&mut got, Duration::from_secs(5)).unwrap();
        assert!(check(&got), "{what}: got {got:?}");
    };
    let good = |n: u64| limit(n, 1, Side::Buy, TimeInForce::Gtc, 500, 1);

    // Before logon: order entry is refused, heartbeat works.
    c.push(good(1));
    c.flush().unwrap();
    expect(&mut c, "not logged on", &|r| {
        reject_of(&r[0]).map(|x| x.0) == Some(wire::RejectReason::NotLoggedOn)
    });
    c.push(requests::logon(9));
    c.flush().unwrap();
    expect(&mut c, "logon", &|r| {
        matches!(r[0], ServerReport::LoggedOn(_))
    });

    let frames: Vec<(&str, Vec<u8>, wire::RejectReason)> = vec![
        (
            "garbage",
            b"\xde\xad\xbe\xef garbage".to_vec(),
            wire::RejectReason::MalformedMessage,
        ),
        ("empty", Vec::new(), wire::RejectReason::MalformedMessage),
        (
            "oversized",
            vec![0u8; 5000],
            wire::RejectReason::FrameTooLarge,
        ),
        (
            "truncated",
            {
                let mut f = flatbuffers::FlatBufferBuilder::new();
                let b = caldera_schema::codec::encode_client_batch(&mut f, &[good(2), good(3)])
                    .to_vec();
                b[..b.len() - 9].to_vec()
            },
            wire::RejectReason::MalformedMessage,
        ),
        (
            "batch too large",
            {
                let mut f = flatbuffers::FlatBufferBuilder::new();
                let reqs: Vec<ClientRequest> = (0..65).map(|i| good(100 + i)).collect();
                caldera_schema::codec::encode_client_batch(&mut f, &reqs).to_vec()
            },
            wire::RejectReason::BatchTooLarge,
        ),
    ];
    for (i, (what, bytes, reason)) in frames.into_iter().enumerate() {
        c.send_raw(&bytes).unwrap();
        expect(&mut c, what, &|r| {
            reject_of(&r[0]).map(|x| (x.0, x.1)) == Some((reason, wire::RequestKind::Frame))
        });
        // A well-formed order right after each bad frame is answered.
        c.push(good(10 + i as u64));
        c.flush().unwrap();
        expect(&mut c, "good after bad", &|r| {
            matches!(r[0], ServerReport::Accepted(_))
        });
    }

    // One frame mixing good and bad requests: each gets its own answer, in order.
    let mut f = flatbuffers::FlatBufferBuilder::new();
    let mut reqs = Vec::new();
    let nothing = wire::Request::create(&mut f, &wire::RequestArgs::default());
    let hb = wire::Heartbeat::new(5);
    let lo = wire::Logon::new(9);
    let both = wire::Request::create(
        &mut f,
        &wire::RequestArgs {
            heartbeat: Some(&hb),
            logon: Some(&lo),
            ..Default::default()
        },
    );
    let bad_side = wire::NewOrder::new(
        31,
        500,
        1,
        1,
        wire::Side(9),
        wire::OrderType::Limit,
        wire::TimeInForce::Gtc,
        wire::SelfTradePrevention::Allow,
        false,
    );
    let bad_enum = wire::Request::create(
        &mut f,
        &wire::RequestArgs {
            new_order: Some(&bad_side),
            ..Default::default()
        },
    );
    let unknown_symbol = wire::NewOrder::new(
        32,
        500,
        1,
        999,
        wire::Side::Buy,
        wire::OrderType::Limit,
        wire::TimeInForce::Gtc,
        wire::SelfTradePrevention::Allow,
        false,
    );
    let us = wire::Request::create(
        &mut f,
        &wire::RequestArgs {
            new_order: Some(&unknown_symbol),
            ..Default::default()
        },
    );
    let ok = wire::NewOrder::new(
        33,
        500,
        1,
        1,
        wire::Side::Buy,
        wire::OrderType::Limit,
        wire::TimeInForce::Gtc,
        wire::SelfTradePrevention::Allow,
        false,
    );
    let okr = wire::Request::create(
        &mut f,
        &wire::RequestArgs {
            new_order: Some(&ok),
            ..Default::default()
        },
    );
    let zero = wire::NewOrder::new(
        34,
        0,
        1,
        1,
        wire::Side::Buy,
        wire::OrderType::Limit,
        wire::TimeInForce::Gtc,
        wire::SelfTradePrevention::Allow,
        false,
    );
    let zr = wire::Request::create(
        &mut f,
        &wire::RequestArgs {
            new_order: Some(&zero),
            ..Default::default()
        },
    );
    reqs.extend([nothing, okr, both, bad_enum, us, zr]);
    let v = f.create_vector(&reqs);
    let root = wire::ClientBatch::create(&mut f, &wire::ClientBatchArgs { requests: Some(v) });
    f.finish(root, None);
    c.send_raw(f.finished_data()).unwrap();
    let mut out = Vec::new();
    while out.len() < 6 {
        assert!(
            c.recv(&mut out, Duration::from_secs(5)).unwrap() > 0,
            "mixed frame answers: {out:?}"
        );
    }
    // Gateway rejects come back with the frame's flush; engine answers after the ring trip.
    let gw: Vec<_> = out
        .iter()
        .filter_map(reject_of)
        .filter(|x| x.1 == wire::RequestKind::Frame || x.0 .0 >= 100)
        .collect();
    assert!(
        gw.contains(&(
            wire::RejectReason::UnknownMessageType,
            wire::RequestKind::Frame,
            0
        )),
        "{gw:?}"
    );
    assert!(
        gw.contains(&(
            wire::RejectReason::AmbiguousRequest,
            wire::RequestKind::Frame,
            2
        )),
        "{gw:?}"
    );
    assert!(
        gw.contains(&(
            wire::RejectReason::InvalidEnumValue,
            wire::RequestKind::New,
            3
        )),
        "{gw:?}"
    );
    let engine_rejects: Vec<_> = out
        .iter()
        .filter_map(|r| {
            if let ServerReport::Rejected(x) = r {
                (x.engine_seq() > 0).then(|| (x.client_order_id(), x.reason()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        engine_rejects,
        vec![
            (32, wire::RejectReason::UnknownSymbol),
            (34, wire::RejectReason::ZeroPrice)
        ]
    );
    assert!(out
        .iter()
        .any(|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 33)));

    // A multipart message is refused as a whole.
    c.socket()
        .send_multipart([b"a".as_slice(), b"b".as_slice()], 0)
        .unwrap();
    expect(&mut c, "multipart", &|r| {
        reject_of(&r[0]).map(|x| x.0) == Some(wire::RejectReason::UnexpectedFrames)
    });

    // Still up and answering.
    c.push(requests::heartbeat(77));
    c.flush().unwrap();
    expect(
        &mut c,
        "heartbeat",
        &|r| matches!(r[0], ServerReport::HeartbeatAck(h) if h.client_time_ns() == 77),
    );
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert!(summary["gateway_rejects"].as_u64().unwrap() >= 9);
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_order_and_exits_zero() {
    let node = Node::start("sigterm", "");
    let ctx = zmq::Context::new();
    let n_clients = 3;
    let mut clients: Vec<OrderClient> = (0..n_clients).map(|_| node.client(&ctx)).collect();
    let mut reports: Vec<Vec<ServerReport>> = vec![Vec::new(); n_clients];
    for (i, c) in clients.iter_mut().enumerate() {
        c.push(requests::logon(i as u32 + 1));
        c.flush().unwrap();
    }
    let mut next = vec![0u64; n_clients];
    let mut signalled = false;
    for round in 0..400 {
        for (i, c) in clients.iter_mut().enumerate() {
            for _ in 0..50 {
                next[i] += 1;
                let side = if next[i] % 2 == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let price = 1000 + (next[i] * 7 + i as u64) % 9;
                c.push(limit(
                    (i as u64 + 1) * 1_000_000 + next[i],
                    1 + (next[i] % 3) as u32,
                    side,
                    TimeInForce::Gtc,
                    price,
                    1 + next[i] % 20,
                ));
            }
            if !c.try_flush().unwrap() {
                break;
            }
            while c.try_recv(&mut reports[i]).unwrap() > 0 {}
        }
        if round == 200 {
            // Under load for real: every client has had orders accepted (on a busy machine the
            // first 200 rounds can all be queued before the connections are even up).
            let deadline = Instant::now() + Duration::from_secs(20);
            for (i, c) in clients.iter_mut().enumerate() {
                while !reports[i]
                    .iter()
                    .any(|r| matches!(r, ServerReport::Accepted(_)))
                {
                    assert!(
                        Instant::now() < deadline,
                        "no order accepted before SIGTERM"
                    );
                    c.recv(&mut reports[i], Duration::from_millis(50)).unwrap();
                }
            }
            node.signal(rustix::process::Signal::TERM);
            signalled = true;
        }
    }
    assert!(signalled);
    for (i, c) in clients.iter_mut().enumerate() {
        drain(c, &mut reports[i], Duration::from_millis(1500));
    }
    let (code, summary, snap) = node.stop_after_signal();
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert_eq!(summary["engine_allocations"], 0);
    let engine = Engine::restore(&std::fs::read(snap).unwrap()).unwrap();
    // Every command the engine processed was answered to its client, and every acknowledged
    // order is accounted for: done (reported) or resting in the final state.
    let mut answered = 0u64;
    for reps in &reports {
        let mut open: HashMap<u64, u64> = HashMap::new();
        for r in reps {
            match r {
                ServerReport::Accepted(a) => {
                    answered += 1;
                    open.insert(a.order_id(), a.qty());
                }
                ServerReport::Rejected(r) if r.engine_seq() > 0 => answered += 1,
                ServerReport::Fill(f) => *open.get_mut(&f.order_id()).unwrap() -= f.qty(),
                ServerReport::Done(d) => assert_eq!(open.remove(&d.order_id()), Some(d.leaves())),
                _ => {}
            }
        }
        for (oid, left) in open {
            assert_eq!(
                engine.order(oid).map(|o| o.leaves),
                Some(left),
                "acknowledged order {oid} lost"
            );
        }
    }
    assert_eq!(
        answered,
        summary["commands"].as_u64().unwrap(),
        "every processed command answered"
    );
    assert!(answered > 1000, "load was real: {answered}");
    assert_eq!(
        u64::from(engine.live_orders()),
        summary["live_orders"].as_u64().unwrap()
    );
}
