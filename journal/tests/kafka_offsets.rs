//! Kafka readers on a real Kafka-protocol broker (tansu): a resend that starts at an
//! [`OffsetIndex`] checkpoint reads exactly the events a read of the whole topic returns, across
//! split batches, a new epoch, and a fenced writer's late records; and a reader waits through a
//! broker restart instead of failing.
#![cfg(feature = "kafka")]

use caldera_engine::{Command, Engine, Event};
use caldera_journal::history::{Checkpoint, KafkaEvents, OffsetIndex};
use caldera_journal::kafka::{self, Brokers, KafkaJournal};
use caldera_schema::record::encode_batch;
use caldera_testkit::flow::{generate, FlowConfig};
use caldera_testkit::harness::Broker;
use flatbuffers::FlatBufferBuilder;
use std::time::{Duration, Instant};

const TOPIC: &str = "caldera.offsets";

/// The engine's batches: commands in groups of 1..=12, with their events and sequence range.
struct Batches {
    engine: Engine,
    commands: std::vec::IntoIter<Command>,
    fbb: FlatBufferBuilder<'static>,
    round: usize,
}

impl Batches {
    fn new(seed: u64, n: usize) -> Self {
        let cfg = flow_config(seed);
        Self {
            engine: Engine::new(cfg.engine_config()).unwrap(),
            commands: generate(&cfg, n).into_iter(),
            fbb: FlatBufferBuilder::new(),
            round: 0,
        }
    }

    /// The next batch's commands and events (at least one event).
    fn next_raw(&mut self) -> Option<(Vec<Command>, Vec<Event>)> {
        loop {
            self.round += 1;
            let take = 1 + self.round % 12;
            let cmds: Vec<Command> = self.commands.by_ref().take(take).collect();
            if cmds.is_empty() {
                return None;
            }
            let mut events: Vec<Event> = Vec::new();
            for c in &cmds {
                self.engine.process(c, &mut events);
            }
            if !events.is_empty() {
                return Some((cmds, events));
            }
        }
    }

    /// The next batch as `(first, last, bytes)` for `epoch`; `None` when the flow is over.
    fn next(&mut self, epoch: u64) -> Option<(u64, u64, Vec<u8>)> {
        let before = self.engine.last_seq();
        let (cmds, events) = self.next_raw()?;
        let (first, last) = (before + 1, self.engine.last_seq());
        let bytes = encode_batch(&mut self.fbb, epoch, &cmds, &events, first, last).to_vec();
        Some((first, last, bytes))
    }

    /// The next batch, grown command by command until it is larger than `bytes` (so that a
    /// writer with that record limit splits it).
    fn larger_than(&mut self, epoch: u64, bytes: usize) -> (u64, u64, Vec<u8>) {
        let before = self.engine.last_seq();
        let (mut cmds, mut events) = (Vec::new(), Vec::new());
        loop {
            let (c, e) = self.next_raw().expect("the flow lasts");
            cmds.extend(c);
            events.extend(e);
            let (first, last) = (before + 1, self.engine.last_seq());
            let enc = encode_batch(&mut self.fbb, epoch, &cmds, &events, first, last);
            if enc.len() > bytes {
                return (first, last, enc.to_vec());
            }
        }
    }
}

/// Appends, then polls until the broker acknowledged everything up to `last` (or the writer
/// was fenced).
fn append(w: &mut KafkaJournal, first: u64, last: u64, bytes: &[u8]) {
    if w.append(first, last, bytes).is_err() {
        return;
    }
    wait_durable(w, last);
}

