//! The batch frames of the wire protocol (`ClientBatch`, `ReportBatch`) written and read
//! directly, without `FlatBufferBuilder`'s per-table vtable deduplication or the generic
//! verifier's per-field dispatch: both frames are a vector of small tables holding exactly one
//! fixed-size struct, so a writer can lay them out in one pass and a reader can check them in
//! one pass.
//!
//! The bytes are ordinary FlatBuffers (any reader in any language reads them; the generated
//! code and the `flatbuffers` verifier accept them — tested). The reader applies the same
//! rules as the `flatbuffers` verifier (alignment of offsets, every offset and length inside
//! the buffer, table count and apparent-size limits), in safe Rust: a frame that does not pass
//! is [`FrameError::Malformed`], never a panic.

use super::{ClientRequest, FrameError, RequestError, ServerReport};
use crate::wire;

// ------------------------------------------------------------------------------ writing

/// A table kind for the writer: its field index in the union-like table and its struct bytes.
struct Item<'a> {
    field: usize,
    bytes: &'a [u8],
}

fn request_item(r: &ClientRequest) -> Item<'_> {
    let (field, bytes): (usize, &[u8]) = match r {
        ClientRequest::Logon(x) => (0, &x.0),
        ClientRequest::NewOrder(x) => (1, &x.0),
        ClientRequest::Cancel(x) => (2, &x.0),
        ClientRequest::Replace(x) => (3, &x.0),
        ClientRequest::MassCancel(x) => (4, &x.0),
        ClientRequest::Heartbeat(x) => (5, &x.0),
        ClientRequest::Logout(x) => (6, &x.0),
        ClientRequest::HaltInstrument(x) => (7, &x.0),
        ClientRequest::ResumeInstrument(x) => (8, &x.0),
        ClientRequest::CancelAll(x) => (9, &x.0),
        ClientRequest::ListSessions(x) => (10, &x.0),
        ClientRequest::LogonWith(x) => (11, &x.0),
        ClientRequest::QueryOrders(x) => (12, &x.0),
    };
    Item { field, bytes }
}

fn report_item(r: &ServerReport) -> Item<'_> {
    let (field, bytes): (usize, &[u8]) = match r {
        ServerReport::LoggedOn(x) => (0, &x.0),
        ServerReport::LoggedOut(x) => (1, &x.0),
        ServerReport::Accepted(x) => (2, &x.0),
        ServerReport::Rejected(x) => (3, &x.0),
        ServerReport::Fill(x) => (4, &x.0),
        ServerReport::Done(x) => (5, &x.0),
        ServerReport::Replaced(x) => (6, &x.0),
        ServerReport::MassCancelled(x) => (7, &x.0),
        ServerReport::HeartbeatAck(x) => (8, &x.0),
        ServerReport::InstrumentStatus(x) => (9, &x.0),
        ServerReport::SessionInfo(x) => (10, &x.0),
        ServerReport::ResendComplete(x) => (11, &x.0),
        ServerReport::OpenOrder(x) => (12, &x.0),
    };
    Item { field, bytes }
}

