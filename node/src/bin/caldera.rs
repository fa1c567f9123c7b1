//! `caldera`: the exchange node.
//!
//! `caldera serve` runs the ZeroMQ gateway and the matching engine; `caldera standby` follows
//! the journal and takes over; `caldera replay` and `caldera journal` read a journal.

use anyhow::{Context, Result};
use caldera_node::config::AuthMode;
use caldera_node::config::{EngineThread, FsyncSetting, JournalUri, WaitStrategy};
use caldera_node::summary::{BookLine, CheckLine, EventLine, ReplayLine, ServeLine};
use caldera_node::{Config, NodeError, NodeSecurity, Primary, PrimaryNode, Role, StandbyExit};
use caldera_pipeline::alloc_count::CountingAlloc;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code: a second SIGINT/SIGTERM came while the node was draining after the first, and
/// ended it at once (reports not yet released were not sent: they were not acknowledged).
const EXIT_SECOND_SIGNAL: i32 = 7;

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
    /// deliver every report, print a JSON summary on stdout, exit 0. A second signal while
    /// draining exits at once with code 7.
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
    /// Read a journal's events as JSON lines; check a file journal for damage; repair it.
    Journal {
        #[command(subcommand)]
        cmd: JournalCmd,
    },
    /// Create a new deployment's keys: the server key pair, key pairs for an admin, a trader
    /// and a drop-copy reader, and entitlements.toml listing them (never overwrites).
    ///
    /// Give clients `server.key` (public) and their own `NAME.key_secret`; keep
    /// `server.key_secret` on the nodes only.
    Init {
        /// Directory for the keys (`caldera serve` looks in ./caldera-keys by default).
        #[arg(default_value = "caldera-keys")]
        dir: PathBuf,
        /// Accounts the trader and the reader are entitled to: ids and A-B ranges, or "*".
        #[arg(long, default_value = "1-9999")]
        accounts: String,
    },
    /// Generate one CURVE key pair: DIR/NAME.key (public: list it in entitlements.toml) and
    /// DIR/NAME.key_secret (keep it with the client). Prints the public key.
    Keygen {
        /// Name of the key files.
        name: String,
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCmd {
    /// Print every event from --from to the journal's end as of the moment dump started (the
    /// first batch written after that ends it; on Kafka an idle topic ends it after 1.5 s
    /// without records). Stops early on SIGINT/SIGTERM.
    Dump(DumpArgs),
    /// Print events from --from, then follow new ones as they become durable (each printed
    /// at once) until SIGINT/SIGTERM.
    Tail(DumpArgs),
    /// Check a file journal: every frame's CRC and sequence continuity in every segment, every
    /// snapshot. Changes nothing. Exit code 0: intact (a torn tail, which the next start
    /// repairs, is reported but is not damage); 1: damaged (each place is listed with the
    /// sequence it hides).
    Verify(VerifyArgs),
    /// Drop a file journal from a sequence on (after `verify` found damage there): the segment
    /// holding it is truncated, later segments and snapshots covering it are moved into
    /// DIR/dropped-SEQ/. Prints exactly what is dropped. Refused while a node writes the journal.
    /// Everything from SEQ on is lost to the venue's history: a last resort.
    Repair(RepairArgs),
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Journal: file://DIR.
    #[arg(long)]
    journal: JournalUri,
}

#[derive(clap::Args, Debug)]
struct RepairArgs {
    /// Journal: file://DIR.
    #[arg(long)]
    journal: JournalUri,
    /// First sequence to drop: where a frame starts, or the first sequence a damaged place
    /// hides (as `verify` prints it).
    #[arg(long, value_name = "SEQ")]
    truncate_at: u64,
    /// Print what would be dropped, change nothing.
    #[arg(long)]
    dry_run: bool,
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
    /// Journal: file://DIR or kafka://HOST:PORT/TOPIC.
    #[arg(long)]
    journal: JournalUri,
    /// Configuration: its `[journal.kafka]` properties (TLS, SASL) are used to reach Kafka.
    #[arg(short, long, env = "CALDERA_CONFIG")]
    config: Option<PathBuf>,
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
    /// How idle threads wait: spin, spin-yield, park or auto.
    #[arg(long)]
    wait: Option<WaitStrategy>,
    /// Which thread runs the engine: own (default) or gateway (ADR 0017).
    #[arg(long, value_enum)]
    engine_thread: Option<EngineThread>,
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
    /// Directory with server.key_secret and entitlements.toml (made by `caldera init`).
    #[arg(long, value_name = "DIR")]
    keys: Option<String>,
    /// INSECURE: plain TCP without authentication; anyone who can reach the order-entry port
    /// may trade, cancel and read reports as any account. For closed test networks only.
    #[arg(long)]
    insecure: bool,
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
        Cmd::Journal {
            cmd: JournalCmd::Verify(a),
        } => verify(&a),
        Cmd::Journal {
            cmd: JournalCmd::Repair(a),
        } => repair(&a),
        Cmd::Init { dir, accounts } => init(&dir, &accounts),
        Cmd::Keygen { name, dir } => keygen(&name, &dir),
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
    if let Some(e) = a.engine_thread {
        cfg.threads.engine = e;
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
    if let Some(k) = &a.keys {
        cfg.security.keys_dir.clone_from(k);
    }
    if a.insecure {
        cfg.security.auth = AuthMode::None;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn serve(a: ServeArgs, standby: bool) -> Result<()> {
    let cfg = config_of(&a)?;
    let security = NodeSecurity::load(&cfg.security)?;
    if a.check {
        let line = CheckLine {
            ok: true,
            role: if standby { "standby" } else { "primary" },
            order_entry: &cfg.gateway.order_entry,
            market_data: &cfg.gateway.market_data,
            journal: &cfg.journal.uri,
            metrics: &cfg.metrics.listen,
            instruments: cfg.instruments.len(),
            failover_timeout_ms: cfg.failover.timeout_ms,
            peers: &cfg.failover.peers,
            auth: security.mode().name(),
            entitled_keys: security
                .gateway
                .as_ref()
                .map_or(0, |s| s.guard.current().len() - 1),
        };
        println!("{}", serde_json::to_string(&line)?);
        return Ok(());
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while draining ends the process at once (a drain that waits for a
        // failing journal waits as long as the outage): first the exit, armed by the flag the
        // first signal sets, then the flag (the order matters).
        signal_hook::flag::register_conditional_shutdown(
            sig,
            EXIT_SECOND_SIGNAL,
            Arc::clone(&shutdown),
        )
        .context("installing signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }
    // SIGHUP re-reads the entitlements (the ZAP handler's thread does the work).
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&security.reload))
        .context("installing the SIGHUP handler")?;
    if security.gateway.is_none() {
        tracing::warn!("INSECURE MODE (auth = \"none\" / --insecure): no authentication, no encryption; anyone who can reach the order-entry port may act as any account");
    }
    let metrics = Arc::new(caldera_node::Metrics::default());
    metrics.set_security(&security);
    let status = &metrics.node;
    if !cfg.metrics.listen.is_empty() {
        let bound = caldera_node::metrics::serve_http(&cfg.metrics.listen, Arc::clone(&metrics))
            .with_context(|| format!("binding the metrics listener {}", cfg.metrics.listen))?;
        tracing::info!(%bound, "metrics: /metrics /healthz /readyz");
    }
    let primary = if standby {
        match caldera_node::run_standby(&cfg, &security.peer_credentials(), &shutdown, status)? {
            StandbyExit::Promoted(p) => *p,
            StandbyExit::Stopped(s) => {
                let mut line = serde_json::to_value(s)?;
                line["role"] = "standby".into();
                println!("{line}");
                tracing::info!("standby stopped before taking over");
                return Ok(());
            }
        }
    } else {
        Primary::open(&cfg)?
    };
    status.set_role(Role::Primary);
    status.epoch.store(primary.epoch, Ordering::Relaxed);
    let served = PrimaryNode::new(&cfg, &security)
        .metrics(Arc::clone(&metrics))
        .on_ready(|ep| tracing::info!(order_entry = ep, "primary: accepting orders"))
        .serve(primary, &shutdown);
    let summary = match served {
        Ok(s) => s,
        Err(NodeError::Fenced(why)) => {
            status.set_role(Role::Fenced);
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
    println!("{}", serde_json::to_string(&ServeLine::of(&summary))?);
    tracing::info!(
        commands = e.commands,
        last_seq = e.engine.last_seq(),
        engine_allocations = e.allocations,
        "stopped"
    );
    Ok(())
}

fn init(dir: &std::path::Path, accounts: &str) -> Result<()> {
    let created = caldera_auth::init::init(dir, accounts)?;
    for f in &created.files {
        println!("{}", f.display());
    }
    eprintln!(
        "keys for a new deployment are in {d}: `caldera serve --keys {d}` uses them; clients \
         need {d}/server.key and their own NAME.key_secret",
        d = dir.display()
    );
    Ok(())
}

fn keygen(name: &str, dir: &std::path::Path) -> Result<()> {
    let cert = caldera_auth::Certificate::generate()?;
    let (public, secret) = cert.write(dir, name)?;
    println!("{}", cert.public);
    eprintln!(
        "wrote {} and {} (list the public key in entitlements.toml)",
        public.display(),
        secret.display()
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
            anyhow::bail!("this command reads a file journal here (file://DIR)")
        }
        JournalUri::None => anyhow::bail!("--journal none has nothing to read"),
    }
}

fn replay(a: ReplayArgs) -> Result<()> {
    let cfg = load_config(a.config.as_ref())?;
    let (engine, rec) = match &a.journal {
        #[cfg(feature = "kafka")]
        JournalUri::Kafka { brokers, topic } => {
            let (e, rec, _) = caldera_journal::kafka::recover(
                &cfg.journal.brokers(brokers),
                topic,
                &cfg.engine_config(),
                KAFKA_IDLE,
                None,
            )?;
            (e, rec)
        }
        other => {
            let dir = file_dir(other)?;
            anyhow::ensure!(dir.is_dir(), "no journal at {}", dir.display());
            if a.no_snapshot {
                let mut e = caldera_engine::Engine::new(cfg.engine_config())?;
                let mut rec = caldera_journal::recover::Recovered::default();
                caldera_journal::recover::replay_into(&mut e, dir, &mut rec)?;
                (e, rec)
            } else {
                caldera_journal::recover::recover(dir, &cfg.engine_config())?
            }
        }
    };
    let secs = rec.elapsed.as_secs_f64().max(1e-9);
    let line = ReplayLine {
        last_seq: engine.last_seq(),
        state_hash: engine.state_hash(),
        live_orders: engine.live_orders(),
        snapshot_seq: rec.snapshot_seq,
        batches: rec.batches,
        commands: rec.commands,
        events: rec.events,
        seconds: (secs * 1000.0).round() / 1000.0,
        events_per_s: (rec.events as f64 / secs).round(),
        books: cfg
            .instruments
            .iter()
            .map(|i| BookLine::of(&engine, i.id))
            .collect(),
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

fn verify(a: &VerifyArgs) -> Result<()> {
    let dir = file_dir(&a.journal)?;
    anyhow::ensure!(dir.is_dir(), "no journal at {}", dir.display());
    let r = caldera_journal::maintenance::verify(dir)?;
    println!(
        "{} segments, {} intact frames, sequences {}..={}",
        r.segments, r.frames, r.first_seq, r.last_seq
    );
    for d in &r.damage {
        println!(
            "DAMAGED {} at byte {} ({} bytes): {}; hides sequences from {}",
            d.path.display(),
            d.offset,
            d.bytes,
            d.reason,
            d.first_missing_seq
        );
    }
    if let Some(t) = &r.torn_tail {
        println!(
            "torn tail: {} at byte {} ({} bytes, {}): the next start truncates it (a write a crash cut short; never acknowledged with fsync = always)",
            t.path.display(),
            t.offset,
            t.bytes,
            t.reason
        );
    }
    for (seq, path, problem) in &r.snapshots {
        match problem {
            None => println!("snapshot {seq}: ok ({})", path.display()),
            Some(p) => println!("SNAPSHOT {seq} BAD: {p} ({})", path.display()),
        }
    }
    for p in &r.set_aside {
        println!("set aside earlier (not read): {}", p.display());
    }
    if r.ok() {
        println!("journal intact");
        Ok(())
    } else {
        let first = r.damage.first().map(|d| d.first_missing_seq);
        match first {
            Some(seq) => println!(
                "journal DAMAGED. Restore the segments from a replica or backup if you can; otherwise `caldera journal repair --journal file://{} --truncate-at {seq}` drops the log from {seq} on",
                dir.display()
            ),
            None => println!("journal DAMAGED (snapshots only: recovery skips a bad snapshot)"),
        }
        std::process::exit(1)
    }
}

fn repair(a: &RepairArgs) -> Result<()> {
    let dir = file_dir(&a.journal)?;
    anyhow::ensure!(dir.is_dir(), "no journal at {}", dir.display());
    let r = caldera_journal::maintenance::truncate_at(dir, a.truncate_at, a.dry_run)?;
    let verb = if a.dry_run { "would drop" } else { "dropped" };
    println!(
        "{verb} every sequence from {} on; the log ends at {}",
        r.from_seq, r.last_kept_seq
    );
    if let Some((path, off, bytes)) = &r.cut {
        println!(
            "{verb}: {} bytes of {} from byte {off} (the segment is truncated there)",
            bytes,
            path.display()
        );
    }
    for p in &r.segments_moved {
        println!("{verb}: segment {}", p.display());
    }
    for p in &r.snapshots_moved {
        println!("{verb}: snapshot {}", p.display());
    }
    if !a.dry_run {
        println!("moved to {}", r.moved_to.display());
    }
    Ok(())
}

enum Source {
    File(caldera_journal::LogReader),
    #[cfg(feature = "kafka")]
    Kafka(caldera_journal::kafka::KafkaReader),
}

impl Source {
    fn next(&mut self, follow: bool) -> Result<Option<Vec<u8>>> {
        Ok(match self {
            Source::File(r) => r.next_frame()?.map(|f| f.payload),
            #[cfg(feature = "kafka")]
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
        #[cfg(feature = "kafka")]
        JournalUri::Kafka { brokers, topic } => {
            let cfg = load_config(a.config.as_ref())?;
            Source::Kafka(caldera_journal::kafka::KafkaReader::open(
                &cfg.journal.brokers(brokers),
                topic,
            )?)
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
    // The epoch rule, and split Kafka batches: history once their final record landed.
    let mut stream = caldera_journal::history::EventStream::default();
    // dump's end: the journal as it was when dump started — the first batch written after
    // that (by the writer's clock) ends it, so a live topic with heartbeats still ends.
    let started_ns = caldera_schema::record::wall_ns();
    use std::sync::atomic::Ordering::Relaxed;
    while !stop.load(Relaxed) {
        match source.next(follow)? {
            Some(payload) => {
                let Ok(root) = caldera_schema::record::root(&payload) else {
                    tracing::error!("a record is not a journal batch: skipped");
                    continue;
                };
                if !follow && root.written_ns() > started_ns {
                    break;
                }
                events.clear();
                let caldera_journal::history::Pushed::Taken { epoch, .. } =
                    stream.push(&payload, &mut events)?
                else {
                    // A fenced primary's late append, or an impossible epoch jump.
                    continue;
                };
                for e in events.iter().filter(|e| e.seq >= a.from) {
                    serde_json::to_writer(&mut out, &EventLine::of(epoch, e))?;
                    writeln!(out)?;
                }
                if follow && !events.is_empty() {
                    // Every durable event shows at once (heartbeats keep `next` from ever
                    // returning nothing on a live journal).
                    out.flush()?;
                }
            }
            None if follow => {
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            None => break,
        }
    }
    out.flush()?;
    Ok(())
}

/// Idle time after which Kafka reads stop (the broker's high watermark is not trusted).
#[cfg(feature = "kafka")]
const KAFKA_IDLE: std::time::Duration = std::time::Duration::from_millis(1500);
