//! Cancel on disconnect (`LogonWith{flags: CANCEL_ON_DISCONNECT}`) against the real binary:
//! the session's connection dropping, or its `Logout`, cancels its account's resting orders
//! through the engine (journaled like any cancel); sessions without the option keep theirs.

use caldera_client::requests::{self, limit, CANCEL_ON_DISCONNECT, RESEND};
use caldera_client::wire::{DoneReason, RejectReason, Side, TimeInForce};
use caldera_client::{engine_seq, OrderClient, ServerReport};
use caldera_engine::Engine;
use caldera_testkit::harness::{drain, Keys, Node};
use std::time::{Duration, Instant};

/// Logs `c` on for `account` with `flags` and rests `n` sells; returns the last engine_seq seen.
fn rest(c: &mut OrderClient, account: u32, flags: u8, n: u64) -> u64 {
    c.push(requests::logon_with(account, 0, flags));
    for i in 0..n {
        c.push(limit(1 + i, 1, Side::Sell, TimeInForce::Gtc, 1000 + i, 10));
    }
    c.flush().unwrap();
    let mut out = Vec::new();
    drain(c, &mut out, Duration::from_millis(300));
    let accepted = out
        .iter()
        .filter(|r| matches!(r, ServerReport::Accepted(_)))
        .count();
    assert_eq!(accepted as u64, n, "{out:?}");
    out.iter().filter_map(engine_seq).max().unwrap()
}

/// The reports of `account` after `after`, resent, once they hold `n` cancellations (the
/// disconnect is seen and handled asynchronously).
fn missed(
    node: &Node,
    ctx: &zmq::Context,
    account: u32,
    after: u64,
    n: usize,
) -> Vec<ServerReport> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = node.client(ctx);
        c.push(requests::logon_with(account, after, RESEND));
        c.flush().unwrap();
        let mut got = Vec::new();
        drain(&mut c, &mut got, Duration::from_millis(300));
        let cancelled = got
            .iter()
            .filter(|r| matches!(r, ServerReport::Done(d) if d.reason() == DoneReason::Cancelled))
            .count();
        if cancelled == n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "account {account}: {cancelled} of {n} cancelled: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dropped_connection_or_a_logout_cancels_the_accounts_orders_only_when_asked() {
    let node = Node::start("cod", "");
    let ctx = zmq::Context::new();
    let mut asked = node.client(&ctx);
    let last = rest(&mut asked, 61, CANCEL_ON_DISCONNECT, 10);
    let mut not_asked = node.client(&ctx);
    rest(&mut not_asked, 62, 0, 5);
    let mut leaves = node.client(&ctx);
    let last_63 = rest(&mut leaves, 63, CANCEL_ON_DISCONNECT, 7);
    // 61's connection drops; 62's too (it did not ask); 63 logs out (it gets LoggedOut and no
    // more of 63's reports: the cancels' reports are the account's, as a resend shows).
    drop(asked);
    drop(not_asked);
    leaves.push(requests::logout(63));
    leaves.flush().unwrap();
    let mut out = Vec::new();
    drain(&mut leaves, &mut out, Duration::from_millis(300));
    assert!(
        matches!(out.as_slice(), [ServerReport::LoggedOut(_)]),
        "{out:?}"
    );
    // Each comes back and asks for what it missed: the cancels, done through the engine.
    for (account, after, n) in [(61, last, 10), (63, last_63, 7)] {
        let resent = missed(&node, &ctx, account, after, n);
        assert!(
            resent
                .iter()
                .any(|r| matches!(r, ServerReport::MassCancelled(m) if m.count() == n as u32)),
            "{resent:?}"
        );
    }
    let (code, summary, snapshot) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["engine_allocations"], 0);
    // Only 62's orders rest (it did not ask for the option).
    let engine = Engine::restore(&std::fs::read(snapshot).unwrap()).unwrap();
    assert_eq!(engine.live_orders(), 5);
}

#[test]
fn cancel_on_disconnect_is_for_trading_keys_and_unknown_flags_are_refused() {
    let keys = Keys::create("cod-flags");
    let risk = keys.add("risk", "read", &["64"]);
    let node = Node::start_with_keys("cod-flags", "", keys);
    let ctx = zmq::Context::new();
    let refused = |c: &mut OrderClient, flags: u8| {
        c.push(requests::logon_with(64, 0, flags));
        c.flush().unwrap();
        let mut out = Vec::new();
        drain(c, &mut out, Duration::from_millis(300));
        match out.as_slice() {
            [ServerReport::Rejected(r)] => r.reason(),
            other => panic!("{other:?}"),
        }
    };
    let mut trader = node.client(&ctx);
    assert_eq!(refused(&mut trader, 4), RejectReason::InvalidEnumValue);
    // A read (drop-copy) key has no orders to cancel.
    let mut reader = OrderClient::connect(&ctx, &node.order_entry, &risk).unwrap();
    assert_eq!(
        refused(&mut reader, CANCEL_ON_DISCONNECT),
        RejectReason::NotEntitled
    );
    let (code, _, _) = node.stop();
    assert_eq!(code, 0);
}
