//! Fuzz target bodies for the parts of Caldera that read bytes from outside: client frames,
//! journal records, journal segments, snapshots, and the engine's commands.
//!
//! Each target takes arbitrary bytes, must never panic, and checks a property on what it
//! accepts (the panics below are those checks). They are driven by libFuzzer through the
//! `fuzz/libfuzzer` crate (`scripts/fuzz.sh`), and every file of the committed corpus
//! (`fuzz/corpus/<target>/`) is replayed by this crate's tests, so a crash the fuzzer once found
//! stays a regression test.
#![forbid(unsafe_code)]

use caldera_engine::{
    Cancel, Command, Engine, EngineConfig, Event, InstrumentSpec, MassCancel, NewOrder, OrderRef,
    OrderType, Replace, SelfTradePrevention, Side, TimeInForce,
};
use caldera_journal::{FsyncPolicy, LogOptions, LogReader, SegmentLog};
use caldera_schema::codec::{self, ClientRequest};
use caldera_schema::{map, record};
use std::path::PathBuf;

/// A target: its name (the corpus folder and the libFuzzer binary) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 5] = [
    ("frame", frame),
    ("journal_record", journal_record),
    ("segment_scan", segment_scan),
    ("snapshot_restore", snapshot_restore),
    ("engine_commands", engine_commands),
];

/// Largest batch the frame target accepts (the gateway's default `max_batch`).
const MAX_BATCH: usize = 64;

/// Memory a fuzzed snapshot may ask the restore to allocate.
const RESTORE_LIMIT: u64 = 2 << 20;

/// A small engine with the corners the fuzzer should reach: a band wider than one 4,096-level
/// group, an instrument at the top of the `u64` price range with a huge tick, lot and quantity,
/// few order slots, few accounts, a per-account limit and a short dedupe window.
#[must_use]
pub fn engine_config(hash_seed: u64) -> EngineConfig {
    let tick = 1u64 << 40;
    let top = (u64::MAX / tick) * tick;
    EngineConfig {
        max_orders: 64,
        max_accounts: 6,
        hash_seed,
        dedupe_window: 16,
        dedupe_accounts: 4,
        max_orders_per_account: 12,
        instruments: vec![
            InstrumentSpec {
                id: 1,
                tick_size: 1,
                lot_size: 1,
                min_price: 1,
                max_price: 5_000,
                max_qty: 1_000,
            },
            InstrumentSpec {
                id: 2,
                tick_size: tick,
                lot_size: 1 << 20,
                min_price: top - 99 * tick,
                max_price: top,
                max_qty: 1 << 56,
            },
        ],
    }
}

fn engine(hash_seed: u64) -> Engine {
    Engine::new(engine_config(hash_seed)).expect("the fuzz configuration is valid")
}

fn check(engine: &Engine, after: &dyn std::fmt::Debug) {
    if let Err(e) = engine.check_integrity() {
        panic!("integrity broken after {after:?}: {e}");
    }
}

/// (a) A client frame: the gateway's one-pass reader accepts only frames the FlatBuffers
/// verifier accepts and reads the same requests from them; every request maps to a command or
/// a typed error; the commands leave the engine consistent.
pub fn frame(data: &[u8]) {
    let mut fast = Vec::new();
    let read = codec::read_client_batch(data, MAX_BATCH, &mut fast);
    let mut slow = Vec::new();
    let verified = codec::decode_client_batch(
        data,
        &codec::verifier_options(MAX_BATCH),
        MAX_BATCH,
        |_, r| slow.push(r),
    );
    match read {
        Ok(n) => {
            assert_eq!(n, fast.len());
            let Ok(m) = verified else {
                panic!("the one-pass reader took a frame the verifier refuses: {verified:?}");
            };
            assert_eq!(m, n);
            assert_eq!(fast, slow, "the two readers disagree");
        }
        Err(_) => assert!(fast.is_empty(), "a refused frame yielded requests"),
    }
    let mut e = engine(1);
    let mut events: Vec<Event> = Vec::new();
    for req in fast.iter().flatten() {
        let valid = map::bools_valid(req);
        match map::command(3, req) {
            Ok(cmd) => {
                assert!(valid);
                events.clear();
                e.process(&cmd, &mut events);
                check(&e, &cmd);
            }
            Err(map::MapError::NotACommand) => assert!(matches!(
                req,
                ClientRequest::Logon(_)
                    | ClientRequest::Logout(_)
                    | ClientRequest::Heartbeat(_)
                    | ClientRequest::ListSessions(_)
            )),
            Err(_) => {}
        }
    }
}

