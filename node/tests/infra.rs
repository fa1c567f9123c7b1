//! Operations: the metrics/health endpoints of real nodes, and the deployment files in infra/
//! checked as far as this machine allows (no container runtime here): every YAML/JSON parses,
//! the binaries accept exactly the arguments the manifests pass, probes and scrape targets use
//! the metrics port, and the dashboard only queries metrics a node really exports.

use caldera_client::{requests, wire, OrderClient, ServerReport};
use caldera_testkit::harness::{free_port, http_get, metric, temp_dir, Keys};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

fn strings(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Runs a binary with `args` + `--check`, with config paths mapped to real files.
fn check(bin: &str, args: &[String], config_map: &[(&str, &Path)]) -> serde_json::Value {
    let mut argv: Vec<String> = args.to_vec();
    for a in &mut argv {
        for (from, to) in config_map {
            if a == from {
                *a = to.display().to_string();
            }
        }
    }
    argv.push("--check".into());
    let out = Command::new(bin).args(&argv).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {argv:?} rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn loadgen_bin() -> PathBuf {
    // Built by the same `cargo test --workspace` (target/<profile>/caldera-loadgen).
    let caldera = Path::new(env!("CARGO_BIN_EXE_caldera"));
    let p = caldera.with_file_name("caldera-loadgen");
    if !p.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "caldera-loadgen"])
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

#[test]
fn kubernetes_manifests_parse_and_pass_exactly_the_arguments_the_binary_accepts() {
    let docs = yaml_docs("infra/k8s/caldera.yaml");
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "Namespace",
        "ConfigMap",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(k), "missing {k}: {kinds:?}");
    }
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let toml = cm["data"]["caldera.toml"].as_str().unwrap();
    let dir = temp_dir("k8s");
    let cfg = dir.join("caldera.toml");
    // The Secret's keys, made the way the manifest's comment says, where the pod mounts them.
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let spec = &sts["spec"]["template"]["spec"];
    let keys_mount = spec["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "keys")
        .expect("the keys Secret is mounted");
    let mount_path = keys_mount["mountPath"].as_str().unwrap();
    assert!(toml.contains(&format!("keys_dir = \"{mount_path}\"")));
    assert!(spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == "caldera-keys"));
    let keys = Keys::in_dir(&dir.join("keys"));
    std::fs::write(&cfg, toml.replace(mount_path, keys.dir.to_str().unwrap())).unwrap();
    let c = &spec["containers"][0];
    let args = strings(&c["args"]);
    let mount = spec["containers"][0]["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap();
    let cfg_arg = format!("{mount}/caldera.toml");
    assert!(
        args.contains(&cfg_arg),
        "args {args:?} use the mounted ConfigMap"
    );
    let v = check(env!("CARGO_BIN_EXE_caldera"), &args, &[(&cfg_arg, &cfg)]);
    assert_eq!(v["role"], "standby");
    assert!(v["journal"].as_str().unwrap().starts_with("kafka://"));
    // The peers are the pods' order-entry endpoints through the headless Service.
    let svc = sts["spec"]["serviceName"].as_str().unwrap();
    for (i, peer) in v["peers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            peer.as_str().unwrap(),
            format!("tcp://caldera-{i}.{svc}.caldera.svc:7001")
        );
    }
    // Probes hit the port --metrics listens on.
    let metrics_port: u64 = v["metrics"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ports = c["ports"].as_sequence().unwrap();
    let named = |n: &str| {
        ports
            .iter()
            .find(|p| p["name"] == n)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap()
    };
    assert_eq!(named("metrics"), metrics_port);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let oe: u64 = v["order_entry"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(named("order-entry"), oe);
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(2));
    let pdb = docs
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .unwrap();
    assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app"], "caldera");
}

