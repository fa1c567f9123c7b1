//! The one-pass frame writers and readers (`codec::flat`) agree with FlatBuffers itself: what
//! they write, the generated code and the `flatbuffers` verifier read back identically; what
//! the reference encoder writes, they read identically; and on damaged frames they accept
//! exactly what the verifier accepts, with the same content.
use caldera_schema::codec::{
    self, decode_client_batch, decode_report_batch, encode_client_batch, encode_report_batch,
    encode_report_frame, read_client_batch, read_report_batch, read_report_frame, verifier_options,
    write_client_batch, write_report_batch, write_report_frame, ClientRequest, FrameError,
    RequestError, ServerReport,
};
use caldera_schema::wire;
use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;

fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap())
}

fn request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        bytes::<4>().prop_map(|b| ClientRequest::Logon(wire::Logon(b))),
        bytes::<40>().prop_map(|b| ClientRequest::NewOrder(wire::NewOrder(b))),
        bytes::<24>().prop_map(|b| ClientRequest::Cancel(wire::Cancel(b))),
        bytes::<40>().prop_map(|b| ClientRequest::Replace(wire::Replace(b))),
        bytes::<8>().prop_map(|b| ClientRequest::MassCancel(wire::MassCancel(b))),
        bytes::<8>().prop_map(|b| ClientRequest::Heartbeat(wire::Heartbeat(b))),
        bytes::<4>().prop_map(|b| ClientRequest::Logout(wire::Logout(b))),
        bytes::<4>().prop_map(|b| ClientRequest::HaltInstrument(wire::HaltInstrument(b))),
        bytes::<4>().prop_map(|b| ClientRequest::ResumeInstrument(wire::ResumeInstrument(b))),
        bytes::<4>().prop_map(|b| ClientRequest::CancelAll(wire::CancelAll(b))),
        bytes::<8>().prop_map(|b| ClientRequest::ListSessions(wire::ListSessions(b))),
        bytes::<16>().prop_map(|b| ClientRequest::LogonWith(wire::LogonWith(b))),
        bytes::<8>().prop_map(|b| ClientRequest::QueryOrders(wire::QueryOrders(b))),
    ]
}

fn report() -> impl Strategy<Value = ServerReport> {
    prop_oneof![
        bytes::<4>().prop_map(|b| ServerReport::LoggedOn(wire::LoggedOn(b))),
        bytes::<8>().prop_map(|b| ServerReport::LoggedOut(wire::LoggedOut(b))),
        bytes::<48>().prop_map(|b| ServerReport::Accepted(wire::Accepted(b))),
        bytes::<40>().prop_map(|b| ServerReport::Rejected(wire::Rejected(b))),
        bytes::<64>().prop_map(|b| ServerReport::Fill(wire::Fill(b))),
        bytes::<40>().prop_map(|b| ServerReport::Done(wire::Done(b))),
        bytes::<48>().prop_map(|b| ServerReport::Replaced(wire::Replaced(b))),
        bytes::<24>().prop_map(|b| ServerReport::MassCancelled(wire::MassCancelled(b))),
        bytes::<8>().prop_map(|b| ServerReport::HeartbeatAck(wire::HeartbeatAck(b))),
        bytes::<16>().prop_map(|b| ServerReport::InstrumentStatus(wire::InstrumentStatus(b))),
        bytes::<48>().prop_map(|b| ServerReport::SessionInfo(wire::SessionInfo(b))),
        bytes::<32>().prop_map(|b| ServerReport::ResendComplete(wire::ResendComplete(b))),
        bytes::<64>().prop_map(|b| ServerReport::OpenOrder(wire::OpenOrder(b))),
    ]
}

type Requests = Vec<Result<ClientRequest, RequestError>>;

fn reference_requests(buf: &[u8], max_batch: usize) -> Result<Requests, FrameError> {
    let mut out = Vec::new();
    decode_client_batch(buf, &verifier_options(max_batch), max_batch, |_, r| {
        out.push(r)
    })?;
    Ok(out)
}

fn fast_requests(buf: &[u8], max_batch: usize) -> Result<Requests, FrameError> {
    let mut out = vec![Err(RequestError::UnknownType)]; // kept as is on error
    match read_client_batch(buf, max_batch, &mut out) {
        Ok(n) => {
            assert_eq!(out.len(), n + 1);
            Ok(out.split_off(1))
        }
        Err(e) => {
            assert_eq!(out.len(), 1, "nothing appended for a rejected frame");
            Err(e)
        }
    }
}

fn reference_reports(buf: &[u8]) -> Result<(u64, usize, Vec<ServerReport>), FrameError> {
    let mut out = Vec::new();
    let (first, unknown) = decode_report_batch(buf, &mut out)?;
    Ok((first, unknown, out))
}

fn fast_reports(buf: &[u8]) -> Result<(u64, usize, Vec<ServerReport>), FrameError> {
    let mut out = Vec::new();
    let (first, unknown) = read_report_batch(buf, &mut out)?;
    Ok((first, unknown, out))
}

/// Damages a frame: flips bytes, cuts it, or extends it.
fn damage() -> impl Strategy<Value = (u8, Vec<(usize, u8)>, usize)> {
    (
        0u8..3,
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        any::<usize>(),
    )
}

