//! `caldera-loadgen`: drives `caldera serve` over ZeroMQ and reports throughput and latency
//! percentiles it is safe to trust (open loop measures from planned send times).
//!
//! Examples:
//!   caldera-loadgen closed --duration 10s --connections 4 --window 512
//!   caldera-loadgen open --rate 200000 --duration 10s --expect-p99 1ms
//!   caldera-loadgen sweep --start 50000 --factor 1.5 --max-p99 5ms
//!   caldera-loadgen echo --connections 4 --window 512
#![forbid(unsafe_code)]

mod cost;
mod driver;
mod echo;
mod flow;
mod report;
mod wait;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use driver::{Mode, Progress, RunResult, RunSpec};
use flow::FlowParams;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "caldera-loadgen",
    version,
    about = "Load generator for Caldera over ZeroMQ"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Maximum throughput: a window of requests in flight per connection.
    Closed {
        #[command(flatten)]
        common: Common,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 512)]
        window: usize,
    },
    /// Fixed rate; latency measured from each request's planned send time.
    Open {
        #[command(flatten)]
        common: Common,
        /// Requests per second, all connections together.
        #[arg(long)]
        rate: f64,
    },
    /// Steps the open-loop rate up until latency or attainment breaks; prints a table.
    Sweep {
        #[command(flatten)]
        common: Common,
        /// First rate (requests/s).
        #[arg(long, default_value_t = 50_000.0)]
        start: f64,
        /// Multiply the rate by this each step.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Stop when p99 exceeds this.
        #[arg(long, default_value = "10ms", value_parser = parse_duration)]
        max_p99: Duration,
        /// Stop when achieved/target falls below this.
        #[arg(long, default_value_t = 0.95)]
        min_attainment: f64,
        /// Most steps.
        #[arg(long, default_value_t = 12)]
        max_steps: usize,
    },
    /// The raw ZeroMQ ROUTER/DEALER echo ceiling (in-process echo server).
    Echo {
        /// Connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Requests per frame.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Duration.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Over CURVE (fresh keys), as the gateway's clients connect.
        #[arg(long)]
        curve: bool,
    },
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Gateway order-entry endpoint(s); repeat or comma-separate for several.
    #[arg(
        long = "endpoint",
        default_value = "tcp://127.0.0.1:7001",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Connections (each logs on as its own account).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Driver threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured duration, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Most requests per frame.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Open loop: hold due requests up to this long and send them as one frame (latency still
    /// counts from each request's planned send time). 0 = one frame per due request burst.
    #[arg(long, default_value = "0us", value_parser = parse_duration)]
    coalesce: Duration,
    /// Open loop: least time between two frames of one connection. At high rates the requests
    /// due meanwhile go out as one frame (their latency still counts from their planned
    /// times); at low rates every request leaves when due.
    #[arg(long, default_value = "50us", value_parser = parse_duration)]
    frame_gap: Duration,
    /// Passive orders per connection before measuring.
    #[arg(long, default_value_t = 200)]
    warmup_orders: usize,
    /// Flow seed (same seed, same requests).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Symbols (ids 1..=n, Zipf-skewed).
    #[arg(long, default_value_t = 8)]
    symbols: u32,
    /// Price around which the flow trades.
    #[arg(long, default_value_t = 100_000)]
    base_price: u64,
    /// First account id.
    #[arg(long, default_value_t = 1000)]
    account_base: u32,
    /// Also measure the raw ZeroMQ echo ceiling in this run and print the ratio (over CURVE
    /// unless --insecure, like the run itself).
    #[arg(long)]
    echo_baseline: bool,
    /// Directory made by `caldera init`: connects with KEY_NAME.key_secret and server.key.
    #[arg(long, value_name = "DIR", default_value = "caldera-keys")]
    keys: PathBuf,
    /// Which client key of --keys to use.
    #[arg(long, default_value = "trader")]
    key_name: String,
    /// INSECURE: plain TCP, for a node run with --insecure.
    #[arg(long)]
    insecure: bool,
    /// Print a JSON report on stdout (after the table, which goes to stderr then).
    #[arg(long)]
    json: bool,
    /// Write the latency histogram as an HdrHistogram interval log.
    #[arg(long)]
    hist_log: Option<PathBuf>,
    /// Write an SVG plot of the latency percentile distribution.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Show a progress bar with the live rate (default: when stderr is a terminal).
    #[arg(long)]
    progress: bool,
    /// Exit 1 if requests/s answered is below this.
    #[arg(long)]
    expect_rps: Option<f64>,
    /// Exit 1 if p99 latency is above this (e.g. 1ms).
    #[arg(long, value_parser = parse_duration)]
    expect_p99: Option<Duration>,
    /// Check the arguments, print them as JSON and exit (deployment manifests are tested this way).
    #[arg(long)]
    check: bool,
    /// The server's metrics endpoint (`caldera serve --metrics HOST:PORT`), e.g.
    /// http://127.0.0.1:9464/metrics: read before and after the measured window to report the
    /// server's CPU per answered request (total and by thread) beside the loadgen's own.
    #[arg(long, value_name = "URL")]
    server_metrics: Option<cost::MetricsUrl>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ns, us, ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A client-order-id range no earlier run used: the wall clock in ms × 2^20, and at least 2^36
/// above the previous range of this process (the warm-up and the measured run).
fn next_client_id_base() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        << 20;
    let mut base = 0;
    let _ = LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        base = now.max(last.saturating_add(1 << 36));
        Some(base)
    });
    base
}

