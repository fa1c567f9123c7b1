//! The embedded segment log on a real directory: round trip, damage detection and recovery,
//! retention, and recovery (snapshot + replay) reproducing the live state hash.
use caldera_engine::{Command, Engine, Event};
use caldera_journal::history::{FileEvents, OffsetIndex};
use caldera_journal::lock::WriterLock;
use caldera_journal::recover::recover;
use caldera_journal::snapshots::SnapshotStore;
use caldera_journal::{FsyncPolicy, LogOptions, LogReader, SegmentError, SegmentLog};
use caldera_schema::record::encode_batch;
use caldera_testkit::flow::{generate, FlowConfig};
use flatbuffers::FlatBufferBuilder;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed when the test passes
/// (kept for a look when it fails, or with `CALDERA_KEEP_TEST_DIRS`).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("CALDERA_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn tmp(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!(
        "caldera-journal-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = fs::remove_dir_all(&d);
    Scratch(d)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: 16 << 10,
        index_every_bytes: 2 << 10,
        fsync: FsyncPolicy::Never,
        trusted: None,
        preallocate: true,
    }
}

/// Writes `batches` batches of the flow into a log; returns the engine after them and the
/// per-batch commands. Each roll finds the next segment prepared (preallocated).
fn write_log(dir: &Path, batches: usize, per: usize) -> (Engine, Vec<(u64, u64, Vec<Command>)>) {
    write_log_with(dir, batches, per, opts())
}

/// [`write_log`] with other options.
fn write_log_with(
    dir: &Path,
    batches: usize,
    per: usize,
    o: LogOptions,
) -> (Engine, Vec<(u64, u64, Vec<Command>)>) {
    let cfg = FlowConfig {
        seed: 21,
        symbols: 2,
        accounts: 40,
        target_orders: 100,
        full_mix: true,
    };
    let cmds = generate(&cfg, batches * per);
    let mut e = Engine::new(cfg.engine_config()).unwrap();
    let (mut log, rep) = SegmentLog::open(dir, o).unwrap();
    assert!(rep.clean());
    let mut fbb = FlatBufferBuilder::new();
    let mut out = Vec::new();
    for chunk in cmds.chunks(per) {
        let mut events: Vec<Event> = Vec::new();
        let first = e.last_seq() + 1;
        for c in chunk {
            e.process(c, &mut events);
        }
        let bytes = encode_batch(&mut fbb, 1, chunk, &events, first, e.last_seq());
        log.append(first, e.last_seq(), bytes).unwrap();
        log.wait_for_prepared_segment();
        out.push((first, e.last_seq(), chunk.to_vec()));
    }
    log.sync().unwrap();
    (e, out)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn read_all(dir: &Path) -> Vec<(u64, u64)> {
    let mut r = LogReader::open(dir, 1).unwrap();
    let mut v = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        v.push((f.first_seq, f.last_seq));
    }
    v
}

fn cfg() -> caldera_engine::EngineConfig {
    FlowConfig {
        seed: 21,
        symbols: 2,
        accounts: 40,
        target_orders: 100,
        full_mix: true,
    }
    .engine_config()
}

