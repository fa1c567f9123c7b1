//! No client can exhaust the node or slow it for others (real binary, real sockets, real
//! keys): sessions end with their connections, a client that never reads is cut off at a
//! byte bound, sessions and request rates are limited with typed rejects, odd input gets a
//! typed answer, and the health probes stay up under a slow HTTP client.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{self, RejectReason, RequestKind, Side, TimeInForce};
use caldera_client::{ClientRequest, OrderClient, ServerReport};
use caldera_schema::codec;
use caldera_testkit::harness::{free_port, http_get, metric, Node};
use std::time::{Duration, Instant};

fn with_metrics(extra: &str) -> (String, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (format!("{extra}\n[metrics]\nlisten = \"{addr}\"\n"), addr)
}

fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics").1
}

fn rss(addr: &str) -> f64 {
    metric(&scrape(addr), "process_resident_memory_bytes")
}

fn wait_metric(addr: &str, name: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(&scrape(addr), name);
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {v}, expected ≥ {at_least}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw DEALER with the node's trader key (no session-sequence checks: some answers here come
/// outside any session).
fn raw(node: &Node, ctx: &zmq::Context) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    node.credentials.apply(&s).unwrap();
    s.connect(&node.order_entry).unwrap();
    s
}

fn frame(reqs: &[ClientRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_client_batch(&mut out, reqs);
    out
}

/// Every report received on `s` within `wait` (first session sequence, reports).
fn read_all(s: &zmq::Socket, wait: Duration) -> Vec<(u64, ServerReport)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if s.poll(zmq::POLLIN, 20).unwrap() == 0 {
            continue;
        }
        let bytes = s.recv_bytes(0).unwrap();
        let mut reps = Vec::new();
        let (first, _) = codec::read_report_batch(&bytes, &mut reps).unwrap();
        out.extend(reps.into_iter().map(|r| (first, r)));
    }
    out
}

fn rejects(reps: &[(u64, ServerReport)], reason: RejectReason) -> usize {
    reps.iter()
        .filter(|(_, r)| matches!(r, ServerReport::Rejected(x) if x.reason() == reason))
        .count()
}

/// Trades one order on a fresh session and waits for its Accepted (panics after 10 s).
fn trades(node: &Node, ctx: &zmq::Context, account: u32, cl: u64) -> Duration {
    let t = Instant::now();
    let mut c = node.client(ctx);
    c.push(requests::logon(account));
    c.push(limit(cl, 1, Side::Buy, TimeInForce::Gtc, 500, 1));
    c.flush().unwrap();
    let mut out = Vec::new();
    while !out.iter().any(|r| matches!(r, ServerReport::Accepted(_))) {
        assert!(t.elapsed() < Duration::from_secs(10), "not served: {out:?}");
        c.recv(&mut out, Duration::from_millis(50)).unwrap();
    }
    t.elapsed()
}