/// How the connections authenticate: the --keys directory's key, or nothing (--insecure).
fn credentials(c: &Common) -> Result<caldera_client::ClientCredentials> {
    if c.insecure {
        return Ok(caldera_client::ClientCredentials::Insecure);
    }
    anyhow::Context::with_context(
        caldera_client::ClientCredentials::from_dir(&c.keys, &c.key_name),
        || {
            format!(
                "reading the client key {name}.key_secret and server.key in {dir} (make them with \
             `caldera init {dir}`, point --keys at yours, or use --insecure for a node run with \
             --insecure)",
                name = c.key_name,
                dir = c.keys.display()
            )
        },
    )
}

fn spec(c: &Common, mode: Mode, warmup: bool) -> Result<RunSpec> {
    Ok(RunSpec {
        endpoints: c.endpoints.clone(),
        connections: c.connections.max(1),
        threads: c.threads.max(1),
        mode,
        duration: c.duration,
        warmup_orders: if warmup { c.warmup_orders } else { 0 },
        batch: c.batch.max(1),
        flow: FlowParams {
            seed: c.seed,
            symbols: c.symbols.max(1),
            base_price: c.base_price,
            client_id_base: next_client_id_base(),
        },
        account_base: c.account_base,
        credentials: credentials(c)?,
        coalesce: c.coalesce,
        frame_gap: c.frame_gap,
    })
}

/// Reads the server's metrics (and this process's CPU) when the measured window starts and
/// when it ends.
fn sample_cost(
    url: Option<cost::MetricsUrl>,
    progress: &Arc<Progress>,
    window: Duration,
) -> Option<std::thread::JoinHandle<Result<(cost::Reading, cost::Reading)>>> {
    let url = url?;
    let p = Arc::clone(progress);
    p.hold.store(true, Ordering::Release);
    Some(std::thread::spawn(move || {
        while !p.started.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let readings = (|| {
            let a = cost::read(&url)?;
            std::thread::sleep(window.saturating_sub(a.at.map_or(Duration::ZERO, |t| t.elapsed())));
            let b = cost::read(&url)?;
            Ok((a, b))
        })();
        p.hold.store(false, Ordering::Release);
        readings
    }))
}

