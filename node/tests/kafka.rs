//! The Kafka journal against a real Kafka-protocol broker (tansu 0.6.0, installed by
//! scripts/test.sh) started on a free 127.0.0.1 port for each test.

use caldera_client::requests::{self, limit};
use caldera_client::wire::{self, Side, TimeInForce};
use caldera_client::{OrderClient, ServerReport};
use caldera_testkit::harness::{caldera, free_port, Broker, Keys, Node};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

fn kafka_toml(uri: &str) -> String {
    format!("[journal]\nuri = \"{uri}\"\nkafka_stall_ms = 500\n")
}

fn start_serve(tag: &str, uri: &str) -> Node {
    // The Kafka URI in the config overrides the harness's file journal (the flag is not used).
    Node::start_kafka(tag, &kafka_toml(uri))
}

#[test]
fn serve_kill_then_replay_from_kafka_gives_the_same_state_and_an_independent_consumer_decodes_everything(
) {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    let node = start_serve("kafka-kill", &uri);
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(1));
    // 3,000 crossing orders, pipelined with at most 500 unanswered.
    let total = 3000u64;
    let answered = |r: &[ServerReport]| {
        r.iter()
            .filter(|x| matches!(x, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
            .count() as u64
    };
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered(&reports) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} answered",
            answered(&reports)
        );
        while n < total && n < answered(&reports) + 500 {
            n += 1;
            let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
            c.push(limit(n, 1, side, TimeInForce::Gtc, 1000 + n % 5, 1 + n % 7));
        }
        c.flush().unwrap();
        c.recv(&mut reports, Duration::from_millis(50)).unwrap();
    }
    node.signal(rustix::process::Signal::KILL);
    drop(node);
    let acked: HashSet<u64> = reports
        .iter()
        .filter_map(|r| {
            if let ServerReport::Accepted(a) = r {
                Some(a.engine_seq())
            } else {
                None
            }
        })
        .collect();
    assert!(acked.len() > 2000, "acknowledged orders: {}", acked.len());

    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    let last = replay["last_seq"].as_u64().unwrap();
    assert!(
        acked.iter().all(|s| *s <= last),
        "an acknowledged event is missing from Kafka"
    );

    // A consumer written independently (Python, confluent-kafka + flatc output) decodes every event.
    let py = std::env::var("CALDERA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../clients/python/journal_consumer.py"
    );
    let out = Command::new(py)
        .args([
            script,
            "--kafka",
            &broker.addr,
            "--topic",
            "caldera.events",
            "--idle",
            "2",
            // Passed through to librdkafka like the node's [journal.kafka] properties.
            "--kafka-config",
            "security.protocol=plaintext",
            "--kafka-config",
            "client.id=caldera-journal-consumer",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events"].as_u64(), Some(last));
    assert_eq!(summary["last_seq"].as_u64(), Some(last));
    assert_eq!(summary["contiguous"], true);

    // A restarted node recovers from Kafka to the same state.
    let node = start_serve("kafka-restart", &uri);
    let (code, s, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(s["recovered_seq"].as_u64(), Some(last));
    assert_eq!(s["state_hash"], replay["state_hash"]);
}

#[test]
fn broker_absent_or_topic_missing_at_start_is_a_clear_error() {
    let dead = format!("kafka://127.0.0.1:{}/caldera.events", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args([
            "serve",
            "--order-entry",
            &format!("tcp://127.0.0.1:{}", free_port()),
            "--market-data",
            &format!("tcp://127.0.0.1:{}", free_port()),
            "--journal",
            &dead,
            "--keys",
            Keys::create("kafka-absent").dir.to_str().unwrap(),
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:"), "{err}");

    let broker = Broker::start("other.topic");
    let out = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args(["replay", "--journal", &broker.uri("missing.topic")])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn broker_outage_mid_run_holds_or_rejects_then_resumes_and_loses_nothing_acknowledged() {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    let node = start_serve("kafka-outage", &uri);
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(5));
    c.push(limit(1, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    let wait_for = |c: &mut OrderClient,
                    reports: &mut Vec<ServerReport>,
                    f: &dyn Fn(&ServerReport) -> bool,
                    secs: u64| {
        let d = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < d {
            if reports.iter().any(f) {
                return true;
            }
            c.recv(reports, Duration::from_millis(100)).unwrap();
        }
        reports.iter().any(f)
    };
    assert!(wait_for(
        &mut c,
        &mut reports,
        &|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 1),
        10
    ));

    // Freeze the broker: the next order is held (no acknowledgement)...
    broker.signal(rustix::process::Signal::STOP);
    c.push(limit(2, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    c.recv(&mut reports, Duration::from_millis(100)).unwrap();
    assert!(
        !reports
            .iter()
            .any(|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 2)),
        "acknowledged before Kafka had it"
    );
    // ...and new ones are rejected with a clear status while Kafka does not acknowledge.
    c.push(limit(3, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    assert!(
        wait_for(
            &mut c,
            &mut reports,
            &|r| matches!(r, ServerReport::Rejected(x) if x.client_order_id() == 3 && x.reason() == wire::RejectReason::JournalUnavailable),
            5
        ),
        "{reports:?}"
    );

    // Thaw: the held order is acknowledged and service resumes.
    broker.signal(rustix::process::Signal::CONT);
    assert!(
        wait_for(
            &mut c,
            &mut reports,
            &|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 2),
            60
        ),
        "held order never acknowledged"
    );
    let d = Instant::now() + Duration::from_secs(30);
    loop {
        c.push(limit(4, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
        c.flush().unwrap();
        if wait_for(
            &mut c,
            &mut reports,
            &|r| matches!(r, ServerReport::Accepted(a) if a.client_order_id() == 4),
            1,
        ) {
            break;
        }
        assert!(Instant::now() < d, "service did not resume: {reports:?}");
    }
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(
        replay["state_hash"], summary["state_hash"],
        "everything acknowledged is in Kafka"
    );
}

fn accepted(reports: &[ServerReport], id: u64) -> bool {
    reports
        .iter()
        .any(|x| matches!(x, ServerReport::Accepted(a) if a.client_order_id() == id))
}

/// A node whose order 1 is acknowledged, then the broker frozen, order 2 executed but not
/// durable, and SIGTERM sent: 3 s later (10× the linger) the node must still be draining, with
/// order 2 not acknowledged.
fn draining_during_an_outage(
    tag: &str,
    ctx: &zmq::Context,
) -> (Broker, String, Node, OrderClient, Vec<ServerReport>) {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    // A short linger: the node must wait for the journal past it, not give up at it.
    let mut node = Node::start_kafka(
        tag,
        &format!("shutdown_linger_ms = 300\n{}", kafka_toml(&uri)),
    );
    let mut c = node.client(ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(5));
    c.push(limit(1, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    let d = Instant::now() + Duration::from_secs(10);
    while !accepted(&reports, 1) && Instant::now() < d {
        c.recv(&mut reports, Duration::from_millis(100)).unwrap();
    }
    assert!(accepted(&reports, 1), "{reports:?}");

    broker.signal(rustix::process::Signal::STOP);
    c.push(limit(2, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    node.signal(rustix::process::Signal::TERM);
    assert_eq!(
        node.wait_exit(Duration::from_secs(3)),
        None,
        "exited while the journal could not make an executed order durable:\n{}",
        node.log()
    );
    c.recv(&mut reports, Duration::from_millis(100)).unwrap();
    assert!(
        !accepted(&reports, 2),
        "acknowledged before Kafka had it: {reports:?}\nnode log:\n{}\nbroker log:\n{}",
        node.log(),
        broker.log()
    );
    (broker, uri, node, c, reports)
}

#[test]
fn a_sigterm_during_a_broker_outage_waits_for_the_broker_then_reports_and_exits_0() {
    let ctx = zmq::Context::new();
    let (broker, uri, node, mut c, mut reports) =
        draining_during_an_outage("kafka-stop-outage", &ctx);
    // The broker is back: the order is durable, its report goes out, and the node exits 0.
    broker.signal(rustix::process::Signal::CONT);
    let d = Instant::now() + Duration::from_secs(60);
    while !accepted(&reports, 2) && Instant::now() < d {
        c.recv(&mut reports, Duration::from_millis(100)).unwrap();
    }
    assert!(
        accepted(&reports, 2),
        "the held order was never reported: {reports:?}"
    );
    let log = node.log();
    let (code, summary, _) = node.stop_after_signal();
    assert_eq!(code, 0, "{log}");
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(replay["state_hash"], summary["state_hash"]);
}

#[test]
fn a_second_sigterm_while_draining_ends_the_node_at_once_with_exit_code_7() {
    let ctx = zmq::Context::new();
    let (broker, uri, mut node, mut c, mut reports) =
        draining_during_an_outage("kafka-stop-twice", &ctx);
    node.signal(rustix::process::Signal::TERM);
    assert_eq!(
        node.wait_exit(Duration::from_secs(5)),
        Some(7),
        "{}",
        node.log()
    );
    c.recv(&mut reports, Duration::from_millis(200)).unwrap();
    assert!(!accepted(&reports, 2), "acknowledged before Kafka had it");
    // What was acknowledged is in the journal.
    broker.signal(rustix::process::Signal::CONT);
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert!(replay["last_seq"].as_u64().unwrap_or(0) >= 1, "{replay}");
}

#[test]
fn kafka_security_properties_pass_through_to_librdkafka_and_caldera_keeps_its_own() {
    let broker = Broker::start("caldera.props");
    let uri = broker.uri("caldera.props");
    // Connection security and client.id reach librdkafka as given: an explicit plaintext
    // protocol with a client id serves like the default.
    let node = Node::start_kafka(
        "kafka-props",
        &format!(
            "{}[journal.kafka]\n\"security.protocol\" = \"plaintext\"\n\"client.id\" = \"caldera-test\"\n",
            kafka_toml(&uri)
        ),
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    c.push(requests::logon(3));
    c.push(limit(1, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.iter().any(|r| matches!(r, ServerReport::Accepted(_))) {
        assert!(Instant::now() < deadline, "no Accepted: {out:?}");
        c.recv(&mut out, Duration::from_millis(100)).unwrap();
    }
    let (code, _, _) = node.stop();
    assert_eq!(code, 0);

    let dir = caldera_testkit::harness::temp_dir("kafka-props-bad");
    let keys = Keys::create("kafka-props-bad");
    let run = |props: &str| {
        let cfg = dir.join(format!("c{}.toml", free_port()));
        std::fs::write(
            &cfg,
            format!("{}[journal.kafka]\n{props}\n", kafka_toml(&uri)),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_caldera"))
            .args(["serve", "--config", cfg.to_str().unwrap(), "--keys"])
            .arg(&keys.dir)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    // Caldera's own settings (acknowledgements, idempotence, …) cannot be overridden.
    let out = run("\"acks\" = \"1\"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"acks\" cannot be set here"), "{err}");
    // A protocol this build cannot speak is a clear start-up error naming the property
    // (TLS needs the `kafka-tls` feature), never a silent fallback to plain TCP.
    let out = run("\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanism\" = \"PLAIN\"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Without TLS in the build: refused by librdkafka, naming the property. With it: tansu
    // speaks no TLS, so the connection fails.
    assert!(
        err.contains("\"security.protocol\"") || err.contains("cannot reach Kafka"),
        "{err}"
    );
}

/// Writes raw records to partition 0 of `topic`, as anyone with produce rights could.
fn produce_raw(broker: &Broker, topic: &str, payloads: &[Vec<u8>]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    for b in payloads {
        p.send(BaseRecord::<[u8], [u8]>::to(topic).partition(0).payload(b))
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn one_forged_or_undecodable_record_does_not_poison_the_topic() {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    let node = start_serve("kafka-poison", &uri);
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(1));
    let accepted = |r: &[ServerReport]| {
        r.iter()
            .filter(|x| matches!(x, ServerReport::Accepted(_)))
            .count() as u64
    };
    let send = |c: &mut OrderClient, reports: &mut Vec<ServerReport>, from: u64, to: u64| {
        for n in from..to {
            c.push(limit(n, 1, Side::Buy, TimeInForce::Gtc, 900 + n % 50, 1));
        }
        c.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while accepted(reports) < to - 1 {
            assert!(
                Instant::now() < deadline,
                "only {} accepted",
                accepted(reports)
            );
            c.recv(reports, Duration::from_millis(50)).unwrap();
        }
    };
    send(&mut c, &mut reports, 1, 101);
    // A record that is not a journal batch, and a well-formed batch claiming epoch u64::MAX.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let forged = caldera_schema::record::encode_batch(&mut fbb, u64::MAX, &[], &[], 1, 0).to_vec();
    produce_raw(&broker, "caldera.events", &[b"garbage".to_vec(), forged]);
    // The primary is not fenced by the forged epoch and keeps acknowledging.
    send(&mut c, &mut reports, 101, 201);
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0, "the primary was fenced or failed");
    // Replay skips both records (counted) and equals the primary.
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(replay["state_hash"], summary["state_hash"]);
    assert_eq!(replay["last_seq"], summary["last_seq"]);
    // A new primary still starts (its epoch follows the real one, not u64::MAX) and serves.
    let again = start_serve("kafka-poison-again", &uri);
    let mut c = again.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(1));
    c.push(limit(500, 1, Side::Buy, TimeInForce::Gtc, 900, 1));
    c.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted(&reports) < 1 {
        assert!(Instant::now() < deadline, "the new primary does not serve");
        c.recv(&mut reports, Duration::from_millis(50)).unwrap();
    }
    let (code, s2, _) = again.stop();
    assert_eq!(code, 0);
    assert_eq!(s2["live_orders"].as_u64().unwrap(), 201);
}

#[test]
fn a_topic_with_more_than_one_partition_is_refused() {
    let broker = Broker::start("caldera.events");
    let url = format!("tcp://{}", broker.addr);
    let out = Command::new(caldera_testkit::harness::tansu())
        .args([
            "topic",
            "create",
            "two",
            "--broker",
            &url,
            "--partitions",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(caldera_testkit::harness::caldera_bin())
        .args(["serve", "--insecure", "--journal", &broker.uri("two")])
        .args(["--order-entry", "tcp://127.0.0.1:0"])
        .args(["--market-data", "tcp://127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("2 partitions"), "{err}");
}

/// Sends `orders` and waits until each is answered (pipelined, ≤ 2000 unanswered).
fn send_all(
    c: &mut OrderClient,
    reports: &mut Vec<ServerReport>,
    orders: Vec<caldera_client::ClientRequest>,
) {
    let answered = |r: &[ServerReport]| {
        r.iter()
            .filter(|x| matches!(x, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
            .count()
    };
    let base = answered(reports);
    let total = orders.len();
    let mut it = orders.into_iter();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while answered(reports) < base + total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} answered",
            answered(reports) - base
        );
        while sent < total && sent < answered(reports) - base + 2000 {
            c.push(it.next().unwrap());
            sent += 1;
        }
        c.flush().unwrap();
        c.recv(reports, Duration::from_millis(50)).unwrap();
    }
}

#[test]
fn a_mass_cancel_of_20k_orders_and_a_sweep_of_10k_fills_are_split_into_small_records() {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    let max_record = 65_536;
    let toml = format!(
        "{}kafka_max_record_bytes = {max_record}\n",
        kafka_toml(&uri)
    );
    let node = Node::start_kafka("kafka-split", &toml);
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(3));
    // 20,000 resting buys of account 3, then one mass cancel: one command, 40,000+ events.
    let buys = (1..=20_000u64)
        .map(|n| limit(n, 1, Side::Buy, TimeInForce::Gtc, 500 - n % 100, 1))
        .collect();
    send_all(&mut c, &mut reports, buys);
    c.push(requests::mass_cancel(None));
    c.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let cancelled = loop {
        c.recv(&mut reports, Duration::from_millis(100)).unwrap();
        if let Some(ServerReport::MassCancelled(m)) = reports
            .iter()
            .find(|r| matches!(r, ServerReport::MassCancelled(_)))
        {
            break m.count();
        }
        assert!(
            Instant::now() < deadline,
            "the mass cancel was never answered"
        );
    };
    assert_eq!(cancelled, 20_000);
    // 10,000 resting 1-lot sells of account 4, then one buy of account 5 that takes them all.
    let mut c4 = node.client(&ctx);
    let mut r4 = Vec::new();
    c4.push(requests::logon(4));
    let sells = (1..=10_000u64)
        .map(|n| limit(n, 1, Side::Sell, TimeInForce::Gtc, 1000 + n % 50, 1))
        .collect();
    send_all(&mut c4, &mut r4, sells);
    let mut c5 = node.client(&ctx);
    let mut r5 = Vec::new();
    c5.push(requests::logon(5));
    send_all(
        &mut c5,
        &mut r5,
        vec![limit(1, 1, Side::Buy, TimeInForce::Ioc, 1100, 10_000)],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let filled = |r: &[ServerReport]| {
        r.iter()
            .filter(|x| matches!(x, ServerReport::Fill(_)))
            .count()
    };
    while filled(&r5) < 10_000 {
        assert!(Instant::now() < deadline, "{} fills", filled(&r5));
        c5.recv(&mut r5, Duration::from_millis(100)).unwrap();
    }
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["live_orders"], 0);
    let last = summary["last_seq"].as_u64().unwrap();

    // Every record fits the limit; both big commands were split.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "split-check")
        .set("fetch.wait.max.ms", "1")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("caldera.events", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (mut records, mut finals, mut largest) = (0, 0, 0);
    while let Some(m) = consumer.poll(Duration::from_secs(2)) {
        let m = m.unwrap();
        let p = m.payload().unwrap_or_default();
        largest = largest.max(p.len());
        records += 1;
        if caldera_schema::record::root(p).unwrap().format()
            == caldera_schema::record::FORMAT_SPLIT_FINAL
        {
            finals += 1;
        }
    }
    assert!(largest <= max_record, "a record of {largest} bytes");
    assert!(finals >= 2, "{finals} split batches in {records} records");

    // Replay, `journal dump` and the independent consumer all see every event exactly once.
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(replay["state_hash"], summary["state_hash"]);
    let dump = caldera(&["journal", "dump", "--journal", &uri]);
    let seqs: Vec<u64> = dump
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    let py = std::env::var("CALDERA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../clients/python/journal_consumer.py"
    );
    let out = Command::new(py)
        .args([
            script,
            "--kafka",
            &broker.addr,
            "--topic",
            "caldera.events",
            "--idle",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["events"].as_u64(), Some(last), "{s}");
    assert_eq!(s["contiguous"], true, "{s}");
}

#[test]
fn tail_shows_every_durable_event_at_once_and_stops_on_sigterm_and_dump_ends_on_a_live_topic() {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    let node = start_serve("kafka-tail", &uri);
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(1));
    let orders = (1..=100u64)
        .map(|n| limit(n, 1, Side::Buy, TimeInForce::Gtc, 900 + n % 50, 1))
        .collect();
    send_all(&mut c, &mut reports, orders);
    let last = reports
        .iter()
        .filter_map(|r| match r {
            ServerReport::Accepted(a) => Some(a.engine_seq()),
            _ => None,
        })
        .max()
        .unwrap();
    // The node keeps heartbeating (a live topic) while tail and dump read it.
    let mut tail = Command::new(caldera_testkit::harness::caldera_bin())
        .args(["journal", "tail", "--journal", &uri])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if tx.send(v["seq"].as_u64().unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.last() != Some(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => seen.push(s),
            Err(_) => panic!("tail printed up to {:?} of {last}", seen.last()),
        }
    }
    assert_eq!(seen, (1..=last).collect::<Vec<_>>());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(tail.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = tail.kill();
            panic!("tail ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    // dump ends on the live topic, with everything written before it started.
    let mut dump = Command::new(caldera_testkit::harness::caldera_bin())
        .args(["journal", "dump", "--journal", &uri])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dump.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = dump.kill();
            panic!("dump did not end on a live topic");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = dump.wait_with_output().unwrap();
    assert!(out.status.success());
    let seqs: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(seqs.len() as u64 >= last);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    drop(node);
}

#[test]
fn a_broker_restart_under_load_loses_nothing_acknowledged_and_service_resumes() {
    // tansu with SQLite storage: the topic survives the restart (memory storage would not).
    let mut broker = Broker::start_persistent("caldera.events");
    let uri = broker.uri("caldera.events");
    let node = start_serve("kafka-restart-broker", &uri);
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(6));
    let accepted = |r: &[ServerReport]| -> Vec<u64> {
        r.iter()
            .filter_map(|x| match x {
                ServerReport::Accepted(a) => Some(a.engine_seq()),
                _ => None,
            })
            .collect()
    };
    let mut n = 0u64;
    let mut pump = |c: &mut OrderClient, reports: &mut Vec<ServerReport>, for_: Duration| {
        let end = Instant::now() + for_;
        while Instant::now() < end {
            for _ in 0..20 {
                n += 1;
                c.push(limit(n, 1, Side::Buy, TimeInForce::Gtc, 800 + n % 100, 1));
            }
            let _ = c.try_flush();
            let _ = c.recv(reports, Duration::from_millis(10));
        }
    };
    pump(&mut c, &mut reports, Duration::from_secs(2));
    let before = accepted(&reports).len();
    assert!(before > 100, "{before} acknowledged before the restart");
    // SIGKILL the broker under load; it is down for 1 s, then comes back on the same storage.
    broker.restart(Duration::from_secs(1));
    pump(&mut c, &mut reports, Duration::from_secs(4));
    // Service resumed: orders sent after the restart are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted(&reports).len() < before + 100 {
        assert!(
            Instant::now() < deadline,
            "service did not resume: {} acknowledged, {} before the restart",
            accepted(&reports).len(),
            before
        );
        pump(&mut c, &mut reports, Duration::from_millis(500));
    }
    let rejected_unavailable = reports
        .iter()
        .filter(|r| matches!(r, ServerReport::Rejected(x) if x.reason() == wire::RejectReason::JournalUnavailable))
        .count();
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0, "the node failed; see its log");
    // Replay from the restarted broker equals the primary; every acknowledged event is there.
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(replay["state_hash"], summary["state_hash"]);
    let last = replay["last_seq"].as_u64().unwrap();
    let acked = accepted(&reports);
    assert!(
        acked.iter().all(|s| *s <= last),
        "an acknowledged event is missing"
    );
    assert_eq!(replay["live_orders"], summary["live_orders"]);
    eprintln!(
        "broker restart: {} acknowledged ({before} before), {rejected_unavailable} JournalUnavailable rejects",
        acked.len()
    );
}

/// A broker can acknowledge a record without its offset: tansu 0.6 answered a retried
/// duplicate that way after a restart, and Apache Kafka can for a duplicate it no longer has the
/// metadata of. The record is durable and lies before the next record acknowledged with its
/// offset; the primary checks that gap for a newer epoch, like any gap, instead of taking the
/// missing offset for a sign of fencing. Before the fix, the first such acknowledgement fenced
/// the primary (exit code 3).
#[cfg(debug_assertions)]
#[test]
fn acknowledgements_without_an_offset_are_placed_by_the_next_known_one_and_do_not_fence_the_primary(
) {
    let broker = Broker::start("caldera.events");
    let uri = broker.uri("caldera.events");
    // Every 3rd acknowledgement arrives without its offset (CALDERA_FAULT, debug builds).
    let node = Node::start_kafka_with_env(
        "kafka-no-offset",
        &kafka_toml(&uri),
        &[("CALDERA_FAULT", "kafka-unknown-offset@3")],
    );
    let ctx = zmq::Context::new();
    let mut c = node.client(&ctx);
    let mut reports = Vec::new();
    c.push(requests::logon(7));
    // Rounds of 20 orders, each answered before the next: one record (or a few) per round.
    let mut acked = Vec::new();
    for round in 0..60u64 {
        for i in 0..20 {
            let n = round * 20 + i + 1;
            let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
            c.push(limit(n, 1, side, TimeInForce::Gtc, 1000 + n % 5, 1 + n % 7));
        }
        c.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = (round + 1) * 20;
        loop {
            let answered = reports
                .iter()
                .filter(|x| matches!(x, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
                .count() as u64;
            if answered >= want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {answered} of {want} answered: {}",
                node.log()
            );
            c.recv(&mut reports, Duration::from_millis(50)).unwrap();
        }
    }
    for r in &reports {
        match r {
            ServerReport::Accepted(a) => acked.push(a.engine_seq()),
            ServerReport::Rejected(x) => panic!("rejected: {:?}", x.reason()),
            _ => {}
        }
    }
    assert_eq!(acked.len(), 1200);
    assert!(
        node.log()
            .contains("acknowledgements will arrive without their offset"),
        "the fault was not injected"
    );
    let (code, summary, _) = node.stop();
    assert_eq!(code, 0, "the primary was fenced or failed");
    let replay: serde_json::Value =
        serde_json::from_str(caldera(&["replay", "--journal", &uri]).trim()).unwrap();
    assert_eq!(
        replay["state_hash"], summary["state_hash"],
        "replay {replay} != summary {summary}"
    );
    let last = replay["last_seq"].as_u64().unwrap();
    assert!(
        acked.iter().all(|s| *s <= last),
        "an acknowledged event is missing"
    );
}

/// An append made while the broker does not acknowledge is queued, not failed: the stall is
/// what `durable` reports. Before the fix, the append itself failed once the stall was
/// detected, so the journal stage sent the batch again — with the commands it had taken since
/// — and the topic held two overlapping records that replay refuses (`Diverged`).
#[test]
fn an_append_during_a_broker_stall_is_queued_not_failed_and_becomes_durable_after_it() {
    use caldera_journal::kafka::{Brokers, KafkaJournal};
    use caldera_journal::JournalError;
    let broker = Broker::start("caldera.events");
    let mut journal = KafkaJournal::connect(
        &Brokers::new(broker.addr.clone()),
        "caldera.events",
        0,
        0,
        1,
        Duration::from_millis(300),
    )
    .unwrap();
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let batch = caldera_schema::record::BatchBuilder::default();
    let bytes = batch.finish(&mut fbb, 1, 1, 10).to_vec();
    journal.append(1, 10, &bytes).unwrap();
    let durable = |journal: &mut KafkaJournal, seq: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match journal.durable() {
                Ok(d) if d >= seq => break,
                Ok(_) | Err(JournalError::Unavailable(_)) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "{seq} not acknowledged");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    durable(&mut journal, 10);
    broker.signal(rustix::process::Signal::STOP);
    let bytes = batch.finish(&mut fbb, 1, 11, 20).to_vec();
    journal.append(11, 20, &bytes).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // The stall is reported by durable()...
    assert!(
        matches!(journal.durable(), Err(JournalError::Unavailable(_))),
        "a stall of 600 ms (limit 300 ms) is not reported"
    );
    // ...while a further append is queued, not failed (it would be sent again).
    let bytes = batch.finish(&mut fbb, 1, 21, 30).to_vec();
    let appended = journal.append(21, 30, &bytes);
    assert!(
        appended.is_ok(),
        "an append during a stall failed: {appended:?}"
    );
    broker.signal(rustix::process::Signal::CONT);
    durable(&mut journal, 30);
}
