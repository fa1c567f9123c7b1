//! What a request costs in CPU: the server's (read from its `/metrics` before and after the
//! measured window: `process_cpu_seconds_total` and `caldera_thread_cpu_seconds_total` by
//! thread) and the load generator's own (from the kernel), per answered request.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One reading of the server's metrics and this process's CPU.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Server: total CPU seconds.
    pub server_cpu: f64,
    /// Server: CPU seconds by thread role.
    pub server_threads: BTreeMap<String, f64>,
    /// Server: resident memory.
    pub server_rss: f64,
    /// Server: histograms (name{le} → cumulative count) for latency by stage.
    pub histograms: BTreeMap<String, Vec<(f64, f64)>>,
    /// Loadgen: total CPU.
    pub own_cpu: Duration,
    /// Loadgen: CPU by thread name.
    pub own_threads: BTreeMap<String, Duration>,
    /// When.
    pub at: Option<Instant>,
}

/// Where the server's metrics are: `http://HOST:PORT/metrics`, `HOST:PORT/metrics` or
/// `HOST:PORT`.
#[derive(Debug, Clone)]
pub struct MetricsUrl {
    addr: String,
    path: String,
}

impl std::str::FromStr for MetricsUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("http://").unwrap_or(s);
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!(
                "bad metrics URL {s:?}: use http://HOST:PORT/metrics"
            ));
        }
        Ok(Self {
            addr: addr.into(),
            path: path.into(),
        })
    }
}

/// Reads the server's metrics and this process's CPU now.
///
/// # Errors
/// When the server's metrics cannot be fetched.
pub fn read(url: &MetricsUrl) -> Result<Reading> {
    let own_cpu = process_cpu();
    let own_threads = own_threads();
    let body = http_get(url)?;
    let mut r = Reading {
        own_cpu,
        own_threads,
        at: Some(Instant::now()),
        ..Reading::default()
    };
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (key, ""),
        };
        match name {
            "process_cpu_seconds_total" => r.server_cpu = v,
            "process_resident_memory_bytes" => r.server_rss = v,
            "caldera_thread_cpu_seconds_total" => {
                if let Some(t) = label(labels, "thread") {
                    r.server_threads.insert(t.to_string(), v);
                }
            }
            n if n.ends_with("_bucket") => {
                let le = label(labels, "le")
                    .map_or(f64::INFINITY, |x| x.parse().unwrap_or(f64::INFINITY));
                let base = n.trim_end_matches("_bucket");
                let key = match label(labels, "stage") {
                    Some(stage) => format!("{base}{{stage={stage}}}"),
                    None => base.to_string(),
                };
                r.histograms.entry(key).or_default().push((le, v));
            }
            _ => {}
        }
    }
    if r.server_cpu == 0.0 {
        bail!("no process_cpu_seconds_total in the server's metrics");
    }
    Ok(r)
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

fn http_get(url: &MetricsUrl) -> Result<String> {
    let mut conn = std::net::TcpStream::connect(&url.addr)
        .with_context(|| format!("connecting to the server's metrics at {}", url.addr))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.addr
    )?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    let (head, body) = body
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer from the metrics endpoint")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "metrics endpoint answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_string())
}

fn process_cpu() -> Duration {
    caldera_pipeline::cpu::process_cpu()
}

fn own_threads() -> BTreeMap<String, Duration> {
    let pid = caldera_pipeline::cpu::pid();
    let mut m = BTreeMap::new();
    for t in caldera_pipeline::cpu::threads() {
        let role = if t.tid == pid {
            "main".to_string()
        } else if t.name.starts_with("loadgen-zmq-io") || t.name.starts_with("ZMQbg/IO") {
            "zmq-io".to_string()
        } else if t.name.starts_with("loadgen-") {
            "driver".to_string()
        } else {
            "other".to_string()
        };
        *m.entry(role).or_default() += t.cpu;
    }
    m
}

