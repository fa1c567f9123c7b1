//! The file journal under the real binary: kill -9 under load, then replay and restart.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{Side, TimeInForce};
use caldera_client::{OrderClient, ServerReport};
use caldera_testkit::harness::{caldera, Node};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[test]
fn kill_9_under_load_then_replay_and_restart_lose_nothing_reported() {
    let node = Node::start("kill9", "");
    let journal = node.journal.clone();
    let uri = format!("file://{}", journal.display());
    let ctx = zmq::Context::new();
    let n = 3;
    let mut clients: Vec<OrderClient> = (0..n).map(|_| node.client(&ctx)).collect();
    let mut reports: Vec<Vec<ServerReport>> = vec![Vec::new(); n];
    for (i, c) in clients.iter_mut().enumerate() {
        c.push(requests::logon(i as u32 + 1));
        c.flush().unwrap();
    }
    let mut next = vec![0u64; n];
    let start = Instant::now();
    let mut killed = false;
    while start.elapsed() < Duration::from_secs(4) {
        for (i, c) in clients.iter_mut().enumerate() {
            for _ in 0..40 {
                next[i] += 1;
                let side = if next[i] % 2 == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let price = 1000 + (next[i] * 5 + i as u64) % 7;
                c.push(limit(
                    next[i],
                    1 + (next[i] % 2) as u32,
                    side,
                    TimeInForce::Gtc,
                    price,
                    1 + next[i] % 9,
                ));
            }
            let _ = c.try_flush();
            while c.try_recv(&mut reports[i]).unwrap_or(0) > 0 {}
        }
        if !killed && start.elapsed() > Duration::from_millis(1500) {
            node.signal(rustix::process::Signal::KILL);
            killed = true;
        }
    }
    // Everything the clients received before the kill.
    for (i, c) in clients.iter_mut().enumerate() {
        while c
            .recv(&mut reports[i], Duration::from_millis(200))
            .unwrap_or(0)
            > 0
        {}
    }
    drop(node);

    // Replay rebuilds the state; every report a client saw is in the journal, same order id.
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    let last_seq = replay["last_seq"].as_u64().unwrap();
    assert!(last_seq > 1000, "load was real: {replay}");
    let dump = caldera(&["journal", "dump", "--journal", &uri]);
    let mut by_seq: HashMap<u64, serde_json::Value> = HashMap::new();
    for line in dump.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_seq.insert(v["seq"].as_u64().unwrap(), v);
    }
    assert_eq!(
        by_seq.len() as u64,
        last_seq,
        "dump has every event 1..=last_seq"
    );
    let mut checked = 0;
    for (i, reps) in reports.iter().enumerate() {
        for r in reps {
            let (seq, oid, kind) = match r {
                ServerReport::Accepted(a) => (a.engine_seq(), a.order_id(), "accepted"),
                ServerReport::Fill(f) => (f.engine_seq(), f.order_id(), "trade"),
                ServerReport::Done(d) => (d.engine_seq(), d.order_id(), "done"),
                _ => continue,
            };
            let ev = by_seq.get(&seq).unwrap_or_else(|| {
                panic!("client {i} was told about seq {seq} but the journal ends at {last_seq}")
            });
            assert_eq!(ev["type"], kind);
            let matches = ev["order_id"].as_u64() == Some(oid)
                || ev["maker_order_id"].as_u64() == Some(oid)
                || ev["taker_order_id"].as_u64() == Some(oid);
            assert!(matches, "seq {seq}: {ev} vs order {oid}");
            checked += 1;
        }
    }
    assert!(
        checked > 1000,
        "clients saw reports before the kill: {checked}"
    );

    // Restart on the same journal: it recovers to the same state.
    let node = Node::start_on("kill9-restart", "", &journal);
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["recovered_seq"].as_u64(), Some(last_seq));
    assert_eq!(summary["state_hash"], replay["state_hash"]);
    // And a full replay without snapshots agrees with the snapshot-based one.
    let full: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri, "--no-snapshot"]).trim())
            .unwrap();
    assert_eq!(full["state_hash"], replay["state_hash"]);
}

