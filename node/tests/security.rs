//! Authentication and entitlements against the real binary, over real sockets with real CURVE
//! keys: who may connect, who may act for which account, revocation on SIGHUP, the admin and
//! read roles, and the explicit insecure mode.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{self, LogoutReason, RejectReason, RequestKind, Side, TimeInForce};
use caldera_client::{Certificate, ClientCredentials, MarketDataClient, OrderClient, ServerReport};
use caldera_testkit::harness::{free_port, http_get, metric, temp_dir, Keys, Node};
use std::collections::VecDeque;
use std::process::Command;
use std::time::{Duration, Instant};

fn metrics_toml() -> (String, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (format!("[metrics]\nlisten = \"{addr}\"\n"), addr)
}

/// A session and the reports it received but no `expect` has looked at yet.
struct Session {
    c: OrderClient,
    unread: VecDeque<ServerReport>,
}

impl Session {
    fn push(&mut self, r: caldera_client::ClientRequest) {
        self.c.push(r);
    }

    fn flush(&mut self) -> Result<(), caldera_client::ClientError> {
        self.c.flush()
    }

    fn read(&mut self, ms: u64) {
        let mut out = Vec::new();
        self.c.recv(&mut out, Duration::from_millis(ms)).unwrap();
        self.unread.extend(out);
    }
}

fn connect(node: &Node, ctx: &zmq::Context, creds: &ClientCredentials) -> Session {
    Session {
        c: OrderClient::connect(ctx, &node.order_entry, creds).unwrap(),
        unread: VecDeque::new(),
    }
}

/// The first report received that matches `want` (taken out; the others stay unread, since
/// gateway rejects overtake the engine's answers). Panics after 10 s, listing what came.
fn expect(s: &mut Session, what: &str, want: impl Fn(&ServerReport) -> bool) -> ServerReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = s.unread.iter().position(&want) {
            return s.unread.remove(i).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{what} not received; got {:?}",
            s.unread
        );
        s.read(100);
    }
}

/// No report at all for `ms`.
fn silent(s: &mut Session, ms: u64) -> bool {
    s.unread.clear();
    s.read(ms);
    s.unread.is_empty()
}

fn rejected(reason: RejectReason, request: RequestKind) -> impl Fn(&ServerReport) -> bool {
    move |r| matches!(r, ServerReport::Rejected(x) if x.reason() == reason && x.request() == request)
}

fn logged_on(account: u32) -> impl Fn(&ServerReport) -> bool {
    move |r| matches!(r, ServerReport::LoggedOn(x) if x.account() == account)
}

fn accepted(cl: u64) -> impl Fn(&ServerReport) -> bool {
    move |r| matches!(r, ServerReport::Accepted(x) if x.client_order_id() == cl)
}

fn order_id(r: &ServerReport) -> u64 {
    match r {
        ServerReport::Accepted(a) => a.order_id(),
        other => panic!("not an Accepted: {other:?}"),
    }
}

fn gtc(cl: u64, side: Side, price: u64, qty: u64) -> caldera_client::ClientRequest {
    limit(cl, 1, side, TimeInForce::Gtc, price, qty)
}

fn scrape(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    body
}

