//! The hot path allocates nothing: a counting global allocator wraps the system allocator and
//! counts every allocation made while 1M+ pre-generated mixed commands (trades, cancels,
//! replaces, rejects, market/FOK/post-only, self-trade prevention, mass cancels, halts) run,
//! snapshots taken into a preallocated buffer among them.
use caldera_engine::{Engine, Event, EventBody, EventSink};
use caldera_testkit::flow::{generate, FlowConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every operation to `System`, which upholds the GlobalAlloc contract; the only
// addition is a relaxed atomic counter, which neither allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Folds events into counters instead of storing them.
#[derive(Default)]
struct Tally {
    events: u64,
    trades: u64,
    rejects: u64,
    replaces: u64,
    done: u64,
    checksum: u64,
}

impl EventSink for Tally {
    fn on_event(&mut self, e: &Event) {
        self.events += 1;
        self.checksum = self.checksum.wrapping_mul(31).wrapping_add(e.seq);
        match e.body {
            EventBody::Trade(t) => {
                self.trades += 1;
                self.checksum ^= t.qty;
            }
            EventBody::Rejected(_) => self.rejects += 1,
            EventBody::Replaced(_) => self.replaces += 1,
            EventBody::Done(_) => self.done += 1,
            _ => {}
        }
    }
}

#[test]
fn one_million_mixed_commands_allocate_nothing() {
    let cfg = FlowConfig {
        seed: 7,
        symbols: 3,
        accounts: 500,
        target_orders: 1000,
        full_mix: true,
    };
    let cmds = generate(&cfg, 1_100_000);
    let mut engine = Engine::new(cfg.engine_config()).unwrap();
    let mut tally = Tally::default();
    // The engine thread takes snapshots into a buffer the snapshot writer hands it.
    let mut snapshot = Vec::with_capacity(8 << 20);
    let mut snapshots = Vec::new();

    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for (i, c) in cmds.iter().enumerate() {
        engine.process(c, &mut tally);
        if i % 250_000 == 0 {
            assert!(snapshot.capacity() >= engine.snapshot_len_bound());
            engine.snapshot_into(&mut snapshot);
            assert!(snapshot.len() <= engine.snapshot_len_bound());
            let hash = engine.state_hash();
            COUNTING.store(false, Ordering::SeqCst);
            snapshots.push((snapshot.clone(), hash));
            COUNTING.store(true, Ordering::SeqCst);
        }
    }
    let hash = engine.state_hash();
    COUNTING.store(false, Ordering::SeqCst);
    for (bytes, hash) in &snapshots {
        assert_eq!(Engine::restore(bytes).unwrap().state_hash(), *hash);
    }
    assert_eq!(snapshots.len(), 5);

    let allocs = ALLOCS.load(Ordering::SeqCst);
    println!(
        "commands={} events={} trades={} rejects={} replaces={} done={} hash={hash:x} allocs={allocs}",
        cmds.len(), tally.events, tally.trades, tally.rejects, tally.replaces, tally.done
    );
    // The stream really is mixed.
    assert!(
        tally.trades > 10_000
            && tally.rejects > 1_000
            && tally.replaces > 100_000
            && tally.done > 10_000
    );
    assert_eq!(allocs, 0, "the engine allocated on the hot path");
    engine.check_integrity().unwrap();
}

#[test]
fn the_counter_does_count() {
    // Guards against a vacuous pass: an allocation while counting is seen.
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(16));
    COUNTING.store(false, Ordering::SeqCst);
    drop(v);
    assert!(ALLOCS.load(Ordering::SeqCst) >= 1);
}
