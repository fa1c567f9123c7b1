//! The engine on the gateway's thread and on its own (`threads.engine`, ADR 0017), with rings
//! far smaller than one command's events (real binary, real TCP, file journal): a sweep through
//! hundreds of resting orders fills the engine's output ring and the journal's ring to the
//! gateway many times over inside one command. On the gateway's thread the engine must keep the
//! gateway routing while it waits for room, or neither thread could move again.

use caldera_client::wire::{Side, TimeInForce};
use caldera_client::{requests, OrderClient, ServerReport};
use caldera_testkit::harness::Node;
use std::time::{Duration, Instant};

/// Resting sell orders the sweep takes.
const MAKERS: u64 = 400;

fn count(reports: &[ServerReport], f: impl Fn(&ServerReport) -> bool) -> usize {
    reports.iter().filter(|r| f(r)).count()
}

/// Receives into `out` until `enough(out)` or the deadline (then fails with `what`).
fn recv_until(
    c: &mut OrderClient,
    out: &mut Vec<ServerReport>,
    what: &str,
    enough: impl Fn(&[ServerReport]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !enough(out) {
        assert!(
            Instant::now() < deadline,
            "{what}: not all reports came within 30 s (got {}, the last: {:?}); the pipeline is stuck",
            out.len(),
            out.iter().rev().find(|r| !matches!(r, ServerReport::Accepted(_)))
        );
        c.recv(out, Duration::from_millis(50)).unwrap();
    }
}

/// A node with 16-slot rings and the engine on `engine`'s thread, `MAKERS` resting sells
/// (all acknowledged) from the maker, and one IOC buy from the taker sent to sweep them all.
/// Returns the node, the maker with its reports so far, and the taker.
fn sweep_through_small_rings(
    tag: &str,
    engine: &str,
    ctx: &zmq::Context,
) -> (Node, OrderClient, Vec<ServerReport>, OrderClient) {
    let node = Node::start(
        &format!("{tag}-{engine}"),
        &format!(
            "max_batch = 16\n[threads]\nwait = \"park\"\nengine = \"{engine}\"\nring_capacity = 16\n"
        ),
    );
    let mut maker = node.client(ctx);
    maker.push(requests::logon(1));
    maker.flush().unwrap();
    let mut made = Vec::new();
    for i in 0..MAKERS {
        // Ten price levels, so the sweep also empties levels as it goes.
        maker.push(requests::limit(
            i + 1,
            1,
            Side::Sell,
            TimeInForce::Gtc,
            100 + i % 10,
            1,
        ));
        if i % 16 == 15 {
            maker.flush().unwrap();
        }
    }
    maker.flush().unwrap();
    recv_until(&mut maker, &mut made, "the resting orders", |r| {
        count(r, |x| matches!(x, ServerReport::Accepted(_))) == MAKERS as usize
    });

    let mut taker = node.client(ctx);
    taker.push(requests::logon(2));
    taker.push(requests::limit(
        1,
        1,
        Side::Buy,
        TimeInForce::Ioc,
        200,
        MAKERS,
    ));
    taker.flush().unwrap();
    (node, maker, made, taker)
}

fn a_sweep_larger_than_the_rings_is_answered_in_full(engine: &str) {
    let ctx = zmq::Context::new();
    let (node, mut maker, mut made, mut taker) = sweep_through_small_rings("engine", engine, &ctx);
    let mut took = Vec::new();
    recv_until(&mut taker, &mut took, "the taker", |r| {
        count(r, |x| matches!(x, ServerReport::Done(_))) == 1
    });
    assert_eq!(
        count(&took, |x| matches!(x, ServerReport::Fill(_))),
        MAKERS as usize,
        "{took:?}"
    );
    recv_until(&mut maker, &mut made, "the makers", |r| {
        count(r, |x| matches!(x, ServerReport::Done(_))) == MAKERS as usize
    });
    assert_eq!(
        count(&made, |x| matches!(x, ServerReport::Fill(_))),
        MAKERS as usize
    );
    let log = node.log();
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(summary["live_orders"].as_u64(), Some(0));
    assert_eq!(summary["engine_allocations"].as_u64(), Some(0), "{summary}");
}

#[test]
fn on_the_gateway_thread_a_sweep_larger_than_the_rings_is_answered_in_full() {
    a_sweep_larger_than_the_rings_is_answered_in_full("gateway");
}

#[test]
fn on_its_own_thread_a_sweep_larger_than_the_rings_is_answered_in_full() {
    a_sweep_larger_than_the_rings_is_answered_in_full("own");
}

/// SIGTERM while a sweep's events are still on their way (far more of them than the rings
/// hold, so the journal keeps most of them in its backlog and hands them to the gateway's ring
/// a ring's worth at a time): the gateway must not stop routing before every event is routed.
/// If it stopped when its ring was momentarily empty, the journal could never hand over the
/// rest and the node would never exit.
fn a_sigterm_during_a_sweep_larger_than_the_rings_ends_with_every_report_sent(engine: &str) {
    let ctx = zmq::Context::new();
    let (node, _maker, _made, mut taker) = sweep_through_small_rings("engine-stop", engine, &ctx);
    // The first fill is out: the rest of the sweep is in the rings and the journal's backlog.
    let mut took = Vec::new();
    recv_until(&mut taker, &mut took, "the first fill", |r| {
        count(r, |x| matches!(x, ServerReport::Fill(_))) >= 1
    });
    let mut node = node;
    node.signal(rustix::process::Signal::TERM);
    let code = node.wait_exit(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "the node did not exit within 30 s of SIGTERM (None: it hangs):\n{}",
        node.log()
    );
    // Every report of the sweep went out before the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&took, |x| matches!(x, ServerReport::Done(_))) < 1 && Instant::now() < deadline {
        taker.recv(&mut took, Duration::from_millis(50)).unwrap();
    }
    assert_eq!(
        count(&took, |x| matches!(x, ServerReport::Fill(_))),
        MAKERS as usize,
        "{took:?}"
    );
    assert_eq!(count(&took, |x| matches!(x, ServerReport::Done(_))), 1);
}

#[test]
fn on_the_gateway_thread_a_sigterm_during_a_large_sweep_ends_with_every_report_sent() {
    a_sigterm_during_a_sweep_larger_than_the_rings_ends_with_every_report_sent("gateway");
}

#[test]
fn on_its_own_thread_a_sigterm_during_a_large_sweep_ends_with_every_report_sent() {
    a_sigterm_during_a_sweep_larger_than_the_rings_ends_with_every_report_sent("own");
}