#[test]
fn connections_without_curve_or_with_an_unlisted_key_get_no_session_and_are_counted() {
    let (toml, addr) = metrics_toml();
    let node = Node::start("sec-connect", &toml);
    let ctx = zmq::Context::new();
    // The harness's readiness probe may have sent several heartbeats (one per 200 ms until
    // answered): wait until the gateway's published frame count has settled.
    let mut before = scrape(&addr);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let again = scrape(&addr);
        let settled =
            metric(&again, "caldera_frames_in_total") == metric(&before, "caldera_frames_in_total");
        before = again;
        if settled {
            break;
        }
    }
    assert_eq!(metric(&before, "caldera_auth_mode{mode=\"curve\"}"), 1.0);
    let frames_before = metric(&before, "caldera_frames_in_total");

    // No CURVE at all.
    let mut plain = connect(&node, &ctx, &ClientCredentials::Insecure);
    plain.push(requests::logon(7));
    plain.push(requests::heartbeat(1));
    plain.flush().unwrap();
    // A CURVE key the entitlements do not list.
    let stranger = Certificate::generate().unwrap();
    let server = Certificate::read(&node.keys.dir.join("server.key")).unwrap();
    let mut unknown = connect(
        &node,
        &ctx,
        &ClientCredentials::Curve {
            public: stranger.public,
            secret: stranger.secret.clone().unwrap(),
            server: server.public,
        },
    );
    unknown.push(requests::logon(7));
    unknown.push(requests::heartbeat(2));
    unknown.flush().unwrap();
    // A listed key that trusts the wrong server key.
    let trader = node.keys.trader();
    let ClientCredentials::Curve { public, secret, .. } = trader.clone() else {
        unreachable!()
    };
    let mut misled = connect(
        &node,
        &ctx,
        &ClientCredentials::Curve {
            public,
            secret,
            server: stranger.public,
        },
    );
    misled.push(requests::heartbeat(3));
    misled.flush().unwrap();

    assert!(silent(&mut plain, 700), "a plain connection got an answer");
    assert!(silent(&mut unknown, 300), "an unlisted key got an answer");
    assert!(
        silent(&mut misled, 300),
        "a client of the wrong server got an answer"
    );
    // The listed key with the right server key is served.
    let mut ok = connect(&node, &ctx, &trader);
    ok.push(requests::heartbeat(4));
    ok.flush().unwrap();
    expect(&mut ok, "HeartbeatAck", |r| {
        matches!(r, ServerReport::HeartbeatAck(_))
    });

    std::thread::sleep(Duration::from_millis(50));
    let after = scrape(&addr);
    // Not one byte of theirs reached the gateway: only the trader's heartbeat frame counts.
    assert_eq!(
        metric(&after, "caldera_frames_in_total"),
        frames_before + 1.0
    );
    assert!(metric(&after, "caldera_auth_handshake_failures_total") >= 1.0);
    assert!(metric(&after, "caldera_auth_denied_total") >= 1.0);
    assert_eq!(metric(&after, "caldera_auth_entitled_keys"), 3.0);
}

#[test]
fn a_key_acts_only_for_its_own_accounts_and_a_session_for_one_account_at_a_time() {
    let keys = Keys::create("sec-entitled");
    let alice_keys = keys.add("alice", "trade", &["7", "17"]);
    let bob_keys = keys.add("bob", "trade", &["8"]);
    let node = Node::start_with_keys("sec-entitled", "", keys);
    let ctx = zmq::Context::new();
    let mut alice = connect(&node, &ctx, &alice_keys);
    let mut bob = connect(&node, &ctx, &bob_keys);

    // Not entitled: rejected, nothing changes.
    alice.push(requests::logon(8));
    alice.flush().unwrap();
    expect(
        &mut alice,
        "NotEntitled for account 8",
        rejected(RejectReason::NotEntitled, RequestKind::Logon),
    );
    alice.push(gtc(1, Side::Sell, 1000, 5));
    alice.flush().unwrap();
    expect(
        &mut alice,
        "NotLoggedOn",
        rejected(RejectReason::NotLoggedOn, RequestKind::New),
    );

    alice.push(requests::logon(7));
    alice.push(gtc(2, Side::Sell, 1000, 5));
    alice.flush().unwrap();
    expect(&mut alice, "LoggedOn 7", logged_on(7));
    let oid = order_id(&expect(&mut alice, "Accepted", accepted(2)));

    // Bob cannot take alice's account nor touch her order from his own.
    bob.push(requests::logon(7));
    bob.flush().unwrap();
    expect(
        &mut bob,
        "NotEntitled for account 7",
        rejected(RejectReason::NotEntitled, RequestKind::Logon),
    );
    bob.push(requests::logon(8));
    bob.push(requests::cancel(oid));
    bob.push(requests::mass_cancel(None));
    bob.flush().unwrap();
    expect(&mut bob, "LoggedOn 8", logged_on(8));
    expect(
        &mut bob,
        "UnknownOrder",
        |r| matches!(r, ServerReport::Rejected(x) if x.reason() == RejectReason::UnknownOrder && x.order_id() == oid),
    );
    expect(
        &mut bob,
        "MassCancelled 0",
        |r| matches!(r, ServerReport::MassCancelled(m) if m.count() == 0),
    );

    // One account per session: a second account needs a Logout first.
    alice.push(requests::logon(17));
    alice.flush().unwrap();
    expect(
        &mut alice,
        "AlreadyLoggedOn",
        rejected(RejectReason::AlreadyLoggedOn, RequestKind::Logon),
    );
    alice.push(requests::logout(7));
    alice.push(requests::logon(17));
    alice.flush().unwrap();
    expect(
        &mut alice,
        "LoggedOut 7",
        |r| matches!(r, ServerReport::LoggedOut(x) if x.account() == 7 && x.reason() == LogoutReason::Requested),
    );
    expect(&mut alice, "LoggedOn 17", logged_on(17));

    // Alice's order is untouched: she cancels it from a new session of account 7.
    let mut again = connect(&node, &ctx, &alice_keys);
    again.push(requests::logon(7));
    again.push(requests::cancel(oid));
    again.flush().unwrap();
    expect(
        &mut again,
        "Done",
        |r| matches!(r, ServerReport::Done(d) if d.order_id() == oid && d.leaves() == 5),
    );
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["live_orders"], 0);
}