#[test]
fn compose_prometheus_and_grafana_files_parse_and_agree_with_the_binaries() {
    let compose = &yaml_docs("infra/compose.yaml")[0];
    let services = compose["services"].as_mapping().unwrap();
    for name in [
        "kafka",
        "caldera-a",
        "caldera-b",
        "loadgen",
        "prometheus",
        "grafana",
    ] {
        assert!(
            services.contains_key(serde_yaml::Value::from(name)),
            "service {name}"
        );
    }
    // The baked configuration, with the `keys` volume's path mapped to keys made here.
    let container_toml = read("infra/caldera.container.toml");
    assert!(container_toml.contains("keys_dir = \"/keys\""));
    let dir = temp_dir("compose");
    let keys = Keys::in_dir(&dir.join("keys"));
    let container_cfg = dir.join("caldera.toml");
    std::fs::write(
        &container_cfg,
        container_toml.replace("\"/keys\"", &format!("{:?}", keys.dir.to_str().unwrap())),
    )
    .unwrap();
    for node in ["caldera-a", "caldera-b", "loadgen"] {
        assert_eq!(
            strings(&compose["services"][node]["volumes"]),
            ["keys:/keys:ro"],
            "{node} reads the deployment's keys"
        );
    }
    assert!(strings(&compose["services"]["keys"]["entrypoint"])
        .concat()
        .contains("caldera init /keys"));
    for node in ["caldera-a", "caldera-b"] {
        let args = strings(&compose["services"][node]["command"]);
        let v = check(
            env!("CARGO_BIN_EXE_caldera"),
            &args,
            &[("/etc/caldera/caldera.toml", &container_cfg)],
        );
        assert_eq!(v["role"], "standby", "{node}");
        let other = if node == "caldera-a" {
            "caldera-b"
        } else {
            "caldera-a"
        };
        assert_eq!(v["peers"][0], format!("tcp://{other}:7001"), "{node}");
        assert_eq!(v["metrics"], "0.0.0.0:9464");
        assert_eq!(v["journal"], "kafka://kafka:9092/caldera.events");
    }
    let lg = &compose["services"]["loadgen"];
    assert_eq!(lg["entrypoint"][0], "caldera-loadgen");
    let v = check(
        loadgen_bin().to_str().unwrap(),
        &strings(&lg["command"]),
        &[],
    );
    assert_eq!(v["endpoints"][0], "tcp://caldera-a:7001");
    // The Containerfile bakes the same configuration and runs the same command.
    let cf = read("infra/Containerfile");
    assert!(cf.contains("COPY infra/caldera.container.toml /etc/caldera/caldera.toml"));
    assert!(cf.contains(r#"CMD ["standby", "--config", "/etc/caldera/caldera.toml"]"#));
    assert!(cf.contains("EXPOSE 7001 7002 9464"));
    // Prometheus scrapes both nodes on the metrics port.
    let prom = &yaml_docs("infra/prometheus.yml")[0];
    let targets = strings(&prom["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, ["caldera-a:9464", "caldera-b:9464"]);
    for f in [
        "infra/grafana/provisioning/datasources/prometheus.yaml",
        "infra/grafana/provisioning/dashboards/caldera.yaml",
    ] {
        assert_eq!(yaml_docs(f)[0]["apiVersion"].as_u64(), Some(1), "{f}");
    }
}

struct Node {
    child: Child,
    metrics: String,
    order_entry: String,
    keys: Keys,
}

impl Node {
    fn client(&self, ctx: &zmq::Context) -> OrderClient {
        OrderClient::connect(ctx, &self.order_entry, &self.keys.trader()).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(cmd: &str, journal: &Path, dir: &Path) -> Node {
    let keys = Keys::in_dir(&dir.join("keys"));
    let metrics = format!("127.0.0.1:{}", free_port());
    let order_entry = format!("tcp://127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args([
            cmd,
            "--journal",
            &format!("file://{}", journal.display()),
            "--metrics",
            &metrics,
            "--order-entry",
            &order_entry,
            "--market-data",
            &format!("tcp://127.0.0.1:{}", free_port()),
            "--wait",
            "park",
            "--keys",
            keys.dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("{cmd}.{}.log", free_port()))).unwrap(),
        ))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&metrics).is_err() {
        assert!(Instant::now() < deadline, "no metrics listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    Node {
        child,
        metrics,
        order_entry,
        keys,
    }
}

fn wait_ready(n: &Node, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&n.metrics, "/readyz").0 != want {
        assert!(Instant::now() < deadline, "/readyz never answered {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn metrics_count_orders_rejects_and_latency_and_readiness_follows_the_role() {
    let dir = temp_dir("metrics");
    let journal = dir.join("journal");
    let primary = start("standby", &journal, &dir);
    wait_ready(&primary, 200);
    let standby = start("standby", &journal, &dir);
    // The standby is healthy but not ready; it says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(&standby.metrics, "/readyz");
        if body.trim() == "standby" {
            assert_eq!(code, 503);
            break;
        }
        assert!(Instant::now() < deadline, "standby never reported its role");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&standby.metrics, "/healthz").0, 200);
    assert_eq!(http_get(&primary.metrics, "/nope").0, 404);

    let ctx = zmq::Context::new();
    let mut c = primary.client(&ctx);
    c.push(requests::logon(7));
    for i in 0..50 {
        c.push(requests::limit(
            i + 1,
            1,
            wire::Side::Buy,
            wire::TimeInForce::Gtc,
            100,
            1,
        ));
    }
    c.push(requests::limit(
        1000,
        1,
        wire::Side::Buy,
        wire::TimeInForce::Gtc,
        0,
        1,
    )); // ZeroPrice
    c.push(requests::limit(
        1,
        1,
        wire::Side::Buy,
        wire::TimeInForce::Gtc,
        100,
        1,
    )); // duplicate
    c.flush().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out
        .iter()
        .filter(|r| matches!(r, ServerReport::Accepted(_) | ServerReport::Rejected(_)))
        .count()
        < 52
    {
        assert!(Instant::now() < deadline);
        c.recv(&mut out, Duration::from_millis(100)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (code, body) = http_get(&primary.metrics, "/metrics");
        assert_eq!(code, 200);
        // Published every few ms: wait until everything read is durable and counted.
        if metric(&body, "caldera_orders_in_total") >= 53.0
            && metric(&body, "caldera_journal_durable_seq") >= 52.0
            && metric(&body, "caldera_journal_lag_events") == 0.0
            && metric(&body, "caldera_request_to_durable_seconds_count") >= 1.0
        {
            break body;
        }
        assert!(Instant::now() < deadline, "counters not published");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(metric(&body, "caldera_commands_total"), 52.0);
    assert_eq!(
        metric(&body, r#"caldera_rejects_total{reason="ZeroPrice"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &body,
            r#"caldera_rejects_total{reason="DuplicateClientOrderId"}"#
        ),
        1.0
    );
    assert_eq!(metric(&body, r#"caldera_role{role="primary"}"#), 1.0);
    assert_eq!(metric(&body, "caldera_ready"), 1.0);
    assert!(metric(&body, "caldera_request_to_durable_seconds_count") >= 1.0);
    assert!(metric(&body, "caldera_journal_append_seconds_count") >= 1.0);
    assert!(metric(&body, "caldera_journal_durable_seq") >= 52.0);
    // What a request costs: process CPU and memory, and CPU by pipeline thread.
    let cpu = metric(&body, "process_cpu_seconds_total");
    assert!(cpu > 0.0);
    assert!(metric(&body, "process_resident_memory_bytes") > 1e6);
    // The engine's own thread exists with `threads.engine = "own"` (auto: 4+ cores); on the
    // gateway's thread its CPU is the gateway's.
    let mut threads = vec!["gateway", "journal", "zmq-io"];
    if body.contains("caldera_thread_cpu_seconds_total{thread=\"engine\"}") {
        threads.push("engine");
    }
    let by_thread: f64 = threads
        .iter()
        .map(|t| {
            let v = metric(
                &body,
                &format!("caldera_thread_cpu_seconds_total{{thread=\"{t}\"}}"),
            );
            assert!(v > 0.0, "no CPU time for the {t} thread");
            v
        })
        .sum();
    assert!(by_thread <= cpu, "threads {by_thread} s > process {cpu} s");
    let epoch = metric(&body, "caldera_epoch");
    // The standby follows: same epoch, applied up to the primary's durable sequence.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, sb) = http_get(&standby.metrics, "/metrics");
        if metric(&sb, "caldera_standby_applied_seq")
            >= metric(&body, "caldera_journal_durable_seq")
        {
            assert_eq!(metric(&sb, "caldera_epoch"), epoch);
            assert_eq!(metric(&sb, r#"caldera_role{role="standby"}"#), 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "standby did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Kill the primary: the standby becomes ready, in a new epoch.
    let mut primary = primary;
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    wait_ready(&standby, 200);
    let (_, sb) = http_get(&standby.metrics, "/metrics");
    assert_eq!(metric(&sb, r#"caldera_role{role="primary"}"#), 1.0);
    assert_eq!(metric(&sb, "caldera_epoch"), epoch + 1.0);
    assert!(metric(&sb, "caldera_last_promotion_us") > 0.0);

    // The dashboard only queries metrics this node exports.
    let exported: BTreeSet<String> = sb
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let dash: serde_json::Value =
        serde_json::from_str(&read("infra/grafana/dashboards/caldera.json")).unwrap();
    let mut used = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("caldera_") {
                    assert!(
                        exported.contains(word),
                        "panel {:?} queries {word}, which is not exported",
                        p["title"]
                    );
                    used += 1;
                }
            }
        }
    }
    assert!(used >= 10);
}
