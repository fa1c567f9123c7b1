//! Starts the real `caldera` binary on free 127.0.0.1 ports and stops it with a real signal.
#![allow(dead_code)]

use caldera_client::{OrderClient, ServerReport};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    pub child: Child,
    pub order_entry: String,
    pub market_data: String,
    pub snapshot: PathBuf,
    pub dir: PathBuf,
    pub journal: PathBuf,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "caldera-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Node {
    /// Starts `caldera serve` with an extra TOML snippet appended to a test config, journaling
    /// to a fresh directory.
    pub fn start(tag: &str, extra_toml: &str) -> Node {
        let dir = temp_dir(tag);
        let journal = dir.join("journal");
        Self::start_on(tag, extra_toml, &journal)
    }

    /// Starts `caldera serve` with a journal given in the TOML snippet (e.g. Kafka).
    pub fn start_kafka(tag: &str, extra_toml: &str) -> Node {
        Self::launch(tag, extra_toml, None)
    }

    /// Starts `caldera serve` on an existing (or new) journal directory.
    pub fn start_on(tag: &str, extra_toml: &str, journal: &std::path::Path) -> Node {
        Self::launch(tag, extra_toml, Some(journal))
    }

    fn launch(tag: &str, extra_toml: &str, journal: Option<&std::path::Path>) -> Node {
        let dir = temp_dir(tag);
        let (oe, md) = (free_port(), free_port());
        let order_entry = format!("tcp://127.0.0.1:{oe}");
        let market_data = format!("tcp://127.0.0.1:{md}");
        let cfg = dir.join("caldera.toml");
        let toml = format!(
            "[gateway]\norder_entry = \"{order_entry}\"\nmarket_data = \"{market_data}\"\nmd_snapshot_interval_ms = 0\n{extra_toml}\n[threads]\nwait = \"park\"\n"
        );
        std::fs::write(&cfg, toml).unwrap();
        let snapshot = dir.join("final.snapshot");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_caldera"));
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .arg("--snapshot-on-exit")
            .arg(&snapshot);
        if let Some(j) = journal {
            cmd.arg("--journal").arg(format!("file://{}", j.display()));
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .expect("start caldera");
        let node = Node {
            child,
            order_entry,
            market_data,
            snapshot,
            dir,
            journal: journal
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&self) {
        let ctx = zmq::Context::new();
        let mut c = OrderClient::connect(&ctx, &self.order_entry).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while Instant::now() < deadline {
            c.push(caldera_client::requests::heartbeat(1));
            c.flush().unwrap();
            if c.recv(&mut out, Duration::from_millis(200)).unwrap() > 0 {
                assert!(matches!(out[0], ServerReport::HeartbeatAck(_)));
                return;
            }
        }
        panic!(
            "caldera did not answer within 20 s; see {}",
            self.dir.join("stderr.log").display()
        );
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// SIGTERM, wait for exit, return (exit code, JSON summary, snapshot path).
    pub fn stop(self) -> (i32, serde_json::Value, PathBuf) {
        self.signal(rustix::process::Signal::TERM);
        self.stop_after_signal()
    }

    /// Waits for exit after a signal was sent; returns (exit code, JSON summary, snapshot path).
    pub fn stop_after_signal(mut self) -> (i32, serde_json::Value, PathBuf) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "caldera did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let line = out.lines().last().unwrap_or("{}");
        let json = serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"));
        (status.code().unwrap_or(-1), json, self.snapshot.clone())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads reports until none arrive for `quiet`.
pub fn drain(c: &mut OrderClient, out: &mut Vec<ServerReport>, quiet: Duration) {
    while c.recv(out, quiet).unwrap() > 0 {}
}

/// Runs `caldera` with arguments and returns its stdout (panics on failure).
pub fn caldera(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_caldera"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "caldera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A tansu 0.6.0 broker (memory storage) on a free 127.0.0.1 port.
pub struct Broker {
    child: Child,
    pub addr: String,
}

pub fn tansu() -> String {
    if let Ok(p) = std::env::var("CALDERA_TANSU") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for c in ["tansu".to_string(), format!("{home}/.cargo/bin/tansu")] {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!("tansu 0.6.0 is required for the Kafka tests: run scripts/test.sh (it installs it) or set CALDERA_TANSU");
}

impl Broker {
    /// Starts it and creates `topic` with one partition.
    pub fn start(topic: &str) -> Broker {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let log = temp_dir("tansu").join("tansu.log");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new(tansu())
            .args([
                "topic",
                "create",
                topic,
                "--broker",
                &url,
                "--partitions",
                "1",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Broker { child, addr }
    }
    pub fn uri(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.addr)
    }
    pub fn signal(&self, s: rustix::process::Signal) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            s,
        )
        .unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
