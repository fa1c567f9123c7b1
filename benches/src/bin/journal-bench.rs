//! Journal benchmark: events/s appended to the embedded segment log (per fsync policy) and,
//! with `--kafka HOST:PORT/TOPIC`, to Kafka (until every batch is acknowledged); then replay
//! events/s (decode + re-run the engine) from the file journal.
//!
//! The events come from the engine running the exchange-core-like flow (pre-generated, not
//! timed); encoding the FlatBuffers batches is timed, as it is part of journaling.

use anyhow::Result;
use caldera_engine::{Command, Engine, Event};
use caldera_journal::{FsyncPolicy, LogOptions, SegmentLog};
use caldera_schema::record::encode_batch;
use caldera_testkit::flow::{generate, FlowConfig};
use clap::Parser;
use flatbuffers::FlatBufferBuilder;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Caldera journal append and replay benchmark")]
struct Args {
    /// Commands in the flow.
    #[arg(long, default_value_t = 2_000_000)]
    ops: usize,
    /// Commands per journal batch.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Directory for the file journal (recreated).
    #[arg(long, default_value = "target/journal-bench")]
    dir: std::path::PathBuf,
    /// Also append to Kafka at HOST:PORT/TOPIC (topic must exist, ideally empty).
    #[arg(long)]
    kafka: Option<String>,
}

/// Pre-computed journal batches: the commands and the events they produced.
type Batches = Vec<(Vec<Command>, Vec<Event>)>;

fn batches(ops: usize, per: usize) -> (Batches, u64, EngineCfg) {
    let cfg = FlowConfig::default();
    let cmds = generate(&cfg, ops);
    let mut e = Engine::new(cfg.engine_config()).expect("config");
    let mut out = Vec::new();
    for chunk in cmds.chunks(per) {
        let mut ev = Vec::new();
        for c in chunk {
            e.process(c, &mut ev);
        }
        out.push((chunk.to_vec(), ev));
    }
    (out, e.state_hash(), EngineCfg(cfg.engine_config()))
}

struct EngineCfg(caldera_engine::EngineConfig);

fn main() -> Result<()> {
    let a = Args::parse();
    let (data, live_hash, cfg) = batches(a.ops, a.batch);
    let events: u64 = data.iter().map(|b| b.1.len() as u64).sum();
    println!(
        "flow: {} commands, {events} events, {} batches of {} commands",
        a.ops,
        data.len(),
        a.batch
    );
    let mut fbb = FlatBufferBuilder::with_capacity(1 << 22);
    let mut bytes_total = 0u64;
    for (name, policy) in [
        ("never", FsyncPolicy::Never),
        ("interval 10ms", FsyncPolicy::EveryMs(10)),
        ("always (every batch)", FsyncPolicy::Always),
    ] {
        let _ = std::fs::remove_dir_all(&a.dir);
        let (mut log, _) = SegmentLog::open(
            &a.dir,
            LogOptions {
                fsync: policy,
                ..LogOptions::default()
            },
        )?;
        let t = Instant::now();
        bytes_total = 0;
        for (cmds, evs) in &data {
            let bytes = encode_batch(&mut fbb, 1, cmds, evs, evs[0].seq, evs[evs.len() - 1].seq);
            bytes_total += bytes.len() as u64;
            log.append(evs[0].seq, evs[evs.len() - 1].seq, bytes)?;
        }
        log.sync()?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "file append, fsync {name:<22} {:>12.0} events/s  {:>7.1} MB/s",
            events as f64 / s,
            bytes_total as f64 / s / 1e6
        );
    }
    // Encoding alone, for reference.
    let t = Instant::now();
    for (cmds, evs) in &data {
        let b = encode_batch(&mut fbb, 1, cmds, evs, evs[0].seq, evs[evs.len() - 1].seq);
        std::hint::black_box(b);
    }
    println!(
        "  (of which FlatBuffers encoding alone: {:.0} events/s; {:.1} bytes/event)",
        events as f64 / t.elapsed().as_secs_f64(),
        bytes_total as f64 / events as f64
    );

    // Replay from the file journal written last (fsync always).
    let t = Instant::now();
    let (engine, rec) = caldera_journal::recover::recover(&a.dir, &cfg.0)?;
    let s = t.elapsed().as_secs_f64();
    assert_eq!(
        engine.state_hash(),
        live_hash,
        "replay must reproduce the live state"
    );
    println!(
        "replay (decode + re-run engine)     {:>12.0} events/s  ({} batches, state hash matches)",
        rec.events as f64 / s,
        rec.batches
    );

    if let Some(k) = &a.kafka {
        let (servers, topic) = k
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("--kafka HOST:PORT/TOPIC"))?;
        let brokers = caldera_journal::kafka::Brokers::new(servers);
        let mut j = caldera_journal::kafka::KafkaJournal::connect(
            &brokers,
            topic,
            0,
            0,
            1,
            Duration::from_secs(30),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        for (cmds, evs) in &data {
            let bytes = encode_batch(&mut fbb, 1, cmds, evs, evs[0].seq, evs[evs.len() - 1].seq);
            j.append(evs[0].seq, evs[evs.len() - 1].seq, bytes)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        j.close(Duration::from_secs(120))
            .map_err(|e| anyhow::anyhow!(e))?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "kafka append, acks=all, idempotent  {:>12.0} events/s  ({} records acknowledged)",
            events as f64 / s,
            data.len()
        );
        let t = Instant::now();
        let idle = Duration::from_millis(1000);
        let (engine, rec, _) = caldera_journal::kafka::recover(&brokers, topic, &cfg.0, idle, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = (t.elapsed() - idle).as_secs_f64();
        assert_eq!(engine.state_hash(), live_hash);
        println!(
            "kafka replay (fetch + decode + run) {:>12.0} events/s  (state hash matches)",
            rec.events as f64 / s
        );
    }
    Ok(())
}