fn cycles() -> usize {
    std::env::var("CALDERA_LIMITS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn sessions_end_with_their_connections_so_connect_send_close_loops_take_bounded_memory() {
    let (toml, addr) = with_metrics("");
    let node = Node::start("limits-cycles", &toml);
    let ctx = zmq::Context::new();
    let before = rss(&addr);
    let n = cycles();
    let t = Instant::now();
    // Four threads of connect → one heartbeat frame → its answer → close, over CURVE.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (ep, creds, ctx) = (
                node.order_entry.clone(),
                node.credentials.clone(),
                ctx.clone(),
            );
            let hb = frame(&[requests::heartbeat(1)]);
            std::thread::spawn(move || {
                for _ in 0..n / 4 {
                    let s = ctx.socket(zmq::DEALER).unwrap();
                    s.set_linger(0).unwrap();
                    creds.apply(&s).unwrap();
                    s.connect(&ep).unwrap();
                    s.send(&hb[..], 0).unwrap();
                    assert_eq!(s.poll(zmq::POLLIN, 10_000).unwrap(), 1, "no answer");
                    s.recv_bytes(0).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let closed = wait_metric(
        &addr,
        "caldera_sessions_closed_total{reason=\"disconnected\"}",
        (n / 4 * 4) as f64 * 0.99,
        Duration::from_secs(120),
    );
    let body = scrape(&addr);
    let live = metric(&body, "caldera_sessions");
    let grown = (rss(&addr) - before) / f64::from(1 << 20);
    println!(
        "{{\"test\":\"connect_cycles\",\"cycles\":{n},\"seconds\":{:.1},\"sessions_closed\":{closed},\"sessions_left\":{live},\"rss_growth_mib\":{grown:.1}}}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        live <= 8.0,
        "{live} sessions left after every connection closed"
    );
    // ~17 KB a session stayed before: 100,000 cycles grew the gateway by well over 1 GiB.
    assert!(
        grown < 64.0,
        "RSS grew {grown:.1} MiB over {n} connect/close cycles"
    );
    // Still serving.
    trades(&node, &ctx, 7, 1);
}

#[test]
fn a_client_that_sends_forever_and_never_reads_is_cut_off_at_a_byte_bound_and_others_keep_trading()
{
    let (toml, addr) = with_metrics("max_session_backlog_bytes = 1048576");
    let node = Node::start("limits-flood", &toml);
    let ctx = zmq::Context::new();
    let before = rss(&addr);
    // The flooder: resting orders (each answered by an Accepted and a book delta) as fast as
    // it can, with its receive side choked.
    let flood = ctx.socket(zmq::DEALER).unwrap();
    flood.set_linger(0).unwrap();
    flood.set_rcvhwm(1).unwrap();
    flood.set_rcvbuf(4096).unwrap();
    flood.set_sndhwm(1000).unwrap();
    node.credentials.apply(&flood).unwrap();
    flood.connect(&node.order_entry).unwrap();
    flood.send(&frame(&[requests::logon(66)])[..], 0).unwrap();
    let mut worst = Duration::ZERO;
    let mut cl = 0u64;
    let mut sent = 0u64;
    let t = Instant::now();
    let mut next_probe = Instant::now();
    let mut probes = 0u32;
    while t.elapsed() < Duration::from_secs(8) {
        let reqs: Vec<_> = (0..64)
            .map(|i| {
                cl += 1;
                limit(cl, 1, Side::Sell, TimeInForce::Ioc, 100_000 + i, 1)
            })
            .collect();
        if flood.send(&frame(&reqs)[..], zmq::DONTWAIT).is_ok() {
            sent += 64;
        }
        if Instant::now() >= next_probe {
            // Another client trades meanwhile.
            probes += 1;
            worst = worst.max(trades(&node, &ctx, 100 + probes, 1));
            assert!(
                worst < Duration::from_secs(5),
                "another client waited {worst:?}"
            );
            next_probe = Instant::now() + Duration::from_millis(500);
        }
    }
    let body = scrape(&addr);
    let cut = metric(&body, "caldera_sessions_closed_total{reason=\"backlog\"}");
    let grown = (rss(&addr) - before) / f64::from(1 << 20);
    println!(
        "{{\"test\":\"flood\",\"requests_sent\":{sent},\"sessions_cut\":{cut},\"rss_growth_mib\":{grown:.1},\"other_client_worst_ms\":{:.1}}}",
        worst.as_secs_f64() * 1e3
    );
    assert!(cut >= 1.0, "the session that never reads was never cut off");
    assert!(grown < 256.0, "RSS grew {grown:.1} MiB");
    assert!(probes >= 10);
}

#[test]
fn sessions_and_request_rates_are_limited_with_typed_rejects() {
    let node = Node::start(
        "limits-caps",
        "max_sessions_per_peer = 3\nsession_rate = 1000\nsession_burst = 200\nsession_idle_timeout_ms = 3000\n",
    );
    let ctx = zmq::Context::new();
    // The harness's readiness probe has disconnected: its session is gone.
    std::thread::sleep(Duration::from_millis(300));
    // Rate: a burst of 1,000 requests at once; about 200 are admitted, the rest Throttled.
    let s = raw(&node, &ctx);
    let hb: Vec<_> = (0..1000).map(requests::heartbeat).collect();
    s.send(&frame(&hb)[..], 0).unwrap();
    let got = read_all(&s, Duration::from_millis(800));
    let throttled = rejects(&got, RejectReason::Throttled);
    let acks = got
        .iter()
        .filter(|(_, r)| matches!(r, ServerReport::HeartbeatAck(_)))
        .count();
    assert_eq!(throttled + acks, 1000);
    assert!(
        (150..=400).contains(&acks),
        "{acks} admitted of a burst of 1000"
    );
    // Refilled at 1,000/s: a second later a small batch goes through.
    std::thread::sleep(Duration::from_millis(1000));
    s.send(&frame(&hb[..50])[..], 0).unwrap();
    let got = read_all(&s, Duration::from_millis(500));
    assert_eq!(rejects(&got, RejectReason::Throttled), 0);

    // Sessions per address: the 4th connection from 127.0.0.1 gets SessionLimit, outside any
    // session (sequence 0). The first still holds one.
    let others: Vec<_> = (0..2).map(|_| raw(&node, &ctx)).collect();
    for o in &others {
        o.send(&frame(&[requests::heartbeat(1)])[..], 0).unwrap();
        assert_eq!(read_all(o, Duration::from_millis(300)).len(), 1);
    }
    let fourth = raw(&node, &ctx);
    fourth
        .send(&frame(&[requests::heartbeat(1)])[..], 0)
        .unwrap();
    let got = read_all(&fourth, Duration::from_millis(500));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 0);
    assert_eq!(rejects(&got, RejectReason::SessionLimit), 1);
    // Idle sessions that never logged on end after the idle timeout: room again.
    std::thread::sleep(Duration::from_millis(4500));
    fourth
        .send(&frame(&[requests::heartbeat(2)])[..], 0)
        .unwrap();
    let got = read_all(&fourth, Duration::from_millis(500));
    assert!(
        matches!(got.first(), Some((1, ServerReport::HeartbeatAck(_)))),
        "{got:?}"
    );
}

#[test]
fn odd_input_gets_a_typed_answer() {
    let node = Node::start("limits-odd", "");
    let ctx = zmq::Context::new();
    let s = raw(&node, &ctx);
    let expect = |bytes: Vec<u8>, reason: RejectReason, what: &str| {
        s.send(&bytes[..], 0).unwrap();
        let got = read_all(&s, Duration::from_millis(400));
        assert_eq!(rejects(&got, reason), 1, "{what}: {got:?}");
    };
    // A batch without requests.
    expect(frame(&[]), RejectReason::EmptyBatch, "empty batch");
    // Reserved accounts.
    expect(
        frame(&[requests::logon(u32::MAX)]),
        RejectReason::InvalidAccount,
        "account u32::MAX",
    );
    expect(
        frame(&[requests::logon(0)]),
        RejectReason::InvalidAccount,
        "account 0 (the venue's) for a trader",
    );
    // A bool field that is neither 0 nor 1.
    s.send(&frame(&[requests::logon(5)])[..], 0).unwrap();
    read_all(&s, Duration::from_millis(300));
    let mut o = wire::NewOrder::new(
        1,
        500,
        1,
        1,
        Side::Buy,
        wire::OrderType::Limit,
        TimeInForce::Gtc,
        wire::SelfTradePrevention::Allow,
        false,
    );
    o.0[32] = 2;
    expect(
        frame(&[ClientRequest::NewOrder(o)]),
        RejectReason::InvalidEnumValue,
        "post_only = 2",
    );
    // Client order id 0 (the engine's answer).
    expect(
        frame(&[limit(0, 1, Side::Buy, TimeInForce::Gtc, 500, 1)]),
        RejectReason::ZeroClientOrderId,
        "client order id 0",
    );
    // A message above max_message_bytes (= max_frame_bytes, 256 KiB): libzmq drops the
    // connection before the gateway holds it; nothing is answered, the node keeps serving.
    let big = ctx.socket(zmq::DEALER).unwrap();
    big.set_linger(0).unwrap();
    node.credentials.apply(&big).unwrap();
    big.connect(&node.order_entry).unwrap();
    big.send(&vec![0u8; 300 << 10][..], 0).unwrap();
    assert!(
        read_all(&big, Duration::from_millis(500)).is_empty(),
        "an oversized message was answered"
    );
    trades(&node, &ctx, 8, 1);
}

#[test]
fn an_account_may_not_hold_more_live_orders_than_its_limit() {
    let node = Node::start("limits-account", "[engine]\nmax_orders_per_account = 2\n");
    let ctx = zmq::Context::new();
    let mut c: OrderClient = node.client(&ctx);
    c.push(requests::logon(8));
    for cl in 1..=3 {
        c.push(limit(cl, 1, Side::Buy, TimeInForce::Gtc, 500, 1));
    }
    c.flush().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.iter().any(|r| matches!(r, ServerReport::Rejected(_))) {
        assert!(Instant::now() < deadline, "{out:?}");
        c.recv(&mut out, Duration::from_millis(50)).unwrap();
    }
    let rej = out
        .iter()
        .find_map(|r| match r {
            ServerReport::Rejected(x) => Some(*x),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (rej.reason(), rej.request(), rej.client_order_id()),
        (RejectReason::AccountOrderLimit, RequestKind::New, 3)
    );
}

#[test]
fn requests_after_sigterm_get_shutting_down_not_silence() {
    // A tiny send queue so that a client that does not read keeps the node draining.
    let node = Node::start("limits-shutdown", "shutdown_linger_ms = 3000\nsndhwm = 1\n");
    let ctx = zmq::Context::new();
    let s = raw(&node, &ctx);
    // A reader that holds the node in its drain: it logged on and does not read yet.
    s.send(&frame(&[requests::logon(4)])[..], 0).unwrap();
    let slow = {
        let x = ctx.socket(zmq::DEALER).unwrap();
        x.set_linger(0).unwrap();
        x.set_rcvhwm(1).unwrap();
        x.set_rcvbuf(4096).unwrap();
        node.credentials.apply(&x).unwrap();
        x.connect(&node.order_entry).unwrap();
        x.send(&frame(&[requests::logon(5)])[..], 0).unwrap();
        let reqs: Vec<_> = (1..=60_000)
            .map(|cl| limit(cl, 1, Side::Buy, TimeInForce::Ioc, 400 + cl % 50, 1))
            .collect();
        for chunk in reqs.chunks(200) {
            x.send(&frame(chunk)[..], 0).unwrap();
        }
        x
    };
    std::thread::sleep(Duration::from_millis(500));
    node.signal(rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(200));
    s.send(
        &frame(&[limit(9, 1, Side::Buy, TimeInForce::Gtc, 500, 1)])[..],
        0,
    )
    .unwrap();
    let got = read_all(&s, Duration::from_millis(1500));
    assert_eq!(rejects(&got, RejectReason::ShuttingDown), 1, "{got:?}");
    drop(slow);
    let (code, _, _) = node.stop_after_signal();
    assert_eq!(code, 0);
}

#[test]
fn health_probes_stay_up_while_a_client_holds_a_connection_and_sends_nothing() {
    let (toml, addr) = with_metrics("");
    let node = Node::start("limits-probe", &toml);
    // Connections that send nothing (the old listener served one connection at a time with
    // a 2 s read timeout: each stalled every probe behind it).
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    for _ in 0..5 {
        let t = Instant::now();
        let (code, _) = http_get(&addr, "/readyz");
        assert_eq!(code, 200);
        // Kubernetes probes here: period 1 s, failure threshold 1.
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "/readyz took {:?}",
            t.elapsed()
        );
    }
    drop(idle);
    drop(node);
}
