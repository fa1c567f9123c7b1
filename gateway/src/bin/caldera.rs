//! `caldera`: the exchange node.
//!
//! `caldera serve` runs the ZeroMQ gateway and the matching engine.

use anyhow::{Context, Result};
use caldera_gateway::alloc_count::CountingAlloc;
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
    /// Write the engine's final snapshot here on exit.
    #[arg(long)]
    snapshot_on_exit: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Cmd::Serve(a) => serve(a),
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

fn serve(a: ServeArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = a.order_entry {
        cfg.gateway.order_entry = v;
    }
    if let Some(v) = a.market_data {
        cfg.gateway.market_data = v;
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
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }
    let summary = caldera_gateway::serve(&cfg, &shutdown)?;
    let e = &summary.engine;
    if let Some(path) = &a.snapshot_on_exit {
        std::fs::write(path, e.engine.snapshot())
            .with_context(|| format!("writing snapshot {}", path.display()))?;
    }
    let g = &summary.gateway;
    println!(
        "{{\"commands\":{},\"last_seq\":{},\"state_hash\":\"{:016x}\",\"live_orders\":{},\"engine_allocations\":{},\"pinned_core\":{},\"frames_in\":{},\"requests\":{},\"gateway_rejects\":{},\"events\":{},\"reports\":{},\"report_frames\":{},\"undeliverable\":{},\"ring_full_pauses\":{},\"md_published\":{}}}",
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
        summary.md_published
    );
    tracing::info!(
        commands = e.commands,
        last_seq = e.engine.last_seq(),
        engine_allocations = e.allocations,
        "stopped"
    );
    Ok(())
}