fn run_with_progress(
    s: &RunSpec,
    show: bool,
    metrics: Option<cost::MetricsUrl>,
) -> Result<(RunResult, Option<cost::Cost>)> {
    let progress = Arc::new(Progress::default());
    let sampler = sample_cost(metrics, &progress, s.duration);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bar = show.then(|| {
        let p = Arc::clone(&progress);
        let d = Arc::clone(&done);
        let total = s.duration.as_secs_f64();
        std::thread::spawn(move || {
            let pb = indicatif::ProgressBar::new((total * 10.0) as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                    .expect("template"),
            );
            while !p.started.load(Ordering::Relaxed) && !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let t0 = Instant::now();
            let mut last = (0u64, Instant::now());
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let a = p.answered.load(Ordering::Relaxed);
                let rate = (a - last.0) as f64 / last.1.elapsed().as_secs_f64();
                last = (a, Instant::now());
                pb.set_position((t0.elapsed().as_secs_f64() * 10.0) as u64);
                pb.set_message(format!("{rate:>10.0} req/s  answered {a}"));
            }
            pb.finish_and_clear();
        })
    });
    let r = driver::run(s, &progress);
    done.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    let r = r?;
    let cost = match sampler {
        Some(h) => {
            let (a, b) = h
                .join()
                .map_err(|_| anyhow::anyhow!("metrics sampler panicked"))??;
            Some(cost::Cost::between(&a, &b, r.answered))
        }
        None => None,
    };
    Ok((r, cost))
}

fn json_of(
    label: &str,
    r: &RunResult,
    echo: Option<&echo::EchoResult>,
    cost: Option<&cost::Cost>,
) -> serde_json::Value {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let lat: serde_json::Map<String, serde_json::Value> = report::percentiles(&r.latency)
        .into_iter()
        .map(|(n, v)| (format!("{n}_us"), serde_json::json!(v as f64 / 1000.0)))
        .collect();
    let mut j = serde_json::json!({
        "mode": label,
        "duration_s": secs,
        "orders_per_s": r.orders as f64 / secs,
        "requests_per_s": r.rate(),
        "messages_per_s": (r.frames_out + r.frames_in) as f64 / secs,
        "reports_per_s": r.reports as f64 / secs,
        "sent": r.sent, "answered": r.answered, "fills": r.fills,
        "engine_rejects": r.rejects, "unknown_order_rejects": r.unknown_order_rejects,
        "gateway_rejects": r.gateway_rejects, "unanswered": r.unanswered,
        "latency": lat,
    });
    if let Some(e) = echo {
        j["echo_requests_per_s"] = serde_json::json!(e.requests_per_sec);
        j["echo_frames_per_s"] = serde_json::json!(e.frames_per_sec);
        j["ratio_to_echo"] = serde_json::json!(r.rate() / e.requests_per_sec);
        let ep = report::percentiles(&e.latency);
        let mine = report::percentiles(&r.latency);
        j["echo_latency"] = serde_json::json!({
            "p50_us": ep[0].1 as f64 / 1000.0, "p90_us": ep[1].1 as f64 / 1000.0,
            "p99_us": ep[2].1 as f64 / 1000.0,
        });
        j["latency_ratio_to_echo"] = serde_json::json!({
            "p50": mine[0].1 as f64 / ep[0].1.max(1) as f64,
            "p99": mine[2].1 as f64 / ep[2].1.max(1) as f64,
        });
    }
    if let Some(c) = cost {
        j["cost"] = serde_json::to_value(c).unwrap_or_default();
    }
    j
}

/// The load a run had, for its echo baseline.
#[derive(Clone, Copy)]
enum Shape {
    /// Closed loop with this window per connection.
    Closed(usize),
    /// Open loop at this total rate.
    Open(f64),
}

