//! Back-pressure from a client that stops reading its reports (real binary, real TCP): its
//! report frames queue in its session backlog (never dropped); once the backlog is full its new
//! requests get a typed `Busy` reject; every request is still answered exactly once, in order,
//! and other clients are served throughout.

use caldera_client::{requests, wire, ServerReport};
use caldera_schema::codec;
use caldera_testkit::harness::Node;
use flatbuffers::FlatBufferBuilder;
use std::time::{Duration, Instant};

#[test]
fn a_client_that_stops_reading_gets_busy_rejects_and_loses_nothing() {
    // A tiny backlog and high-water mark so a few thousand reports fill them; no rate limit,
    // per-account limit or byte bound on the backlog, which would answer first (limits.rs
    // tests those).
    let node = Node::start(
        "backpressure",
        "max_session_backlog = 4\nsndhwm = 8\nsession_rate = 0\nmax_session_backlog_bytes = 268435456\n[engine]\nmax_orders_per_account = 0\n[journal]\nuri = \"none\"\n",
    );
    let ctx = zmq::Context::new();
    let slow = ctx.socket(zmq::DEALER).unwrap();
    slow.set_rcvhwm(1).unwrap();
    slow.set_rcvbuf(4096).unwrap();
    slow.set_sndhwm(100_000).unwrap();
    node.keys.trader().apply(&slow).unwrap();
    slow.connect(&node.order_entry).unwrap();
    let mut fbb = FlatBufferBuilder::new();
    let mut send = |reqs: &[caldera_client::ClientRequest]| {
        slow.send(codec::encode_client_batch(&mut fbb, reqs), 0)
            .unwrap();
    };
    send(&[requests::logon(9)]);
    // 300,000 resting orders (~20 MB of reports: more than the kernel's socket buffers hold),
    // 200 per frame, without reading a single report.
    let total = 300_000u64;
    for f in 0..total / 200 {
        let reqs: Vec<_> = (0..200)
            .map(|i| {
                let cl = f * 200 + i + 1;
                requests::limit(
                    cl,
                    1,
                    wire::Side::Buy,
                    wire::TimeInForce::Gtc,
                    1000 + cl % 50,
                    1,
                )
            })
            .collect();
        send(&reqs);
    }
    // Meanwhile another client is served normally.
    let mut other = node.client(&ctx);
    std::thread::sleep(Duration::from_millis(500));
    other.push(requests::logon(10));
    other.push(requests::limit(
        1,
        1,
        wire::Side::Sell,
        wire::TimeInForce::Gtc,
        5000,
        1,
    ));
    other.flush().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.iter().any(|r| matches!(r, ServerReport::Accepted(_))) {
        assert!(Instant::now() < deadline, "the other client was not served");
        other.recv(&mut out, Duration::from_millis(100)).unwrap();
    }

    // Now read everything the slow client was sent.
    let mut reports = Vec::new();
    let mut msg = zmq::Message::new();
    let mut next_seq = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = |r: &[ServerReport]| {
        r.iter()
            .filter(|r| matches!(r, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
            .count() as u64
    };
    while answered(&reports) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} answered",
            answered(&reports)
        );
        if slow.poll(zmq::POLLIN, 200).unwrap() == 0 {
            continue;
        }
        slow.recv(&mut msg, 0).unwrap();
        let (first, _) = codec::decode_report_batch(&msg, &mut reports).unwrap();
        assert_eq!(
            first, next_seq,
            "session sequence gap: a report frame was dropped"
        );
        next_seq = reports.len() as u64 + 1;
    }
    let mut busy = 0u64;
    let mut accepted = 0u64;
    let mut answered_ids = std::collections::HashSet::new();
    for r in &reports {
        match r {
            ServerReport::Accepted(a) => {
                accepted += 1;
                assert!(answered_ids.insert(a.client_order_id()));
            }
            ServerReport::Rejected(x) => {
                assert_eq!(x.reason(), wire::RejectReason::Busy, "{x:?}");
                busy += 1;
                assert!(answered_ids.insert(x.client_order_id()));
            }
            _ => {}
        }
    }
    assert_eq!(
        accepted + busy,
        total,
        "every request answered exactly once"
    );
    eprintln!("accepted {accepted}, busy {busy}");
    assert!(busy > 0, "the full backlog turned into Busy rejects");
    assert!(accepted > 0);
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["gateway_rejects"].as_u64(), Some(busy));
    assert_eq!(summary["undeliverable"].as_u64(), Some(0));
}
