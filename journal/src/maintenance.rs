//! Operator commands on a file journal that is not being written: [`verify`] (read every
//! frame of every segment and every snapshot; report all damage, change nothing) and
//! [`truncate_at`] (drop the log from a sequence on, moving what it drops aside and saying
//! exactly what that is). `caldera journal verify` and `caldera journal repair` print these.

use crate::segment::{
    damaged as damage_at, io, list_segments, next_good_frame, scan, scan_frames, SegmentError,
    Stop, HEADER,
};
use crate::snapshots::SnapshotStore;
use std::fs;
use std::path::{Path, PathBuf};

/// One damaged place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// Bytes until the next intact frame (or the end of the segment).
    pub bytes: u64,
    /// The first sequence the damage hides (the one expected there).
    pub first_missing_seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments read.
    pub segments: usize,
    /// Intact frames (batches and heartbeats).
    pub frames: u64,
    /// First sequence of the log (its first segment's base).
    pub first_seq: u64,
    /// Last sequence of the last intact frame.
    pub last_seq: u64,
    /// Damage, in log order.
    pub damage: Vec<Damage>,
    /// A torn tail (the last segment's last write cut short): repaired when a node opens the
    /// log, not damage.
    pub torn_tail: Option<Damage>,
    /// Snapshots: (sequence, path, problem or `None`).
    pub snapshots: Vec<(u64, PathBuf, Option<String>)>,
    /// Files set aside by earlier repairs (`*.damaged`, `dropped-*`).
    pub set_aside: Vec<PathBuf>,
}

impl VerifyReport {
    /// True when nothing is damaged (a torn tail is not damage).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.damage.is_empty() && self.snapshots.iter().all(|s| s.2.is_none())
    }
}

/// Reads every frame of every segment in `dir` (CRC and sequence continuity within and across
/// segments) and every snapshot. Changes nothing; finds every damaged place, not only the
/// first (it resumes at the next intact frame).
///
/// # Errors
/// I/O errors listing the directory.
pub fn verify(dir: &Path) -> Result<VerifyReport, SegmentError> {
    let listed = list_segments(dir)?;
    let mut r = VerifyReport {
        segments: listed.len(),
        first_seq: listed.first().map_or(0, |(b, _)| *b),
        ..VerifyReport::default()
    };
    let mut expect: Option<u64> = None;
    for (i, (base, path)) in listed.iter().enumerate() {
        let is_last = i + 1 == listed.len();
        if let Some(e) = expect.filter(|e| e != base) {
            r.damage.push(Damage {
                path: path.clone(),
                offset: 0,
                bytes: 0,
                first_missing_seq: e,
                reason: format!(
                    "missing sequences {e}..{base}: the segment before ends at {}",
                    e - 1
                ),
            });
        }
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                r.damage.push(Damage {
                    path: path.clone(),
                    offset: 0,
                    bytes: 0,
                    first_missing_seq: *base,
                    reason: format!("unreadable: {e}"),
                });
                expect = None;
                continue;
            }
        };
        let mut frames = 0u64;
        let count = |_: u64, _: u64, _: u64, _: &[u8]| frames += 1;
        let (mut end, mut prev, mut stop) = scan(&bytes, Some(*base), count);
        r.frames += frames;
        // Resume after each damaged place at the next intact frame.
        while let Some(s) = stop.take() {
            let (off, why) = match s {
                Stop::Torn(o, w) | Stop::Corrupt(o, w) => (o, w),
            };
            let missing = prev.map_or(*base, |p| p + 1);
            let from = (off as usize + 1).max(HEADER as usize);
            let next = next_good_frame(&bytes, from, prev);
            let d = Damage {
                path: path.clone(),
                offset: off,
                bytes: next.map_or(bytes.len() as u64, |n| n as u64) - off,
                first_missing_seq: missing,
                reason: why,
            };
            match next {
                None if is_last && (off >= HEADER || bytes.len() < HEADER as usize) => {
                    r.torn_tail = Some(d);
                }
                None => r.damage.push(d),
                Some(n) => {
                    r.damage.push(d);
                    let mut p2 = None;
                    let mut frames = 0u64;
                    let (e2, pl, st) =
                        scan_frames(&bytes, 0, n, &mut p2, &mut |_, _, _, _| frames += 1);
                    r.frames += frames;
                    end = e2;
                    prev = pl;
                    stop = st;
                }
            }
        }
        let _ = end;
        if let Some(p) = prev {
            r.last_seq = r.last_seq.max(p);
        }
        expect = Some(prev.map_or(*base, |p| p + 1));
    }
    for (seq, path, problem) in SnapshotStore::new(dir, usize::MAX).check_all() {
        let problem = problem.or_else(|| {
            (seq > r.last_seq && !listed.is_empty()).then(|| {
                format!(
                    "ahead of the log (ends at {}): recovery ignores it",
                    r.last_seq
                )
            })
        });
        r.snapshots.push((seq, path, problem));
    }
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".damaged") || name.starts_with("dropped-") {
            r.set_aside.push(e.path());
        }
    }
    r.set_aside.sort();
    Ok(r)
}

