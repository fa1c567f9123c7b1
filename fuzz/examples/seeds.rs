//! Writes the seed corpus (valid inputs for every target) into the folder given, one folder per
//! target: `cargo run -p caldera-fuzz --example seeds -- fuzz/corpus`. scripts/fuzz.sh runs it
//! when a target has no corpus yet; the fuzzer then grows and minimises it.

use caldera_engine::{Engine, Event};
use caldera_fuzz::engine_config;
use caldera_journal::{FsyncPolicy, LogOptions, SegmentLog};
use caldera_schema::codec::{self, ClientRequest};
use caldera_schema::{record, wire};
use caldera_testkit::flow::{generate, FlowConfig};
use std::path::Path;

fn main() {
    let out = std::env::args().nth(1).expect("usage: seeds DIR");
    let out = Path::new(&out);
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    };

    // (a) frames
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let order = |cl: u64, price: u64, side| {
        ClientRequest::NewOrder(wire::NewOrder::new(
            cl,
            price,
            5,
            1,
            side,
            wire::OrderType::Limit,
            wire::TimeInForce::Gtc,
            wire::SelfTradePrevention::Allow,
            false,
        ))
    };
    let frames: [(&str, Vec<ClientRequest>); 4] = [
        (
            "orders",
            vec![
                order(1, 100, wire::Side::Sell),
                order(2, 100, wire::Side::Buy),
                ClientRequest::Cancel(wire::Cancel::new(0, 1, true)),
                ClientRequest::Replace(wire::Replace::new(0, 1, 101, 3, true)),
            ],
        ),
        ("logon", vec![ClientRequest::Logon(wire::Logon::new(3))]),
        (
            "admin",
            vec![
                ClientRequest::HaltInstrument(wire::HaltInstrument::new(1)),
                ClientRequest::ResumeInstrument(wire::ResumeInstrument::new(1)),
                ClientRequest::CancelAll(wire::CancelAll::new(3)),
                ClientRequest::MassCancel(wire::MassCancel::new(1, false)),
            ],
        ),
        ("empty", vec![]),
    ];
    for (name, reqs) in &frames {
        put("frame", name, codec::encode_client_batch(&mut fbb, reqs));
    }

    // (b) journal records, (c) segments, (d) snapshots: from a generated flow
    let cfg = FlowConfig {
        seed: 9,
        accounts: 4,
        target_orders: 20,
        full_mix: true,
        ..FlowConfig::default()
    };
    let commands = generate(&cfg, 400);
    let mut flow_engine = Engine::new(cfg.engine_config()).expect("engine");
    let dir = std::env::temp_dir().join(format!("caldera-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let opts = LogOptions {
        fsync: FsyncPolicy::Never,
        preallocate: false,
        ..LogOptions::default()
    };
    let (mut log, _) = SegmentLog::open(&dir, opts).expect("log");
    let mut seq = 0;
    for (i, chunk) in commands.chunks(40).enumerate() {
        let mut events: Vec<Event> = Vec::new();
        for c in chunk {
            flow_engine.process(c, &mut events);
        }
        let (first, last) = (seq + 1, seq + events.len().max(1) as u64);
        let bytes = record::encode_batch(&mut fbb, 1, chunk, &events, first, last).to_vec();
        if i < 3 {
            put("journal_record", &format!("batch-{i}"), &bytes);
        }
        if i < 3 {
            log.append(first, last, &bytes).expect("append");
        }
        seq = last;
    }
    drop(log);
    let seg = std::fs::read(dir.join(format!("{:020}.seg", 1))).expect("segment");
    put("segment_scan", "log", &seg);
    put("segment_scan", "torn", &seg[..seg.len() - 7]);
    // A preallocated segment: its frames, then zeros; and a torn last frame inside them.
    let mut pre = seg.clone();
    pre.resize(seg.len() + 4096, 0);
    put("segment_scan", "preallocated", &pre);
    pre[seg.len() - 7..seg.len()].fill(0);
    put("segment_scan", "preallocated-torn", &pre);
    let _ = std::fs::remove_dir_all(&dir);

    // (e) engine commands, and (d) snapshots of engines they built
    let mut rng = caldera_testkit::flow::Rng::new(5);
    for i in 0..4 {
        let bytes: Vec<u8> = (0..400).map(|_| rng.next_u64() as u8).collect();
        put("engine_commands", &format!("random-{i}"), &bytes);
        let mut e = Engine::new(engine_config(1)).expect("engine");
        for c in caldera_fuzz::script(&bytes) {
            e.process(&c, &mut Vec::<Event>::new());
        }
        put("snapshot_restore", &format!("script-{i}"), &e.snapshot());
    }
}
