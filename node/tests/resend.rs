//! Resend on logon (`LogonWith{RESEND}`) against the real `caldera` binary: a session that was away
//! while its resting orders filled gets exactly the reports it missed, marked resent, then the
//! live ones — no gap, no duplicate across the switch; a resend from before retention gets a
//! typed reject naming the oldest sequence kept.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{self, RejectReason, Side, TimeInForce};
use caldera_client::{engine_seq, OrderClient, ServerReport};
use caldera_testkit::harness::{drain, Broker, Keys, Node};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A report as a session saw it: the report, and whether its frame was marked resent.
type Seen = (ServerReport, bool);

fn recv_all(c: &mut OrderClient, out: &mut Vec<Seen>, quiet: Duration) {
    let mut buf = Vec::new();
    while c.recv(&mut buf, quiet).unwrap() > 0 {
        let resent = c.last_frame_resent();
        out.extend(buf.drain(..).map(|r| (r, resent)));
    }
}

fn max_seq<'a>(reports: impl IntoIterator<Item = &'a ServerReport>) -> u64 {
    reports
        .into_iter()
        .filter_map(engine_seq)
        .max()
        .unwrap_or(0)
}

/// Trade ids of the fills among `reports`.
fn trades<'a>(reports: impl IntoIterator<Item = &'a ServerReport>) -> BTreeSet<u64> {
    reports
        .into_iter()
        .filter_map(|r| match r {
            ServerReport::Fill(f) => Some(f.trade_id()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_away_while_its_orders_filled_gets_exactly_the_missed_reports_then_live_ones() {
    away_then_resumed(Node::start("resend", ""));
}

#[test]
fn the_same_from_the_kafka_journal() {
    let broker = Broker::start("caldera.resend");
    let uri = broker.uri("caldera.resend");
    away_then_resumed(Node::start_kafka(
        "resend-kafka",
        &format!("[journal]\nuri = \"{uri}\"\n"),
    ));
}

/// A maker rests orders, goes away, a taker fills some; the maker comes back with
/// `LogonWith{RESEND}` while the taker keeps filling: the maker gets every fill once, in order, the
/// missed ones in frames marked resent before `ResendComplete`, the rest live after it.
fn away_then_resumed(node: Node) {
    let ctx = zmq::Context::new();
    let (maker_account, taker_account) = (11, 12);
    // The maker rests 300 sells of 10 at 1000..; it sees their acceptance.
    let mut maker = node.client(&ctx);
    maker.push(requests::logon(maker_account));
    for i in 0..300 {
        maker.push(limit(
            1 + i,
            1,
            Side::Sell,
            TimeInForce::Gtc,
            1000 + i % 5,
            10,
        ));
    }
    maker.flush().unwrap();
    let mut first = Vec::new();
    drain(&mut maker, &mut first, Duration::from_millis(500));
    let accepted = first
        .iter()
        .filter(|r| matches!(r, ServerReport::Accepted(_)))
        .count();
    assert_eq!(accepted, 300, "{first:?}");
    let resume_after = max_seq(&first);
    drop(maker); // the connection closes: the gateway ends its session

    // While it is away, a taker fills 100 of them.
    let mut taker = node.client(&ctx);
    let mut taker_reports = Vec::new();
    taker.push(requests::logon(taker_account));
    for i in 0..100 {
        taker.push(limit(1 + i, 1, Side::Buy, TimeInForce::Ioc, 1010, 10));
    }
    taker.flush().unwrap();
    drain(&mut taker, &mut taker_reports, Duration::from_millis(500));
    let missed = trades(&taker_reports);
    assert_eq!(missed.len(), 100);

    // It comes back with a resend logon while the taker keeps filling its orders: the resend and
    // the live reports race.
    let mut maker = node.client(&ctx);
    maker.push(requests::logon_resume(maker_account, resume_after));
    maker.flush().unwrap();
    let mut seen: Vec<Seen> = Vec::new();
    for i in 100..200 {
        taker.push(limit(1 + i, 1, Side::Buy, TimeInForce::Ioc, 1010, 10));
        if i % 10 == 0 {
            taker.flush().unwrap();
            let _ = taker.try_recv(&mut taker_reports).unwrap();
            recv_all(&mut maker, &mut seen, Duration::from_millis(1));
        }
    }
    taker.flush().unwrap();
    drain(&mut taker, &mut taker_reports, Duration::from_millis(500));
    recv_all(&mut maker, &mut seen, Duration::from_millis(500));

    assert!(
        matches!(seen[0].0, ServerReport::LoggedOn(_)),
        "{:?}",
        seen[0]
    );
    let complete = seen
        .iter()
        .position(|(r, _)| matches!(r, ServerReport::ResendComplete(_)))
        .expect("ResendComplete");
    let ServerReport::ResendComplete(rc) = seen[complete].0 else {
        unreachable!()
    };
    assert_eq!(rc.account(), maker_account);
    assert_eq!(rc.from_seq(), resume_after);
    let resent: Vec<ServerReport> = seen[1..complete].iter().map(|(r, _)| *r).collect();
    let live: Vec<ServerReport> = seen[complete + 1..].iter().map(|(r, _)| *r).collect();
    assert!(
        seen[1..complete].iter().all(|(_, flag)| *flag),
        "every report before ResendComplete is in a frame marked resent"
    );
    assert!(
        seen[complete..].iter().all(|(_, flag)| !*flag),
        "nothing after ResendComplete is marked resent"
    );
    assert_eq!(rc.count(), resent.len() as u64);
    // Resent: only after resume_after, up to through; live: only after through; in order.
    let seqs: Vec<u64> = resent.iter().chain(&live).filter_map(engine_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "engine_seq order");
    assert!(resent
        .iter()
        .filter_map(engine_seq)
        .all(|s| s > resume_after && s <= rc.through_seq()));
    assert!(live
        .iter()
        .filter_map(engine_seq)
        .all(|s| s > rc.through_seq()));
    // Exactly the maker's side of every trade: each trade id once, none missing.
    let fills: Vec<u64> = resent
        .iter()
        .chain(&live)
        .filter_map(|r| match r {
            ServerReport::Fill(f) => Some(f.trade_id()),
            _ => None,
        })
        .collect();
    let all_trades = trades(&taker_reports);
    assert_eq!(all_trades.len(), 200);
    assert_eq!(fills.len(), 200, "no duplicate fill");
    assert_eq!(
        fills.iter().copied().collect::<BTreeSet<_>>(),
        all_trades,
        "no missing fill"
    );
    // The missed ones came in the resend (the live ones may too, if they were routed first).
    assert!(missed.is_subset(&trades(&resent)));
    let dones = resent
        .iter()
        .chain(&live)
        .filter(|r| matches!(r, ServerReport::Done(_)))
        .count();
    assert_eq!(dones, 200);
    // A second resend on the same session, after everything, sends nothing and completes.
    let last = max_seq(resent.iter().chain(&live));
    maker.push(requests::logon_resume(maker_account, last));
    maker.flush().unwrap();
    let mut again = Vec::new();
    recv_all(&mut maker, &mut again, Duration::from_millis(500));
    assert!(
        again
            .iter()
            .any(|(r, _)| matches!(r, ServerReport::ResendComplete(c) if c.count() == 0)),
        "{again:?}"
    );
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["engine_allocations"], 0);
}

#[test]
fn a_resend_from_before_retention_is_refused_naming_the_oldest_sequence_kept() {
    // Small segments, frequent snapshots and a tiny retention: old segments go.
    let node = Node::start(
        "resend-retention",
        "[journal]\nsegment_bytes = 65536\nsnapshot_every_events = 2000\nretention_bytes = 1\n",
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    c.push(requests::logon(21));
    c.flush().unwrap();
    let mut out = Vec::new();
    // Orders that rest then are cancelled: ~40K events.
    for round in 0..20u64 {
        for i in 0..500 {
            c.push(limit(
                round * 1000 + i + 1,
                1,
                Side::Sell,
                TimeInForce::Gtc,
                1000,
                10,
            ));
        }
        c.push(requests::mass_cancel(None));
        c.flush().unwrap();
        drain(&mut c, &mut out, Duration::from_millis(100));
    }
    drain(&mut c, &mut out, Duration::from_millis(500));
    let last = max_seq(&out);
    assert!(last > 20_000, "{last}");
    // Retention runs after a snapshot, off the request path: wait for the first segment to go.
    let deadline = Instant::now() + Duration::from_secs(20);
    let oldest = loop {
        let mut r = node.client(&ctx);
        r.push(requests::logon_resume(21, 0));
        r.flush().unwrap();
        let mut got = Vec::new();
        drain(&mut r, &mut got, Duration::from_millis(300));
        let refused = got.iter().find_map(|x| match x {
            ServerReport::Rejected(j) if j.reason() == RejectReason::ResendUnavailable => Some(*j),
            _ => None,
        });
        if let Some(j) = refused {
            assert_eq!(j.request(), wire::RequestKind::Logon);
            break j.engine_seq();
        }
        assert!(Instant::now() < deadline, "no segment was ever retired");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        oldest > 1 && oldest <= last,
        "oldest kept {oldest}, last {last}"
    );
    // From the oldest kept on, the resend works.
    let mut r = node.client(&ctx);
    r.push(requests::logon_resume(21, oldest - 1));
    r.flush().unwrap();
    let mut got = Vec::new();
    drain(&mut r, &mut got, Duration::from_millis(500));
    let rc = got
        .iter()
        .find_map(|x| match x {
            ServerReport::ResendComplete(rc) => Some(*rc),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ResendComplete: {:?}", &got[..got.len().min(5)]));
    assert_eq!(rc.through_seq(), last);
    assert!(rc.count() > 0);
    let (code, _, _) = node.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_drop_copy_session_resumes_too_and_sees_every_report_of_its_accounts_in_order() {
    let keys = Keys::create("resend-dropcopy");
    let risk = keys.add("risk", "read", &["51", "52"]);
    let everyone = keys.add("everyone", "read", &["*"]);
    let node = Node::start_with_keys("resend-dropcopy", "", keys);
    let ctx = zmq::Context::new();
    // Two accounts trade with each other while no drop copy is connected.
    let (mut a, mut b) = (node.client(&ctx), node.client(&ctx));
    a.push(requests::logon(51));
    b.push(requests::logon(52));
    for i in 0..50 {
        a.push(limit(1 + i, 1, Side::Sell, TimeInForce::Gtc, 1000, 10));
        b.push(limit(1 + i, 1, Side::Buy, TimeInForce::Gtc, 1000, 10));
    }
    a.flush().unwrap();
    b.flush().unwrap();
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    drain(&mut a, &mut ra, Duration::from_millis(300));
    drain(&mut b, &mut rb, Duration::from_millis(300));
    // The risk system connects late and resumes both accounts from the start, one at a time.
    let mut copy = OrderClient::connect(&ctx, &node.order_entry, &risk).unwrap();
    let mut seen: Vec<Seen> = Vec::new();
    for (account, theirs) in [(51, &ra), (52, &rb)] {
        copy.push(requests::logon_resume(account, 0));
        copy.flush().unwrap();
        let before = seen.len();
        recv_all(&mut copy, &mut seen, Duration::from_millis(500));
        let got: Vec<ServerReport> = seen[before..]
            .iter()
            .filter(|(_, resent)| *resent)
            .map(|(r, _)| *r)
            .collect();
        // Exactly the account's own engine reports, in the order its trader saw them.
        let own: Vec<ServerReport> = theirs
            .iter()
            .filter(|r| engine_seq(r).is_some())
            .copied()
            .collect();
        assert_eq!(got, own, "account {account}");
        assert!(seen[before..]
            .iter()
            .any(|(r, _)| matches!(r, ServerReport::ResendComplete(c) if c.account() == account)));
    }
    // A drop copy of every account: a read key entitled to "*" logs on for account
    // 4294967295 and resumes from 0: every account's reports, in engine order, then live.
    let mut all = OrderClient::connect(&ctx, &node.order_entry, &everyone).unwrap();
    all.push(requests::logon_resume(u32::MAX, 0));
    all.flush().unwrap();
    let mut got: Vec<Seen> = Vec::new();
    recv_all(&mut all, &mut got, Duration::from_millis(500));
    let resent: Vec<ServerReport> = got.iter().filter(|(_, r)| *r).map(|(r, _)| *r).collect();
    let seqs: Vec<u64> = resent.iter().filter_map(engine_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "engine order");
    let mut want: Vec<ServerReport> = ra
        .iter()
        .chain(&rb)
        .filter(|r| engine_seq(r).is_some())
        .copied()
        .collect();
    assert_eq!(resent.len(), want.len());
    let key = |r: &ServerReport| format!("{r:?}");
    let mut have = resent.clone();
    have.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(have, want, "every report of every account, once");
    // Live: a new trade's two fills reach it too.
    a.push(limit(100, 1, Side::Sell, TimeInForce::Gtc, 1000, 10));
    b.push(limit(100, 1, Side::Buy, TimeInForce::Ioc, 1000, 10));
    a.flush().unwrap();
    b.flush().unwrap();
    let mut live = Vec::new();
    drain(&mut all, &mut live, Duration::from_millis(500));
    let fills = live
        .iter()
        .filter(|r| matches!(r, ServerReport::Fill(_)))
        .count();
    assert_eq!(fills, 2, "{live:?}");
    // The per-account drop copy saw the same live trade; a read key entitled to some accounts
    // only may not ask for all of them.
    let mut out = Vec::new();
    drain(&mut copy, &mut out, Duration::from_millis(300));
    assert_eq!(
        out.iter()
            .filter(|r| matches!(r, ServerReport::Fill(_)))
            .count(),
        2
    );
    out.clear();
    copy.push(requests::logon(u32::MAX));
    copy.flush().unwrap();
    drain(&mut copy, &mut out, Duration::from_millis(300));
    assert!(
        matches!(out.as_slice(), [ServerReport::Rejected(r)] if r.reason() == RejectReason::InvalidAccount),
        "{out:?}"
    );
    // A read key still cannot trade.
    copy.push(limit(99, 1, Side::Buy, TimeInForce::Ioc, 1000, 10));
    copy.flush().unwrap();
    let mut out = Vec::new();
    drain(&mut copy, &mut out, Duration::from_millis(300));
    assert!(
        matches!(out.as_slice(), [ServerReport::Rejected(r)] if r.reason() == RejectReason::NotEntitled)
    );
    let (code, _, _) = node.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_flood_of_another_accounts_ioc_orders_does_not_make_a_resent_order_execute() {
    // Small per-account windows (the default is 1,024 per account): the flood is 100× one.
    let node = Node::start(
        "dedupe-flood",
        "[engine]\ndedupe_window = 50\ndedupe_accounts = 8\n",
    );
    let ctx = zmq::Context::new();
    let mut victim = node.client(&ctx);
    victim.push(requests::logon(31));
    victim.push(limit(7, 1, Side::Buy, TimeInForce::Ioc, 1000, 10));
    victim.flush().unwrap();
    let mut out = Vec::new();
    drain(&mut victim, &mut out, Duration::from_millis(300));
    let original = out
        .iter()
        .find_map(|r| match r {
            ServerReport::Accepted(a) => Some(a.order_id()),
            _ => None,
        })
        .expect("accepted");
    // Another account: 5,000 IOC orders, every one accepted (and expired: nothing rests).
    let mut flood = node.client(&ctx);
    flood.push(requests::logon(32));
    for cl in 1..=5_000 {
        flood.push(limit(cl, 1, Side::Buy, TimeInForce::Ioc, 1000, 10));
    }
    flood.flush().unwrap();
    let mut answers = Vec::new();
    drain(&mut flood, &mut answers, Duration::from_millis(500));
    let accepted = answers
        .iter()
        .filter(|r| matches!(r, ServerReport::Accepted(_)))
        .count();
    assert_eq!(accepted, 5_000);
    // The victim's resend is a duplicate naming the original, not a second order.
    out.clear();
    victim.push(limit(7, 1, Side::Buy, TimeInForce::Ioc, 1000, 10));
    victim.flush().unwrap();
    drain(&mut victim, &mut out, Duration::from_millis(300));
    match out.as_slice() {
        [ServerReport::Rejected(r)] => {
            assert_eq!(r.reason(), RejectReason::DuplicateClientOrderId);
            assert_eq!(r.order_id(), original);
        }
        other => panic!("the resend was not refused as a duplicate: {other:?}"),
    }
    let (code, _, _) = node.stop();
    assert_eq!(code, 0);
}

/// Logs `r` on as `account` with a resend after `after`; the `count` of its `ResendComplete`
/// (every resent frame read).
fn resend_count(r: &mut OrderClient, account: u32, after: u64) -> u64 {
    r.push(requests::logon_resume(account, after));
    r.flush().unwrap();
    let mut got = Vec::new();
    loop {
        got.clear();
        r.recv(&mut got, Duration::from_secs(30)).unwrap();
        if let Some(n) = got.iter().find_map(|x| match x {
            ServerReport::ResendComplete(rc) => Some(rc.count()),
            _ => None,
        }) {
            return n;
        }
        assert!(!got.is_empty(), "no ResendComplete within 30 s");
    }
}

/// Resend throughput from each journal: an account with 200,000 reports (100,000 IOC orders:
/// `Accepted` + `Done`) logs on again with `LogonWith` resend after 0; reports/s until
/// `ResendComplete`. A measurement, not a check (docs/benchmarks.md):
/// `cargo test -p caldera-node --test resend -- --ignored --nocapture` (the test profile is
/// optimized).
#[test]
#[ignore = "a measurement: run it on purpose (see the doc comment)"]
fn resend_throughput() {
    let broker = Broker::start("caldera.resend-rate");
    let uri = broker.uri("caldera.resend-rate");
    for (name, node) in [
        ("file", Node::start("resend-rate", "")),
        (
            "kafka",
            Node::start_kafka(
                "resend-rate-kafka",
                &format!("[journal]\nuri = \"{uri}\"\n"),
            ),
        ),
    ] {
        let ctx = zmq::Context::new();
        let mut c = node.client(&ctx);
        c.push(requests::logon(41));
        c.flush().unwrap();
        let mut out = Vec::new();
        for batch in 0..400u64 {
            for i in 0..250 {
                c.push(limit(
                    batch * 1000 + i + 1,
                    1,
                    Side::Buy,
                    TimeInForce::Ioc,
                    1000,
                    10,
                ));
            }
            c.flush().unwrap();
            while c.try_recv(&mut out).unwrap() > 0 {}
        }
        drain(&mut c, &mut out, Duration::from_millis(500));
        let reports = out.iter().filter_map(engine_seq).count();
        drop(c);
        let mut r = node.client(&ctx);
        let start = Instant::now();
        let count = resend_count(&mut r, 41, 0);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(count, reports as u64);
        println!(
            "{{\"journal\":\"{name}\",\"reports\":{count},\"seconds\":{secs:.3},\"reports_per_s\":{:.0}}}",
            count as f64 / secs
        );
        // The last 1,000 reports only: what a client back from a short absence asks for. Its
        // cost is the read up to them: from the segment holding them (file), from the offset
        // index's checkpoint before them (Kafka).
        let last = out.iter().filter_map(engine_seq).max().unwrap();
        let after = out
            .iter()
            .filter_map(engine_seq)
            .nth(reports - 1_000)
            .unwrap()
            - 1;
        let mut r = node.client(&ctx);
        let start = Instant::now();
        let count = resend_count(&mut r, 41, after);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(count, 1_000, "the last 1,000 reports (through {last})");
        println!("{{\"journal\":\"{name}\",\"last_reports\":{count},\"ms\":{ms:.1}}}");
        let (code, _, _) = node.stop();
        assert_eq!(code, 0);
    }
}
