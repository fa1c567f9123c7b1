//! The real loadgen binary against the real `caldera` binary on 127.0.0.1.
use caldera_testkit::harness::{free_port, temp_dir, Node};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `caldera serve` for the loadgen to drive (its own journal: tests run in parallel).
fn server() -> Node {
    Node::start("loadgen", "")
}

fn loadgen(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caldera-loadgen"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn closed_loop_reports_json_and_expectations_fail_the_exit_code() {
    let s = server();
    let dir = temp_dir("loadgen-out");
    let plot = dir.join("lat.svg");
    let hlog = dir.join("lat.hlog");
    let (code, out, err) = loadgen(&[
        "closed",
        "--endpoint",
        &s.order_entry,
        "--keys",
        s.keys.dir.to_str().unwrap(),
        "--duration",
        "2s",
        "--connections",
        "2",
        "--window",
        "64",
        "--json",
        "--echo-baseline",
        "--plot",
        plot.to_str().unwrap(),
        "--hist-log",
        hlog.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(j["answered"].as_u64().unwrap() > 1000, "{j}");
    assert_eq!(j["gateway_rejects"], 0);
    assert_eq!(j["unanswered"], 0);
    assert!(
        j["orders_per_s"].as_f64().unwrap() > 0.0 && j["messages_per_s"].as_f64().unwrap() > 0.0
    );
    assert!(j["latency"]["p99_us"].as_f64().unwrap() >= j["latency"]["p50_us"].as_f64().unwrap());
    assert!(j["ratio_to_echo"].as_f64().unwrap() > 0.0);
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    assert!(std::fs::read_to_string(&hlog)
        .unwrap()
        .contains("caldera-loadgen"));
    assert!(
        err.contains("latency µs"),
        "the human table goes to stderr with --json"
    );

    let (code, _, err) = loadgen(&[
        "closed",
        "--endpoint",
        &s.order_entry,
        "--keys",
        s.keys.dir.to_str().unwrap(),
        "--duration",
        "1s",
        "--expect-rps",
        "1e12",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("expectation missed"), "{err}");
    let (code, _, err) = loadgen(&[
        "closed",
        "--endpoint",
        &s.order_entry,
        "--keys",
        s.keys.dir.to_str().unwrap(),
        "--duration",
        "1s",
        "--expect-p99",
        "1ns",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("expectation missed"), "{err}");
}

#[test]
fn open_loop_holds_its_rate_and_a_stall_shows_up_as_latency() {
    let s = server();
    // Holds the target rate.
    let (code, out, err) = loadgen(&[
        "open",
        "--endpoint",
        &s.order_entry,
        "--keys",
        s.keys.dir.to_str().unwrap(),
        "--rate",
        "5000",
        "--duration",
        "2s",
        "--json",
        "--connections",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    // The schedule is kept whatever the machine's speed: every planned request is sent (late
    // ones are sent at once and their lateness counts as latency) and answered. (A rate
    // window would make this a timing test, flaky on a busy 2-core box.)
    let sent = j["sent"].as_u64().unwrap();
    assert!(
        (9_800..=10_100).contains(&sent),
        "sent {sent} requests for 5000/s over 2 s"
    );
    // ("answered" counts answers inside the measured window only; late ones still arrive.)
    assert_eq!(j["unanswered"].as_u64(), Some(0), "every request answered");

    // Stop the server for 300 ms in the middle of an open-loop run: requests planned during the
    // stall are answered late, and that lateness is measured from their planned send time.
    let lg = Command::new(env!("CARGO_BIN_EXE_caldera-loadgen"))
        .args([
            "open",
            "--endpoint",
            &s.order_entry,
            "--keys",
            s.keys.dir.to_str().unwrap(),
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--json",
            "--warmup-orders",
            "0",
            "--connections",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    s.signal(rustix::process::Signal::STOP);
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    s.signal(rustix::process::Signal::CONT);
    let stalled = t.elapsed();
    let out = lg.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let max_us = j["latency"]["max_us"].as_f64().unwrap();
    let p99_us = j["latency"]["p99_us"].as_f64().unwrap();
    assert!(
        max_us >= 0.9 * stalled.as_micros() as f64,
        "max {max_us} µs must include the {stalled:?} stall"
    );
    // About 10% of the requests were planned inside the stall, so p99 reflects it too.
    assert!(
        p99_us >= 50_000.0,
        "p99 {p99_us} µs hides the stall (coordinated omission)"
    );
}

#[test]
fn server_metrics_give_the_cpu_cost_of_a_request_on_both_sides() {
    let metrics = format!("127.0.0.1:{}", free_port());
    // The engine on its own thread, so that its CPU is told apart (on the gateway's thread,
    // the default on small machines, it is the gateway's).
    let s = Node::start(
        "loadgen-cost",
        &format!(
            "[metrics]\nlisten = \"{metrics}\"\n[threads]\nwait = \"park\"\nengine = \"own\"\n"
        ),
    );
    let (code, out, err) = loadgen(&[
        "closed",
        "--endpoint",
        &s.order_entry,
        "--keys",
        s.keys.dir.to_str().unwrap(),
        "--duration",
        "2s",
        "--connections",
        "2",
        "--window",
        "64",
        "--json",
        "--server-metrics",
        &format!("http://{metrics}/metrics"),
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let cost = &j["cost"];
    let server = cost["server_us_per_request"].as_f64().unwrap();
    let by_thread = cost["server_us_per_request_by_thread"].as_object().unwrap();
    assert!(server > 0.0, "{cost}");
    for t in ["gateway", "engine", "journal", "zmq-io"] {
        assert!(
            by_thread
                .get(t)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
                > 0.0,
            "no {t} CPU in {cost}"
        );
    }
    let threads: f64 = by_thread
        .values()
        .filter_map(serde_json::Value::as_f64)
        .sum();
    // Live threads only, so at most the process total (plus rounding).
    assert!(threads <= server * 1.05 + 0.01, "{cost}");
    assert!(
        cost["loadgen_us_per_request"].as_f64().unwrap() > 0.0,
        "{cost}"
    );
    assert!(cost["server_cores"].as_f64().unwrap() > 0.0, "{cost}");
    assert!(err.contains("server CPU per answered request"), "{err}");
}
