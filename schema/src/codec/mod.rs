//! Batch encoding and decoding shared by the gateway, the Rust client and the loadgen.
//!
//! Requests and reports are the generated fixed-size structs wrapped in `Copy` enums, so a
//! decoded batch is just a walk over the verified buffer. The hot paths are [`flat`]'s
//! one-pass writers and readers; the functions built on `FlatBufferBuilder` and the generic
//! verifier ([`encode_client_batch`], [`decode_client_batch`], …) are the reference they are
//! tested against, and what tests use to build frames.

pub mod flat;

pub use flat::{
    read_client_batch, read_report_batch, read_report_frame, write_client_batch,
    write_report_batch, write_report_frame, ReportFrame,
};

use crate::wire;
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

/// One order-entry request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClientRequest {
    /// Bind the session to an account.
    Logon(wire::Logon),
    /// Place an order.
    NewOrder(wire::NewOrder),
    /// Cancel an order.
    Cancel(wire::Cancel),
    /// Amend an order.
    Replace(wire::Replace),
    /// Cancel many orders.
    MassCancel(wire::MassCancel),
    /// Liveness / round-trip probe.
    Heartbeat(wire::Heartbeat),
    /// End the logon for an account.
    Logout(wire::Logout),
    /// Admin: halt an instrument.
    HaltInstrument(wire::HaltInstrument),
    /// Admin: resume an instrument.
    ResumeInstrument(wire::ResumeInstrument),
    /// Admin: cancel every resting order of an account.
    CancelAll(wire::CancelAll),
    /// Admin: list the sessions.
    ListSessions(wire::ListSessions),
    /// The live orders of the session's account.
    QueryOrders(wire::QueryOrders),
    /// Bind the session to an account and resend its reports after a sequence.
    LogonWith(wire::LogonWith),
}

/// One report to a client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ServerReport {
    /// Logon confirmed.
    LoggedOn(wire::LoggedOn),
    /// The session gets no more of an account's reports (with the reason).
    LoggedOut(wire::LoggedOut),
    /// Order accepted.
    Accepted(wire::Accepted),
    /// Request rejected.
    Rejected(wire::Rejected),
    /// Execution.
    Fill(wire::Fill),
    /// Order finished.
    Done(wire::Done),
    /// Order amended.
    Replaced(wire::Replaced),
    /// Mass cancel finished.
    MassCancelled(wire::MassCancelled),
    /// Heartbeat echo.
    HeartbeatAck(wire::HeartbeatAck),
    /// An instrument was halted or resumed (admin sessions).
    InstrumentStatus(wire::InstrumentStatus),
    /// One session (answer to `ListSessions`).
    SessionInfo(wire::SessionInfo),
    /// A `LogonWith{RESEND}`'s resend is complete.
    ResendComplete(wire::ResendComplete),
    /// One live order (answer to `QueryOrders`).
    OpenOrder(wire::OpenOrder),
}

/// Why a frame could not be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The FlatBuffers verifier rejected the buffer.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// More requests than allowed in one frame.
    #[error("batch of {0} requests is larger than the limit")]
    TooMany(usize),
}

/// Why one request of a frame is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// No known body is set (a newer or broken client).
    UnknownType,
    /// More than one body is set.
    Ambiguous,
}

/// Verifier limits for frames from untrusted clients.
#[must_use]
pub fn verifier_options(max_batch: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 8,
        max_tables: max_batch + 8,
        max_apparent_size: 1 << 26,
        ignore_missing_null_terminator: false,
    }
}

/// Decodes a client frame, calling `f(index, request)` for each request in order.
///
/// # Errors
/// [`FrameError`] when the frame is not a verifiable `ClientBatch` or is too large a batch.
pub fn decode_client_batch(
    buf: &[u8],
    opts: &VerifierOptions,
    max_batch: usize,
    mut f: impl FnMut(usize, Result<ClientRequest, RequestError>),
) -> Result<usize, FrameError> {
    let batch = wire::root_as_client_batch_with_opts(opts, buf)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let Some(reqs) = batch.requests() else {
        return Ok(0);
    };
    if reqs.len() > max_batch {
        return Err(FrameError::TooMany(reqs.len()));
    }
    for (i, r) in reqs.iter().enumerate() {
        f(i, request_of(&r));
    }
    Ok(reqs.len())
}

/// Number of requests in a frame, after verification (0 for an empty batch).
///
/// # Errors
/// [`FrameError::Malformed`] when the verifier rejects the buffer.
pub fn client_batch_len(buf: &[u8], opts: &VerifierOptions) -> Result<usize, FrameError> {
    let batch = wire::root_as_client_batch_with_opts(opts, buf)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(batch.requests().map_or(0, |r| r.len()))
}