/// Checks every segment of `dir` whose base is below `base` — the ones a recovery that
/// started from a snapshot did not read — frame by frame (CRC, sequence continuity, and
/// continuity into the segment at `base`). Start-up runs it so that damage under a snapshot is
/// found when the node starts, not when a full replay first needs it.
///
/// # Errors
/// [`SegmentError::Damaged`] at the first damaged place; I/O errors listing the directory.
pub fn check_before(dir: &Path, base: u64) -> Result<(), SegmentError> {
    let listed = list_segments(dir)?;
    let damaged = |path: &Path, offset: u64, reason: String| damage_at(dir, path, offset, reason);
    let mut expect: Option<u64> = None;
    for (b, path) in listed.iter().filter(|(b, _)| *b <= base) {
        if let Some(e) = expect.filter(|e| e != b) {
            return Err(damaged(
                path,
                0,
                format!(
                    "missing sequences {e}..{b}: the segment before ends at {}",
                    e - 1
                ),
            ));
        }
        if *b == base {
            break;
        }
        let bytes = fs::read(path).map_err(|e| damaged(path, 0, format!("unreadable: {e}")))?;
        let (_, prev, stop) = scan(&bytes, Some(*b), |_, _, _, _| {});
        if let Some(Stop::Torn(off, why) | Stop::Corrupt(off, why)) = stop {
            return Err(damaged(path, off, why));
        }
        expect = Some(prev.map_or(*b, |p| p + 1));
    }
    Ok(())
}

/// What [`truncate_at`] dropped (or, for a dry run, would drop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncateReport {
    /// The sequence the log now ends before (the first dropped).
    pub from_seq: u64,
    /// The last sequence kept.
    pub last_kept_seq: u64,
    /// Where the dropped bytes and files were moved.
    pub moved_to: PathBuf,
    /// The segment cut: (path, byte offset, bytes dropped).
    pub cut: Option<(PathBuf, u64, u64)>,
    /// Later segments moved aside whole.
    pub segments_moved: Vec<PathBuf>,
    /// Snapshots covering dropped sequences, moved aside.
    pub snapshots_moved: Vec<PathBuf>,
}

/// Drops the log in `dir` from sequence `seq` on: `seq` must start a frame (a batch or a
/// heartbeat) or be the first sequence a damaged place hides (see [`verify`]). The segment
/// holding it is truncated there, every later segment and every snapshot covering `seq` or
/// later is moved into `dir/dropped-<seq>/` (the cut-off bytes too, as
/// `<segment>.from-<offset>`), so nothing is destroyed. With `dry_run`, only reports.
/// Takes the writer lock: refused while a node writes the journal.
///
/// # Errors
/// The lock is held, `seq` is not a frame boundary, I/O errors.
pub fn truncate_at(dir: &Path, seq: u64, dry_run: bool) -> Result<TruncateReport, SegmentError> {
    let _lock = crate::lock::WriterLock::try_acquire(dir)?;
    let listed = list_segments(dir)?;
    let not_boundary = |why: String| damage_at(dir, dir, 0, why);
    // Find the segment and offset where `seq` starts.
    let mut cut: Option<(usize, u64, u64)> = None; // (segment index, offset, last kept seq)
    for (i, (base, path)) in listed.iter().enumerate() {
        if *base > seq {
            break;
        }
        let bytes = fs::read(path).map_err(io(path))?;
        let mut found = None;
        let (end, prev, stop) = scan(&bytes, Some(*base), |first, _, off, _| {
            if first == seq && found.is_none() {
                found = Some(off);
            }
        });
        let _ = end;
        if let Some(off) = found {
            cut = Some((i, off, seq - 1));
        } else if stop.is_some() && prev.map_or(*base, |p| p + 1) == seq {
            let off = match stop {
                Some(Stop::Torn(o, _) | Stop::Corrupt(o, _)) => o,
                None => unreachable!(),
            };
            cut = Some((i, off, seq - 1));
        }
    }
    let Some((idx, off, last_kept)) = cut else {
        return Err(not_boundary(format!(
            "sequence {seq} does not start a frame or a damaged place: `caldera journal verify` lists them"
        )));
    };
    let moved_to = dir.join(format!("dropped-{seq}"));
    let (_, seg_path) = &listed[idx];
    let seg_len = fs::metadata(seg_path).map_err(io(seg_path))?.len();
    let mut report = TruncateReport {
        from_seq: seq,
        last_kept_seq: last_kept,
        moved_to: moved_to.clone(),
        ..TruncateReport::default()
    };
    let whole = off <= HEADER;
    if whole {
        report.segments_moved.push(seg_path.clone());
    } else {
        report.cut = Some((seg_path.clone(), off, seg_len - off));
    }
    report
        .segments_moved
        .extend(listed[idx + 1..].iter().map(|(_, p)| p.clone()));
    let store = SnapshotStore::new(dir, usize::MAX);
    report.snapshots_moved = store
        .check_all()
        .into_iter()
        .filter(|(s, _, _)| *s >= seq)
        .map(|(_, p, _)| p)
        .collect();
    if dry_run {
        return Ok(report);
    }
    fs::create_dir_all(&moved_to).map_err(io(&moved_to))?;
    if let Some((path, off, _)) = &report.cut {
        let bytes = fs::read(path).map_err(io(path))?;
        let name = format!(
            "{}.from-{off}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let keep = moved_to.join(name);
        fs::write(&keep, &bytes[*off as usize..]).map_err(io(&keep))?;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(*off).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    for p in report.segments_moved.iter().chain(&report.snapshots_moved) {
        let to = moved_to.join(p.file_name().unwrap_or_default());
        fs::rename(p, &to).map_err(io(p))?;
    }
    for d in [dir.to_path_buf(), moved_to, dir.join("snapshots")] {
        if let Ok(f) = fs::File::open(&d) {
            f.sync_all().map_err(io(&d))?;
        }
    }
    Ok(report)
}