#[test]
fn batches_round_trip_across_segments_and_seek_by_sequence() {
    let dir = tmp("roundtrip");
    let (e, written) = write_log(&dir, 200, 25);
    assert!(segments(&dir).len() > 3, "rolled by size");
    let got = read_all(&dir);
    assert_eq!(got, written.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>());
    // Seek into the middle: the reader starts at the batch containing the sequence.
    let target = written[120].0 + 1;
    let mut r = LogReader::open(&dir, target).unwrap();
    let f = r.next_frame().unwrap().unwrap();
    assert_eq!((f.first_seq, f.last_seq), (written[120].0, written[120].1));
    let (log, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert!(rep.clean());
    assert_eq!(rep.batches, 200);
    assert_eq!(log.last_seq(), e.last_seq());
    let (path, off) = log.locate(target).unwrap();
    assert!(path.exists() && off >= 16);
    // Recovery reproduces the live engine exactly.
    let (r, info) = recover(&dir, &cfg()).unwrap();
    assert_eq!(r.state_hash(), e.state_hash());
    assert_eq!(info.batches, 200);
}

#[test]
fn torn_tail_is_truncated_and_reported_everything_before_kept() {
    let dir = tmp("torn");
    let (_, written) = write_log(&dir, 60, 20);
    let last = segments(&dir).pop().unwrap();
    let end = written_end(&last);
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(end - 7)
        .unwrap();
    let (mut log, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert_eq!(rep.truncated.len(), 1, "{rep:?}");
    assert!(rep.truncated[0].3.contains("cut short"), "{rep:?}");
    assert_eq!(
        rep.last_seq, written[58].1,
        "the torn last batch is dropped, the rest kept"
    );
    // The log continues from the last good batch.
    assert!(log.append(written[58].1 + 1, written[58].1, b"").is_ok());
    assert_eq!(read_all(&dir).len(), 60);
}

#[test]
fn a_torn_tail_inside_the_preallocated_space_is_truncated_too() {
    // In a preallocated segment a write the crash cut short leaves zeros where the rest of
    // its frame should be: the frame fails its CRC, and only zeros follow.
    let dir = tmp("torn-prealloc");
    let (_, written) = write_log(&dir, 60, 20);
    let last = segments(&dir).pop().unwrap();
    let mut b = fs::read(&last).unwrap();
    let end = written_end(&last) as usize;
    assert!(b.len() > end, "the last segment is preallocated");
    // The second half of the last frame never reached the disk.
    let start = last_frame_start(&last) as usize;
    let cut = start + (end - start) / 2;
    assert!(b[cut..end].iter().any(|x| *x != 0));
    b[cut..end].fill(0);
    fs::write(&last, &b).unwrap();
    // A reader stops before the torn batch, without reporting damage (the writer might still
    // be copying it in).
    assert_eq!(read_all(&dir).len(), 59);
    let (mut log, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert_eq!(rep.truncated.len(), 1, "{rep:?}");
    assert!(rep.truncated[0].3.contains("CRC"), "{rep:?}");
    assert!(
        rep.truncated[0].2 <= end as u64 - rep.truncated[0].1,
        "only the written bytes count as dropped, not the zeros after them: {rep:?}"
    );
    assert_eq!(rep.last_seq, written[58].1);
    assert!(log.append(written[58].1 + 1, written[58].1, b"").is_ok());
    drop(log);
    assert_eq!(read_all(&dir).len(), 60);
}

#[test]
fn preallocated_segments_reopen_clean_and_sealed_ones_end_at_their_last_frame() {
    let dir = tmp("prealloc");
    let (_, written) = write_log(&dir, 60, 20);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "{segs:?}");
    for s in &segs[..segs.len() - 1] {
        assert_eq!(
            fs::metadata(s).unwrap().len(),
            written_end(s),
            "a sealed segment ends at its last frame: {}",
            s.display()
        );
    }
    let last = segs.last().unwrap();
    assert_eq!(
        fs::metadata(last).unwrap().len(),
        opts().segment_bytes,
        "the segment being written is preallocated"
    );
    // Reopening finds no damage in the zeros, and appends after the last frame.
    let (mut log, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert!(rep.clean(), "{rep:?}");
    assert_eq!(rep.last_seq, written[59].1);
    let next = written[59].1 + 1;
    log.append(next, next, b"one more").unwrap();
    drop(log);
    assert!(
        !dir.join("next.seg.tmp").exists(),
        "no prepared segment is left behind"
    );
    assert_eq!(read_all(&dir).len(), 61);
    // Reopened with the current segment more than half full, the writer prepares the next one
    // at once: the segment it rolls to is preallocated.
    let half = opts().segment_bytes / 2;
    let (mut log, _) = SegmentLog::open(&dir, opts()).unwrap();
    let mut seq = next;
    while written_end(segments(&dir).last().unwrap()) <= half + 2000 {
        seq += 1;
        log.append(seq, seq, &[7u8; 500]).unwrap();
        log.wait_for_prepared_segment();
    }
    drop(log);
    let (mut log, _) = SegmentLog::open(&dir, opts()).unwrap();
    log.wait_for_prepared_segment();
    let before = segments(&dir).len();
    while segments(&dir).len() == before {
        seq += 1;
        log.append(seq, seq, &[7u8; 1000]).unwrap();
    }
    let newest = segments(&dir).pop().unwrap();
    assert_eq!(fs::metadata(&newest).unwrap().len(), opts().segment_bytes);
    drop(log);
    assert_eq!(read_all(&dir).last().unwrap().1, seq);
    assert!(caldera_journal::maintenance::verify(&dir).unwrap().ok());
    // Without preallocation the segments hold only their frames, and read the same.
    let plain = tmp("prealloc-off");
    let off = LogOptions {
        preallocate: false,
        ..opts()
    };
    let (mut log, _) = SegmentLog::open(&plain, off).unwrap();
    for (first, last, _) in &written {
        log.append(*first, *last, b"x").unwrap();
    }
    drop(log);
    for s in segments(&plain) {
        assert_eq!(fs::metadata(&s).unwrap().len(), written_end(&s));
    }
    assert_eq!(read_all(&plain).len(), 60);
}

/// Where the last frame of a segment starts.
fn last_frame_start(path: &Path) -> u64 {
    let b = fs::read(path).unwrap();
    let (mut at, mut start) = (16usize, 16usize);
    while at + 24 <= b.len() && b[at..at + 24].iter().any(|x| *x != 0) {
        start = at;
        at += 24 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    start as u64
}

/// Where the written part of a segment ends (its preallocated zeros, if any, follow): after
/// its last frame, walking the frames' length fields from the 16-byte header.
fn written_end(path: &Path) -> u64 {
    let b = fs::read(path).unwrap();
    let mut at = 16usize;
    while at + 24 <= b.len() && b[at..at + 24].iter().any(|x| *x != 0) {
        at += 24 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    at as u64
}

#[test]
fn flipped_byte_is_detected_by_crc_in_the_last_and_in_an_earlier_segment() {
    // Last segment.
    let dir = tmp("crc-last");
    let (_, written) = write_log(&dir, 60, 20);
    let last = segments(&dir).pop().unwrap();
    let mut b = fs::read(&last).unwrap();
    let n = written_end(&last) as usize;
    b[n - 10] ^= 0x40;
    fs::write(&last, &b).unwrap();
    let (_, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert!(rep.truncated[0].3.contains("CRC"), "{rep:?}");
    assert_eq!(rep.last_seq, written[58].1);

    // An earlier segment: refused, nothing changed (acknowledged history is after it).
    let dir = tmp("crc-middle");
    let (_, written) = write_log(&dir, 200, 25);
    let segs = segments(&dir);
    assert!(segs.len() >= 4);
    let victim = &segs[1];
    let mut b = fs::read(victim).unwrap();
    b[100] ^= 0x01;
    fs::write(victim, &b).unwrap();
    let before = snapshot_of_dir(&dir);
    let err = SegmentLog::open(&dir, opts()).unwrap_err();
    assert!(
        matches!(err, SegmentError::Damaged { ref path, .. } if path == victim),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("CRC mismatch") && msg.contains("caldera journal verify"),
        "{msg}"
    );
    assert_eq!(
        snapshot_of_dir(&dir),
        before,
        "nothing was truncated or renamed"
    );
    assert!(recover(&dir, &cfg()).is_err(), "replay refuses too");
    drop(written);
}

#[test]
fn damage_in_the_last_segment_followed_by_intact_frames_is_refused_not_truncated() {
    // Acknowledged batches after a bad frame: a "torn tail" repair would drop them.
    let dir = tmp("crc-mid-last");
    let (_, written) = write_log(&dir, 60, 20);
    let last = segments(&dir).pop().unwrap();
    let mut b = fs::read(&last).unwrap();
    b[40] ^= 0x08; // inside the first frame of the last segment
    fs::write(&last, &b).unwrap();
    let before = snapshot_of_dir(&dir);
    let err = SegmentLog::open(&dir, opts()).unwrap_err();
    assert!(err.to_string().contains("intact frames after it"), "{err}");
    assert_eq!(snapshot_of_dir(&dir), before);
    drop(written);
}

/// Every file of `dir` with its length (to show nothing was changed).
fn snapshot_of_dir(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn missing_and_unreadable_segments_are_refused() {
    let dir = tmp("missing");
    let (_, _) = write_log(&dir, 200, 25);
    let segs = segments(&dir);
    fs::remove_file(&segs[2]).unwrap();
    let err = SegmentLog::open(&dir, opts()).unwrap_err();
    assert!(err.to_string().contains("missing segment"), "{err}");
    assert_eq!(segments(&dir).len(), segs.len() - 1, "nothing renamed");

    let dir = tmp("unreadable");
    let (_, _) = write_log(&dir, 200, 25);
    let segs = segments(&dir);
    fs::remove_file(&segs[1]).unwrap();
    fs::create_dir(&segs[1]).unwrap(); // reading it fails (EISDIR) even as root
    let err = SegmentLog::open(&dir, opts()).unwrap_err();
    assert!(err.to_string().contains("unreadable"), "{err}");
}

/// The flow's commands run through `e` in batches of `per`: (first, last, encoded batch).
fn append_flow(e: &mut Engine, cmds: &[Command], per: usize) -> Vec<(u64, u64, Vec<u8>)> {
    let mut fbb = FlatBufferBuilder::new();
    let mut out = Vec::new();
    for chunk in cmds.chunks(per) {
        let mut events: Vec<Event> = Vec::new();
        let first = e.last_seq() + 1;
        for c in chunk {
            e.process(c, &mut events);
        }
        let bytes = encode_batch(&mut fbb, 1, chunk, &events, first, e.last_seq()).to_vec();
        out.push((first, e.last_seq(), bytes));
    }
    out
}

#[cfg(debug_assertions)]
#[test]
fn a_write_cut_short_is_rolled_back_and_the_retry_is_kept_after_reopen() {
    use caldera_journal::fault::Faults;
    let dir = tmp("short-write");
    let flow = FlowConfig {
        seed: 5,
        symbols: 2,
        accounts: 20,
        target_orders: 50,
        full_mix: true,
    };
    let cmds = generate(&flow, 400);
    let mut e = Engine::new(flow.engine_config()).unwrap();
    let (mut log, _) = SegmentLog::open(&dir, opts()).unwrap();
    let batches = append_flow(&mut e, &cmds, 20);
    log.inject(Faults::default().short_write_at(6));
    let mut acked = Vec::new();
    for (first, last, bytes) in &batches {
        // The journal stage's behaviour: a retryable error is retried with the same batch.
        let mut tries = 0;
        loop {
            tries += 1;
            match log.append(*first, *last, bytes) {
                Ok(_) => break,
                Err(err @ SegmentError::Io { .. }) if tries < 3 => {
                    assert!(err.to_string().contains("no space left"), "{err}");
                }
                Err(err) => panic!("{err}"),
            }
        }
        acked.push((*first, *last));
    }
    log.sync().unwrap();
    drop(log);
    // Every acknowledged batch survives a reopen: nothing was built on a partial frame.
    let (log, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert!(rep.clean(), "{rep:?}");
    assert_eq!(log.last_seq(), e.last_seq());
    assert_eq!(read_all(&dir), acked);
    let (r, _) = recover(&dir, &flow.engine_config()).unwrap();
    assert_eq!(r.state_hash(), e.state_hash());
}

#[cfg(debug_assertions)]
#[test]
fn a_failed_fsync_poisons_the_writer_until_reopen() {
    use caldera_journal::fault::Faults;
    let dir = tmp("fsync-fail");
    let flow = FlowConfig {
        seed: 6,
        symbols: 2,
        accounts: 20,
        target_orders: 50,
        full_mix: true,
    };
    let cmds = generate(&flow, 200);
    let mut e = Engine::new(flow.engine_config()).unwrap();
    let (mut log, _) = SegmentLog::open(
        &dir,
        LogOptions {
            fsync: FsyncPolicy::Always,
            ..opts()
        },
    )
    .unwrap();
    let batches = append_flow(&mut e, &cmds, 20);
    log.inject(Faults::default().fail_sync_at(3));
    let (a, b) = batches.split_at(2);
    for (first, last, bytes) in a {
        assert_eq!(log.append(*first, *last, bytes).unwrap(), *last);
    }
    let (first, last, bytes) = &b[0];
    let err = log.append(*first, *last, bytes).unwrap_err();
    assert!(matches!(err, SegmentError::Poisoned(_)), "{err}");
    assert!(log.poisoned().is_some());
    assert_eq!(log.synced_seq(), a[1].1, "the failed batch is not durable");
    // Not retryable: the writer appends nothing more, whatever is offered.
    let retry = log.append(*first, *last, bytes).unwrap_err();
    assert!(matches!(retry, SegmentError::Poisoned(_)));
    assert!(!caldera_journal::JournalError::from(retry).is_retryable());
    assert!(log.sync().is_err());
}

#[test]
fn retention_never_deletes_what_the_latest_snapshot_needs() {
    let dir = tmp("retain");
    let (_, written) = write_log(&dir, 200, 25);
    let (log, _) = SegmentLog::open(&dir, opts()).unwrap();
    let before = segments(&dir).len();
    let keep_from = written[100].0;
    let all = caldera_journal::Retention {
        max_bytes: Some(0),
        max_age: None,
    };
    let deleted = caldera_journal::retain_segments(&dir, &all, keep_from).unwrap();
    assert!(!deleted.is_empty());
    // Everything from keep_from is still readable.
    let mut r = LogReader::open(&dir, keep_from).unwrap();
    let f = r.next_frame().unwrap().unwrap();
    assert!(f.first_seq <= keep_from && keep_from <= f.last_seq.max(f.first_seq));
    assert!(segments(&dir).len() < before);
    // The writer still appends after its old segments were deleted.
    drop(log);
}

#[test]
fn a_snapshot_ahead_of_the_log_is_ignored_and_an_older_one_used() {
    // fsync = interval|never: a snapshot may cover events a power loss then removed from the
    // log. Recovery must not start from it (the node would refuse to start, or hold events the
    // log does not have).
    let dir = tmp("snapshot-ahead");
    let (full, written) = write_log(&dir, 60, 20);
    let engine_at = |batches: usize| {
        let mut e = Engine::new(cfg()).unwrap();
        for (_, _, cmds) in &written[..batches] {
            for c in cmds {
                e.process(c, &mut caldera_engine::NullSink);
            }
        }
        e
    };
    let store = SnapshotStore::new(&dir, 3);
    let older = engine_at(40);
    store.write(older.last_seq(), &older.snapshot()).unwrap();
    store.write(full.last_seq(), &full.snapshot()).unwrap();
    // The unsynced last batch is lost.
    let last = segments(&dir).pop().unwrap();
    let len = written_end(&last);
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (r, info) = recover(&dir, &cfg()).unwrap();
    assert_eq!(
        info.snapshot_seq, written[39].1,
        "the older snapshot is used"
    );
    assert_eq!(
        r.last_seq(),
        written[58].1,
        "the log's end, not the snapshot's"
    );
    assert_eq!(r.state_hash(), engine_at(59).state_hash());
    // And the writer continues from there.
    let (log, _) = SegmentLog::open(&dir, opts()).unwrap();
    assert_eq!(log.last_seq(), r.last_seq());
}

#[test]
fn recovery_uses_the_latest_snapshot_then_the_log_after_it() {
    let dir = tmp("snapshot");
    let cfgf = FlowConfig {
        seed: 21,
        symbols: 2,
        accounts: 40,
        target_orders: 100,
        full_mix: true,
    };
    let (full, written) = write_log(&dir, 100, 30);
    // A snapshot at a batch boundary, from an engine replayed to that point.
    let mut e = Engine::new(cfgf.engine_config()).unwrap();
    for (_, _, cmds) in &written[..40] {
        for c in cmds {
            e.process(c, &mut caldera_engine::NullSink);
        }
    }
    let store = SnapshotStore::new(&dir, 3);
    store.write(e.last_seq(), &e.snapshot()).unwrap();
    let (r, info) = recover(&dir, &cfg()).unwrap();
    assert_eq!(info.snapshot_seq, written[39].1);
    assert_eq!(
        info.batches, 60,
        "only the batches after the snapshot are replayed"
    );
    assert_eq!(r.state_hash(), full.state_hash());
    // A damaged newest snapshot falls back to an older one (or none) and still recovers.
    let newest = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut b = fs::read(&newest).unwrap();
    let n = b.len();
    b[n - 1] ^= 0xff;
    fs::write(&newest, b).unwrap();
    let (r, info) = recover(&dir, &cfg()).unwrap();
    assert_eq!(info.snapshot_seq, 0);
    assert_eq!(r.state_hash(), full.state_hash());
    // A snapshot with a valid checksum that does not restore (an older format) makes recovery
    // replay the whole log instead of failing.
    store
        .write(e.last_seq(), b"CALDSNP1 from an older version")
        .unwrap();
    let (r, info) = recover(&dir, &cfg()).unwrap();
    assert_eq!(info.snapshot_seq, 0);
    assert_eq!(info.batches, 100);
    assert_eq!(r.state_hash(), full.state_hash());
}

#[test]
fn a_second_writer_on_the_same_journal_is_refused_until_the_first_is_gone() {
    let dir = tmp("lock");
    let (first, _) = SegmentLog::open(&dir, opts()).unwrap();
    let err = SegmentLog::open(&dir, opts()).unwrap_err();
    assert!(
        matches!(
            err,
            caldera_journal::SegmentError::Lock(caldera_journal::lock::LockError::Held(_))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("in use by another process"));
    // Readers do not need the lock.
    assert!(LogReader::open(&dir, 1)
        .unwrap()
        .next_frame()
        .unwrap()
        .is_none());
    drop(first);
    assert!(SegmentLog::open(&dir, opts()).is_ok());
}

#[test]
fn opening_with_a_followers_trusted_prefix_scans_only_the_rest_and_still_repairs_the_tail() {
    // A standby read the log up to some point; the primary wrote more (across segments) and
    // died mid-frame. Opening with the reader's prefix must find the same end as a full scan.
    let dir = tmp("trusted");
    let (_, written) = write_log(&dir, 30, 20);
    let mut reader = LogReader::open(&dir, 1).unwrap();
    while reader.next_frame().unwrap().is_some() {}
    let prefix = reader.trusted_prefix().expect("a segment is open");
    assert_eq!(prefix.last_seq, written[29].1);
    drop(write_more(&dir, &written));
    let last = segments(&dir).pop().unwrap();
    let len = written_end(&last);
    let f = fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 5).unwrap();
    let full_end = {
        let copy = tmp("trusted-copy");
        fs::create_dir_all(&copy).unwrap();
        for p in segments(&dir) {
            fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
        SegmentLog::open(&copy, opts()).unwrap().1.last_seq
    };
    let lock = WriterLock::try_acquire(&dir).unwrap();
    let trusted = LogOptions {
        trusted: Some(prefix),
        ..opts()
    };
    let (log, rep) = SegmentLog::open_locked(&dir, trusted, lock).unwrap();
    assert_eq!(rep.truncated.len(), 1, "the torn tail is found: {rep:?}");
    assert_eq!(log.last_seq(), full_end);
    assert!(log.last_seq() > prefix.last_seq);
    assert!(segments(&dir).len() > 2);
}

/// Appends 40 more batches of 20 commands after `written`.
fn write_more(dir: &Path, written: &[(u64, u64, Vec<Command>)]) -> SegmentLog {
    let cfg = FlowConfig {
        seed: 21,
        symbols: 2,
        accounts: 40,
        target_orders: 100,
        full_mix: true,
    };
    let cmds = generate(&cfg, (written.len() + 40) * 20);
    let mut e = Engine::new(cfg.engine_config()).unwrap();
    for c in &cmds[..written.len() * 20] {
        e.process(c, &mut caldera_engine::NullSink);
    }
    let (mut log, _) = SegmentLog::open(dir, opts()).unwrap();
    let mut fbb = FlatBufferBuilder::new();
    for chunk in cmds[written.len() * 20..].chunks(20) {
        let mut events: Vec<Event> = Vec::new();
        let first = e.last_seq() + 1;
        for c in chunk {
            e.process(c, &mut events);
        }
        let bytes = encode_batch(&mut fbb, 1, chunk, &events, first, e.last_seq());
        log.append(first, e.last_seq(), bytes).unwrap();
    }
    log.sync().unwrap();
    log
}

#[test]
fn verify_finds_every_damaged_place_and_repair_drops_exactly_from_the_given_sequence() {
    use caldera_journal::maintenance::{truncate_at, verify};
    let dir = tmp("verify");
    let (_, written) = write_log(&dir, 200, 25);
    let clean = verify(&dir).unwrap();
    assert!(clean.ok() && clean.torn_tail.is_none(), "{clean:?}");
    assert_eq!(clean.frames, 200);
    assert_eq!(clean.last_seq, written[199].1);
    // Two damaged places in two segments, and a torn tail.
    let segs = segments(&dir);
    for (seg, at) in [(&segs[1], 100usize), (&segs[3], 200)] {
        let mut b = fs::read(seg).unwrap();
        b[at] ^= 0x10;
        fs::write(seg, &b).unwrap();
    }
    let last = segments(&dir).pop().unwrap();
    let len = written_end(&last);
    let f = fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 3).unwrap();
    let r = verify(&dir).unwrap();
    assert!(!r.ok());
    assert_eq!(r.damage.len(), 2, "{r:?}");
    assert_eq!(r.damage[0].path, segs[1]);
    assert_eq!(r.damage[1].path, segs[3]);
    assert!(r.torn_tail.is_some());
    // Every hidden sequence starts a batch that was written.
    for d in &r.damage {
        assert!(written.iter().any(|w| w.0 == d.first_missing_seq), "{d:?}");
    }
    assert_eq!(
        r.frames,
        200 - 2 - 1,
        "all but the two damaged frames and the torn one"
    );
    // A dry run changes nothing.
    let from = r.damage[0].first_missing_seq;
    let before = snapshot_of_dir(&dir);
    let plan = truncate_at(&dir, from, true).unwrap();
    assert_eq!(snapshot_of_dir(&dir), before);
    assert_eq!(plan.last_kept_seq, from - 1);
    // The damaged segment is cut (or moved whole when the damage is its first frame).
    assert_eq!(
        plan.segments_moved.len(),
        segs.len() - 1 - usize::from(plan.cut.is_some())
    );
    // Not a boundary: refused.
    assert!(truncate_at(&dir, from + 1, false).is_err());
    // The repair: the log ends just before `from`, and opens clean.
    let done = truncate_at(&dir, from, false).unwrap();
    assert_eq!(done, plan);
    assert!(done.moved_to.join(segs[2].file_name().unwrap()).exists());
    let after = verify(&dir).unwrap();
    assert!(after.ok(), "{after:?}");
    assert_eq!(after.last_seq, from - 1);
    let (log, rep) = SegmentLog::open(&dir, opts()).unwrap();
    assert!(rep.clean());
    assert_eq!(log.last_seq(), from - 1);
    assert_eq!(read_all(&dir).last().unwrap().1, from - 1);
}

#[test]
fn a_reader_following_a_writer_through_preallocated_segments_never_sees_damage() {
    // The reader polls while the writer copies frames into preallocated space: a frame half
    // copied in reads like a bad one, and must be taken as "not yet", never as damage.
    let dir = tmp("follow-prealloc");
    let o = LogOptions {
        segment_bytes: 1 << 20,
        ..opts()
    };
    let (mut log, _) = SegmentLog::open(&dir, o).unwrap();
    const BATCHES: u64 = 3000;
    let payload = |i: u64| -> Vec<u8> {
        let n = 1 + (i * 7919 % 65_536) as usize;
        let mut v = vec![i as u8 | 1; n];
        v[n / 2] = (i >> 8) as u8 | 1;
        v
    };
    let reader_dir = dir.to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut r = LogReader::open(&reader_dir, 1).unwrap();
        let mut next = 1u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while next <= BATCHES {
            assert!(std::time::Instant::now() < deadline, "stuck at {next}");
            match r.next_frame() {
                Ok(Some(f)) => {
                    assert_eq!((f.first_seq, f.last_seq), (next, next));
                    assert_eq!(f.payload, payload(next), "batch {next}");
                    next += 1;
                }
                Ok(None) => std::hint::spin_loop(),
                Err(e) => panic!("the reader saw damage at batch {next}: {e}"),
            }
        }
    });
    for i in 1..=BATCHES {
        log.append(i, i, &payload(i)).unwrap();
    }
    reader.join().unwrap();
    drop(log);
    assert!(segments(&dir).len() > 10, "the writer rolled many times");
}

#[test]
fn recovery_reads_a_preallocated_segment_to_a_mib_of_zeros_past_its_frames_and_finds_damage_there()
{
    // Reading all 64 MiB of a fresh segment's zeros took ~70 ms, and a standby's promotion
    // waits for it: recovery reads the last segment up to its frames and a whole MiB of zeros.
    let o = LogOptions {
        segment_bytes: 4 << 20,
        ..opts()
    };
    let payload = |i: u64| vec![i as u8 | 1; 3000];
    let write = |dir: &Path, n: u64| {
        let (mut log, _) = SegmentLog::open(dir, o).unwrap();
        for i in 1..=n {
            log.append(i, i, &payload(i)).unwrap();
        }
    };
    let dir = tmp("prealloc-window");
    write(&dir, 20);
    let seg = segments(&dir).pop().unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), o.segment_bytes);
    let (log, rep) = SegmentLog::open(&dir, o).unwrap();
    assert!(rep.clean(), "{rep:?}");
    assert_eq!(log.last_seq(), 20);
    drop(log);
    // Batch 22, intact, somewhere in the zeros after batch 20 (batch 21 lost: a write the disk
    // dropped). Within the MiB recovery reads, it is damage with an intact frame after it.
    let other = tmp("prealloc-window-22");
    write(&other, 22);
    let o22 = segments(&other).pop().unwrap();
    let b22 = fs::read(&o22).unwrap();
    let frame22 = b22[last_frame_start(&o22) as usize..written_end(&o22) as usize].to_vec();
    let end = written_end(&seg) as usize;
    let pristine = fs::read(&seg).unwrap();
    let mut b = pristine.clone();
    b[end + (100 << 10)..end + (100 << 10) + frame22.len()].copy_from_slice(&frame22);
    fs::write(&seg, &b).unwrap();
    let err = SegmentLog::open(&dir, o).unwrap_err();
    assert!(err.to_string().contains("intact frames after it"), "{err}");
    // Past that MiB, recovery takes the zeros as never written (only a lost write could put a
    // frame there); `journal verify`, which reads everything, still reports it.
    let mut b = pristine;
    let far = end + (2 << 20) + 4096;
    b[far..far + frame22.len()].copy_from_slice(&frame22);
    fs::write(&seg, &b).unwrap();
    let report = caldera_journal::maintenance::verify(&dir).unwrap();
    assert!(!report.ok(), "{report:?}");
    let (log, _) = SegmentLog::open(&dir, o).unwrap();
    assert_eq!(log.last_seq(), 20);
}

/// Everything a file history returns after `after`, read to the log's current end.
fn events_after(dir: &Path, after: u64, index: Option<&OffsetIndex>) -> Result<Vec<u64>, String> {
    let mut r = FileEvents::open_indexed(dir, after, index).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while r.read(&mut out).map_err(|e| e.to_string())? {}
    Ok(out.iter().map(|e| e.seq).collect())
}

/// A log of `commands` commands of a flow (`seed`) in batches of 20, in 1 MiB segments; the
/// writer notes its checkpoints in `index` (epoch 1) when given one. Returns the engine that
/// produced it and the flow.
fn write_flow_log(
    dir: &Path,
    seed: u64,
    commands: usize,
    index: Option<&std::sync::Arc<OffsetIndex>>,
) -> (Engine, FlowConfig) {
    let flow = FlowConfig {
        seed,
        symbols: 2,
        accounts: 20,
        target_orders: 60,
        full_mix: true,
    };
    let cmds = generate(&flow, commands);
    let mut e = Engine::new(flow.engine_config()).unwrap();
    let o = LogOptions {
        segment_bytes: 1 << 20,
        ..opts()
    };
    let (mut log, _) = SegmentLog::open(dir, o).unwrap();
    if let Some(index) = index {
        log.set_offset_index(std::sync::Arc::clone(index), 1);
    }
    for (first, last, bytes) in append_flow(&mut e, &cmds, 20) {
        log.append(first, last, &bytes).unwrap();
    }
    (e, flow)
}

/// A resend reads the events after a sequence: with the writer's checkpoints it starts at the
/// last one before that sequence, not at the beginning of the segment (up to 64 MiB of frames
/// to read and check, 40–100 ms per resend after a failover). It returns exactly what a read
/// from the segment's beginning returns, and it never reads the frames before its checkpoint:
/// damage there stops the full read, not the indexed one.
#[test]
fn a_file_history_starts_at_the_writers_last_checkpoint_before_the_sequence() {
    let dir = tmp("history-index");
    let index = std::sync::Arc::new(OffsetIndex::with_limits(1024, 16));
    let (e, _) = write_flow_log(&dir, 8, 4_000, Some(&index));
    assert_eq!(
        segments(&dir).len(),
        1,
        "one segment: a full read starts at its beginning"
    );
    assert!(index.len() > 20, "checkpoints: {}", index.len());
    let end = e.last_seq();
    for after in [0, 1, 17, end / 3, end / 2, end - 40, end - 1, end] {
        let full = events_after(&dir, after, None).unwrap();
        let indexed = events_after(&dir, after, Some(&index)).unwrap();
        assert_eq!(indexed, full, "after {after}");
        assert_eq!(
            full,
            ((after + 1)..=end).collect::<Vec<_>>(),
            "after {after}"
        );
        let at = FileEvents::open_indexed(&dir, after, Some(&index))
            .unwrap()
            .position();
        if let Some(c) = index.start_for(after) {
            assert_eq!(at, Some((c.segment, c.next_offset as u64)), "after {after}");
        }
    }
    // Damage in the segment's second frame, far before the checkpoint for a late sequence.
    let seg = &segments(&dir)[0];
    let mut bytes = fs::read(seg).unwrap();
    let second = 16 + 24 + u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    bytes[second + 30] ^= 0x40;
    fs::write(seg, &bytes).unwrap();
    let after = end - 40;
    let want: Vec<u64> = ((after + 1)..=end).collect();
    let full = events_after(&dir, after, None);
    assert!(
        full.as_ref().is_ok_and(Vec::is_empty) || full.is_err(),
        "the full read stops at the damaged frame: {full:?}"
    );
    assert_eq!(events_after(&dir, after, Some(&index)).unwrap(), want);
}

/// A node that restarts (no standby) replays the log after its snapshot: recovery notes the
/// same checkpoints, so a client's resend for a sequence written before the restart starts
/// near it, not at its segment's beginning.
#[test]
fn recovery_notes_checkpoints_so_a_resend_after_a_restart_starts_near_its_sequence() {
    let dir = tmp("recovery-index");
    let (e, flow) = write_flow_log(&dir, 9, 3_000, None);
    let index = OffsetIndex::with_limits(1024, 16);
    let (r, _, _) = caldera_journal::recover::recover_following_indexed(
        &dir,
        &flow.engine_config(),
        Some(&index),
    )
    .unwrap();
    assert_eq!(r.state_hash(), e.state_hash());
    assert!(index.len() > 20, "checkpoints: {}", index.len());
    let end = e.last_seq();
    for after in [0, 5, end / 2, end - 30, end] {
        let indexed = events_after(&dir, after, Some(&index)).unwrap();
        assert_eq!(
            indexed,
            events_after(&dir, after, None).unwrap(),
            "after {after}"
        );
        assert_eq!(
            indexed,
            ((after + 1)..=end).collect::<Vec<_>>(),
            "after {after}"
        );
    }
    let c = index
        .start_for(end - 30)
        .expect("a checkpoint before a late sequence");
    assert!(
        c.next_offset > 100_000,
        "near the sequence, not the segment's start: {c:?}"
    );
    assert_eq!(
        FileEvents::open_indexed(&dir, end - 30, Some(&index))
            .unwrap()
            .position(),
        Some((c.segment, c.next_offset as u64))
    );
}

/// How many of `path`'s 4 KiB pages are in the page cache (a read that must not wait for the
/// disk, `RWF_NOWAIT`, page by page), or `None` where the system cannot say.
fn cached_pages(path: &Path) -> Option<usize> {
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut buf = [0u8; 4096];
    let mut cached = 0;
    for at in (0..len).step_by(4096) {
        let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
        match rustix::io::preadv2(&f, &mut bufs, at, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(n) if n > 0 => cached += 1,
            Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => {
                eprintln!("RWF_NOWAIT reads are not supported here ({e})");
                return None;
            }
        }
    }
    Some(cached)
}

/// Appends 10 KB batches after `seq`, each waiting for the segment helper, until the log has at
/// least `segments` segments and the newest is past half full of a 1 MiB segment (so its
/// helper has started and finished). Returns the last sequence appended.
fn append_until_newest_is_past_half(
    log: &mut SegmentLog,
    dir: &Path,
    segments_at_least: usize,
    mut seq: u64,
) -> u64 {
    while segments(dir).len() < segments_at_least
        || written_end(segments(dir).last().unwrap()) <= (1 << 19) + 20_000
    {
        seq += 1;
        log.append(seq, seq, &[seq as u8 | 1; 10_000]).unwrap();
        log.wait_for_prepared_segment();
    }
    seq
}

#[test]
fn sealed_segments_leave_the_page_cache_and_the_one_being_written_stays() {
    let dir = tmp("page-cache");
    fs::create_dir_all(&dir).unwrap();
    // tmpfs keeps its files in memory: nothing can leave its page cache.
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    if rustix::fs::statfs(dir.as_path()).unwrap().f_type as i64 == TMPFS_MAGIC {
        eprintln!("skipped: the temporary directory is on tmpfs");
        return;
    }
    let o = LogOptions {
        segment_bytes: 1 << 20,
        fsync: FsyncPolicy::Always,
        ..opts()
    };
    let (mut log, _) = SegmentLog::open(&dir, o).unwrap();
    // Four sealed segments, and the fifth past half full (its helper has run).
    let seq = append_until_newest_is_past_half(&mut log, &dir, 5, 0);
    let segs = segments(&dir);
    let Some(current) = cached_pages(segs.last().unwrap()) else {
        return;
    };
    assert!(
        current > 100,
        "the segment being written is in the page cache ({current} pages)"
    );
    for s in &segs[..segs.len() - 1] {
        assert_eq!(
            cached_pages(s),
            Some(0),
            "a sealed segment has left the page cache: {}",
            s.display()
        );
    }
    drop(log);
    // Read again, from the disk, they are whole.
    assert_eq!(read_all(&dir).len(), seq as usize);
    assert!(caldera_journal::maintenance::verify(&dir).unwrap().ok());
    // Rolls that find the helper still writing (appends faster than it writes zeros): each
    // segment sealed meanwhile is dropped by the next helper that starts, none is forgotten.
    let burst = tmp("page-cache-burst");
    let (mut log, _) = SegmentLog::open(
        &burst,
        LogOptions {
            fsync: FsyncPolicy::Never,
            ..o
        },
    )
    .unwrap();
    let mut seq = 0;
    while segments(&burst).len() < 12 {
        seq += 1;
        log.append(seq, seq, &[seq as u8 | 1; 100_000]).unwrap();
    }
    // Then at the helper's pace, until a helper has started and finished in the newest segment.
    let from = segments(&burst).len();
    let seq = append_until_newest_is_past_half(&mut log, &burst, from + 2, seq);
    let segs = segments(&burst);
    for s in &segs[..segs.len() - 1] {
        assert_eq!(cached_pages(s), Some(0), "{}", s.display());
    }
    drop(log);
    assert_eq!(read_all(&burst).len(), seq as usize);
    // Without preallocation (no helper), the roll has a thread of its own drop the sealed
    // segment.
    let plain = tmp("page-cache-plain");
    let (mut log, _) = SegmentLog::open(
        &plain,
        LogOptions {
            preallocate: false,
            ..o
        },
    )
    .unwrap();
    let mut seq = 0;
    while segments(&plain).len() < 3 {
        seq += 1;
        log.append(seq, seq, &[seq as u8 | 1; 10_000]).unwrap();
    }
    let segs = segments(&plain);
    for s in &segs[..segs.len() - 1] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cached_pages(s) != Some(0) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(cached_pages(s), Some(0), "{}", s.display());
    }
    drop(log);
    assert_eq!(read_all(&plain).len(), seq as usize);
}