fn request_of(r: &wire::Request<'_>) -> Result<ClientRequest, RequestError> {
    let mut found = None;
    let mut n = 0;
    if let Some(x) = r.logon() {
        n += 1;
        found = Some(ClientRequest::Logon(*x));
    }
    if let Some(x) = r.new_order() {
        n += 1;
        found = Some(ClientRequest::NewOrder(*x));
    }
    if let Some(x) = r.cancel() {
        n += 1;
        found = Some(ClientRequest::Cancel(*x));
    }
    if let Some(x) = r.replace() {
        n += 1;
        found = Some(ClientRequest::Replace(*x));
    }
    if let Some(x) = r.mass_cancel() {
        n += 1;
        found = Some(ClientRequest::MassCancel(*x));
    }
    if let Some(x) = r.heartbeat() {
        n += 1;
        found = Some(ClientRequest::Heartbeat(*x));
    }
    if let Some(x) = r.logout() {
        n += 1;
        found = Some(ClientRequest::Logout(*x));
    }
    if let Some(x) = r.halt_instrument() {
        n += 1;
        found = Some(ClientRequest::HaltInstrument(*x));
    }
    if let Some(x) = r.resume_instrument() {
        n += 1;
        found = Some(ClientRequest::ResumeInstrument(*x));
    }
    if let Some(x) = r.cancel_all() {
        n += 1;
        found = Some(ClientRequest::CancelAll(*x));
    }
    if let Some(x) = r.list_sessions() {
        n += 1;
        found = Some(ClientRequest::ListSessions(*x));
    }
    if let Some(x) = r.logon_with() {
        n += 1;
        found = Some(ClientRequest::LogonWith(*x));
    }
    if let Some(x) = r.query_orders() {
        n += 1;
        found = Some(ClientRequest::QueryOrders(*x));
    }
    match (n, found) {
        (1, Some(req)) => Ok(req),
        (0, _) => Err(RequestError::UnknownType),
        _ => Err(RequestError::Ambiguous),
    }
}

/// Encodes requests as one `ClientBatch` frame into `fbb` (reset first) and returns the bytes.
pub fn encode_client_batch<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    reqs: &[ClientRequest],
) -> &'a [u8] {
    fbb.reset();
    let mut offs: Vec<WIPOffset<wire::Request<'_>>> = Vec::with_capacity(reqs.len());
    for r in reqs {
        let mut a = wire::RequestArgs::default();
        match r {
            ClientRequest::Logon(x) => a.logon = Some(x),
            ClientRequest::NewOrder(x) => a.new_order = Some(x),
            ClientRequest::Cancel(x) => a.cancel = Some(x),
            ClientRequest::Replace(x) => a.replace = Some(x),
            ClientRequest::MassCancel(x) => a.mass_cancel = Some(x),
            ClientRequest::Heartbeat(x) => a.heartbeat = Some(x),
            ClientRequest::Logout(x) => a.logout = Some(x),
            ClientRequest::HaltInstrument(x) => a.halt_instrument = Some(x),
            ClientRequest::ResumeInstrument(x) => a.resume_instrument = Some(x),
            ClientRequest::CancelAll(x) => a.cancel_all = Some(x),
            ClientRequest::ListSessions(x) => a.list_sessions = Some(x),
            ClientRequest::LogonWith(x) => a.logon_with = Some(x),
            ClientRequest::QueryOrders(x) => a.query_orders = Some(x),
        }
        offs.push(wire::Request::create(fbb, &a));
    }
    let v = fbb.create_vector(&offs);
    let root = wire::ClientBatch::create(fbb, &wire::ClientBatchArgs { requests: Some(v) });
    fbb.finish(root, None);
    fbb.finished_data()
}

/// Encodes reports as one `ReportBatch` frame into `fbb` (reset first) and returns the bytes.
/// `offsets` is scratch space reused between calls.
pub fn encode_report_batch<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    offsets: &mut Vec<WIPOffset<wire::Report<'static>>>,
    first_session_seq: u64,
    reports: &[ServerReport],
) -> &'a [u8] {
    encode_report_frame(fbb, offsets, first_session_seq, reports, false)
}

