//! `FailoverClient` against scripted gateways on real ZeroMQ TCP sockets (127.0.0.1): the
//! exact frame order of a failover, which a pair of real nodes produces only by chance.

use caldera_client::{
    requests, wire, ClientCredentials, ClientRequest, FailoverClient, ServerReport,
};
use caldera_schema::codec;
use flatbuffers::FlatBufferBuilder;
use std::time::{Duration, Instant};

/// One ROUTER socket playing a gateway: reads request frames, sends report frames.
struct ScriptedGateway {
    socket: zmq::Socket,
    fbb: FlatBufferBuilder<'static>,
    offsets: Vec<flatbuffers::WIPOffset<wire::Report<'static>>>,
    /// Each peer's next session sequence number ([`ScriptedGateway::reply`]).
    sessions: std::collections::HashMap<Vec<u8>, u64>,
}

impl ScriptedGateway {
    fn bind(ctx: &zmq::Context, endpoint: &str) -> Self {
        let socket = ctx.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind(endpoint).unwrap();
        Self {
            socket,
            fbb: FlatBufferBuilder::new(),
            offsets: Vec::new(),
            sessions: std::collections::HashMap::new(),
        }
    }

    fn endpoint(&self) -> String {
        self.socket.get_last_endpoint().unwrap().unwrap()
    }

    /// The next frame's sender and requests, if one arrives within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<(Vec<u8>, Vec<ClientRequest>)> {
        let ms = i64::try_from(timeout.as_millis()).unwrap();
        if self.socket.poll(zmq::POLLIN, ms).unwrap() == 0 {
            return None;
        }
        let parts = self.socket.recv_multipart(0).unwrap();
        let mut reqs = Vec::new();
        codec::decode_client_batch(&parts[1], &codec::verifier_options(64), 64, |_, r| {
            reqs.push(r.unwrap());
        })
        .unwrap();
        Some((parts[0].clone(), reqs))
    }

    /// Sends `reports` to `to` as the next frame of its session.
    fn reply(&mut self, to: &[u8], reports: &[ServerReport], resent: bool) {
        let seq = *self.sessions.entry(to.to_vec()).or_insert(1);
        self.send(to, seq, reports, resent);
        self.sessions
            .insert(to.to_vec(), seq + reports.len() as u64);
    }

    /// Sends `reports` to `to` as a frame starting at `first_session_seq`.
    fn send(&mut self, to: &[u8], first_session_seq: u64, reports: &[ServerReport], resent: bool) {
        let bytes = codec::encode_report_frame(
            &mut self.fbb,
            &mut self.offsets,
            first_session_seq,
            reports,
            resent,
        );
        self.socket.send_multipart([to, bytes], 0).unwrap();
    }
}

const ACCOUNT: u32 = 101;

fn logged_on() -> ServerReport {
    ServerReport::LoggedOn(wire::LoggedOn::new(ACCOUNT))
}

fn accepted(order_id: u64, cl: u64, seq: u64) -> ServerReport {
    ServerReport::Accepted(wire::Accepted::new(
        order_id,
        cl,
        1000,
        2,
        seq,
        1,
        wire::Side::Sell,
        wire::OrderType::Limit,
        wire::TimeInForce::Gtc,
    ))
}

fn fill(trade_id: u64, leaves: u64, seq: u64) -> ServerReport {
    ServerReport::Fill(wire::Fill::new(
        trade_id,
        7,
        1,
        1000,
        1,
        leaves,
        seq,
        1,
        wire::Side::Sell,
        wire::Liquidity::Maker,
    ))
}

/// Order 1 of [`ACCOUNT`]: a resting sell of 2 at 1000.
fn order_one() -> ClientRequest {
    requests::limit(1, 1, wire::Side::Sell, wire::TimeInForce::Gtc, 1000, 2)
}

/// A client of `endpoints` whose logon and order 1 `gw` took, and whose session `gw` then
/// breaks with a frame out of sequence (the session is lost: the client resumes after 0).
fn placed_then_lost(
    ctx: &zmq::Context,
    gw: &mut ScriptedGateway,
    endpoints: &[String],
    resend_after: Duration,
) -> FailoverClient {
    let mut c = FailoverClient::connect(
        ctx,
        endpoints,
        &ClientCredentials::Insecure,
        ACCOUNT,
        resend_after,
    )
    .unwrap();
    let (peer, _) = flush_to(&mut c, gw, "the logon");
    gw.reply(&peer, &[logged_on()], false);
    c.push(order_one());
    let (peer, _) = flush_to(&mut c, gw, "the order");
    gw.send(&peer, 9, &[accepted(7, 1, 10)], false);
    c
}

