//! `caldera`: the exchange node.
//!
//! `caldera serve` runs the ZeroMQ gateway and the matching engine.

use anyhow::{Context, Result};
use caldera_gateway::alloc_count::CountingAlloc;
use caldera_gateway::config::{FsyncSetting, JournalUri};
use caldera_gateway::{Config, WaitStrategy};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: CountingAlloc<mimalloc::MiMalloc> = CountingAlloc(mimalloc::MiMalloc);

#[derive(Parser, Debug)]
#[command(
    name = "caldera",
    version,
    about = "Caldera exchange node: ZeroMQ gateway + matching engine"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve order entry (ZeroMQ ROUTER) and market data (ZeroMQ PUB) until SIGINT/SIGTERM.
    ///
    /// On a signal: stop reading requests, let the engine finish every command already read,
    /// deliver every report, print a JSON summary on stdout, exit 0.
    Serve(ServeArgs),
    /// Follow the journal as a hot standby and take over when the primary is gone.
    ///
    /// Holds the same books as the primary by applying the journal live (file: tails the
    /// segments; Kafka: consumes the topic). Promotes itself when the primary dies (file: the
    /// writer lock is released) or is silent for failover.timeout_ms (a stopped primary is
    /// killed with the file journal, fenced by a new epoch with Kafka); then binds the
    /// endpoints and serves exactly like `serve`. With no primary running it promotes at once,
    /// so every node of a pair can run `caldera standby`. Exit code 3: fenced.
    Standby(ServeArgs),
    /// Rebuild the engine state from a journal (latest snapshot + replay) and print the last
    /// sequence, the state hash, a book summary and the replay rate.
    Replay(ReplayArgs),
    /// Read a journal's events as JSON lines.
    Journal {
        #[command(subcommand)]
        cmd: JournalCmd,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCmd {
    /// Print every event from --from to the current end.
    Dump(DumpArgs),
    /// Print events from --from, then follow new ones until interrupted.
    Tail(DumpArgs),
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Journal: file://DIR (kafka://HOST:PORT/TOPIC with the Kafka journal).
    #[arg(long)]
    journal: JournalUri,
    /// Engine configuration (must match the one that wrote the journal).
    #[arg(short, long, env = "CALDERA_CONFIG")]
    config: Option<PathBuf>,
    /// Ignore snapshots: replay the whole journal.
    #[arg(long)]
    no_snapshot: bool,
}

#[derive(clap::Args, Debug)]
struct DumpArgs {
    /// Journal: file://DIR.
    #[arg(long)]
    journal: JournalUri,
    /// First event sequence to print.
    #[arg(long, default_value_t = 1)]
    from: u64,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML configuration (see docs/configuration.md); flags below override it.
    #[arg(short, long, env = "CALDERA_CONFIG")]
    config: Option<PathBuf>,
    /// Order-entry endpoint (ROUTER), e.g. tcp://127.0.0.1:7001.
    #[arg(long)]
    order_entry: Option<String>,
    /// Market-data endpoint (PUB), e.g. tcp://127.0.0.1:7002.
    #[arg(long)]
    market_data: Option<String>,
    /// Core for the engine thread.
    #[arg(long)]
    engine_core: Option<usize>,
    /// Core for the gateway thread.
    #[arg(long)]
    gateway_core: Option<usize>,
    /// How idle threads wait.
    #[arg(long, value_enum)]
    wait: Option<WaitStrategy>,
    /// Journal: file://DIR (default file://caldera-journal), kafka://HOST:PORT/TOPIC, or none.
    #[arg(long)]
    journal: Option<JournalUri>,
    /// File-journal fsync policy.
    #[arg(long, value_enum)]
    fsync: Option<FsyncSetting>,
    /// Write the engine's final snapshot here on exit.
    #[arg(long)]
    snapshot_on_exit: Option<PathBuf>,
    /// Failover: a standby promotes after this long without a journal record.
    #[arg(long)]
    failover_timeout_ms: Option<u64>,
    /// Failover: the primary's heartbeat period when idle.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Failover: another node's order-entry endpoint to watch (repeat for several); a dropped
    /// connection to the primary triggers takeover at once.
    #[arg(long = "peer", value_name = "ENDPOINT")]
    peers: Vec<String>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Check the arguments and the configuration, print the effective configuration, exit.
    #[arg(long)]
    check: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Cmd::Serve(a) => serve(a, false),
        Cmd::Standby(a) => serve(a, true),
        Cmd::Replay(a) => replay(a),
        Cmd::Journal {
            cmd: JournalCmd::Dump(a),
        } => dump(a, false),
        Cmd::Journal {
            cmd: JournalCmd::Tail(a),
        } => dump(a, true),
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn config_of(a: &ServeArgs) -> Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = &a.order_entry {
        cfg.gateway.order_entry.clone_from(v);
    }
    if let Some(v) = &a.market_data {
        cfg.gateway.market_data.clone_from(v);
    }
    if let Some(v) = a.failover_timeout_ms {
        cfg.failover.timeout_ms = v;
    }
    if let Some(v) = a.heartbeat_ms {
        cfg.failover.heartbeat_ms = v;
    }
    if let Some(v) = &a.metrics {
        cfg.metrics.listen.clone_from(v);
    }
    if !a.peers.is_empty() {
        cfg.failover.peers.clone_from(&a.peers);
    }
    if a.engine_core.is_some() {
        cfg.threads.engine_core = a.engine_core;
    }
    if a.gateway_core.is_some() {
        cfg.threads.gateway_core = a.gateway_core;
    }
    if let Some(w) = a.wait {
        cfg.threads.wait = w;
    }
    if let Some(j) = &a.journal {
        cfg.journal.uri = match j {
            JournalUri::None => "none".into(),
            JournalUri::File(p) => format!("file://{}", p.display()),
            JournalUri::Kafka { brokers, topic } => format!("kafka://{brokers}/{topic}"),
        };
    }
    if let Some(f) = a.fsync {
        cfg.journal.fsync = f;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn serve(a: ServeArgs, standby: bool) -> Result<()> {
    let cfg = config_of(&a)?;
    if a.check {
        println!(
            "{{\"ok\":true,\"role\":\"{}\",\"order_entry\":\"{}\",\"market_data\":\"{}\",\"journal\":\"{}\",\"metrics\":\"{}\",\"instruments\":{},\"failover_timeout_ms\":{},\"peers\":{:?}}}",
            if standby { "standby" } else { "primary" },
            cfg.gateway.order_entry,
            cfg.gateway.market_data,
            cfg.journal.uri,
            cfg.metrics.listen,
            cfg.instruments.len(),
            cfg.failover.timeout_ms,
            cfg.failover.peers
        );
        return Ok(());
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }
    let metrics = Arc::new(caldera_gateway::Metrics::default());
    let status = &metrics.node;
    if !cfg.metrics.listen.is_empty() {
        let bound = caldera_gateway::metrics::serve_http(&cfg.metrics.listen, Arc::clone(&metrics))
            .with_context(|| format!("binding the metrics listener {}", cfg.metrics.listen))?;
        tracing::info!(%bound, "metrics: /metrics /healthz /readyz");
    }
    let primary = if standby {
        match caldera_gateway::run_standby(&cfg, &shutdown, status)? {
            caldera_gateway::StandbyExit::Promoted(p) => *p,
            caldera_gateway::StandbyExit::Stopped(s) => {
                println!(
                    "{{\"role\":\"standby\",\"last_seq\":{},\"state_hash\":\"{:016x}\",\"epoch\":{},\"batches\":{},\"stale_batches\":{}}}",
                    s.applied_seq, s.state_hash, s.epoch, s.batches, s.stale_batches
                );
                tracing::info!("standby stopped before taking over");
                return Ok(());
            }
        }
    } else {
        caldera_gateway::open_primary(&cfg)?
    };
    status.set_role(caldera_gateway::Role::Primary);
    status
        .epoch
        .store(primary.epoch, std::sync::atomic::Ordering::Relaxed);
    let summary = match caldera_gateway::serve_primary_with(
        &cfg,
        primary,
        &shutdown,
        |ep| tracing::info!(order_entry = ep, "primary: accepting orders"),
        &metrics,
    ) {
        Ok(s) => s,
        Err(caldera_gateway::ServeError::Fenced(why)) => {
            status.set_role(caldera_gateway::Role::Fenced);
            tracing::error!(
                why,
                "fenced by a newer primary: exiting without releasing anything more"
            );
            std::process::exit(3);
        }
        Err(e) => return Err(e.into()),
    };
    let e = &summary.engine;
    if let Some(path) = &a.snapshot_on_exit {
        std::fs::write(path, e.engine.snapshot())
            .with_context(|| format!("writing snapshot {}", path.display()))?;
    }
    let g = &summary.gateway;
    println!(
        "{{\"commands\":{},\"last_seq\":{},\"state_hash\":\"{:016x}\",\"live_orders\":{},\"engine_allocations\":{},\"pinned_core\":{},\"frames_in\":{},\"requests\":{},\"gateway_rejects\":{},\"events\":{},\"reports\":{},\"report_frames\":{},\"undeliverable\":{},\"ring_full_pauses\":{},\"md_published\":{},\"recovered_seq\":{},\"journal_batches\":{},\"journal_durable_seq\":{},\"snapshots\":{}}}",
        e.commands,
        e.engine.last_seq(),
        e.engine.state_hash(),
        e.engine.live_orders(),
        e.allocations,
        e.pinned_core.map_or("null".to_string(), |c| c.to_string()),
        g.frames_in,
        g.requests,
        g.gateway_rejects,
        g.events,
        g.reports,
        g.report_frames,
        g.undeliverable,
        g.ring_full_pauses,
        summary.md_published,
        summary.recovered_seq,
        summary.journal.as_ref().map_or(0, |j| j.batches),
        summary.journal.as_ref().map_or(0, |j| j.durable_seq),
        summary.journal.as_ref().map_or(0, |j| j.snapshots)
    );
    tracing::info!(
        commands = e.commands,
        last_seq = e.engine.last_seq(),
        engine_allocations = e.allocations,
        "stopped"
    );
    Ok(())
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn file_dir(j: &JournalUri) -> Result<&std::path::Path> {
    match j {
        JournalUri::File(d) => Ok(d),
        JournalUri::Kafka { .. } => {
            anyhow::bail!("the Kafka journal is not available in this build yet")
        }
        JournalUri::None => anyhow::bail!("--journal none has nothing to read"),
    }
}

fn replay(a: ReplayArgs) -> Result<()> {
    let cfg = load_config(a.config.as_ref())?;
    let (engine, rec) = if let JournalUri::Kafka { brokers, topic } = &a.journal {
        let (e, rec, _) =
            caldera_journal::kafka::recover(brokers, topic, &cfg.engine_config(), KAFKA_IDLE)?;
        (e, rec)
    } else if a.no_snapshot {
        let dir = file_dir(&a.journal)?;
        anyhow::ensure!(dir.is_dir(), "no journal at {}", dir.display());
        let mut e = caldera_engine::Engine::new(cfg.engine_config())?;
        let mut rec = caldera_journal::recover::Recovered::default();
        caldera_journal::recover::replay_into(&mut e, dir, &mut rec)?;
        (e, rec)
    } else {
        let dir = file_dir(&a.journal)?;
        anyhow::ensure!(dir.is_dir(), "no journal at {}", dir.display());
        caldera_journal::recover::recover(dir, &cfg.engine_config())?
    };
    let secs = rec.elapsed.as_secs_f64().max(1e-9);
    let mut books = Vec::new();
    for i in &cfg.instruments {
        let bid = engine.best_bid(i.id);
        let ask = engine.best_ask(i.id);
        let (mut bl, mut al) = (0, 0);
        engine.for_each_level(i.id, caldera_engine::Side::Buy, |_, _| bl += 1);
        engine.for_each_level(i.id, caldera_engine::Side::Sell, |_, _| al += 1);
        books.push(format!(
            "{{\"symbol\":{},\"best_bid\":{},\"best_ask\":{},\"bid_levels\":{bl},\"ask_levels\":{al}}}",
            i.id,
            bid.map_or("null".into(), |b| format!("[{},{}]", b.0, b.1)),
            ask.map_or("null".into(), |b| format!("[{},{}]", b.0, b.1)),
        ));
    }
    println!(
        "{{\"last_seq\":{},\"state_hash\":\"{:016x}\",\"live_orders\":{},\"snapshot_seq\":{},\"batches\":{},\"commands\":{},\"events\":{},\"seconds\":{:.3},\"events_per_s\":{:.0},\"books\":[{}]}}",
        engine.last_seq(),
        engine.state_hash(),
        engine.live_orders(),
        rec.snapshot_seq,
        rec.batches,
        rec.commands,
        rec.events,
        secs,
        rec.events as f64 / secs,
        books.join(",")
    );
    Ok(())
}

enum Source {
    File(caldera_journal::LogReader),
    Kafka(caldera_journal::kafka::KafkaReader),
}

impl Source {
    fn next(&mut self, follow: bool) -> Result<Option<Vec<u8>>> {
        Ok(match self {
            Source::File(r) => r.next_frame()?.map(|f| f.payload),
            Source::Kafka(r) => r.next(if follow {
                std::time::Duration::from_millis(100)
            } else {
                KAFKA_IDLE
            })?,
        })
    }
}

fn dump(a: DumpArgs, follow: bool) -> Result<()> {
    use std::io::Write as _;
    let mut source = match &a.journal {
        JournalUri::Kafka { brokers, topic } => {
            Source::Kafka(caldera_journal::kafka::KafkaReader::open(brokers, topic)?)
        }
        other => {
            let dir = file_dir(other)?;
            anyhow::ensure!(dir.is_dir(), "no journal at {}", dir.display());
            Source::File(caldera_journal::LogReader::open(dir, a.from)?)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut events = Vec::new();
    let mut max_epoch = 0;
    loop {
        match source.next(follow)? {
            Some(payload) => {
                let epoch = caldera_journal::record::root(&payload)?.epoch();
                if epoch < max_epoch {
                    // The epoch rule: a fenced primary's late append is not history.
                    continue;
                }
                max_epoch = epoch;
                events.clear();
                caldera_journal::record::decode_events(&payload, &mut events)?;
                for e in events.iter().filter(|e| e.seq >= a.from) {
                    writeln!(out, "{}", event_json(epoch, e))?;
                }
            }
            None if follow && !stop.load(std::sync::atomic::Ordering::Relaxed) => {
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            None => break,
        }
    }
    out.flush()?;
    Ok(())
}

fn event_json(epoch: u64, e: &caldera_engine::Event) -> String {
    use caldera_engine::EventBody as B;
    let s = e.seq;
    match &e.body {
        B::Accepted(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"accepted\",\"order_id\":{},\"account\":{},\"client_order_id\":{},\"symbol\":{},\"side\":\"{:?}\",\"order_type\":\"{:?}\",\"tif\":\"{:?}\",\"price\":{},\"qty\":{}}}", x.order_id, x.account, x.client_order_id, x.symbol, x.side, x.order_type, x.tif, x.price, x.qty),
        B::Rejected(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"rejected\",\"account\":{},\"client_order_id\":{},\"order_id\":{},\"symbol\":{},\"request\":\"{:?}\",\"reason\":\"{:?}\"}}", x.account, x.client_order_id, x.order_id, x.symbol, x.request, x.reason),
        B::Trade(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"trade\",\"trade_id\":{},\"symbol\":{},\"price\":{},\"qty\":{},\"aggressor\":\"{:?}\",\"maker_order_id\":{},\"maker_account\":{},\"maker_leaves\":{},\"taker_order_id\":{},\"taker_account\":{},\"taker_leaves\":{}}}", x.trade_id, x.symbol, x.price, x.qty, x.aggressor, x.maker_order_id, x.maker_account, x.maker_leaves, x.taker_order_id, x.taker_account, x.taker_leaves),
        B::Done(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"done\",\"order_id\":{},\"account\":{},\"client_order_id\":{},\"symbol\":{},\"side\":\"{:?}\",\"reason\":\"{:?}\",\"leaves\":{}}}", x.order_id, x.account, x.client_order_id, x.symbol, x.side, x.reason, x.leaves),
        B::Replaced(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"replaced\",\"order_id\":{},\"account\":{},\"client_order_id\":{},\"symbol\":{},\"side\":\"{:?}\",\"price\":{},\"qty\":{},\"kept_priority\":{}}}", x.order_id, x.account, x.client_order_id, x.symbol, x.side, x.price, x.qty, x.kept_priority),
        B::BookDelta(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"book_delta\",\"symbol\":{},\"side\":\"{:?}\",\"price\":{},\"qty\":{}}}", x.symbol, x.side, x.price, x.qty),
        B::MassCancelled(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"mass_cancelled\",\"account\":{},\"symbol\":{},\"count\":{}}}", x.account, x.symbol.map_or("null".into(), |v| v.to_string()), x.count),
        B::InstrumentStatus(x) => format!("{{\"seq\":{s},\"epoch\":{epoch},\"type\":\"instrument_status\",\"symbol\":{},\"halted\":{}}}", x.symbol, x.halted),
    }
}

/// Idle time after which Kafka reads stop (the broker's high watermark is not trusted).
const KAFKA_IDLE: std::time::Duration = std::time::Duration::from_millis(1500);