/// [`encode_report_batch`], with the frame's `resent` flag.
pub fn encode_report_frame<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    offsets: &mut Vec<WIPOffset<wire::Report<'static>>>,
    first_session_seq: u64,
    reports: &[ServerReport],
    resent: bool,
) -> &'a [u8] {
    fbb.reset();
    offsets.clear();
    for r in reports {
        let mut a = wire::ReportArgs::default();
        match r {
            ServerReport::LoggedOn(x) => a.logged_on = Some(x),
            ServerReport::LoggedOut(x) => a.logged_out = Some(x),
            ServerReport::Accepted(x) => a.accepted = Some(x),
            ServerReport::Rejected(x) => a.rejected = Some(x),
            ServerReport::Fill(x) => a.fill = Some(x),
            ServerReport::Done(x) => a.done = Some(x),
            ServerReport::Replaced(x) => a.replaced = Some(x),
            ServerReport::MassCancelled(x) => a.mass_cancelled = Some(x),
            ServerReport::HeartbeatAck(x) => a.heartbeat_ack = Some(x),
            ServerReport::InstrumentStatus(x) => a.instrument_status = Some(x),
            ServerReport::SessionInfo(x) => a.session_info = Some(x),
            ServerReport::ResendComplete(x) => a.resend_complete = Some(x),
            ServerReport::OpenOrder(x) => a.open_order = Some(x),
        }
        let off = wire::Report::create(fbb, &a);
        offsets.push(WIPOffset::new(off.value()));
    }
    let v = fbb.create_vector(offsets);
    let root = wire::ReportBatch::create(
        fbb,
        &wire::ReportBatchArgs {
            first_session_seq,
            reports: Some(v),
            resent,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data()
}

/// Decodes a `ReportBatch` frame: returns its first session sequence number and pushes the
/// reports to `out`. Unknown report types (from a newer gateway) are skipped and counted.
///
/// # Errors
/// [`FrameError::Malformed`] when the verifier rejects the buffer.
pub fn decode_report_batch(
    buf: &[u8],
    out: &mut Vec<ServerReport>,
) -> Result<(u64, usize), FrameError> {
    let opts = VerifierOptions {
        max_tables: 10_000_000,
        max_apparent_size: 1 << 31,
        ..Default::default()
    };
    let b = flatbuffers::root_with_opts::<wire::ReportBatch>(&opts, buf)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let mut unknown = 0;
    if let Some(rs) = b.reports() {
        for r in rs {
            let rep = if let Some(x) = r.accepted() {
                ServerReport::Accepted(*x)
            } else if let Some(x) = r.fill() {
                ServerReport::Fill(*x)
            } else if let Some(x) = r.done() {
                ServerReport::Done(*x)
            } else if let Some(x) = r.rejected() {
                ServerReport::Rejected(*x)
            } else if let Some(x) = r.replaced() {
                ServerReport::Replaced(*x)
            } else if let Some(x) = r.mass_cancelled() {
                ServerReport::MassCancelled(*x)
            } else if let Some(x) = r.heartbeat_ack() {
                ServerReport::HeartbeatAck(*x)
            } else if let Some(x) = r.logged_on() {
                ServerReport::LoggedOn(*x)
            } else if let Some(x) = r.logged_out() {
                ServerReport::LoggedOut(*x)
            } else if let Some(x) = r.instrument_status() {
                ServerReport::InstrumentStatus(*x)
            } else if let Some(x) = r.session_info() {
                ServerReport::SessionInfo(*x)
            } else if let Some(x) = r.resend_complete() {
                ServerReport::ResendComplete(*x)
            } else if let Some(x) = r.open_order() {
                ServerReport::OpenOrder(*x)
            } else {
                unknown += 1;
                continue;
            };
            out.push(rep);
        }
    }
    Ok((b.first_session_seq(), unknown))
}

/// Market-data topic for a symbol: `md.` + 10 decimal digits.
#[must_use]
pub fn md_topic(symbol: u32) -> [u8; 13] {
    let mut t = *b"md.0000000000";
    let mut v = symbol;
    for i in (3..13).rev() {
        t[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_batch_round_trips_in_order() {
        let mut fbb = FlatBufferBuilder::new();
        let reqs = [
            ClientRequest::Logon(wire::Logon::new(7)),
            ClientRequest::NewOrder(wire::NewOrder::new(
                1,
                100,
                5,
                1,
                wire::Side::Sell,
                wire::OrderType::Limit,
                wire::TimeInForce::Gtc,
                wire::SelfTradePrevention::Allow,
                false,
            )),
            ClientRequest::Cancel(wire::Cancel::new(0, 1, true)),
            ClientRequest::Heartbeat(wire::Heartbeat::new(42)),
        ];
        let bytes = encode_client_batch(&mut fbb, &reqs).to_vec();
        let mut got = vec![];
        let n = decode_client_batch(&bytes, &verifier_options(16), 16, |i, r| {
            got.push((i, r.unwrap()))
        })
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(got.iter().map(|x| x.1).collect::<Vec<_>>(), reqs.to_vec());
        assert_eq!(
            decode_client_batch(&bytes, &verifier_options(16), 3, |_, _| {}),
            Err(FrameError::TooMany(4))
        );
        assert!(matches!(
            decode_client_batch(
                &bytes[..bytes.len() / 2],
                &verifier_options(16),
                16,
                |_, _| {}
            ),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn report_batch_round_trips() {
        let mut fbb = FlatBufferBuilder::new();
        let mut offs = vec![];
        let reps = [
            ServerReport::LoggedOn(wire::LoggedOn::new(3)),
            ServerReport::Done(wire::Done::new(
                9,
                1,
                0,
                77,
                1,
                wire::Side::Buy,
                wire::DoneReason::Filled,
            )),
        ];
        let bytes = encode_report_batch(&mut fbb, &mut offs, 41, &reps).to_vec();
        let mut out = vec![];
        assert_eq!(decode_report_batch(&bytes, &mut out).unwrap(), (41, 0));
        assert_eq!(out, reps.to_vec());
    }

    #[test]
    fn topics_are_fixed_width() {
        assert_eq!(&md_topic(1), b"md.0000000001");
        assert_eq!(&md_topic(u32::MAX), b"md.4294967295");
    }
}
