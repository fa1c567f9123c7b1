//! The embedded journal: an append-only log of length-prefixed, CRC-checked batches in segment
//! files named by the sequence number of their first event.
//!
//! File layout: a 16-byte header (`CALDSEG1`, base sequence u64 LE), then frames
//! `[u32 payload length][u32 CRC32C of the next 16 bytes + payload][u64 first_seq][u64 last_seq][payload]`.
//! Batches are contiguous: each `first_seq` is the previous `last_seq + 1`.
//!
//! Segments are preallocated (ADR 0018): a new segment is written full of zeros up to
//! `segment_bytes` and synced before the first frame goes in, so appending overwrites blocks
//! that already exist, inside the file's size, and an `fdatasync` writes only the data (no
//! inode, size or extent update). The written part ends at the first all-zero frame header
//! followed only by zeros; a segment is cut to its written size when the next one starts.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const MAGIC: &[u8; 8] = b"CALDSEG1";
pub(crate) const HEADER: u64 = 16;
const FRAME: usize = 24;
/// Largest accepted batch payload (a corrupt length field beyond this is damage, not a batch).
pub const MAX_BATCH_BYTES: u32 = 256 << 20;

/// When appended batches are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every batch, before its reports are released: survives power loss.
    Always,
    /// `fdatasync` at most every N ms; reports are released after the write: survives a process
    /// crash (the page cache survives `kill -9`), a power loss can lose the last N ms.
    EveryMs(u64),
    /// Never forced: survives a process crash only.
    Never,
}

/// Errors of the segment log.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// I/O on a path.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A batch does not follow the previous one.
    #[error("batch {first}..={last} does not follow sequence {prev}")]
    OutOfOrder {
        /// Last sequence in the log.
        prev: u64,
        /// Offered first sequence.
        first: u64,
        /// Offered last sequence.
        last: u64,
    },
    /// The journal's writer lock could not be taken (another process holds it).
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// A batch is larger than [`MAX_BATCH_BYTES`].
    #[error("batch of {0} bytes is too large")]
    TooLarge(usize),
    /// Damage that is not a torn tail of the last segment: a bad frame with good frames after
    /// it, a damaged or missing segment before the last. Acknowledged history may be there, so
    /// nothing was changed: the operator decides (see `caldera journal verify` and
    /// `caldera journal repair`).
    #[error("journal damaged: {path} at byte {offset}: {reason}. Nothing was changed. Run `caldera journal verify --journal file://{dir}` to see every damaged frame, and `caldera journal repair --journal file://{dir} --truncate-at SEQ` to drop the log from SEQ on (it prints what it drops)", dir = .dir.display(), path = .path.display())]
    Damaged {
        /// The journal directory.
        dir: PathBuf,
        /// The damaged segment.
        path: PathBuf,
        /// Byte offset of the damage in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write could not be rolled back, or an fsync failed: what is on disk is
    /// unknown, so this writer appends nothing more. Reopening the log (a restart, or the
    /// standby taking over) recovers from what is really on disk.
    #[error("journal writer stopped: {0}; reopen the journal to recover")]
    Poisoned(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Log options.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// Roll to a new segment once the current one reaches this size.
    pub segment_bytes: u64,
    /// Add a sparse-index entry every this many bytes.
    pub index_every_bytes: u64,
    /// Sync policy.
    pub fsync: FsyncPolicy,
    /// A prefix of the log already verified frame by frame by a [`LogReader`] (a standby that
    /// followed it): opening then scans only what was written after it, so promotion does not
    /// re-read the whole log. `None`: verify everything.
    pub trusted: Option<TrustedPrefix>,
    /// Write every new segment full of zeros (and sync it) before appending to it, so each
    /// `fdatasync` writes data only (ADR 0018). The next segment is prepared on a helper
    /// thread once the current one is half full.
    pub preallocate: bool,
}

/// Where a [`LogReader`] stopped: everything before is complete and CRC-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedPrefix {
    /// Base sequence of the segment the reader is in.
    pub segment_base: u64,
    /// Byte offset after the last frame it read in that segment.
    pub offset: u64,
    /// Last sequence it read.
    pub last_seq: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            index_every_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
            trusted: None,
            preallocate: true,
        }
    }
}

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Batches kept.
    pub batches: u64,
    /// Last sequence kept (0 for an empty log).
    pub last_seq: u64,
    /// Damage found: (segment, byte offset, bytes dropped, reason). The segment was truncated there.
    pub truncated: Vec<(PathBuf, u64, u64, String)>,
    /// Segments after damage, renamed to `*.damaged` (kept for inspection, never replayed).
    pub quarantined: Vec<PathBuf>,
}

impl RecoveryReport {
    /// True when nothing was damaged.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.truncated.is_empty() && self.quarantined.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Segment {
    path: PathBuf,
    base: u64,
    last_seq: u64,
    size: u64,
    /// (first_seq, offset) every `index_every_bytes`.
    index: Vec<(u64, u64)>,
}

/// One batch frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// First event sequence.
    pub first_seq: u64,
    /// Last event sequence.
    pub last_seq: u64,
    /// The `JournalBatch` bytes.
    pub payload: Vec<u8>,
}

/// Why scanning a segment stopped early.
pub(crate) enum Stop {
    Torn(u64, String),
    Corrupt(u64, String),
}