/// (b) A journal record: what decodes re-encodes to the same commands and events, and applies
/// to an engine without breaking an invariant.
pub fn journal_record(data: &[u8]) {
    let mut events = Vec::new();
    let evs = record::decode_events(data, &mut events);
    let Ok(batch) = record::decode_commands(data) else {
        return;
    };
    if evs.is_ok() {
        // The final record of a split batch holds a suffix of its range: re-encoded as a whole
        // batch of those events.
        let split_final = record::root(data).map(|r| r.format()) == Ok(record::FORMAT_SPLIT_FINAL);
        let first = if split_final {
            batch
                .last_seq
                .wrapping_add(1)
                .wrapping_sub(events.len() as u64)
        } else {
            batch.first_seq
        };
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let bytes = record::encode_batch(
            &mut fbb,
            batch.epoch,
            &batch.commands,
            &events,
            first,
            batch.last_seq,
        )
        .to_vec();
        let again = record::decode_commands(&bytes).expect("a re-encoded batch decodes");
        assert_eq!(again.commands, batch.commands);
        let mut events2 = Vec::new();
        record::decode_events(&bytes, &mut events2).expect("re-encoded events decode");
        assert_eq!(events2, events);
        // Split into small records: each fits, the final one replays the same commands, and
        // reassembly gives back exactly the events.
        if !split_final && !batch.commands.is_empty() {
            if let Ok(parts) = record::split(&bytes, 2048) {
                assert!(parts.iter().all(|p| p.len() <= 2048 || parts.len() == 1));
                let fin = record::decode_commands(parts.last().expect("a record"))
                    .expect("the final record decodes");
                assert_eq!(fin.commands, batch.commands);
                let mut r = record::Reassembly::default();
                let mut got = Vec::new();
                for p in &parts {
                    r.push(p, &mut got).expect("a part decodes");
                }
                assert_eq!(got, events, "reassembly");
            }
        }
    }
    let mut e = engine(2);
    let mut out: Vec<Event> = Vec::new();
    for c in batch.commands.iter().take(256) {
        out.clear();
        e.process(c, &mut out);
    }
    check(&e, &"a fuzzed journal batch");
}