/// CPU per answered request over a window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cost {
    /// Server CPU µs per answered request.
    pub server_us_per_request: f64,
    /// Server CPU µs per answered request, by thread role.
    pub server_us_per_request_by_thread: BTreeMap<String, f64>,
    /// Server cores used (CPU seconds / wall seconds).
    pub server_cores: f64,
    /// Server resident memory at the end, MiB.
    pub server_rss_mib: f64,
    /// Loadgen CPU µs per answered request.
    pub loadgen_us_per_request: f64,
    /// Loadgen CPU µs per answered request, by thread role.
    pub loadgen_us_per_request_by_thread: BTreeMap<String, f64>,
    /// Loadgen cores used.
    pub loadgen_cores: f64,
    /// Latency by pipeline stage from the server's histograms (µs at p50/p99, bucket upper
    /// bounds), for the window.
    pub server_stages: BTreeMap<String, StageLatency>,
}

/// A server-side latency histogram's quantiles over the window (bucket upper bounds, µs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageLatency {
    /// Observations in the window.
    pub count: f64,
    /// p50 upper bound, µs.
    pub p50_us: f64,
    /// p90 upper bound, µs.
    pub p90_us: f64,
    /// p99 upper bound, µs.
    pub p99_us: f64,
}

fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let want = q * total;
    buckets
        .iter()
        .find(|(_, c)| *c >= want && *c > 0.0)
        .map_or(f64::NAN, |(le, _)| *le * 1e6)
}

impl Cost {
    /// The cost between two readings for `answered` requests.
    #[must_use]
    pub fn between(a: &Reading, b: &Reading, answered: u64) -> Self {
        let n = answered.max(1) as f64;
        let wall = match (a.at, b.at) {
            (Some(x), Some(y)) => y.duration_since(x).as_secs_f64().max(1e-9),
            _ => 1e-9,
        };
        let server = b.server_cpu - a.server_cpu;
        let by_thread = b
            .server_threads
            .iter()
            .map(|(k, v)| {
                let before = a.server_threads.get(k).copied().unwrap_or(0.0);
                (k.clone(), (v - before) * 1e6 / n)
            })
            .collect();
        let own = b.own_cpu.saturating_sub(a.own_cpu).as_secs_f64();
        let own_by_thread = b
            .own_threads
            .iter()
            .map(|(k, v)| {
                let before = a.own_threads.get(k).copied().unwrap_or_default();
                (k.clone(), v.saturating_sub(before).as_secs_f64() * 1e6 / n)
            })
            .collect();
        let mut stages = BTreeMap::new();
        for (name, after) in &b.histograms {
            let before = a.histograms.get(name);
            let delta: Vec<(f64, f64)> = after
                .iter()
                .enumerate()
                .map(|(i, (le, c))| {
                    let c0 = before.and_then(|v| v.get(i)).map_or(0.0, |x| x.1);
                    (*le, c - c0)
                })
                .collect();
            let count = delta.last().map_or(0.0, |x| x.1);
            if count > 0.0 {
                stages.insert(
                    name.clone(),
                    StageLatency {
                        count,
                        p50_us: quantile(&delta, 0.5),
                        p90_us: quantile(&delta, 0.9),
                        p99_us: quantile(&delta, 0.99),
                    },
                );
            }
        }
        Self {
            server_us_per_request: server * 1e6 / n,
            server_us_per_request_by_thread: by_thread,
            server_cores: server / wall,
            server_rss_mib: b.server_rss / (1 << 20) as f64,
            loadgen_us_per_request: own * 1e6 / n,
            loadgen_us_per_request_by_thread: own_by_thread,
            loadgen_cores: own / wall,
            server_stages: stages,
        }
    }

    /// Lines for the human report.
    #[must_use]
    pub fn describe(&self) -> String {
        let by = |m: &BTreeMap<String, f64>| {
            m.iter()
                .filter(|(_, v)| **v >= 0.005)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "  server CPU per answered request  {:>9.2} µs  ({:.2} cores; {}), RSS {:.0} MiB\n  loadgen CPU per answered request {:>9.2} µs  ({:.2} cores; {})\n",
            self.server_us_per_request,
            self.server_cores,
            by(&self.server_us_per_request_by_thread),
            self.server_rss_mib,
            self.loadgen_us_per_request,
            self.loadgen_cores,
            by(&self.loadgen_us_per_request_by_thread),
        );
        for (name, st) in &self.server_stages {
            s.push_str(&format!(
                "  server {name}: n {:.0}  p50 ≤{:.0} µs  p90 ≤{:.0} µs  p99 ≤{:.0} µs\n",
                st.count, st.p50_us, st.p90_us, st.p99_us
            ));
        }
        s
    }
}