fn put_u16(out: &mut [u8], pos: usize, v: u16) {
    out[pos..pos + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut [u8], pos: usize, v: u32) {
    out[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
}

fn align(pos: usize, to: usize) -> usize {
    pos.div_ceil(to) * to
}

/// Most fields of an item table (the largest union-like tables: `Request`, `Report`).
const MAX_FIELDS: usize = 13;

/// Writes the vector of item tables at `vec` (8-aligned): its length, the offsets, one vtable
/// per kind used, then the tables (8-aligned, the struct at table + 8). Returns the end.
fn write_items<'a>(
    out: &mut Vec<u8>,
    vec: usize,
    n: usize,
    items: impl Iterator<Item = Item<'a>> + Clone,
) -> usize {
    // Which kinds occur, and where their vtables go.
    let mut used = [false; MAX_FIELDS];
    for it in items.clone() {
        used[it.field] = true;
    }
    let mut vtable_at = [0usize; MAX_FIELDS];
    let mut pos = vec + 4 + 4 * n;
    for f in 0..MAX_FIELDS {
        if used[f] {
            vtable_at[f] = pos;
            pos += 4 + 2 * (f + 1);
        }
    }
    let mut table = align(pos, 8);
    // Size the buffer once: every table is 8 bytes of header then its struct, 8-aligned.
    let mut end = table;
    for it in items.clone() {
        end = align(end + 8 + it.bytes.len(), 8);
    }
    out.resize(end, 0);
    put_u32(out, vec, n as u32);
    for (f, at) in vtable_at.iter().enumerate() {
        if used[f] {
            let len = 4 + 2 * (f + 1);
            put_u16(out, *at, len as u16);
            // The table length is set per item below (same kind, same struct size).
            for j in 0..=f {
                put_u16(out, at + 4 + 2 * j, if j == f { 8 } else { 0 });
            }
        }
    }
    for (i, it) in items.enumerate() {
        let slot = vec + 4 + 4 * i;
        put_u32(out, slot, (table - slot) as u32);
        let vt = vtable_at[it.field];
        put_u16(out, vt + 2, (8 + it.bytes.len()) as u16);
        // soffset: table - vtable (the vtable is before the table).
        out[table..table + 4].copy_from_slice(&((table - vt) as i32).to_le_bytes());
        out[table + 8..table + 8 + it.bytes.len()].copy_from_slice(it.bytes);
        table = align(table + 8 + it.bytes.len(), 8);
    }
    end
}

/// Writes a `ClientBatch` frame into `out` (cleared first). Allocation-free once `out` has
/// grown to the largest frame.
pub fn write_client_batch(out: &mut Vec<u8>, reqs: &[ClientRequest]) {
    out.clear();
    // [root → 12][vtable: len 6, table 8, field 0 at 4][pad][table: soffset, uoffset][vector]
    out.resize(16, 0);
    put_u32(out, 0, 12);
    put_u16(out, 4, 6);
    put_u16(out, 6, 8);
    put_u16(out, 8, 4);
    out[12..16].copy_from_slice(&8i32.to_le_bytes()); // table 12 → vtable 4
    let vec = 24; // 8-aligned, after the table's uoffset at 16..20 and padding
    out.resize(vec, 0);
    put_u32(out, 16, (vec - 16) as u32);
    write_items(out, vec, reqs.len(), reqs.iter().map(request_item));
}

/// Writes a `ReportBatch` frame into `out` (cleared first). Allocation-free once `out` has
/// grown to the largest frame.
pub fn write_report_batch(out: &mut Vec<u8>, first_session_seq: u64, reports: &[ServerReport]) {
    write_report_frame(out, first_session_seq, reports, false);
}

/// Writes a `ReportBatch` frame with its `resent` flag into `out` (cleared first): a frame of
/// reports resent from the journal (`resent = true`) has the third field; a live one has two.
pub fn write_report_frame(
    out: &mut Vec<u8>,
    first_session_seq: u64,
    reports: &[ServerReport],
    resent: bool,
) {
    out.clear();
    // [root → 16][vtable: len 8 (10), table size 16 (17), reports at 4, seq at 8 (, resent
    // at 16)][pad][table: soffset, uoffset to vector, u64 first_session_seq (, bool resent)]
    // [pad][vector]; the parenthesised parts only when resent.
    let (vtable_len, table_len, vec) = if resent { (10, 17, 40) } else { (8, 16, 32) };
    out.resize(vec, 0);
    put_u32(out, 0, 16);
    put_u16(out, 4, vtable_len);
    put_u16(out, 6, table_len);
    put_u16(out, 8, 8);
    put_u16(out, 10, 4);
    if resent {
        put_u16(out, 12, 16);
        out[32] = 1;
    }
    out[16..20].copy_from_slice(&12i32.to_le_bytes()); // table 16 → vtable 4
    put_u32(out, 20, (vec - 20) as u32);
    out[24..32].copy_from_slice(&first_session_seq.to_le_bytes());
    write_items(out, vec, reports.len(), reports.iter().map(report_item));
}

// ------------------------------------------------------------------------------ reading

/// Reads a verified frame: the checks of the `flatbuffers` verifier, in one pass.
struct Reader<'a> {
    buf: &'a [u8],
    tables: usize,
    max_tables: usize,
    apparent: usize,
    max_apparent: usize,
}

