//! Engine benchmark report: an exchange-core-like single-book flow (about 9% GTC, 3% IOC,
//! 6% cancel, 82% move; ~1K resting orders over a few hundred levels) pre-generated, then run
//! through Caldera's engine and through `lobster` in the same process, on one pinned core.
//!
//! Prints ops/s (best of several passes) and per-operation latency percentiles (HdrHistogram),
//! and the Caldera/peer throughput ratio.

use anyhow::Result;
use caldera_benches::{Book, CalderaBook, LobsterBook};
use caldera_testkit::flow::{generate, FlowConfig};
use clap::Parser;
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Caldera engine benchmark against peer order books on the same flow")]
struct Args {
    /// Commands in the flow.
    #[arg(long, default_value_t = 3_000_000)]
    ops: usize,
    /// Throughput passes (best is reported).
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Flow seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Core to pin to (omit to leave unpinned).
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// Emit a JSON line with the results as well.
    #[arg(long)]
    json: bool,
    /// The engine's dedupe window per account (accepted client order ids remembered after they
    /// are done), for 1024 accounts. 0 (default) compares pure matching with the peers, which
    /// have no such window; the server's default is 1024.
    #[arg(long, default_value_t = 0)]
    dedupe_window: u32,
    /// Accounts in the flow (each command's account drawn at random among them). The
    /// loadgen's default run has 4 (one per connection).
    #[arg(long, default_value_t = 2000)]
    accounts: u32,
    /// Also run the hostile case: one account among the flow sends client order ids crafted to
    /// collide in the engine's index and fill-or-kill orders over a deep book, against an
    /// engine with a secret seed and against one whose seed the attacker knows.
    #[arg(long)]
    hostile: bool,
    /// One command in this many is the hostile account's (with --hostile).
    #[arg(long, default_value_t = 5)]
    hostile_every: usize,
}

struct Row {
    name: &'static str,
    ops_per_sec: f64,
    hist: Histogram<u64>,
    trades: u64,
}

fn measure<B: Book>(make: impl Fn() -> B, cmds: &[caldera_engine::Command], passes: usize) -> Row {
    let mut best = f64::MAX;
    let mut name = "";
    let mut trades = 0;
    for _ in 0..passes {
        let mut book = make();
        let t = Instant::now();
        for c in cmds {
            book.apply(black_box(c));
        }
        let secs = t.elapsed().as_secs_f64();
        best = best.min(secs);
        name = book.name();
        trades = book.trades();
        black_box(&book);
    }
    // Latency pass: every operation timed individually (includes ~timer overhead, printed).
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let mut book = make();
    for c in cmds {
        let t = Instant::now();
        book.apply(black_box(c));
        let ns = t.elapsed().as_nanos() as u64;
        hist.saturating_record(ns.max(1));
    }
    Row {
        name,
        ops_per_sec: cmds.len() as f64 / best,
        hist,
        trades,
    }
}

fn timer_overhead() -> u64 {
    let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).expect("histogram");
    for _ in 0..200_000 {
        let t = Instant::now();
        h.saturating_record((t.elapsed().as_nanos() as u64).max(1));
    }
    h.value_at_quantile(0.5)
}