/// Flushes `c` (a send waits for a completed connection) until `gateway` gets a frame.
fn flush_to(
    c: &mut FailoverClient,
    gateway: &ScriptedGateway,
    what: &str,
) -> (Vec<u8>, Vec<ClientRequest>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "{what} never arrived");
        c.flush().unwrap();
        if let Some(frame) = gateway.recv(Duration::from_millis(5)) {
            return frame;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The old primary accepts order 7 (sequence 10), takes a second order and dies without
/// answering it. The new primary fills order 7 at sequence 12 while the account has no session
/// there (nobody gets that report), then the client's plain logon probe reaches it, and its
/// first frame to that session carries a later fill (sequence 14). The client must not deliver
/// that frame: it resumes after 10, and the resend brings 12 and 14, each once, in order.
#[test]
fn a_new_primarys_first_frame_is_not_delivered_so_the_resend_starts_before_the_fills_it_missed() {
    let ctx = zmq::Context::new();
    let mut old = ScriptedGateway::bind(&ctx, "tcp://127.0.0.1:*");
    let new_endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut c = FailoverClient::connect(
        &ctx,
        &[old.endpoint(), new_endpoint.clone()],
        &ClientCredentials::Insecure,
        ACCOUNT,
        Duration::from_millis(300),
    )
    .unwrap();
    let (peer, reqs) = flush_to(&mut c, &old, "the logon");
    assert!(matches!(reqs[..], [ClientRequest::Logon(_)]), "{reqs:?}");
    old.reply(&peer, &[logged_on()], false);

    // Order 7 is accepted at sequence 10.
    c.push(order_one());
    let (peer, _) = flush_to(&mut c, &old, "the first order");
    old.reply(&peer, &[accepted(7, 1, 10)], false);
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.last_engine_seq() < 10 {
        assert!(Instant::now() < deadline, "no Accepted: {delivered:?}");
        c.poll(&mut delivered, Duration::from_millis(5)).unwrap();
    }

    // A second order reaches the old primary, which dies before answering it.
    c.push(requests::limit(
        2,
        1,
        wire::Side::Sell,
        wire::TimeInForce::Gtc,
        1001,
        1,
    ));
    flush_to(&mut c, &old, "the second order");
    drop(old);

    // The new primary: a plain logon gets a session whose first frame holds fill 14 (fill 12
    // went to no session); a LogonWith{RESEND} gets the journal's reports after `resume_after`.
    let journal = [fill(1, 1, 12), fill(2, 0, 14)];
    let mut new = ScriptedGateway::bind(&ctx, &new_endpoint);
    let mut resumed_after = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the second order was never answered; delivered {delivered:?}"
        );
        c.poll(&mut delivered, Duration::from_millis(5)).unwrap();
        if delivered
            .iter()
            .any(|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 2))
        {
            break;
        }
        let Some((peer, reqs)) = new.recv(Duration::from_millis(5)) else {
            continue;
        };
        let mut out = Vec::new();
        let mut resent = false;
        for r in reqs {
            match r {
                ClientRequest::Logon(_) => {
                    out.push(logged_on());
                    out.push(journal[1]);
                }
                ClientRequest::LogonWith(l) => {
                    resumed_after.get_or_insert(l.resume_after());
                    out.push(logged_on());
                    let mut count = 0;
                    for r in journal {
                        if caldera_client::engine_seq(&r).unwrap() > l.resume_after() {
                            out.push(r);
                            count += 1;
                        }
                    }
                    out.push(ServerReport::ResendComplete(wire::ResendComplete::new(
                        l.resume_after() + 1,
                        14,
                        count,
                        ACCOUNT,
                    )));
                    resent = true;
                }
                ClientRequest::NewOrder(o) if o.client_order_id() == 2 => {
                    out.push(accepted(8, 2, 15));
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        new.reply(&peer, &out, resent);
    }

    assert_eq!(
        resumed_after,
        Some(10),
        "the resend must start after the last report delivered in order"
    );
    let fills: Vec<u64> = delivered
        .iter()
        .filter_map(|r| match r {
            ServerReport::Fill(f) => Some(f.engine_seq()),
            _ => None,
        })
        .collect();
    assert_eq!(fills, [12, 14], "each fill once, in engine_seq order");
}

/// A resend that takes longer than `resend_after` to send its first frame (a long absence, a
/// long journal to read) is not taken for a lost session while the node answers heartbeats:
/// the client stays on it, gets the resent fill and then the answer to its resent order.
#[test]
fn a_long_resend_keeps_its_session_while_the_node_answers_heartbeats() {
    let ctx = zmq::Context::new();
    let mut gw = ScriptedGateway::bind(&ctx, "tcp://127.0.0.1:*");
    let resend_after = Duration::from_millis(200);
    // The session is lost: the client resumes after 0.
    let endpoint = gw.endpoint();
    let mut c = placed_then_lost(&ctx, &mut gw, &[endpoint], resend_after);

    let mut delivered = Vec::new();
    let mut resend: Option<(Vec<u8>, Instant)> = None;
    let mut heartbeats = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !delivered
        .iter()
        .any(|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 1))
    {
        assert!(Instant::now() < deadline, "never answered: {delivered:?}");
        c.poll(&mut delivered, Duration::from_millis(5)).unwrap();
        // The resend's reports come 5 × resend_after after the logon.
        if let Some((peer, since)) = &resend {
            if since.elapsed() > resend_after * 5 {
                let reports = [
                    accepted(7, 1, 10),
                    ServerReport::ResendComplete(wire::ResendComplete::new(0, 10, 1, ACCOUNT)),
                ];
                gw.reply(peer, &reports, true);
                resend = None;
            }
        }
        let Some((peer, reqs)) = gw.recv(Duration::from_millis(5)) else {
            continue;
        };
        let mut out = Vec::new();
        for r in reqs {
            match r {
                ClientRequest::LogonWith(l) => {
                    assert_eq!(l.resume_after(), 0);
                    assert!(resend.is_none(), "a second resend was asked for");
                    out.push(logged_on());
                    resend = Some((peer.clone(), Instant::now()));
                }
                ClientRequest::Heartbeat(h) => {
                    heartbeats += 1;
                    out.push(ServerReport::HeartbeatAck(wire::HeartbeatAck::new(
                        h.client_time_ns(),
                    )));
                }
                ClientRequest::NewOrder(o) => {
                    // Resent after ResendComplete: the original was accepted.
                    out.push(ServerReport::Rejected(wire::Rejected::new(
                        7,
                        o.client_order_id(),
                        0,
                        1,
                        0,
                        wire::RejectReason::DuplicateClientOrderId,
                        wire::RequestKind::New,
                    )));
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        if !out.is_empty() {
            gw.reply(&peer, &out, false);
        }
    }
    assert_eq!(c.reconnects(), 1, "the slow resend was given up");
    assert!(
        heartbeats > 0,
        "no heartbeat probed the node during the resend"
    );
    assert!(
        !delivered
            .iter()
            .any(|r| matches!(r, ServerReport::HeartbeatAck(_))),
        "the client's own probes are not delivered"
    );
}

/// The node that took the resend's `LogonWith` dies before answering it, and the socket (which
/// reaches every node) gets its heartbeats answered by the other node, in a new session whose
/// first frame looks like the next one. Those answers must not keep the dead resend alive: the
/// client resumes again, on the node that is there.
#[test]
fn heartbeats_answered_by_another_node_do_not_keep_an_unanswered_resend_alive() {
    let ctx = zmq::Context::new();
    let mut old = ScriptedGateway::bind(&ctx, "tcp://127.0.0.1:*");
    let new_endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let resend_after = Duration::from_millis(200);
    // The session is lost: the client resumes, and its LogonWith reaches the old node only (the
    // new one is not listening yet), which dies without answering it.
    let endpoints = [old.endpoint(), new_endpoint.clone()];
    let mut c = placed_then_lost(&ctx, &mut old, &endpoints, resend_after);
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let logon_with = loop {
        assert!(Instant::now() < deadline, "no LogonWith");
        c.poll(&mut delivered, Duration::from_millis(5)).unwrap();
        if let Some((_, reqs)) = old.recv(Duration::from_millis(5)) {
            if reqs
                .iter()
                .any(|r| matches!(r, ClientRequest::LogonWith(_)))
            {
                break reqs;
            }
        }
    };
    assert_eq!(logon_with.len(), 1);
    drop(old);

    let mut new = ScriptedGateway::bind(&ctx, &new_endpoint);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !delivered
        .iter()
        .any(|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 1))
    {
        assert!(
            Instant::now() < deadline,
            "the client never resumed on the live node: {delivered:?}"
        );
        c.poll(&mut delivered, Duration::from_millis(5)).unwrap();
        let Some((peer, reqs)) = new.recv(Duration::from_millis(5)) else {
            continue;
        };
        let mut out = Vec::new();
        for r in reqs {
            match r {
                ClientRequest::Heartbeat(h) => out.push(ServerReport::HeartbeatAck(
                    wire::HeartbeatAck::new(h.client_time_ns()),
                )),
                ClientRequest::LogonWith(l) => {
                    assert_eq!(l.resume_after(), 0);
                    out.push(logged_on());
                    out.push(accepted(7, 1, 10));
                    out.push(ServerReport::ResendComplete(wire::ResendComplete::new(
                        0, 10, 1, ACCOUNT,
                    )));
                }
                ClientRequest::Logon(_) => out.push(logged_on()),
                other => panic!("unexpected request {other:?}"),
            }
        }
        new.reply(&peer, &out, false);
    }
    assert_eq!(c.reconnects(), 2);
}