/// A table: its position and its vtable's position and length.
struct Table {
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

#[cold]
#[inline(never)]
fn malformed(what: &str, pos: usize) -> FrameError {
    FrameError::Malformed(format!("{what} at {pos}"))
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], max_tables: usize, max_apparent: usize) -> Self {
        Self {
            buf,
            tables: 0,
            max_tables,
            apparent: 0,
            max_apparent,
        }
    }

    /// `size` bytes at `pos` are in the buffer (and count towards the apparent size).
    #[inline]
    fn range(&mut self, pos: usize, size: usize) -> Result<&'a [u8], FrameError> {
        let end = pos.saturating_add(size);
        if end > self.buf.len() {
            return Err(malformed("range out of bounds", pos));
        }
        self.count(size)?;
        Ok(&self.buf[pos..end])
    }

    /// Counts `size` more bytes towards the apparent size.
    #[inline]
    fn count(&mut self, size: usize) -> Result<(), FrameError> {
        self.apparent = self.apparent.saturating_add(size);
        if self.apparent > self.max_apparent {
            return Err(malformed("apparent size too large", self.apparent));
        }
        Ok(())
    }

    #[inline]
    fn u16(&mut self, pos: usize) -> Result<u16, FrameError> {
        if pos % 2 != 0 {
            return Err(malformed("unaligned u16", pos));
        }
        let b = self.range(pos, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    #[inline]
    fn u32(&mut self, pos: usize) -> Result<u32, FrameError> {
        if pos % 4 != 0 {
            return Err(malformed("unaligned u32", pos));
        }
        let b = self.range(pos, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    fn u64(&mut self, pos: usize) -> Result<u64, FrameError> {
        if pos % 8 != 0 {
            return Err(malformed("unaligned u64", pos));
        }
        Ok(u64::from_le_bytes(self.bytes(pos)?))
    }

    /// The position an unsigned offset at `pos` points to.
    #[inline]
    fn follow(&mut self, pos: usize) -> Result<usize, FrameError> {
        let off = self.u32(pos)? as usize;
        Ok(pos.saturating_add(off))
    }

    #[inline]
    fn table(&mut self, pos: usize) -> Result<Table, FrameError> {
        let soffset = self.u32(pos)? as i32;
        let vtable = if soffset > 0 {
            pos.checked_sub(soffset.unsigned_abs() as usize)
        } else {
            pos.checked_add(soffset.unsigned_abs() as usize)
        }
        .filter(|v| *v < self.buf.len())
        .ok_or_else(|| malformed("vtable offset out of bounds", pos))?;
        let vtable_len = self.u16(vtable)? as usize;
        if vtable.saturating_add(vtable_len) % 2 != 0 {
            return Err(malformed("odd vtable length", vtable));
        }
        self.range(vtable, vtable_len)?;
        self.tables += 1;
        if self.tables > self.max_tables {
            return Err(malformed("too many tables", pos));
        }
        Ok(Table {
            pos,
            vtable,
            vtable_len,
        })
    }

    /// Where field `index` of `t` is, if present.
    #[inline]
    fn field(&mut self, t: &Table, index: usize) -> Result<Option<usize>, FrameError> {
        let voffset = 4 + 2 * index;
        if voffset >= t.vtable_len {
            return Ok(None);
        }
        // `table` checked that the whole vtable is in the buffer and 2-aligned (and `voffset`
        // and the length are even), so this entry is: only its size is counted, as the
        // verifier counts it.
        self.count(2)?;
        let at = t.vtable + voffset;
        let off = u16::from_le_bytes([self.buf[at], self.buf[at + 1]]);
        Ok((off > 0).then(|| t.pos.saturating_add(off as usize)))
    }

    /// A vector of `elem`-byte elements at the position `pos` points to: (first element, count).
    #[inline]
    fn vector(&mut self, pos: usize, elem: usize) -> Result<(usize, usize), FrameError> {
        let at = self.follow(pos)?;
        let len = self.u32(at)? as usize;
        let start = at.saturating_add(4);
        self.range(start, len.saturating_mul(elem))?;
        Ok((start, len))
    }

    /// The struct of `N` bytes at `pos`.
    #[inline]
    fn bytes<const N: usize>(&mut self, pos: usize) -> Result<[u8; N], FrameError> {
        let b = self.range(pos, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
}

/// Per-frame limits for reading untrusted client frames (the generic verifier's options).
const MAX_APPARENT: usize = 1 << 26;

/// Reads a `ClientBatch` frame: checks all of it, then appends its requests to `out` in order
/// (nothing is appended for a frame that does not pass). Returns the number of requests.
///
/// # Errors
/// [`FrameError::TooMany`] when the frame holds more than `max_batch` requests;
/// [`FrameError::Malformed`] when it is not a valid `ClientBatch`.
pub fn read_client_batch(
    buf: &[u8],
    max_batch: usize,
    out: &mut Vec<Result<ClientRequest, RequestError>>,
) -> Result<usize, FrameError> {
    let before = out.len();
    let read = read_requests(buf, max_batch, out);
    if read.is_err() {
        out.truncate(before);
    }
    read
}

fn read_requests(
    buf: &[u8],
    max_batch: usize,
    out: &mut Vec<Result<ClientRequest, RequestError>>,
) -> Result<usize, FrameError> {
    let mut r = Reader::new(buf, max_batch + 8, MAX_APPARENT);
    let root = r.follow(0)?;
    let batch = r.table(root)?;
    let Some(field) = r.field(&batch, 0)? else {
        return Ok(0);
    };
    let (start, n) = r.vector(field, 4)?;
    if n > max_batch {
        return Err(FrameError::TooMany(n));
    }
    for i in 0..n {
        let t = r.follow(start + 4 * i)?;
        let t = r.table(t)?;
        out.push(request_of(&mut r, &t)?);
    }
    Ok(n)
}

/// Struct sizes of `Request`'s fields, in field order.
const REQUEST_FIELDS: [usize; 13] = [4, 40, 24, 40, 8, 8, 4, 4, 4, 4, 8, 16, 8];

fn request_of(
    r: &mut Reader<'_>,
    t: &Table,
) -> Result<Result<ClientRequest, RequestError>, FrameError> {
    let mut found = None;
    let mut n = 0;
    // Fields past the vtable's end are absent: only those inside it are looked up.
    let in_vtable = t.vtable_len.saturating_sub(4) / 2;
    for (index, size) in REQUEST_FIELDS.iter().enumerate().take(in_vtable) {
        let Some(pos) = r.field(t, index)? else {
            continue;
        };
        r.range(pos, *size)?;
        n += 1;
        found = Some(match index {
            0 => ClientRequest::Logon(wire::Logon(r.bytes(pos)?)),
            1 => ClientRequest::NewOrder(wire::NewOrder(r.bytes(pos)?)),
            2 => ClientRequest::Cancel(wire::Cancel(r.bytes(pos)?)),
            3 => ClientRequest::Replace(wire::Replace(r.bytes(pos)?)),
            4 => ClientRequest::MassCancel(wire::MassCancel(r.bytes(pos)?)),
            5 => ClientRequest::Heartbeat(wire::Heartbeat(r.bytes(pos)?)),
            6 => ClientRequest::Logout(wire::Logout(r.bytes(pos)?)),
            7 => ClientRequest::HaltInstrument(wire::HaltInstrument(r.bytes(pos)?)),
            8 => ClientRequest::ResumeInstrument(wire::ResumeInstrument(r.bytes(pos)?)),
            9 => ClientRequest::CancelAll(wire::CancelAll(r.bytes(pos)?)),
            10 => ClientRequest::ListSessions(wire::ListSessions(r.bytes(pos)?)),
            11 => ClientRequest::LogonWith(wire::LogonWith(r.bytes(pos)?)),
            _ => ClientRequest::QueryOrders(wire::QueryOrders(r.bytes(pos)?)),
        });
    }
    Ok(match (n, found) {
        (1, Some(req)) => Ok(req),
        (0, _) => Err(RequestError::UnknownType),
        _ => Err(RequestError::Ambiguous),
    })
}

/// Struct sizes of `Report`'s fields, in field order.
const REPORT_FIELDS: [usize; 13] = [4, 8, 48, 40, 64, 40, 48, 24, 8, 16, 48, 32, 64];

/// Which of several fields a report is read as (a frame from a broken gateway).
const PRECEDENCE: [usize; 13] = [2, 4, 5, 3, 6, 7, 8, 0, 1, 9, 10, 11, 12];

/// Reads a `ReportBatch` frame: returns its first session sequence number and the number of
/// unknown reports (from a newer gateway; skipped), and pushes the reports to `out`.
///
/// # Errors
/// [`FrameError::Malformed`] when it is not a valid `ReportBatch`.
pub fn read_report_batch(
    buf: &[u8],
    out: &mut Vec<ServerReport>,
) -> Result<(u64, usize), FrameError> {
    read_report_frame(buf, out).map(|f| (f.first_session_seq, f.unknown))
}

/// What a report frame says besides its reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportFrame {
    /// The session sequence number of its first report.
    pub first_session_seq: u64,
    /// Reports of kinds this reader does not know (from a newer gateway; skipped).
    pub unknown: usize,
    /// Its reports are resent from the journal (answer to a `LogonWith{RESEND}`).
    pub resent: bool,
}

/// [`read_report_batch`], with the frame's `resent` flag.
///
/// # Errors
/// [`FrameError::Malformed`] when it is not a valid `ReportBatch`.
pub fn read_report_frame(
    buf: &[u8],
    out: &mut Vec<ServerReport>,
) -> Result<ReportFrame, FrameError> {
    let mut r = Reader::new(buf, 10_000_000, 1 << 31);
    let root = r.follow(0)?;
    let batch = r.table(root)?;
    let first = match r.field(&batch, 0)? {
        Some(pos) => r.u64(pos)?,
        None => 0,
    };
    let resent = match r.field(&batch, 2)? {
        Some(pos) => r.bytes::<1>(pos)?[0] != 0,
        None => false,
    };
    let mut frame = ReportFrame {
        first_session_seq: first,
        unknown: 0,
        resent,
    };
    let Some(field) = r.field(&batch, 1)? else {
        return Ok(frame);
    };
    let (start, n) = r.vector(field, 4)?;
    let before = out.len();
    let mut unknown = 0;
    for i in 0..n {
        let t = r.follow(start + 4 * i)?;
        let t = r.table(t)?;
        // Every field present is checked; if several are (a broken gateway), the first in
        // PRECEDENCE is the report.
        let mut present = [None; REPORT_FIELDS.len()];
        for (index, size) in REPORT_FIELDS.iter().enumerate() {
            if let Some(pos) = r.field(&t, index)? {
                r.range(pos, *size)?;
                present[index] = Some(pos);
            }
        }
        let mut rep = None;
        for index in PRECEDENCE {
            let Some(pos) = present[index] else {
                continue;
            };
            if rep.is_none() {
                rep = Some(match index {
                    0 => ServerReport::LoggedOn(wire::LoggedOn(r.bytes(pos)?)),
                    1 => ServerReport::LoggedOut(wire::LoggedOut(r.bytes(pos)?)),
                    2 => ServerReport::Accepted(wire::Accepted(r.bytes(pos)?)),
                    3 => ServerReport::Rejected(wire::Rejected(r.bytes(pos)?)),
                    4 => ServerReport::Fill(wire::Fill(r.bytes(pos)?)),
                    5 => ServerReport::Done(wire::Done(r.bytes(pos)?)),
                    6 => ServerReport::Replaced(wire::Replaced(r.bytes(pos)?)),
                    7 => ServerReport::MassCancelled(wire::MassCancelled(r.bytes(pos)?)),
                    8 => ServerReport::HeartbeatAck(wire::HeartbeatAck(r.bytes(pos)?)),
                    9 => ServerReport::InstrumentStatus(wire::InstrumentStatus(r.bytes(pos)?)),
                    10 => ServerReport::SessionInfo(wire::SessionInfo(r.bytes(pos)?)),
                    11 => ServerReport::ResendComplete(wire::ResendComplete(r.bytes(pos)?)),
                    _ => ServerReport::OpenOrder(wire::OpenOrder(r.bytes(pos)?)),
                });
            }
        }
        match rep {
            Some(x) => out.push(x),
            None => unknown += 1,
        }
    }
    debug_assert_eq!(out.len() - before + unknown, n);
    frame.unknown = unknown;
    Ok(frame)
}