fn finish(
    c: &Common,
    label: &str,
    r: &RunResult,
    cost: Option<&cost::Cost>,
    shape: Shape,
) -> Result<()> {
    let echo = if c.echo_baseline {
        let ctx = zmq::Context::new();
        let (server, creds) = echo::keys(!c.insecure)?;
        let (ep, stop, h) = echo::start_server(&ctx, server.as_ref())?;
        let d = c.duration.min(Duration::from_secs(5));
        let e = match shape {
            Shape::Closed(window) => echo::run(&ep, &creds, c.connections, window, c.batch, d)?,
            Shape::Open(rate) => echo::run_open(&ep, &creds, c.connections, rate, d)?,
        };
        stop.store(true, Ordering::Relaxed);
        let _ = h.join();
        Some((e, shape))
    } else {
        None
    };
    let mut text = report::table(
        &format!(
            "{label}: {} connections, {} thread(s), batch {}, {:?}, seed {}",
            c.connections, c.threads, c.batch, c.duration, c.seed
        ),
        r,
    );
    match &echo {
        Some((e, Shape::Closed(_))) => {
            let p = report::percentiles(&e.latency);
            text.push_str(&format!(
                "raw ZeroMQ ROUTER/DEALER echo, same connections/window/batch: {:.0} request-equivalents/s ({:.0} frames/s), frame RTT p50 {} µs p99 {} µs\n",
                e.requests_per_sec, e.frames_per_sec, report::us(p[0].1), report::us(p[2].1)
            ));
            text.push_str(&format!(
                "ratio gateway / echo ceiling: {:.2}\n",
                r.rate() / e.requests_per_sec
            ));
        }
        Some((e, Shape::Open(rate))) => {
            let p = report::percentiles(&e.latency);
            let mine = report::percentiles(&r.latency);
            text.push_str(&format!(
                "raw ZeroMQ ROUTER/DEALER echo, open loop at {rate:.0}/s, same connections: p50 {} µs p90 {} µs p99 {} µs\n",
                report::us(p[0].1), report::us(p[1].1), report::us(p[2].1)
            ));
            text.push_str(&format!(
                "latency ratio gateway / echo: p50 {:.2}  p99 {:.2}\n",
                mine[0].1 as f64 / p[0].1.max(1) as f64,
                mine[2].1 as f64 / p[2].1.max(1) as f64
            ));
        }
        None => {}
    }
    if let Some(cost) = cost {
        text.push_str(&cost.describe());
    }
    if c.json {
        eprint!("{text}");
        println!("{}", json_of(label, r, echo.as_ref().map(|(e, _)| e), cost));
    } else {
        print!("{text}");
    }
    if let Some(p) = &c.hist_log {
        report::write_hist_log(p, &r.latency, r.elapsed.as_secs_f64())?;
    }
    if let Some(p) = &c.plot {
        let mut series = vec![(label, &r.latency)];
        if let Some((e, _)) = &echo {
            series.push(("raw ZeroMQ echo (frame RTT)", &e.latency));
        }
        report::write_plot(p, &series)?;
    }
    check_expectations(c, r)
}

fn check_expectations(c: &Common, r: &RunResult) -> Result<()> {
    if let Some(min) = c.expect_rps {
        if r.rate() < min {
            bail!("expectation missed: {:.0} requests/s < {min:.0}", r.rate());
        }
    }
    if let Some(max) = c.expect_p99 {
        let p99 = Duration::from_nanos(r.latency.value_at_quantile(0.99));
        if p99 > max {
            bail!("expectation missed: p99 {p99:?} > {max:?}");
        }
    }
    if r.answered == 0 {
        bail!("no request was answered");
    }
    Ok(())
}