#[test]
fn retention_deletes_old_segments_behind_snapshots_and_state_still_recovers() {
    let toml = "[journal]\nsegment_bytes = 65536\nsnapshot_every_events = 20000\nretention_bytes = 262144\n";
    let node = Node::start("retention", toml);
    let journal = node.journal.clone();
    let uri = format!("file://{}", journal.display());
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(7));
    let total = 12_000u64;
    let answered = |r: &[ServerReport]| {
        r.iter()
            .filter(|x| matches!(x, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
            .count() as u64
    };
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered(&reports) < total {
        assert!(Instant::now() < deadline);
        while n < total && n < answered(&reports) + 1000 {
            n += 1;
            let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
            c.push(limit(n, 1, side, TimeInForce::Gtc, 1000 + n % 9, 1 + n % 5));
        }
        c.flush().unwrap();
        c.recv(&mut reports, Duration::from_millis(50)).unwrap();
    }
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert!(summary["snapshots"].as_u64().unwrap() >= 2, "{summary}");
    let segs: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .collect();
    let bytes: u64 = segs.iter().map(|e| e.metadata().unwrap().len()).sum();
    let first: u64 = segs
        .iter()
        .filter_map(|e| e.path().file_stem()?.to_str()?.parse().ok())
        .min()
        .unwrap();
    assert!(first > 1, "the oldest segments were deleted");
    assert!(
        bytes <= 262_144 + 2 * 65_536 + 200_000,
        "log kept near its limit: {bytes} bytes"
    );
    // The state still recovers (snapshot + the segments after it).
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(replay["state_hash"], summary["state_hash"]);
}

#[test]
fn a_mass_cancel_larger_than_a_journal_batch_goes_through() {
    // 20,000 resting orders then one mass cancel: 40,000+ events from a single command, more
    // than the journal's batch cap (2 × 16,384 items) — the batch must stretch, not stall.
    let node = Node::start("masscancel", "");
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(3));
    let total = 20_000u64;
    let accepted = |r: &[ServerReport]| {
        r.iter()
            .filter(|x| matches!(x, ServerReport::Accepted(_)))
            .count() as u64
    };
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted(&reports) < total {
        assert!(
            Instant::now() < deadline,
            "only {} accepted",
            accepted(&reports)
        );
        while n < total && n < accepted(&reports) + 2000 {
            n += 1;
            c.push(limit(n, 1, Side::Buy, TimeInForce::Gtc, 1000 - n % 500, 1));
        }
        c.flush().unwrap();
        c.recv(&mut reports, Duration::from_millis(50)).unwrap();
    }
    c.push(requests::mass_cancel(None));
    c.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        c.recv(&mut reports, Duration::from_millis(100)).unwrap();
        if let Some(ServerReport::MassCancelled(m)) = reports
            .iter()
            .find(|r| matches!(r, ServerReport::MassCancelled(_)))
        {
            break m.count();
        }
        assert!(
            Instant::now() < deadline,
            "mass cancel never answered (journal stalled?)"
        );
    };
    assert_eq!(u64::from(done), total);
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["live_orders"], 0);
}

#[test]
fn damage_in_the_middle_stops_start_up_and_verify_then_repair_recover_the_log_before_it() {
    let toml = "[journal]\nsegment_bytes = 16384\nsnapshot_every_events = 0\n";
    let node = Node::start("midlog", toml);
    let journal = node.journal.clone();
    let uri = format!("file://{}", journal.display());
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(4));
    for n in 1..=3000u64 {
        c.push(limit(n, 4, Side::Buy, TimeInForce::Gtc, 1000 - n % 500, 1));
        if n % 100 == 0 {
            c.flush().unwrap();
            c.recv(&mut reports, Duration::from_millis(5)).unwrap();
        }
    }
    c.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reports
        .iter()
        .filter(|r| matches!(r, ServerReport::Accepted(_)))
        .count()
        < 3000
    {
        assert!(Instant::now() < deadline);
        c.recv(&mut reports, Duration::from_millis(50)).unwrap();
    }
    let (code, _, _) = node.stop();
    assert_eq!(code, 0);
    let mut segs: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{segs:?}");
    let victim = &segs[1];
    let mut b = std::fs::read(victim).unwrap();
    b[3000] ^= 0x20;
    std::fs::write(victim, &b).unwrap();

    // Start-up refuses and names the operator commands; nothing is renamed.
    let mut serve = std::process::Command::new(caldera_testkit::harness::caldera_bin())
        .args(["serve", "--insecure", "--journal", &uri])
        .args([
            "--order-entry",
            "tcp://127.0.0.1:0",
            "--market-data",
            "tcp://127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("the node started on a damaged journal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = serve.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("journal damaged") && err.contains("caldera journal verify"),
        "{err}"
    );
    assert!(victim.exists());

    // verify: exit 1, the damaged place and the sequence it hides.
    let v = std::process::Command::new(caldera_testkit::harness::caldera_bin())
        .args(["journal", "verify", "--journal", &uri])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("DAMAGED"))
        .expect(&text);
    let seq: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(line.contains(&victim.display().to_string()), "{line}");

    // repair: prints what it drops; then the node starts on the log before it.
    let r = caldera(&[
        "journal",
        "repair",
        "--journal",
        &uri,
        "--truncate-at",
        &seq.to_string(),
    ]);
    assert!(r.contains(&format!("every sequence from {seq} on")), "{r}");
    assert!(r.contains("dropped: segment"), "{r}");
    let v = caldera(&["journal", "verify", "--journal", &uri]);
    assert!(v.contains("journal intact"), "{v}");
    let again = Node::start_on("midlog-again", "", &journal);
    let (code, summary, _) = again.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["last_seq"].as_u64().unwrap(), seq - 1);
}