fn scratch(name: &str) -> PathBuf {
    // A memory-backed file system when there is one (real files, no disk latency per run).
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    // Unique per call: the corpus and the mutation tests run targets on parallel threads.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = base.join(format!("caldera-fuzz-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Reads every frame a [`LogReader`] gives, up to its end or its first error.
fn read_all(dir: &std::path::Path) -> (Vec<(u64, u64)>, bool) {
    let mut r = LogReader::open(dir, 1).expect("reader");
    let mut frames = Vec::new();
    loop {
        match r.next_frame() {
            Ok(Some(f)) => frames.push((f.first_seq, f.last_seq)),
            Ok(None) => return (frames, true),
            Err(_) => return (frames, false),
        }
    }
}

/// (c) A segment of arbitrary bytes (the first of the log): opening the log either refuses and
/// changes nothing, or keeps exactly the frames a reader accepts before a torn tail, drops
/// the rest, and leaves a log that reads to its end without error and takes the next append.
pub fn segment_scan(data: &[u8]) {
    let dir = scratch("segment");
    std::fs::write(dir.join(format!("{:020}.seg", 1)), data).expect("write segment");
    let (before, _) = read_all(&dir);
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        // A log whose only segment is moved aside starts a new one: 64 MiB of zeros per input
        // would only slow the fuzzer (the zero tails it reads come from its inputs).
        preallocate: false,
        ..LogOptions::default()
    };
    let opened = SegmentLog::open(&dir, opts);
    let Ok((mut log, report)) = opened else {
        // Refused (damage that is not a torn tail): nothing may have been changed.
        let seg = std::fs::read(dir.join(format!("{:020}.seg", 1))).expect("segment kept");
        assert_eq!(seg, data, "a refused open changed the segment");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let last = before.last().map_or(0, |f| f.1);
    assert_eq!(
        report.last_seq, last,
        "recovery kept a different prefix than a reader accepts: {report:?}"
    );
    assert_eq!(log.last_seq(), last);
    let next = last.wrapping_add(1);
    let appended = log.append(next, next, b"not a batch, the log does not care");
    drop(log);
    let (after, clean) = read_all(&dir);
    assert!(clean, "the recovered log does not read cleanly");
    let mut want = before;
    if appended.is_ok() {
        want.push((next, next));
    }
    assert_eq!(after, want, "the recovered log reads differently");
    let _ = std::fs::remove_dir_all(&dir);
}

/// (d) A snapshot: one that restores is consistent, snapshots back to a restorable engine with
/// the same state hash, and keeps working.
pub fn snapshot_restore(data: &[u8]) {
    let Ok(mut e) = Engine::restore_with_limit(data, RESTORE_LIMIT) else {
        return;
    };
    check(&e, &"restore");
    let bytes = e.snapshot();
    let again = Engine::restore_with_limit(&bytes, RESTORE_LIMIT).expect("own snapshot restores");
    assert_eq!(again.state_hash(), e.state_hash());
    let mut out: Vec<Event> = Vec::new();
    for cmd in script(&seeded_bytes(data.len() as u64)) {
        out.clear();
        e.process(&cmd, &mut out);
        check(&e, &cmd);
    }
}

fn seeded_bytes(seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..256)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// (e) Commands with extreme and colliding fields: after every command every invariant holds;
/// a second engine with another hash seed emits exactly the same events (the seed is never
/// observable); a snapshot restores to the same state.
pub fn engine_commands(data: &[u8]) {
    let mut a = engine(0x5eed);
    let mut b = engine(0xdead_beef_u64.rotate_left(17));
    let (mut ea, mut eb): (Vec<Event>, Vec<Event>) = (Vec::new(), Vec::new());
    for cmd in script(data) {
        ea.clear();
        eb.clear();
        a.process(&cmd, &mut ea);
        b.process(&cmd, &mut eb);
        check(&a, &cmd);
        assert_eq!(ea, eb, "hash seed changed the outcome of {cmd:?}");
    }
    assert_eq!(a.state_hash(), b.state_hash());
    let restored = Engine::restore_with_limit(&a.snapshot(), RESTORE_LIMIT).expect("restore");
    assert_eq!(restored.state_hash(), a.state_hash());
}

/// Bytes → commands (at most 1,024), each field drawn from a few ordinary values and the
/// extremes.
#[must_use]
pub fn script(data: &[u8]) -> Vec<Command> {
    let mut r = Bytes(data);
    let mut out = Vec::new();
    while let Some(op) = r.u8() {
        if out.len() == 1024 {
            break;
        }
        let account = r.pick(&[1, 2, 3, 4, 5, 0, u32::MAX]);
        let symbol = r.pick(&[1, 1, 1, 2, 2, 0, 7]);
        let tick = if symbol == 2 { 1u64 << 40 } else { 1 };
        let base = if symbol == 2 {
            (u64::MAX / tick) * tick - 50 * tick
        } else {
            2_500
        };
        let price = match r.u8().unwrap_or(0) % 8 {
            0 => 0,
            1 => u64::MAX,
            2 => base + tick / 2 + 1,
            3 => 1,
            _ => {
                let off = u64::from(r.u8().unwrap_or(0) % 64);
                if off < 32 {
                    base - off * tick
                } else {
                    base + (off - 32) * tick
                }
            }
        };
        let qty = match r.u8().unwrap_or(0) % 8 {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << 56,
            3 => (1 << 56) + (1 << 20),
            _ => {
                let lots = u64::from(r.u8().unwrap_or(1) % 16);
                if symbol == 2 {
                    lots << 20
                } else {
                    lots * 37
                }
            }
        };
        let client_order_id = r.pick(&[1, 2, 3, 4, 5, 6, 7, 0, u64::MAX, 1 << 63]);
        let target = if r.u8().unwrap_or(0) & 1 == 0 {
            OrderRef::Client(client_order_id)
        } else {
            OrderRef::Id(u64::from(r.u8().unwrap_or(0) % 40))
        };
        out.push(match op % 16 {
            0..=7 => {
                let f = r.u8().unwrap_or(0);
                Command::New(NewOrder {
                    account,
                    client_order_id,
                    symbol,
                    side: if f & 1 == 0 { Side::Buy } else { Side::Sell },
                    order_type: if f & 2 == 0 {
                        OrderType::Limit
                    } else {
                        OrderType::Market
                    },
                    tif: [
                        TimeInForce::Gtc,
                        TimeInForce::Ioc,
                        TimeInForce::Fok,
                        TimeInForce::Gtc,
                    ][usize::from((f >> 2) & 3)],
                    post_only: f & 16 != 0,
                    price,
                    qty,
                    stp: [
                        SelfTradePrevention::Allow,
                        SelfTradePrevention::CancelNewest,
                        SelfTradePrevention::CancelOldest,
                        SelfTradePrevention::CancelBoth,
                    ][usize::from((f >> 5) & 3)],
                })
            }
            8..=10 => Command::Cancel(Cancel { account, target }),
            11..=13 => Command::Replace(Replace {
                account,
                target,
                price,
                qty,
            }),
            14 => Command::MassCancel(MassCancel {
                account,
                symbol: (r.u8().unwrap_or(0) & 1 == 0).then_some(symbol),
            }),
            _ => {
                if r.u8().unwrap_or(0) & 1 == 0 {
                    Command::Halt(symbol)
                } else {
                    Command::Resume(symbol)
                }
            }
        });
    }
    out
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8().unwrap_or(0)) % from.len()]
    }
}
