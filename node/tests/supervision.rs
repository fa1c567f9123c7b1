//! Faults inside a running node, injected through `CALDERA_FAULT` (honoured by debug builds
//! only): a stalled or dead engine thread and a failed fsync end the process with a typed exit
//! code so a standby takes over; a write cut short is rolled back and retried without losing
//! anything acknowledged.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{Side, TimeInForce};
use caldera_client::{OrderClient, ServerReport};
use caldera_testkit::harness::{temp_dir, Node};
use std::time::{Duration, Instant};

fn accepted(r: &[ServerReport]) -> u64 {
    r.iter()
        .filter(|x| matches!(x, ServerReport::Accepted(_)))
        .count() as u64
}

/// Sends resting buy orders (they never cross) until the node exits or `limit` passes;
/// returns how many were acknowledged.
fn send_until_exit(
    node: &mut Node,
    c: &mut OrderClient,
    limit_time: Duration,
) -> (u64, Option<i32>) {
    let mut reports = Vec::new();
    let deadline = Instant::now() + limit_time;
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..5 {
            n += 1;
            c.push(limit(n, 1, Side::Buy, TimeInForce::Gtc, 1000 - n % 500, 1));
        }
        let _ = c.try_flush();
        let _ = c.recv(&mut reports, Duration::from_millis(20));
        if let Some(code) = node.wait_exit(Duration::ZERO) {
            let _ = c.recv(&mut reports, Duration::from_millis(100));
            return (accepted(&reports), Some(code));
        }
    }
    (accepted(&reports), None)
}

/// The engine on the gateway's thread (`threads.engine = "gateway"`, ADR 0017).
const ON_THE_GATEWAY: &str = "[threads]\nwait = \"park\"\nengine = \"gateway\"\n";

#[cfg(debug_assertions)]
#[test]
fn a_stalled_engine_thread_ends_the_node_with_exit_code_5() {
    stalled_engine("");
}

#[cfg(debug_assertions)]
#[test]
fn a_stalled_engine_on_the_gateway_thread_ends_the_node_with_exit_code_5() {
    stalled_engine(ON_THE_GATEWAY);
}

#[cfg(debug_assertions)]
fn stalled_engine(threads: &str) {
    let dir = temp_dir("stall");
    let mut node = Node::start_with_env(
        "stall",
        &format!("{threads}[failover]\nstall_ms = 300"),
        &dir.join("journal"),
        &[("CALDERA_FAULT", "engine-stall@3")],
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    c.push(requests::logon(1));
    let (acked, code) = send_until_exit(&mut node, &mut c, Duration::from_secs(30));
    assert_eq!(code, Some(5), "log:\n{}", node.log());
    assert!(
        acked <= 5,
        "the engine stopped after 3 commands; {acked} acknowledged"
    );
    assert!(node.log().contains("made no progress"), "{}", node.log());
}

#[cfg(debug_assertions)]
#[test]
fn a_panicked_engine_thread_ends_the_node_with_exit_code_6() {
    panicked_engine("");
}

#[cfg(debug_assertions)]
#[test]
fn a_panicked_engine_on_the_gateway_thread_ends_the_node_with_exit_code_6() {
    panicked_engine(ON_THE_GATEWAY);
}

#[cfg(debug_assertions)]
fn panicked_engine(threads: &str) {
    let dir = temp_dir("panic");
    let mut node = Node::start_with_env(
        "panic",
        threads,
        &dir.join("journal"),
        &[("CALDERA_FAULT", "engine-panic@3")],
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    c.push(requests::logon(1));
    let (_, code) = send_until_exit(&mut node, &mut c, Duration::from_secs(30));
    assert_eq!(code, Some(6), "log:\n{}", node.log());
    assert!(node.log().contains("engine thread died"), "{}", node.log());
}

#[cfg(debug_assertions)]
#[test]
fn a_failed_fsync_ends_the_node_with_exit_code_4_and_nothing_acknowledged_is_lost() {
    let dir = temp_dir("fsyncfail");
    let journal = dir.join("journal");
    let mut node = Node::start_with_env(
        "fsyncfail",
        "",
        &journal,
        &[("CALDERA_FAULT", "journal-fsync@40")],
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    c.push(requests::logon(1));
    let (acked, code) = send_until_exit(&mut node, &mut c, Duration::from_secs(60));
    assert_eq!(code, Some(4), "log:\n{}", node.log());
    assert!(node.log().contains("fsync failed"), "{}", node.log());
    assert!(acked > 0);
    drop(node);
    // Restarted on the same journal (no fault): every acknowledged order is there.
    let again = Node::start_on("fsyncfail-again", "", &journal);
    let (code, summary, _) = again.stop();
    assert_eq!(code, 0);
    let live = summary["live_orders"].as_u64().unwrap();
    assert!(live >= acked, "{acked} acknowledged, {live} recovered");
}

#[cfg(debug_assertions)]
#[test]
fn a_write_cut_short_is_rolled_back_retried_and_nothing_acknowledged_is_lost() {
    let dir = temp_dir("shortwrite");
    let journal = dir.join("journal");
    let mut node = Node::start_with_env(
        "shortwrite",
        "",
        &journal,
        &[("CALDERA_FAULT", "journal-write@10")],
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    c.push(requests::logon(1));
    let (acked, code) = send_until_exit(&mut node, &mut c, Duration::from_secs(3));
    assert_eq!(code, None, "the node keeps serving; log:\n{}", node.log());
    assert!(
        node.log().contains("journal append failed"),
        "the fault fired: {}",
        node.log()
    );
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    let served_live = summary["live_orders"].as_u64().unwrap();
    assert!(served_live >= acked);
    // Reopened: no damage, nothing lost.
    let again = Node::start_on("shortwrite-again", "", &journal);
    assert!(!again.log().contains("damage"), "{}", again.log());
    let (code, summary, _) = again.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["live_orders"].as_u64().unwrap(), served_live);
}