/// Polls until the broker acknowledged everything up to `last` (or the writer was fenced).
fn wait_durable(w: &mut KafkaJournal, last: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match w.durable() {
            Ok(d) if d >= last => return,
            Ok(_) => {}
            Err(_) => return,
        }
        assert!(
            Instant::now() < deadline,
            "batch ending at {last} never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every event after `after`, read until the event `end` (the topic's last) or until the topic
/// is quiet; and the offset the read started at.
fn events_after(
    brokers: &Brokers,
    after: u64,
    index: Option<&OffsetIndex>,
    end: u64,
) -> (Vec<Event>, i64) {
    let mut r = KafkaEvents::open(brokers, TOPIC, after, index).unwrap();
    let start = index
        .and_then(|i| i.start_for(after))
        .map_or(0, |c| c.next_offset);
    let mut out = Vec::new();
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until the last event (history has none after it); with nothing to read, until the
    // topic is quiet.
    while Instant::now() < deadline
        && if after < end {
            out.last().is_none_or(|e: &Event| e.seq < end)
        } else {
            quiet < 3
        }
    {
        if r.read(&mut out, Duration::from_millis(100)).unwrap() {
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    (out, start)
}

#[test]
fn a_reader_waits_through_a_broker_restart() {
    const T: &str = "caldera.restart";
    let mut broker = Broker::start_persistent(T);
    let brokers = Brokers::new(broker.addr.clone());
    let mut w = KafkaJournal::connect(&brokers, T, 0, 0, 1, Duration::from_secs(30)).unwrap();
    let mut flow = Batches::new(3, 20_000);
    let mut write = |w: &mut KafkaJournal, n: usize| {
        for _ in 0..n {
            let (first, last, bytes) = flow.next(1).unwrap();
            append(w, first, last, &bytes);
        }
        flow.engine.last_seq()
    };
    let before = write(&mut w, 20);
    let mut r = KafkaEvents::open(&brokers, T, 0, None).unwrap();
    let mut out = Vec::new();
    let read_to = |r: &mut KafkaEvents, out: &mut Vec<Event>, seq: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.last().map_or(0, |e: &Event| e.seq) < seq {
            assert!(Instant::now() < deadline, "events up to {seq} never came");
            r.read(out, Duration::from_millis(100))
                .expect("a reader waits through a broker restart");
        }
    };
    read_to(&mut r, &mut out, before);
    // The broker goes away while the reader is connected, and comes back with the topic.
    broker.restart(Duration::from_secs(2));
    let after = write(&mut w, 20);
    read_to(&mut r, &mut out, after);
    let seqs: Vec<u64> = out.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=after).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[test]
fn a_resend_from_a_checkpoint_reads_what_a_read_of_the_whole_topic_reads() {
    let broker = Broker::start(TOPIC);
    let brokers = Brokers::new(broker.addr.clone());
    // Small limits: the index thins itself several times. Records of at most 64 KiB (the
    // writer's smallest limit): the larger batches are split.
    let written = std::sync::Arc::new(OffsetIndex::with_limits(16, 20));
    let stall = Duration::from_secs(10);
    const RECORD: usize = 64 << 10;

    // Epoch 1 writes 300 batches, every 60th of them split.
    let mut a = KafkaJournal::connect(&brokers, TOPIC, 0, 0, 1, stall).unwrap();
    a.set_max_record_bytes(RECORD);
    a.set_offset_index(std::sync::Arc::clone(&written));
    let mut flow = Batches::new(7, 20_000);
    for i in 0..300 {
        let (first, last, bytes) = if i % 60 == 59 {
            flow.larger_than(1, RECORD)
        } else {
            flow.next(1).unwrap()
        };
        if (100..200).contains(&i) {
            // Without waiting: records produced together, in one batch of the broker's.
            a.append(first, last, &bytes).unwrap();
        } else {
            append(&mut a, first, last, &bytes);
        }
    }
    let handed_over = flow.engine.last_seq();

    // Epoch 2 takes over after reading the topic (as a standby does), and the old writer, not
    // knowing yet, appends batches behind it (below).
    let followed = OffsetIndex::with_limits(16, 20);
    let (engine, rec, reader) = kafka::recover(
        &brokers,
        TOPIC,
        &flow_config(7).engine_config(),
        Duration::from_millis(500),
        Some(&followed),
    )
    .unwrap();
    assert_eq!(engine.last_seq(), handed_over);
    assert!(followed.len() > 2, "recovery noted checkpoints");
    let mut b = KafkaJournal::connect(&brokers, TOPIC, handed_over, reader.next_offset(), 2, stall)
        .unwrap();
    b.set_max_record_bytes(RECORD);
    let mut fbb = FlatBufferBuilder::new();
    let marker = encode_batch(&mut fbb, 2, &[], &[], handed_over + 1, handed_over).to_vec();
    let at = b
        .start_epoch(&marker, Duration::from_secs(20))
        .unwrap()
        .expect("an offset");
    b.resume_after(at, handed_over);
    assert_eq!(rec.last_epoch, 1);
    // Epoch 2's writer notes a checkpoint after each of its batches.
    let fine = std::sync::Arc::new(OffsetIndex::with_limits(100_000, 1));
    b.set_offset_index(std::sync::Arc::clone(&fine));
    // Epoch 2 writes two batches; then the old writer, not knowing yet, appends batches of more
    // events behind them: sequences epoch 2 writes next, other contents (another
    // flow's, renumbered). Not history, whatever a reader's starting point.
    // The first is split: its parts leave the history mid-batch, no place to start after.
    let (first, last, bytes) = flow.larger_than(2, RECORD);
    append(&mut b, first, last, &bytes);
    let (first, last, bytes) = flow.next(2).unwrap();
    append(&mut b, first, last, &bytes);
    let before_late = flow.engine.last_seq();
    let mut late = Batches::new(8, 20_000);
    let mut next = handed_over + 1;
    while next <= flow.engine.last_seq() + 20 {
        let (cmds, mut events) = late.next_raw().unwrap();
        for e in &mut events {
            e.seq = next;
            next += 1;
        }
        let (first, last) = (events[0].seq, next - 1);
        let bytes = encode_batch(&mut fbb, 1, &cmds, &events, first, last).to_vec();
        let _ = a.append(first, last, &bytes);
    }
    let _ = a.close(Duration::from_secs(5));
    assert!(
        next - 1 > flow.engine.last_seq(),
        "the late records reach past epoch 2's history so far"
    );
    for i in 0..150 {
        let (first, last, bytes) = flow.next(2).unwrap();
        if i < 75 {
            append(&mut b, first, last, &bytes);
        } else {
            // Records produced together: checkpoints inside a broker batch (a fetch from one
            // may land after it: tansu 0.6).
            b.append(first, last, &bytes).unwrap();
        }
    }
    wait_durable(&mut b, flow.engine.last_seq());
    let end = flow.engine.last_seq();
    assert!(written.len() > 2, "the first writer noted checkpoints");

    // Whole-topic reads against reads from each index's checkpoint, for sequences across the
    // topic: before, at and after the handover, around the late records, the end.
    let mut afters = vec![0, 1, handed_over - 1, end - 1, end];
    afters.extend((1..8).map(|i| end * i / 8));
    afters.extend(handed_over..handed_over + 30);
    afters.extend(before_late - 5..before_late + 25);
    for after in afters {
        let (whole, _) = events_after(&brokers, after, None, end);
        assert!(whole.iter().all(|e| e.seq > after));
        assert_eq!(
            whole.len() as u64,
            end - after,
            "after {after}: every event once"
        );
        for (name, index) in [
            ("first writer's", &*written),
            ("recovery's", &followed),
            ("second writer's", &*fine),
        ] {
            let (from, start) = events_after(&brokers, after, Some(index), end);
            assert!(
                from == whole,
                "after {after}, from the {name} checkpoint at offset {start}: {} events against {}",
                from.len(),
                whole.len()
            );
        }
    }
    // Near the end, a resend starts near the end.
    let near = fine.start_for(end - 1).expect("a checkpoint");
    assert!(
        near.next_offset > at,
        "{near:?}: a resend of the last events starts after the handover"
    );
    assert_eq!(
        written.start_for(0),
        None::<Checkpoint>,
        "before the first checkpoint: from the beginning"
    );
}

fn flow_config(seed: u64) -> FlowConfig {
    FlowConfig {
        seed,
        symbols: 2,
        accounts: 20,
        target_orders: 40,
        full_mix: true,
    }
}

/// What the index saves on a longer topic: reading the events after `end - 1,000` from the
/// index's checkpoint against from the topic's beginning, in the same run. A measurement, not a
/// check: `cargo test -p caldera-journal --features kafka --test kafka_offsets -- --ignored
/// --nocapture` (docs/benchmarks.md).
#[test]
#[ignore = "a measurement: run it on purpose (see the doc comment)"]
fn resend_start_cost() {
    let broker = Broker::start(TOPIC);
    let brokers = Brokers::new(broker.addr.clone());
    let index = std::sync::Arc::new(OffsetIndex::default());
    let mut w = KafkaJournal::connect(&brokers, TOPIC, 0, 0, 1, Duration::from_secs(30)).unwrap();
    w.set_offset_index(std::sync::Arc::clone(&index));
    let mut flow = Batches::new(3, 600_000);
    let mut records = 0;
    while let Some((first, last, bytes)) = flow.next(1) {
        w.append(first, last, &bytes).unwrap();
        records += 1;
    }
    let end = flow.engine.last_seq();
    wait_durable(&mut w, end);
    let after = end - 1_000;
    for round in 0..3 {
        for (name, ix) in [("index", Some(&*index)), ("beginning", None)] {
            let t = Instant::now();
            let (events, start) = events_after(&brokers, after, ix, end);
            assert_eq!(events.len(), 1_000);
            println!(
                "{{\"round\":{round},\"from\":\"{name}\",\"start_offset\":{start},\"records\":{records},\"events\":{end},\"ms\":{:.1}}}",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
