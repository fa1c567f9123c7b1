//! The raw ZeroMQ ceiling: a ROUTER that echoes every frame, driven by DEALERs with the same
//! connections, window and batching as a gateway run, in the same process and run.

use anyhow::Result;
use caldera_auth::{Certificate, ClientCredentials, ServerKeys};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Echo results.
pub struct EchoResult {
    /// Round trips of frames per second.
    pub frames_per_sec: f64,
    /// Request-equivalents per second (frames × batch).
    pub requests_per_sec: f64,
    /// Frame round-trip latency (ns).
    pub latency: Histogram<u64>,
}

/// Starts an echo ROUTER on a free 127.0.0.1 port; returns its endpoint and a stop flag.
///
/// # Errors
/// Socket errors.
pub fn start_server(
    ctx: &zmq::Context,
    curve: Option<&ServerKeys>,
) -> Result<(String, Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let router = ctx.socket(zmq::ROUTER)?;
    // Frames still queued when the measurement ends are dropped: nobody reads them any more,
    // and a lingering socket would make the context's termination wait for them forever.
    router.set_linger(0)?;
    if let Some(k) = curve {
        k.apply(&router)?;
    }
    router.set_sndhwm(1_000_000)?;
    router.set_rcvhwm(1_000_000)?;
    router.bind("tcp://127.0.0.1:*")?;
    let ep = router
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("endpoint"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let mut id = zmq::Message::new();
        let mut body = zmq::Message::new();
        while !s.load(Ordering::Relaxed) {
            if router.poll(zmq::POLLIN, 50).unwrap_or(0) == 0 {
                continue;
            }
            while router.recv(&mut id, zmq::DONTWAIT).is_ok() {
                if router.recv(&mut body, 0).is_err() {
                    break;
                }
                let _ = router.send(&*id, zmq::SNDMORE);
                let _ = router.send(&*body, 0);
            }
        }
    });
    Ok((ep, stop, h))
}

/// Closed-loop echo: `connections` DEALERs, `window` requests in flight each, `batch` request
/// equivalents (64 bytes each, like an encoded order) per frame.
///
/// # Errors
/// Socket errors.
pub fn run(
    endpoint: &str,
    credentials: &ClientCredentials,
    connections: usize,
    window: usize,
    batch: usize,
    duration: Duration,
) -> Result<EchoResult> {
    let ctx = zmq::Context::new();
    let frame_window = window.div_ceil(batch).max(1);
    let mut socks = Vec::new();
    for _ in 0..connections {
        let s = ctx.socket(zmq::DEALER)?;
        s.set_linger(0)?; // see start_server
        s.set_sndhwm(1_000_000)?;
        s.set_rcvhwm(1_000_000)?;
        credentials.apply(&s)?;
        s.connect(endpoint)?;
        socks.push(s);
    }
    let payload = vec![0x5au8; 64 * batch];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let t0 = Instant::now();
    let mut inflight: Vec<std::collections::VecDeque<Instant>> =
        vec![Default::default(); connections];
    let mut frames = 0u64;
    let mut msg = zmq::Message::new();
    while t0.elapsed() < duration {
        for (i, s) in socks.iter().enumerate() {
            while inflight[i].len() < frame_window {
                if s.send(&payload[..], zmq::DONTWAIT).is_err() {
                    break;
                }
                inflight[i].push_back(Instant::now());
            }
            while s.recv(&mut msg, zmq::DONTWAIT).is_ok() {
                if let Some(t) = inflight[i].pop_front() {
                    let _ = hist.record(
                        u64::try_from(t.elapsed().as_nanos())
                            .unwrap_or(u64::MAX)
                            .max(1),
                    );
                    frames += 1;
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let fps = frames as f64 / secs;
    Ok(EchoResult {
        frames_per_sec: fps,
        requests_per_sec: fps * batch as f64,
        latency: hist,
    })
}

/// Open-loop echo: `connections` DEALERs, each sending one 64-byte request-equivalent per
/// planned time at `rate` requests/s in total; latency from each planned time, the way the
/// gateway's open loop measures it. Waits like the load driver (no spinning), so the two
/// compare the same client side.
///
/// # Errors
/// Socket errors.
pub fn run_open(
    endpoint: &str,
    credentials: &ClientCredentials,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Result<EchoResult> {
    let ctx = zmq::Context::new();
    let mut socks = Vec::new();
    for _ in 0..connections {
        let s = ctx.socket(zmq::DEALER)?;
        s.set_linger(0)?; // see start_server
        s.set_sndhwm(1_000_000)?;
        s.set_rcvhwm(1_000_000)?;
        credentials.apply(&s)?;
        s.connect(endpoint)?;
        socks.push(s);
    }
    // Let the connections complete before the clock starts.
    std::thread::sleep(Duration::from_millis(200));
    let payload = [0x5au8; 64];
    let interval = 1e9 * connections as f64 / rate.max(1.0);
    let mut next: Vec<f64> = (0..connections)
        .map(|i| i as f64 * interval / connections as f64)
        .collect();
    let mut inflight: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); connections];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut waiter = crate::wait::Waiter::new()?;
    let mut msg = zmq::Message::new();
    let mut frames = 0u64;
    let t0 = Instant::now();
    let end = duration.as_nanos() as f64;
    let now_ns = || t0.elapsed().as_nanos() as u64;
    loop {
        let now = now_ns() as f64;
        let sending = now < end;
        if !sending && inflight.iter().all(std::collections::VecDeque::is_empty) {
            break;
        }
        if !sending && now > end + 5e9 {
            break;
        }
        let mut progressed = false;
        for (i, s) in socks.iter().enumerate() {
            while sending && next[i] <= now {
                if s.send(&payload[..], zmq::DONTWAIT).is_err() {
                    break;
                }
                inflight[i].push_back(next[i] as u64);
                next[i] += interval;
                progressed = true;
            }
            while s.recv(&mut msg, zmq::DONTWAIT).is_ok() {
                if let Some(planned) = inflight[i].pop_front() {
                    let _ = hist.record(now_ns().saturating_sub(planned).max(1));
                    frames += 1;
                }
                progressed = true;
            }
        }
        if !progressed {
            let due = sending
                .then(|| next.iter().fold(f64::MAX, |a, b| a.min(*b)))
                .map(|t| (t as u64).saturating_sub(now_ns()));
            waiter.wait(socks.iter(), due)?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let fps = frames as f64 / secs;
    Ok(EchoResult {
        frames_per_sec: fps,
        requests_per_sec: fps,
        latency: hist,
    })
}

/// Keys for an echo baseline that pays what the gateway's clients pay: with `curve`, a fresh
/// server key pair and client key pair (the echo server admits any key; no ZAP handler).
///
/// # Errors
/// When libzmq cannot generate keys.
pub fn keys(curve: bool) -> Result<(Option<ServerKeys>, ClientCredentials)> {
    if !curve {
        return Ok((None, ClientCredentials::Insecure));
    }
    let server = ServerKeys::generate()?;
    let client = Certificate::generate()?;
    let creds = ClientCredentials::Curve {
        public: client.public,
        secret: client.secret.expect("generated with its secret"),
        server: server.public,
    };
    Ok((Some(server), creds))
}