fn damaged(frame: &[u8], (kind, flips, cut): &(u8, Vec<(usize, u8)>, usize)) -> Vec<u8> {
    let mut b = frame.to_vec();
    match kind {
        0 => {
            for (at, x) in flips {
                let i = at % b.len();
                b[i] ^= x | 1;
            }
        }
        1 => b.truncate(cut % b.len()),
        _ => b.extend(std::iter::repeat_n(0xa5u8, 1 + cut % 64)),
    }
    b
}

fn same<T: PartialEq + std::fmt::Debug>(a: Result<T, FrameError>, b: Result<T, FrameError>) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(FrameError::TooMany(a)), Err(FrameError::TooMany(b))) => assert_eq!(a, b),
        (Err(FrameError::Malformed(_)), Err(FrameError::Malformed(_))) => {}
        // A frame that is both too long and damaged may be refused for either reason: the
        // one-pass reader counts the requests before it reads them, the reference after.
        (Err(FrameError::Malformed(_)), Err(FrameError::TooMany(_))) => {}
        (a, b) => panic!("reference {a:?} but one-pass {b:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn client_frames_written_in_one_pass_read_the_same_everywhere(reqs in proptest::collection::vec(request(), 0..80)) {
        let mut frame = Vec::new();
        write_client_batch(&mut frame, &reqs);
        let want: Requests = reqs.iter().copied().map(Ok).collect();
        prop_assert_eq!(reference_requests(&frame, 4096).unwrap(), want.clone());
        prop_assert_eq!(fast_requests(&frame, 4096).unwrap(), want.clone());
        // And what the reference encoder writes, the one-pass reader reads.
        let mut fbb = FlatBufferBuilder::new();
        let reference = encode_client_batch(&mut fbb, &reqs).to_vec();
        prop_assert_eq!(fast_requests(&reference, 4096).unwrap(), want);
    }

    #[test]
    fn damaged_client_frames_are_accepted_exactly_when_the_verifier_accepts_them(
        reqs in proptest::collection::vec(request(), 1..20),
        d in damage(),
        reference_encoder in any::<bool>(),
    ) {
        let mut frame = Vec::new();
        if reference_encoder {
            let mut fbb = FlatBufferBuilder::new();
            frame = encode_client_batch(&mut fbb, &reqs).to_vec();
        } else {
            write_client_batch(&mut frame, &reqs);
        }
        let bad = damaged(&frame, &d);
        same(reference_requests(&bad, 64), fast_requests(&bad, 64));
    }

    #[test]
    fn report_frames_written_in_one_pass_read_the_same_everywhere(
        first in any::<u64>(),
        reps in proptest::collection::vec(report(), 0..80),
    ) {
        let mut frame = Vec::new();
        write_report_batch(&mut frame, first, &reps);
        prop_assert_eq!(reference_reports(&frame).unwrap(), (first, 0, reps.clone()));
        prop_assert_eq!(fast_reports(&frame).unwrap(), (first, 0, reps.clone()));
        let mut fbb = FlatBufferBuilder::new();
        let mut offs = Vec::new();
        let reference = encode_report_batch(&mut fbb, &mut offs, first, &reps).to_vec();
        prop_assert_eq!(fast_reports(&reference).unwrap(), (first, 0, reps));
    }

    #[test]
    fn resent_report_frames_carry_their_flag_to_every_reader(
        first in any::<u64>(),
        reps in proptest::collection::vec(report(), 0..40),
        resent in any::<bool>(),
    ) {
        let mut frame = Vec::new();
        write_report_frame(&mut frame, first, &reps, resent);
        let root = flatbuffers::root::<wire::ReportBatch>(&frame).unwrap();
        prop_assert_eq!(root.resent(), resent);
        prop_assert_eq!(reference_reports(&frame).unwrap(), (first, 0, reps.clone()));
        let mut out = Vec::new();
        let f = read_report_frame(&frame, &mut out).unwrap();
        prop_assert_eq!((f.first_session_seq, f.unknown, f.resent), (first, 0, resent));
        prop_assert_eq!(&out, &reps);
        let mut fbb = FlatBufferBuilder::new();
        let mut offs = Vec::new();
        let reference = encode_report_frame(&mut fbb, &mut offs, first, &reps, resent).to_vec();
        out.clear();
        let f = read_report_frame(&reference, &mut out).unwrap();
        prop_assert_eq!((f.first_session_seq, f.resent), (first, resent));
        prop_assert_eq!(out, reps);
    }

    #[test]
    fn damaged_report_frames_are_accepted_exactly_when_the_verifier_accepts_them(
        first in any::<u64>(),
        reps in proptest::collection::vec(report(), 1..20),
        d in damage(),
        resent in any::<bool>(),
    ) {
        let mut frame = Vec::new();
        write_report_frame(&mut frame, first, &reps, resent);
        let bad = damaged(&frame, &d);
        same(reference_reports(&bad), fast_reports(&bad));
    }
}

#[test]
fn a_frame_with_more_requests_than_the_limit_is_too_many_before_anything_else() {
    let reqs = vec![ClientRequest::Heartbeat(wire::Heartbeat::new(1)); 70];
    let mut frame = Vec::new();
    write_client_batch(&mut frame, &reqs);
    assert_eq!(fast_requests(&frame, 64), Err(FrameError::TooMany(70)));
    // Far more than the verifier's table limit: still reported as too many.
    let reqs = vec![ClientRequest::Heartbeat(wire::Heartbeat::new(1)); 5000];
    write_client_batch(&mut frame, &reqs);
    assert_eq!(fast_requests(&frame, 64), Err(FrameError::TooMany(5000)));
    let _ = codec::md_topic(1);
}