/// Parses frames of one segment from `bytes`, calling `f` for each; returns where it stopped.
pub(crate) fn scan(
    bytes: &[u8],
    expect_first: Option<u64>,
    mut f: impl FnMut(u64, u64, u64, &[u8]),
) -> (u64, Option<u64>, Option<Stop>) {
    if bytes.len() < HEADER as usize || &bytes[..8] != MAGIC {
        let why = if bytes.len() < HEADER as usize {
            "segment header truncated"
        } else {
            "bad segment magic"
        };
        return (0, None, Some(Stop::Corrupt(0, why.into())));
    }
    let mut prev_last = expect_first.map(|f| f.wrapping_sub(1));
    scan_frames(bytes, 0, HEADER as usize, &mut prev_last, &mut f)
}

/// Parses frames from `bytes[at..]`; `bytes[0]` is at file offset `origin` (offsets reported
/// to `f` and in the result are file offsets).
pub(crate) fn scan_frames(
    bytes: &[u8],
    origin: u64,
    mut at: usize,
    prev_last: &mut Option<u64>,
    f: &mut impl FnMut(u64, u64, u64, &[u8]),
) -> (u64, Option<u64>, Option<Stop>) {
    let pos = |at: usize| origin + at as u64;
    while at < bytes.len() {
        if is_unwritten(&bytes[at..]) {
            // The preallocated, never-written rest of the segment.
            return (pos(at), *prev_last, None);
        }
        if bytes.len() - at < FRAME {
            return (
                pos(at),
                *prev_last,
                Some(Stop::Torn(pos(at), "frame header cut short".into())),
            );
        }
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4"));
        if len as u32 > MAX_BATCH_BYTES {
            return (
                pos(at),
                *prev_last,
                Some(Stop::Corrupt(pos(at), format!("implausible length {len}"))),
            );
        }
        if bytes.len() - at - FRAME < len {
            return (
                pos(at),
                *prev_last,
                Some(Stop::Torn(pos(at), "batch cut short".into())),
            );
        }
        let body = &bytes[at + 8..at + FRAME + len];
        if crc32c::crc32c(body) != crc {
            return (
                pos(at),
                *prev_last,
                Some(Stop::Corrupt(pos(at), "CRC mismatch".into())),
            );
        }
        let first = u64::from_le_bytes(body[0..8].try_into().expect("8"));
        let last = u64::from_le_bytes(body[8..16].try_into().expect("8"));
        if prev_last.is_some_and(|p| first != p.wrapping_add(1)) || last.wrapping_add(1) < first {
            return (
                pos(at),
                *prev_last,
                Some(Stop::Corrupt(
                    pos(at),
                    format!("sequence {first}..={last} does not follow {prev_last:?}"),
                )),
            );
        }
        f(first, last, pos(at), &body[16..]);
        *prev_last = Some(last);
        at += FRAME + len;
    }
    (pos(at), *prev_last, None)
}