fn check(c: &Common) -> bool {
    if c.check {
        println!(
            "{{\"ok\":true,\"endpoints\":{:?},\"connections\":{},\"duration_s\":{}}}",
            c.endpoints,
            c.connections,
            c.duration.as_secs_f64()
        );
    }
    c.check
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Closed { common, .. } | Cmd::Open { common, .. } | Cmd::Sweep { common, .. } =
        &cli.cmd
    {
        if check(common) {
            return Ok(());
        }
    }
    match cli.cmd {
        Cmd::Closed { common, window } => {
            let show = common.progress || std::io::stderr().is_terminal();
            let (r, cost) = run_with_progress(
                &spec(&common, Mode::Closed { window }, true)?,
                show,
                common.server_metrics.clone(),
            )?;
            finish(
                &common,
                &format!("closed loop, window {window}"),
                &r,
                cost.as_ref(),
                Shape::Closed(window),
            )
        }
        Cmd::Open { common, rate } => {
            let show = common.progress || std::io::stderr().is_terminal();
            let (r, cost) = run_with_progress(
                &spec(&common, Mode::Open { rate }, true)?,
                show,
                common.server_metrics.clone(),
            )?;
            finish(
                &common,
                &format!("open loop at {rate:.0} requests/s"),
                &r,
                cost.as_ref(),
                Shape::Open(rate),
            )
        }
        Cmd::Sweep {
            common,
            start,
            factor,
            max_p99,
            min_attainment,
            max_steps,
        } => sweep(&common, start, factor, max_p99, min_attainment, max_steps),
        Cmd::Echo {
            connections,
            window,
            batch,
            duration,
            curve,
        } => {
            let ctx = zmq::Context::new();
            let (server, creds) = echo::keys(curve)?;
            let (ep, stop, h) = echo::start_server(&ctx, server.as_ref())?;
            let e = echo::run(&ep, &creds, connections, window, batch, duration)?;
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
            let p = report::percentiles(&e.latency);
            println!("raw ZeroMQ ROUTER/DEALER echo: {connections} connections, window {window}, batch {batch}");
            println!(
                "  {:.0} request-equivalents/s, {:.0} frames/s",
                e.requests_per_sec, e.frames_per_sec
            );
            print!("  frame RTT µs ");
            for (n, v) in p {
                print!(" {n} {}", report::us(v));
            }
            println!();
            Ok(())
        }
    }
}

fn sweep(
    c: &Common,
    start: f64,
    factor: f64,
    max_p99: Duration,
    min_att: f64,
    max_steps: usize,
) -> Result<()> {
    let mut rows = Vec::new();
    let mut rate = start;
    for step in 0..max_steps {
        let r = driver::run(
            &spec(c, Mode::Open { rate }, step == 0)?,
            &Arc::new(Progress::default()),
        )?;
        let achieved = r.rate();
        let p = report::percentiles(&r.latency);
        let p99 = Duration::from_nanos(p[2].1);
        eprintln!("step {step}: target {rate:.0}/s achieved {achieved:.0}/s p99 {p99:?}");
        let broke = achieved < rate * min_att || p99 > max_p99;
        rows.push((rate, achieved, p, broke));
        if broke {
            break;
        }
        rate *= factor;
    }
    let mut out = String::from("target/s   achieved/s        p50        p90        p99      p99.9     p99.99        max   (µs)\n");
    for (t, a, p, broke) in &rows {
        out.push_str(&format!("{t:>9.0} {a:>12.0}"));
        for (_, v) in p {
            out.push_str(&format!(" {:>10}", report::us(*v)));
        }
        out.push_str(if *broke { "   <- broke\n" } else { "\n" });
    }
    if c.json {
        eprint!("{out}");
        let j: Vec<_> = rows.iter().map(|(t, a, p, b)| {
            let lat: serde_json::Map<String, serde_json::Value> = p.iter().map(|(n, v)| (format!("{n}_us"), serde_json::json!(*v as f64 / 1000.0))).collect();
            serde_json::json!({"target_per_s": t, "achieved_per_s": a, "latency": lat, "broke": b})
        }).collect();
        println!("{}", serde_json::json!({"sweep": j}));
    } else {
        print!("{out}");
    }
    Ok(())
}