#[test]
fn sighup_revokes_a_removed_key_at_once_and_leaves_everyone_else_and_everything_acknowledged_alone()
{
    let (toml, addr) = metrics_toml();
    let keys = Keys::create("sec-revoke");
    let alice_keys = keys.add("alice", "trade", &["7"]);
    let bob_keys = keys.add("bob", "trade", &["8"]);
    let node = Node::start_with_keys("sec-revoke", &toml, keys.clone());
    let ctx = zmq::Context::new();
    let mut alice = connect(&node, &ctx, &alice_keys);
    let mut bob = connect(&node, &ctx, &bob_keys);
    alice.push(requests::logon(7));
    alice.push(gtc(1, Side::Sell, 1000, 5));
    alice.flush().unwrap();
    let resting = order_id(&expect(&mut alice, "Accepted", accepted(1)));
    bob.push(requests::logon(8));
    bob.flush().unwrap();
    expect(&mut bob, "LoggedOn 8", logged_on(8));

    keys.remove("alice");
    let t = Instant::now();
    node.signal(rustix::process::Signal::HUP);
    expect(
        &mut alice,
        "LoggedOut{Revoked}",
        |r| matches!(r, ServerReport::LoggedOut(x) if x.account() == 7 && x.reason() == LogoutReason::Revoked),
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");

    // The old connection can do nothing more; a new one is refused outright.
    alice.push(requests::logon(7));
    alice.push(gtc(2, Side::Sell, 1000, 5));
    alice.flush().unwrap();
    expect(
        &mut alice,
        "NotEntitled on the revoked connection",
        |r| matches!(r, ServerReport::Rejected(x) if x.reason() == RejectReason::NotEntitled),
    );
    let mut reconnect = connect(&node, &ctx, &alice_keys);
    reconnect.push(requests::heartbeat(1));
    reconnect.flush().unwrap();
    assert!(
        silent(&mut reconnect, 500),
        "the revoked key was served again"
    );

    // Bob was not disturbed, and alice's acknowledged order is still there to trade against.
    bob.push(gtc(10, Side::Buy, 1000, 2));
    bob.flush().unwrap();
    expect(
        &mut bob,
        "Fill against the revoked key's resting order",
        |r| matches!(r, ServerReport::Fill(f) if f.qty() == 2 && f.client_order_id() == 10),
    );
    let body = scrape(&addr);
    assert_eq!(metric(&body, "caldera_auth_reloads_total"), 1.0);
    assert_eq!(metric(&body, "caldera_auth_entitled_keys"), 4.0);

    // A broken file is refused: the entitlements in force stay.
    std::fs::write(
        node.keys.dir.join("entitlements.toml"),
        "[[client]]\nname = 3\n",
    )
    .unwrap();
    node.signal(rustix::process::Signal::HUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&scrape(&addr), "caldera_auth_reload_failures_total") < 1.0 {
        assert!(Instant::now() < deadline, "the broken file was not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    bob.push(gtc(11, Side::Buy, 1000, 1));
    bob.flush().unwrap();
    expect(
        &mut bob,
        "bob still trades",
        |r| matches!(r, ServerReport::Fill(f) if f.client_order_id() == 11),
    );
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    // Alice's order: 5 − 2 − 1 left, never cancelled by the revocation.
    assert_eq!(summary["live_orders"], 1, "{summary}");
    let _ = resting;
}

#[test]
fn admins_halt_resume_cancel_all_and_list_sessions_and_nobody_else_can() {
    let node = Node::start("sec-admin", "");
    let ctx = zmq::Context::new();
    let mut md =
        MarketDataClient::connect(&ctx, &node.market_data, &ClientCredentials::Insecure, &[1])
            .unwrap();
    let mut trader = connect(&node, &ctx, &node.keys.trader());
    let mut admin = connect(&node, &ctx, &node.keys.client("admin"));
    trader.push(requests::logon(7));
    trader.push(gtc(1, Side::Sell, 1000, 5));
    trader.push(gtc(2, Side::Sell, 1001, 5));
    trader.push(requests::halt(1));
    trader.flush().unwrap();
    expect(&mut trader, "Accepted", accepted(2));
    expect(
        &mut trader,
        "a trader's halt is refused",
        rejected(RejectReason::NotEntitled, RequestKind::Halt),
    );

    admin.push(requests::halt(1));
    admin.flush().unwrap();
    expect(
        &mut admin,
        "InstrumentStatus halted",
        |r| matches!(r, ServerReport::InstrumentStatus(s) if s.symbol() == 1 && s.halted()),
    );
    trader.push(gtc(3, Side::Buy, 1000, 1));
    trader.flush().unwrap();
    expect(
        &mut trader,
        "InstrumentHalted",
        |r| matches!(r, ServerReport::Rejected(x) if x.reason() == RejectReason::InstrumentHalted && x.client_order_id() == 3),
    );
    // Market data shows the halt.
    let deadline = Instant::now() + Duration::from_secs(10);
    while md.books.get(&1).is_none_or(|b| !b.halted) {
        assert!(
            Instant::now() < deadline,
            "market data never showed the halt"
        );
        md.pump(Duration::from_millis(50)).unwrap();
    }
    admin.push(requests::resume(1));
    admin.push(requests::halt(999));
    admin.flush().unwrap();
    expect(
        &mut admin,
        "InstrumentStatus resumed",
        |r| matches!(r, ServerReport::InstrumentStatus(s) if s.symbol() == 1 && !s.halted()),
    );
    expect(
        &mut admin,
        "UnknownSymbol for the halt of 999",
        |r| matches!(r, ServerReport::Rejected(x) if x.reason() == RejectReason::UnknownSymbol && x.request() == RequestKind::Halt),
    );
    trader.push(gtc(4, Side::Buy, 900, 1));
    trader.flush().unwrap();
    expect(&mut trader, "Accepted after resume", accepted(4));

    // Cancel all of account 7: the trader sees its orders done, the admin the count.
    admin.push(requests::cancel_all(7));
    admin.flush().unwrap();
    expect(
        &mut admin,
        "MassCancelled 3",
        |r| matches!(r, ServerReport::MassCancelled(m) if m.count() == 3 && m.all_symbols()),
    );
    expect(
        &mut trader,
        "the trader's MassCancelled",
        |r| matches!(r, ServerReport::MassCancelled(m) if m.count() == 3),
    );

    // List sessions: admin only; the trader's session is listed with its account.
    trader.push(requests::list_sessions(5));
    trader.flush().unwrap();
    expect(
        &mut trader,
        "a trader's ListSessions is refused",
        rejected(RejectReason::NotEntitled, RequestKind::ListSessions),
    );
    admin.push(requests::list_sessions(77));
    admin.flush().unwrap();
    let mut rows = Vec::new();
    let first = expect(
        &mut admin,
        "SessionInfo",
        |r| matches!(r, ServerReport::SessionInfo(s) if s.request_id() == 77),
    );
    let ServerReport::SessionInfo(first) = first else {
        unreachable!()
    };
    rows.push(first);
    while rows.len() < first.count() as usize {
        if let ServerReport::SessionInfo(s) = expect(&mut admin, "more SessionInfo", |r| {
            matches!(r, ServerReport::SessionInfo(_))
        }) {
            rows.push(s);
        }
    }
    assert!(
        rows.iter().any(|s| s.account() == 7
            && s.logged_on()
            && s.role() == wire::SessionRole::Trade
            && s.key_id() != 0),
        "{rows:?}"
    );
    assert!(rows.iter().any(|s| s.role() == wire::SessionRole::Admin));
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["live_orders"], 0);
}

#[test]
fn a_read_key_gets_its_accounts_reports_and_cannot_enter_orders() {
    let node = Node::start("sec-read", "");
    let ctx = zmq::Context::new();
    let mut reader = connect(&node, &ctx, &node.keys.client("reader"));
    let mut trader = connect(&node, &ctx, &node.keys.trader());
    reader.push(requests::logon(7));
    reader.push(requests::logon(8));
    reader.push(requests::logon(0));
    reader.push(gtc(1, Side::Buy, 1000, 1));
    reader.flush().unwrap();
    expect(&mut reader, "LoggedOn 7", logged_on(7));
    expect(&mut reader, "LoggedOn 8", logged_on(8));
    expect(
        &mut reader,
        "InvalidAccount for the venue account",
        rejected(RejectReason::InvalidAccount, RequestKind::Logon),
    );
    expect(
        &mut reader,
        "NotEntitled for order entry",
        rejected(RejectReason::NotEntitled, RequestKind::New),
    );
    // The trader trades account 7 against account 8 (two sessions of the trader key).
    let mut other = connect(&node, &ctx, &node.keys.trader());
    trader.push(requests::logon(7));
    trader.push(gtc(10, Side::Sell, 1000, 3));
    trader.flush().unwrap();
    expect(&mut trader, "Accepted", accepted(10));
    other.push(requests::logon(8));
    other.push(gtc(20, Side::Buy, 1000, 3));
    other.flush().unwrap();
    expect(&mut other, "Fill", |r| matches!(r, ServerReport::Fill(_)));
    // The drop copy sees both sides: 7's Accepted and Fill, 8's Fill and both Dones.
    let mut fills = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_accept = false;
    while fills < 2 || !saw_accept {
        assert!(Instant::now() < deadline, "drop copy incomplete");
        reader.read(100);
        for r in reader.unread.drain(..) {
            match r {
                ServerReport::Fill(f) if f.qty() == 3 => fills += 1,
                ServerReport::Accepted(a) if a.client_order_id() == 10 => saw_accept = true,
                _ => {}
            }
        }
    }
    // The trader of account 7 is not displaced by the reader.
    trader.push(requests::cancel_client(10));
    trader.flush().unwrap();
    expect(
        &mut trader,
        "UnknownOrder (filled)",
        |r| matches!(r, ServerReport::Rejected(x) if x.reason() == RejectReason::UnknownOrder),
    );
}

#[test]
fn insecure_mode_is_explicit_and_loud() {
    let (toml, addr) = metrics_toml();
    let node = Node::start_insecure("sec-insecure", &toml);
    let ctx = zmq::Context::new();
    let mut c = connect(&node, &ctx, &ClientCredentials::Insecure);
    c.push(requests::logon(42));
    c.push(gtc(1, Side::Buy, 1000, 1));
    c.flush().unwrap();
    expect(&mut c, "Accepted over plain TCP", accepted(1));
    let body = scrape(&addr);
    assert_eq!(metric(&body, "caldera_auth_mode{mode=\"none\"}"), 1.0);
    assert_eq!(metric(&body, "caldera_auth_mode{mode=\"curve\"}"), 0.0);
    let log = std::fs::read_to_string(node.dir.join("stderr.log")).unwrap();
    assert!(log.contains("INSECURE"), "{log}");
}

#[test]
fn a_bare_serve_without_keys_refuses_to_start_and_names_the_way_forward() {
    let dir = temp_dir("sec-bare");
    let out = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args(["serve", "--journal", "none"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("caldera init") && err.contains("--insecure"),
        "{err}"
    );
    // `caldera init` then makes a working deployment.
    let init = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args(["init"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let check = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args(["serve", "--journal", "none", "--check"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii_end()).unwrap();
    assert_eq!(line["auth"], "curve");
    assert_eq!(line["entitled_keys"], 3);
    // Never overwrites.
    let again = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args(["init"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
}