/// Whether `rest` (from a frame boundary to the end of the file) is preallocated space no
/// frame was written to: all zeros. (A frame is never all zeros: its CRC covers its sequence
/// range, and the CRC of zeros is not zero.)
fn is_unwritten(rest: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    rest.first() == Some(&0) && rest.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

pub(crate) fn damaged(dir: &Path, path: &Path, offset: u64, reason: String) -> SegmentError {
    SegmentError::Damaged {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Whether an intact frame (good CRC, a sequence after `prev_last`) starts anywhere in
/// `bytes[from..]`: then the damage before it is not a torn tail.
fn good_frame_after(bytes: &[u8], from: usize, prev_last: Option<u64>) -> bool {
    next_good_frame(bytes, from, prev_last).is_some()
}

/// Where the first intact frame (good CRC, a sequence after `prev_last`) at or after `from`
/// starts in `bytes`.
pub(crate) fn next_good_frame(bytes: &[u8], from: usize, prev_last: Option<u64>) -> Option<usize> {
    let floor = prev_last.map_or(0, |p| p.wrapping_add(1));
    (from..bytes.len().saturating_sub(FRAME - 1)).find(|&at| {
        let h = &bytes[at..at + FRAME];
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
        let first = u64::from_le_bytes(h[8..16].try_into().expect("8"));
        let last = u64::from_le_bytes(h[16..24].try_into().expect("8"));
        len <= bytes.len() - at - FRAME
            && first >= floor
            && first - floor < 1 << 40
            && last.wrapping_add(1) >= first
            && crc32c::crc32c(&bytes[at + 8..at + FRAME + len])
                == u32::from_le_bytes(h[4..8].try_into().expect("4"))
    })
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Segment files of a directory, sorted by base sequence.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SegmentError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if p.extension().is_some_and(|x| x == "seg") {
            if let Some(base) = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                v.push((base, p));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The writable log.
pub struct SegmentLog {
    /// Exclusive `flock` on `DIR/LOCK`, held for the writer's lifetime (released by the
    /// kernel when the process dies): one writer per journal.
    _lock: crate::lock::WriterLock,
    dir: PathBuf,
    opts: LogOptions,
    segments: Vec<Segment>,
    file: File,
    last_seq: u64,
    synced_seq: u64,
    last_sync: Instant,
    /// How long the last `fdatasync` took (taken by [`crate::JournalWriter::take_sync_time`]).
    pub(crate) last_sync_time: Option<Duration>,
    /// Why this writer appends nothing more (a write it could not roll back, a failed fsync).
    poisoned: Option<String>,
    /// Faults to inject (debug builds only; see [`crate::fault`]).
    faults: crate::fault::Faults,
    /// The next segment, being written full of zeros on a helper thread (ADR 0018).
    next: Option<Preparing>,
    /// Segments sealed since the last helper started, whose pages the next helper drops from
    /// the page cache before it writes zeros (ADR 0019). Usually one; more when a roll found
    /// the helper still writing.
    sealed: Vec<PathBuf>,
    /// Where this writer's batches sit, for resends, and the writer's epoch
    /// ([`SegmentLog::set_offset_index`]).
    index: Option<(std::sync::Arc<crate::history::OffsetIndex>, u64)>,
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        // A helper still writing the next segment would race the next writer's own (the same
        // file name): wait for it.
        if let Some(Ok(h)) = self.next.take() {
            let _ = h.join();
            let _ = remove_prepared(&self.dir);
        }
    }
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("last_seq", &self.last_seq)
            .finish()
    }
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, repairing a torn tail: damage in the last
    /// segment with no intact frame after it (a write a crash cut short) is truncated and
    /// reported. Any other damage is refused with [`SegmentError::Damaged`], changing nothing.
    ///
    /// # Errors
    /// [`SegmentError::Damaged`]; I/O errors that prevent opening the directory or the current
    /// segment.
    pub fn open(
        dir: &Path,
        opts: LogOptions,
    ) -> Result<(SegmentLog, RecoveryReport), SegmentError> {
        let lock = crate::lock::WriterLock::try_acquire(dir)?;
        Self::open_locked(dir, opts, lock)
    }

    /// Like [`SegmentLog::open`] with the writer lock already held (a standby that waited for
    /// it).
    ///
    /// # Errors
    /// I/O errors that prevent opening the directory or the current segment.
    pub fn open_locked(
        dir: &Path,
        opts: LogOptions,
        lock: crate::lock::WriterLock,
    ) -> Result<(SegmentLog, RecoveryReport), SegmentError> {
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::new();
        let listed = list_segments(dir)?;
        let mut expect: Option<u64> = None;
        let mut damaged_from: Option<usize> = None;
        for (i, (base, path)) in listed.iter().enumerate() {
            let is_last = i + 1 == listed.len();
            if expect.is_some_and(|e| e != *base) {
                return Err(damaged(
                    dir,
                    path,
                    0,
                    format!(
                        "missing segment: expected base {} found {base}",
                        expect.unwrap_or(0)
                    ),
                ));
            }
            let trusted = opts
                .trusted
                .filter(|t| expect.is_none_or(|e| e == *base) && *base <= t.segment_base);
            if let (Some(t), Some((next, _))) = (trusted, listed.get(i + 1)) {
                if *base < t.segment_base && *next <= t.segment_base {
                    // Sealed and already verified by the reader.
                    let size = fs::metadata(path).map_err(io(path))?.len();
                    segments.push(Segment {
                        path: path.clone(),
                        base: *base,
                        last_seq: next - 1,
                        size,
                        index: Vec::new(),
                    });
                    expect = Some(*next);
                    continue;
                }
            }
            let tail_from = trusted
                .filter(|t| t.segment_base == *base && t.offset >= HEADER)
                .map(|t| (t.offset, t.last_seq));
            let from = tail_from.map_or(0, |(off, _)| off);
            let read = if is_last {
                read_last(path, from, tail_from.map(|(_, last)| last), *base)
            } else {
                read_from(path, from)
            };
            let bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    return Err(damaged(dir, path, 0, format!("unreadable segment: {e}")));
                }
            };
            let mut seg = Segment {
                path: path.clone(),
                base: *base,
                last_seq: base.wrapping_sub(1),
                size: HEADER,
                index: Vec::new(),
            };
            let mut last_indexed = 0u64;
            let mut batches = 0u64;
            let mut on_frame = |first: u64, _last: u64, off: u64, _: &[u8]| {
                batches += 1;
                if seg.index.is_empty() || off - last_indexed >= opts.index_every_bytes {
                    seg.index.push((first, off));
                    last_indexed = off;
                }
            };
            let (end, prev_last, stop) = match tail_from {
                Some((off, last)) => {
                    let mut prev = Some(last);
                    scan_frames(&bytes, off, 0, &mut prev, &mut on_frame)
                }
                None => scan(&bytes, Some(*base), on_frame),
            };
            let file_len = tail_from.map_or(0, |(off, _)| off) + bytes.len() as u64;
            report.batches += batches;
            if let Some(p) = prev_last {
                seg.last_seq = p;
            }
            seg.size = end.max(HEADER);
            if let Some(stop) = stop {
                let (off, why) = match stop {
                    Stop::Torn(o, w) | Stop::Corrupt(o, w) => (o, w),
                };
                // Only what was written counts as dropped, not the preallocated zeros after it.
                let origin = tail_from.map_or(0, |(o, _)| o);
                let written_end = bytes
                    .iter()
                    .rposition(|b| *b != 0)
                    .map_or(origin, |p| origin + p as u64 + 1);
                let dropped = written_end.max(off).min(file_len) - off;
                // Only a torn tail is repaired here: damage in the last segment with no good
                // frame after it (a write the crash cut short). Anything else may hide
                // acknowledged history: refuse, and let the operator decide.
                if !is_last {
                    return Err(damaged(dir, path, off, why));
                }
                let rel = (off - origin) as usize;
                if off >= HEADER && good_frame_after(&bytes, rel + 1, prev_last) {
                    return Err(damaged(
                        dir,
                        path,
                        off,
                        format!("{why}, with intact frames after it"),
                    ));
                }
                if off == 0 {
                    if file_len >= HEADER {
                        return Err(damaged(dir, path, 0, why));
                    }
                    // A segment whose creation was cut short (shorter than its header): it
                    // holds nothing. Moved aside.
                    report.truncated.push((path.clone(), 0, dropped, why));
                    damaged_from = Some(i);
                    break;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                f.set_len(off).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                report.truncated.push((path.clone(), off, dropped, why));
                segments.push(seg);
                damaged_from = Some(i + 1);
                break;
            }
            expect = Some(seg.last_seq.wrapping_add(1));
            segments.push(seg);
        }
        if let Some(from) = damaged_from {
            for (_, path) in &listed[from..] {
                if segments.iter().any(|s| &s.path == path) {
                    continue;
                }
                let mut q = path.clone().into_os_string();
                q.push(".damaged");
                let q = PathBuf::from(q);
                fs::rename(path, &q).map_err(io(path))?;
                report.quarantined.push(q);
            }
        }
        // A segment the helper was still preparing when the last writer stopped.
        remove_prepared(dir)?;
        if segments.is_empty() {
            let base = expect.unwrap_or(1);
            let bytes = if opts.preallocate {
                opts.segment_bytes
            } else {
                0
            };
            segments.push(create_segment(dir, base, bytes)?);
        }
        let cur = segments.last().expect("one segment");
        // Positioned writes (not `O_APPEND`): the file may be longer than what was written.
        let mut file = OpenOptions::new()
            .write(true)
            .open(&cur.path)
            .map_err(io(&cur.path))?;
        file.seek(SeekFrom::Start(cur.size))
            .map_err(io(&cur.path))?;
        let last_seq = cur.last_seq;
        // The current segment is already half full: prepare the next one now, not only at the
        // next append that finds it so.
        let next = (opts.preallocate && cur.size >= opts.segment_bytes / 2)
            .then(|| prepare_segment(dir, opts.segment_bytes, Vec::new()));
        report.segments = segments.len();
        report.last_seq = last_seq;
        if !report.clean() {
            tracing::warn!(?report, "journal recovered from damage");
        }
        Ok((
            SegmentLog {
                _lock: lock,
                dir: dir.to_path_buf(),
                opts,
                segments,
                file,
                last_seq,
                synced_seq: last_seq,
                last_sync: Instant::now(),
                last_sync_time: None,
                poisoned: None,
                faults: crate::fault::Faults::from_env(),
                next,
                sealed: Vec::new(),
                index: None,
            },
            report,
        ))
    }

    /// Last sequence written.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Last sequence forced to stable storage.
    #[must_use]
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segments.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends one batch of events `first_seq..=last_seq`, then syncs per the policy.
    /// Returns the last sequence that is durable under the policy's guarantee.
    ///
    /// A failed write is rolled back (the segment is truncated to its last good size and
    /// synced), so a retry never builds on a partial frame; a write that cannot be rolled back,
    /// or a failed fsync, poisons the writer ([`SegmentError::Poisoned`]).
    ///
    /// # Errors
    /// Out-of-order sequences, oversized batches, I/O errors (retryable: nothing was left
    /// behind), [`SegmentError::Poisoned`] (not retryable: reopen).
    pub fn append(
        &mut self,
        first_seq: u64,
        last_seq: u64,
        payload: &[u8],
    ) -> Result<u64, SegmentError> {
        if let Some(why) = &self.poisoned {
            return Err(SegmentError::Poisoned(why.clone()));
        }
        if first_seq != self.last_seq.wrapping_add(1) || last_seq.wrapping_add(1) < first_seq {
            return Err(SegmentError::OutOfOrder {
                prev: self.last_seq,
                first: first_seq,
                last: last_seq,
            });
        }
        if payload.len() > MAX_BATCH_BYTES as usize {
            return Err(SegmentError::TooLarge(payload.len()));
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.size >= self.opts.segment_bytes && s.size > HEADER)
        {
            self.roll(first_seq)?;
        }
        let mut head = [0u8; FRAME];
        head[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[8..16].copy_from_slice(&first_seq.to_le_bytes());
        head[16..24].copy_from_slice(&last_seq.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[8..]), payload);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        let seg = self.segments.last_mut().expect("one segment");
        let good = seg.size;
        // Header and payload in one system call, without copying the payload.
        let written = match self.faults.take_write() {
            Some(()) => crate::fault::short_write(&mut self.file, &head, payload),
            None => write_all_2(&mut self.file, &head, payload),
        };
        if let Err(e) = written {
            // Part of the frame may be on disk: cut it off before anything else is appended.
            let undone = self
                .file
                .set_len(good)
                .and_then(|()| self.file.sync_data())
                .and_then(|()| self.file.seek(SeekFrom::Start(good)).map(|_| ()));
            return Err(match undone {
                Ok(()) => io(&seg.path)(e),
                Err(e2) => {
                    let why = format!(
                        "{}: a write failed ({e}) and could not be rolled back ({e2})",
                        seg.path.display()
                    );
                    self.poisoned = Some(why.clone());
                    SegmentError::Poisoned(why)
                }
            });
        }
        let off = seg.size;
        if seg.index.is_empty()
            || off - seg.index.last().map_or(0, |x| x.1) >= self.opts.index_every_bytes
        {
            seg.index.push((first_seq, off));
        }
        seg.size += (FRAME + payload.len()) as u64;
        seg.last_seq = last_seq;
        self.last_seq = last_seq;
        if self.opts.preallocate && self.next.is_none() && seg.size >= self.opts.segment_bytes / 2 {
            self.next = Some(prepare_segment(
                &self.dir,
                self.opts.segment_bytes,
                std::mem::take(&mut self.sealed),
            ));
        }
        match self.opts.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::EveryMs(ms) => {
                if self.last_sync.elapsed() >= Duration::from_millis(ms) {
                    self.sync()?;
                }
            }
            FsyncPolicy::Never => {}
        }
        if let Some((index, epoch)) = &self.index {
            let seg = self.segments.last().expect("one segment");
            index.record(crate::history::Checkpoint {
                segment: seg.base,
                next_offset: i64::try_from(seg.size).unwrap_or(i64::MAX),
                epoch: *epoch,
                last_seq,
            });
        }
        Ok(self.durable_seq())
    }

    /// From now on, notes where the batches this writer appends sit in `index` (resends then
    /// start near their sequence: [`crate::history::FileEvents::open_indexed`]). `epoch`: this
    /// writer's, the highest in the log once its epoch record is in.
    pub fn set_offset_index(
        &mut self,
        index: std::sync::Arc<crate::history::OffsetIndex>,
        epoch: u64,
    ) {
        self.index = Some((index, epoch));
    }

    /// Last sequence durable under the policy: synced for `Always`, written otherwise.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        match self.opts.fsync {
            FsyncPolicy::Always => self.synced_seq,
            _ => self.last_seq,
        }
    }

    /// Forces everything written to stable storage.
    ///
    /// # Errors
    /// I/O errors.
    pub fn sync(&mut self) -> Result<(), SegmentError> {
        if let Some(why) = &self.poisoned {
            return Err(SegmentError::Poisoned(why.clone()));
        }
        if self.synced_seq != self.last_seq {
            let path = &self.segments.last().expect("one segment").path;
            let t = Instant::now();
            let synced = if self.faults.take_sync() {
                Err(std::io::Error::other("injected fsync failure"))
            } else {
                self.file.sync_data()
            };
            if let Err(e) = synced {
                // After a failed fsync the kernel may have dropped the dirty pages and cleared
                // the error: a retry could "succeed" without the data. Never trust this file
                // descriptor again.
                let why = format!("{}: fsync failed: {e}", path.display());
                self.poisoned = Some(why.clone());
                return Err(SegmentError::Poisoned(why));
            }
            self.last_sync_time = Some(t.elapsed());
            self.synced_seq = self.last_seq;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Injects faults into the next writes or syncs (tests; debug builds only).
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    pub fn inject(&mut self, faults: crate::fault::Faults) {
        self.faults = faults;
    }

    /// Waits until the helper preparing the next segment, if one runs, has finished (tests:
    /// the next roll then installs it).
    #[doc(hidden)]
    pub fn wait_for_prepared_segment(&self) {
        if let Some(Ok(h)) = &self.next {
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Why this writer appends nothing more, if it was poisoned.
    #[must_use]
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Called when idle: honours `EveryMs` for the last batches.
    ///
    /// # Errors
    /// I/O errors.
    pub fn tick(&mut self) -> Result<(), SegmentError> {
        if let FsyncPolicy::EveryMs(ms) = self.opts.fsync {
            if self.synced_seq != self.last_seq
                && self.last_sync.elapsed() >= Duration::from_millis(ms)
            {
                self.sync()?;
            }
        }
        Ok(())
    }

    fn roll(&mut self, base: u64) -> Result<(), SegmentError> {
        self.sync()?;
        // Seal: cut the preallocated zeros off, so a sealed segment ends at its last frame.
        let cur = self.segments.last().expect("one segment");
        let len = self.file.metadata().map_err(io(&cur.path))?.len();
        if len > cur.size {
            self.file
                .set_len(cur.size)
                .and_then(|()| self.file.sync_all())
                .map_err(io(&cur.path))?;
        }
        // Its pages, all clean now, leave the page cache (ADR 0019), off this thread (it can
        // take a few ms): on the helper that prepares the next segment, just before it writes
        // as many new pages; on a short-lived thread of its own without preallocation.
        if self.opts.preallocate {
            self.sealed.push(cur.path.clone());
        } else if let Ok(f) = self.file.try_clone() {
            let path = cur.path.clone();
            let _ = std::thread::Builder::new()
                .name("caldera-segdrop".into())
                .spawn(move || drop_from_page_cache(&f, &path));
        }
        // A helper still writing is not waited for (that would stall the journal): this
        // segment is created as before, and the helper's file serves the next roll.
        let ready = match &self.next {
            Some(Ok(h)) => h.is_finished(),
            Some(Err(_)) => true,
            None => false,
        };
        let next = if ready { self.next.take() } else { None };
        let prepared = match next.map(|p| p.map(std::thread::JoinHandle::join)) {
            Some(Ok(Ok(Ok(tmp)))) => Some(tmp),
            Some(Ok(Ok(Err(e))) | Err(e)) => {
                tracing::warn!(error = %e, "could not prepare the next journal segment; this one is not preallocated");
                None
            }
            Some(Ok(Err(_))) => {
                tracing::warn!(
                    "the journal segment helper panicked; this segment is not preallocated"
                );
                None
            }
            None => None,
        };
        let seg = match prepared {
            Some(tmp) => install_segment(&self.dir, &tmp, base)?,
            None => create_segment(&self.dir, base, 0)?,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .map_err(io(&seg.path))?;
        file.seek(SeekFrom::Start(HEADER)).map_err(io(&seg.path))?;
        self.file = file;
        self.segments.push(seg);
        Ok(())
    }

    /// The segment and byte offset to start reading at for sequence `seq` (sparse index).
    #[must_use]
    pub fn locate(&self, seq: u64) -> Option<(PathBuf, u64)> {
        let i = self
            .segments
            .partition_point(|s| s.base <= seq)
            .checked_sub(1)?;
        let s = &self.segments[i];
        let j = s.index.partition_point(|(f, _)| *f <= seq);
        let off = if j == 0 { HEADER } else { s.index[j - 1].1 };
        Some((s.path.clone(), off))
    }
}

/// Journal retention limits (file journal), applied after each snapshot: never to what the
/// snapshot still needs, never to the segment being written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many bytes of segments.
    pub max_bytes: Option<u64>,
    /// Delete segments older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Whether any limit is set.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// Deletes the oldest segments of the log in `dir` that lie entirely before `keep_from_seq`
/// (the first sequence the latest snapshot still needs) while the log is larger than
/// `max_bytes` or the segment is older than `max_age`. The newest segment (the one a writer
/// appends to) is never deleted: a segment is sealed once a later one exists. Safe while a
/// writer appends. Returns the deleted paths.
///
/// # Errors
/// I/O errors.
pub fn retain_segments(
    dir: &Path,
    retention: &Retention,
    keep_from_seq: u64,
) -> Result<Vec<PathBuf>, SegmentError> {
    let listed = list_segments(dir)?;
    let mut sizes = Vec::with_capacity(listed.len());
    for (_, p) in &listed {
        sizes.push(fs::metadata(p).map_err(io(p))?.len());
    }
    let mut total: u64 = sizes.iter().sum();
    let mut deleted = Vec::new();
    for (i, (_, path)) in listed.iter().enumerate() {
        // Sealed: the next segment starts after this one's last sequence.
        let Some((next_base, _)) = listed.get(i + 1) else {
            break;
        };
        if next_base.saturating_sub(1) >= keep_from_seq {
            break;
        }
        let too_big = retention.max_bytes.is_some_and(|m| total > m);
        let too_old = retention.max_age.is_some_and(|age| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|d| d > age)
        });
        if !(too_big || too_old) {
            break;
        }
        fs::remove_file(path).map_err(io(path))?;
        total -= sizes[i];
        deleted.push(path.clone());
    }
    Ok(deleted)
}

/// Writes `a` then `b` with vectored writes, finishing whatever a short write left.
fn write_all_2(file: &mut File, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    let mut done = 0usize;
    let total = a.len() + b.len();
    while done < total {
        let n = if done < a.len() {
            file.write_vectored(&[std::io::IoSlice::new(&a[done..]), std::io::IoSlice::new(b)])
        } else {
            file.write(&b[done - a.len()..])
        };
        match n {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether an intact frame (good CRC, not before `floor`) starts at `at` in a file of `len`
/// bytes.
fn intact_frame_at(file: &mut File, at: u64, len: u64, floor: u64) -> std::io::Result<bool> {
    if at + FRAME as u64 > len {
        return Ok(false);
    }
    let mut head = [0u8; FRAME];
    file.seek(SeekFrom::Start(at))?;
    if !read_or_eof(file, &mut head)? {
        return Ok(false);
    }
    let plen = u64::from(u32::from_le_bytes(head[0..4].try_into().expect("4")));
    let first = u64::from_le_bytes(head[8..16].try_into().expect("8"));
    if head.iter().all(|b| *b == 0) || plen > len - at - FRAME as u64 || first < floor {
        return Ok(false);
    }
    let mut body = vec![0u8; plen as usize];
    if !read_or_eof(file, &mut body)? {
        return Ok(false);
    }
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4"));
    Ok(crc32c::crc32c_append(crc32c::crc32c(&head[8..]), &body) == crc)
}

/// `read_exact`, with `Ok(false)` when the file ends first (the writer cut the segment to its
/// written size after the reader took its length).
fn read_or_eof(file: &mut File, buf: &mut [u8]) -> std::io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The last segment from `offset` (its header at 0), up to its written part and at least 1 MiB
/// of the zeros after it — not all of its preallocated space (reading 64 MiB of zeros took
/// ~70 ms, and a standby's promotion waits for it). Read in full instead when the frames there
/// do not end cleanly at zeros (damage, a torn tail: the rules that look past it need it all).
fn read_last(path: &Path, offset: u64, prev: Option<u64>, base: u64) -> std::io::Result<Vec<u8>> {
    const CHUNK: usize = 1 << 20;
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut v = Vec::new();
    let mut eof = false;
    loop {
        let at = v.len();
        v.resize(at + CHUNK, 0);
        let mut got = 0;
        while got < CHUNK {
            match f.read(&mut v[at + got..])? {
                0 => break,
                n => got += n,
            }
        }
        v.truncate(at + got);
        if got < CHUNK {
            eof = true;
            break;
        }
        if is_unwritten(&v[at..]) {
            break;
        }
    }
    if !eof {
        let clean = if offset == 0 {
            scan(&v, Some(base), |_, _, _, _| {}).2.is_none()
        } else {
            let mut p = prev;
            scan_frames(&v, offset, 0, &mut p, &mut |_, _, _, _| {})
                .2
                .is_none()
        };
        if !clean {
            return read_from(path, offset);
        }
    }
    Ok(v)
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// The file the helper thread prepares the next segment in (not a `.seg`: no reader lists it).
const PREPARED: &str = "next.seg.tmp";

fn segment_header(base: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&base.to_le_bytes());
    h
}

/// Writes zeros from the file's position up to `len` bytes, a MiB at a time. `paced`: each MiB
/// is synced before the next is written, so the disk's queue never holds more than a MiB of
/// zeros ahead of the journal's own fsync (one 64 MiB write-back delayed it by tens of ms).
fn write_zeros(f: &mut File, from: u64, len: u64, paced: bool) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        if paced {
            f.sync_data()?;
        }
        at += n as u64;
    }
    Ok(())
}

/// The next segment, being prepared.
type Preparing = std::io::Result<std::thread::JoinHandle<std::io::Result<PathBuf>>>;

/// Asks the kernel to drop a sealed segment's pages from the page cache (ADR 0019). They are
/// clean (the roll synced them), so nothing is written; a reader of the segment reads it from
/// the disk. Best effort: a failure is only logged.
fn drop_from_page_cache(f: &File, path: &Path) {
    if let Err(e) = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed) {
        tracing::debug!(error = %e, path = %path.display(), "could not drop a sealed segment from the page cache");
    }
}

/// Starts writing the next segment full of zeros (`segment_bytes`) on a helper thread (an
/// error if no thread could be started), first dropping the pages of the segments `sealed`
/// since the last helper from the page cache, so the zeros reuse them.
fn prepare_segment(dir: &Path, segment_bytes: u64, sealed: Vec<PathBuf>) -> Preparing {
    let path = dir.join(PREPARED);
    let work = move || {
        for sealed in sealed {
            // Retention may have removed it already: then there is nothing to drop.
            if let Ok(f) = File::open(&sealed) {
                drop_from_page_cache(&f, &sealed);
            }
        }
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        write_zeros(&mut f, 0, segment_bytes, true)?;
        f.sync_all()?;
        Ok(path)
    };
    std::thread::Builder::new()
        .name("caldera-segprep".into())
        .spawn(work)
}

/// Removes a segment a helper was still preparing when the last writer stopped.
fn remove_prepared(dir: &Path) -> Result<(), SegmentError> {
    let path = dir.join(PREPARED);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
        _ => Ok(()),
    }
}

/// Turns the prepared file into segment `base`: its header is written and synced before it is
/// renamed to its name, so a reader never sees a segment without its header.
fn install_segment(dir: &Path, tmp: &Path, base: u64) -> Result<Segment, SegmentError> {
    let path = dir.join(segment_name(base));
    let mut f = OpenOptions::new().write(true).open(tmp).map_err(io(tmp))?;
    f.write_all(&segment_header(base)).map_err(io(tmp))?;
    f.sync_data().map_err(io(tmp))?;
    fs::rename(tmp, &path).map_err(io(&path))?;
    named_segment(dir, path, base)
}

/// Syncs the directory a new segment `base` was just named in (its name survives a power loss
/// before any frame goes in), and returns it, empty.
fn named_segment(dir: &Path, path: PathBuf, base: u64) -> Result<Segment, SegmentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(Segment {
        path,
        base,
        last_seq: base.wrapping_sub(1),
        size: HEADER,
        index: Vec::new(),
    })
}