/// The hostile case: the same normal flow with a hostile account's commands interleaved,
/// through engines with a secret seed and with the seed the attacker crafted its ids for.
fn hostile(args: &Args, normal: &[caldera_engine::Command], cfg: &caldera_engine::EngineConfig) {
    use caldera_benches::hostile::{interleave, Hostile};
    use std::hash::BuildHasher;
    let known = cfg.hash_seed;
    let secret = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
    let spec = &cfg.instruments[0];
    let with_seed = |seed| {
        let mut c = cfg.clone();
        c.hash_seed = seed;
        c.max_orders += 2000 + 16;
        c
    };
    let h = Hostile {
        account: cfg.max_accounts - 1,
        known_seed: known,
        every: args.hostile_every,
        resting: 2000,
        symbol: spec.id,
        max_price: spec.max_price,
    };
    let (secret_cfg, known_cfg) = (with_seed(secret), with_seed(known));
    let flow = interleave(normal, &h, &secret_cfg);
    let hostile_cmds = flow.len() - normal.len();
    let rows = [
        (
            "normal flow, secret seed",
            measure(|| CalderaBook::new(secret_cfg.clone()), normal, args.passes),
        ),
        (
            "hostile flow, secret seed",
            measure(|| CalderaBook::new(secret_cfg.clone()), &flow, args.passes),
        ),
        (
            "hostile flow, seed known to it",
            measure(|| CalderaBook::new(known_cfg.clone()), &flow, args.passes),
        ),
    ];
    println!();
    println!(
        "hostile case: account {} sends {hostile_cmds} of {} commands (1 in {}): {} live 1-lot sells on {} levels near the top of the band with client ids whose hashes collide under the seed it knows, cancel/replace churn on them, and every 10th a buy FOK of 900,000 lots (rejected) limited at the band's top",
        h.account,
        flow.len(),
        args.hostile_every + 1,
        h.resting,
        h.resting
    );
    println!(
        "{:<32} {:>12} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "engine", "ops/s", "ms in all", "p50 ns", "p99", "p99.99", "max", "trades"
    );
    for ((name, r), n) in rows.iter().zip([normal.len(), flow.len(), flow.len()]) {
        let q = |x| r.hist.value_at_quantile(x);
        println!(
            "{name:<32} {:>12.0} {:>10.1} {:>8} {:>8} {:>8} {:>9} {:>8}",
            r.ops_per_sec,
            n as f64 / r.ops_per_sec * 1e3,
            q(0.5),
            q(0.99),
            q(0.9999),
            r.hist.max(),
            r.trades
        );
    }
    // The hostile orders never trade: the normal commands did the same work in every row.
    assert_eq!(
        rows[0].1.trades, rows[1].1.trades,
        "the normal flow changed"
    );
    println!(
        "ops/s, normal / hostile: {:.2}x with a secret seed, {:.2}x with the seed known to the attacker",
        rows[0].1.ops_per_sec / rows[1].1.ops_per_sec,
        rows[0].1.ops_per_sec / rows[2].1.ops_per_sec
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pinned = core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().find(|c| c.id == args.core))
        .is_some_and(core_affinity::set_for_current);
    let cfg = FlowConfig {
        seed: args.seed,
        accounts: args.accounts.max(1),
        ..FlowConfig::default()
    };
    let gen_start = Instant::now();
    let cmds = generate(&cfg, args.ops);
    let gen_secs = gen_start.elapsed().as_secs_f64();

    let (mut new, mut ioc, mut cancel, mut replace) = (0, 0, 0, 0);
    for c in &cmds {
        match c {
            caldera_engine::Command::New(o) if o.tif == caldera_engine::TimeInForce::Ioc => {
                ioc += 1
            }
            caldera_engine::Command::New(_) => new += 1,
            caldera_engine::Command::Cancel(_) => cancel += 1,
            _ => replace += 1,
        }
    }
    let pct = |n: usize| 100.0 * n as f64 / cmds.len() as f64;
    let mut engine_cfg = cfg.engine_config();
    engine_cfg.dedupe_window = args.dedupe_window;
    engine_cfg.dedupe_accounts = if args.dedupe_window == 0 { 0 } else { 1024 };
    let mut probe = CalderaBook::new(engine_cfg.clone());
    for c in &cmds {
        probe.apply(c);
    }
    let mut levels = 0;
    for side in [caldera_engine::Side::Buy, caldera_engine::Side::Sell] {
        probe.engine().for_each_level(1, side, |_, _| levels += 1);
    }

    println!(
        "flow: {} ops, seed {} (generated in {gen_secs:.2}s, not timed)",
        cmds.len(),
        args.seed
    );
    println!(
        "mix: {:.1}% new GTC, {:.1}% IOC, {:.1}% cancel, {:.1}% replace; at end {} resting orders on {} levels",
        pct(new), pct(ioc), pct(cancel), pct(replace), probe.engine().live_orders(), levels
    );
    println!(
        "pinned to core {}: {pinned}; timer overhead p50 {} ns (included in latencies)",
        args.core,
        timer_overhead()
    );

    let rows = [
        measure(|| CalderaBook::new(engine_cfg.clone()), &cmds, args.passes),
        measure(
            || LobsterBook::new(engine_cfg.max_orders as usize),
            &cmds,
            args.passes,
        ),
    ];
    println!();
    println!(
        "{:<16} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "book", "ops/s", "p50 ns", "p90", "p99", "p99.9", "p99.99", "max", "trades"
    );
    for r in &rows {
        let q = |x| r.hist.value_at_quantile(x);
        println!(
            "{:<16} {:>12.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            r.name,
            r.ops_per_sec,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(0.9999),
            r.hist.max(),
            r.trades
        );
    }
    println!();
    for r in &rows[1..] {
        println!(
            "ratio {} / {}: {:.2}x throughput",
            rows[0].name,
            r.name,
            rows[0].ops_per_sec / r.ops_per_sec
        );
    }
    if args.hostile {
        hostile(&args, &cmds, &engine_cfg);
    }
    if args.json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"book\":\"{}\",\"ops_per_sec\":{:.0},\"p50_ns\":{},\"p99_ns\":{},\"p99_99_ns\":{},\"max_ns\":{}}}",
                    r.name, r.ops_per_sec, r.hist.value_at_quantile(0.5), r.hist.value_at_quantile(0.99),
                    r.hist.value_at_quantile(0.9999), r.hist.max()
                )
            })
            .collect();
        println!(
            "{{\"ops\":{},\"results\":[{}]}}",
            cmds.len(),
            items.join(",")
        );
    }
    Ok(())
}