/// Creates segment `base`, written full of zeros up to `preallocate` bytes (0: just its
/// header).
fn create_segment(dir: &Path, base: u64, preallocate: u64) -> Result<Segment, SegmentError> {
    let path = dir.join(segment_name(base));
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(&segment_header(base)).map_err(io(&path))?;
    write_zeros(&mut f, HEADER, preallocate, false).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    named_segment(dir, path, base)
}

/// The last complete sequence of the log in `dir` (an incomplete or damaged tail frame does not
/// count), or `None` when it has no segment.
///
/// # Errors
/// I/O errors listing the directory or reading the last segment.
pub fn log_end(dir: &Path) -> Result<Option<u64>, SegmentError> {
    let listed = match list_segments(dir) {
        Ok(l) => l,
        Err(_) if !dir.exists() => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some((base, path)) = listed.last() else {
        return Ok(None);
    };
    let bytes = read_last(path, 0, None, *base).map_err(io(path))?;
    let (_, prev_last, _) = scan(&bytes, Some(*base), |_, _, _, _| {});
    Ok(Some(prev_last.unwrap_or(base.wrapping_sub(1))))
}

/// Reads batches from a log directory without modifying it (replay, dump, tail, standby).
/// Another process may be appending: an incomplete last frame is treated as "not yet written".
pub struct LogReader {
    dir: PathBuf,
    current: Option<(u64, PathBuf, File)>,
    offset: u64,
    next_seq: u64,
    pending: Vec<u8>,
    /// When listing the directory last found no later segment (a follower at the end of the
    /// log lists at most every 2 ms instead of on every poll).
    no_later_since: Option<Instant>,
    /// Base of the first segment this reader opened: what lies before it was not read.
    first_base: Option<u64>,
}

impl LogReader {
    /// A reader positioned at the batch containing `from_seq` (1 = the beginning).
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn open(dir: &Path, from_seq: u64) -> Result<LogReader, SegmentError> {
        Ok(LogReader {
            dir: dir.to_path_buf(),
            current: None,
            offset: HEADER,
            next_seq: from_seq.max(1),
            pending: Vec::new(),
            no_later_since: None,
            first_base: None,
        })
    }

    /// A reader at `offset` of segment `base` — a frame boundary a reader or the writer
    /// reported ([`crate::history::Checkpoint`]) — returning batches from `from_seq`.
    /// `None` when that segment is not there (retention removed it).
    ///
    /// # Errors
    /// I/O errors; a segment with a wrong header is damage.
    pub fn open_at(
        dir: &Path,
        from_seq: u64,
        base: u64,
        offset: u64,
    ) -> Result<Option<LogReader>, SegmentError> {
        let mut r = LogReader::open(dir, from_seq)?;
        let path = dir.join(segment_name(base));
        if !path.exists() || !r.open_segment(base, path)? {
            return Ok(None);
        }
        r.offset = offset.max(HEADER);
        Ok(Some(r))
    }

    /// The next complete batch at or after the reader's position, or `None` at the current end.
    /// Batches entirely before the requested start are skipped.
    ///
    /// # Errors
    /// I/O errors, or [`SegmentError::OutOfOrder`] when the log is damaged.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SegmentError> {
        loop {
            if self.current.is_none() && !self.open_segment_for(self.next_seq)? {
                return Ok(None);
            }
            let (_, path, file) = self.current.as_mut().expect("segment open");
            let len = file.metadata().map_err(io(path))?.len();
            if self.offset + FRAME as u64 <= len {
                let mut head = [0u8; FRAME];
                file.seek(SeekFrom::Start(self.offset)).map_err(io(path))?;
                // An all-zero header: preallocated space the writer has not reached yet. (It
                // may also have just cut the segment to its written size: the read ends early.)
                let written =
                    read_or_eof(file, &mut head).map_err(io(path))? && head.iter().any(|b| *b != 0);
                let plen = u32::from_le_bytes(head[0..4].try_into().expect("4")) as u64;
                if written
                    && plen <= u64::from(MAX_BATCH_BYTES)
                    && self.offset + FRAME as u64 + plen <= len
                {
                    self.pending.resize(plen as usize, 0);
                    if !read_or_eof(file, &mut self.pending).map_err(io(path))? {
                        return Ok(None);
                    }
                    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4"));
                    let mut h = crc32c::crc32c(&head[8..]);
                    h = crc32c::crc32c_append(h, &self.pending);
                    let first = u64::from_le_bytes(head[8..16].try_into().expect("8"));
                    let last = u64::from_le_bytes(head[16..24].try_into().expect("8"));
                    if h != crc {
                        // In a preallocated segment a frame the writer is copying in right now
                        // reads like a bad one. It is damage only if it is still bad once the
                        // writer is past it (a later segment exists, or an intact frame follows
                        // where this one says it ends: the writer finishes a frame before it
                        // starts the next). Otherwise it is the end for now, as a frame cut
                        // short is (and recovery would cut it off as a torn tail).
                        let end = self.offset + FRAME as u64 + plen;
                        let later = list_segments(&self.dir)?
                            .iter()
                            .any(|(b, _)| *b > self.current.as_ref().expect("open").0);
                        let (_, path, file) = self.current.as_mut().expect("segment open");
                        let past = later
                            || intact_frame_at(file, end, len, self.next_seq).map_err(io(path))?;
                        if past && !intact_frame_at(file, self.offset, len, 0).map_err(io(path))? {
                            return Err(damaged(
                                &self.dir,
                                path,
                                self.offset,
                                "CRC mismatch".into(),
                            ));
                        }
                        // (Complete now, if the writer was past it: read on the next call.)
                        return Ok(None);
                    }
                    self.offset += FRAME as u64 + plen;
                    if first != self.next_seq && last < self.next_seq {
                        continue; // entirely before the requested start
                    }
                    if first > self.next_seq {
                        return Err(SegmentError::OutOfOrder {
                            prev: self.next_seq - 1,
                            first,
                            last,
                        });
                    }
                    // first == next_seq (including a heartbeat batch without events), or the
                    // requested start lies inside this batch.
                    self.next_seq = self.next_seq.max(last.wrapping_add(1));
                    self.no_later_since = None;
                    return Ok(Some(Frame {
                        first_seq: first,
                        last_seq: last,
                        payload: std::mem::take(&mut self.pending),
                    }));
                }
            }
            // End of this segment for now: move on if a later segment exists.
            if self
                .no_later_since
                .is_some_and(|t| t.elapsed() < Duration::from_millis(2))
            {
                return Ok(None);
            }
            let later = list_segments(&self.dir)?
                .into_iter()
                .find(|(b, _)| *b > self.current.as_ref().expect("open").0);
            match later {
                Some((b, _)) if b <= self.next_seq => {
                    self.current = None;
                }
                _ => {
                    self.no_later_since = Some(Instant::now());
                    return Ok(None);
                }
            }
        }
    }

    fn open_segment_for(&mut self, seq: u64) -> Result<bool, SegmentError> {
        let segs = list_segments(&self.dir)?;
        let Some((base, path)) = segs
            .iter()
            .rev()
            .find(|(b, _)| *b <= seq)
            .or_else(|| segs.first())
            .cloned()
        else {
            return Ok(false);
        };
        self.open_segment(base, path)
    }

    fn open_segment(&mut self, base: u64, path: PathBuf) -> Result<bool, SegmentError> {
        let mut file = File::open(&path).map_err(io(&path))?;
        // The header is checked as recovery checks it: a segment with a wrong magic is damage,
        // not history (one still being created, shorter than its header, is not there yet).
        let mut header = [0u8; HEADER as usize];
        let mut got = 0;
        while got < header.len() {
            match file.read(&mut header[got..]).map_err(io(&path))? {
                0 => return Ok(false),
                n => got += n,
            }
        }
        if &header[..8] != MAGIC {
            return Err(damaged(&self.dir, &path, 0, "bad segment magic".into()));
        }
        self.first_base.get_or_insert(base);
        self.current = Some((base, path, file));
        self.offset = HEADER;
        Ok(true)
    }

    /// The next sequence the reader will return.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Base of the first segment this reader opened (`None`: none yet). Segments before it
    /// were not read: see [`crate::maintenance::check_before`].
    #[must_use]
    pub fn first_base(&self) -> Option<u64> {
        self.first_base
    }

    /// What this reader has verified so far (see [`LogOptions::trusted`]).
    #[must_use]
    pub fn trusted_prefix(&self) -> Option<TrustedPrefix> {
        self.current.as_ref().map(|(base, _, _)| TrustedPrefix {
            segment_base: *base,
            offset: self.offset,
            last_seq: self.next_seq - 1,
        })
    }
}
