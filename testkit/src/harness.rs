//! The process harness: the real `caldera` binary on free 127.0.0.1 ports, stopped with real
//! signals; a real Kafka-protocol broker (tansu); helpers to talk to them. Every file a test
//! writes goes to a fresh temporary directory ([`temp_dir`]), removed when the test passes
//! (kept when it fails, or with `CALDERA_KEEP_TEST_DIRS=1`).

use caldera_client::{ClientCredentials, OrderClient, ServerReport};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `caldera` binary: `$CALDERA_BIN`, or the one cargo built next to the running test
/// (`cargo test --workspace` builds it).
#[must_use]
pub fn caldera_bin() -> PathBuf {
    sibling_bin("CALDERA_BIN", "caldera")
}

/// The `caldera-loadgen` binary (as [`caldera_bin`], `$CALDERA_LOADGEN_BIN`).
#[must_use]
pub fn loadgen_bin() -> PathBuf {
    sibling_bin("CALDERA_LOADGEN_BIN", "caldera-loadgen")
}

fn sibling_bin(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace` (it builds every binary) or set {var}",
        p.display()
    );
    p
}

/// A port nothing listens on right now, for a process under test to bind.
///
/// Chosen below Linux's ephemeral range (32768–60999), never twice in one test process: the
/// OS's own choice (`bind` to port 0) comes from the ephemeral range, where an outgoing
/// connection of another test could take it before the process under test binds it, and a
/// later `bind` to port 0 could hand the same port to another test ("Address already in use"
/// in a CI run).
#[must_use]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each process starts elsewhere in the span (two test processes at once rarely meet).
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A deployment's keys, made as `caldera init` makes them: `server`, `admin`, `trader`
/// (accounts 1–9999) and `reader` (the same accounts, read-only), and `entitlements.toml`.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The directory (`--keys`).
    pub dir: PathBuf,
}

impl Keys {
    /// Creates them in a fresh temporary directory.
    #[must_use]
    pub fn create(tag: &str) -> Keys {
        Self::in_dir(&temp_dir(&format!("{tag}-keys")))
    }

    /// The keys in `dir`, created there first if it has none (the nodes of a pair share them).
    #[must_use]
    pub fn in_dir(dir: &Path) -> Keys {
        if !dir.join("entitlements.toml").exists() {
            caldera_auth::init::init(dir, "1-9999").expect("creating keys");
        }
        Keys {
            dir: dir.to_path_buf(),
        }
    }

    /// The credentials of key `name` (`trader`, `admin`, `reader`, or one made by [`Keys::add`]).
    #[must_use]
    pub fn client(&self, name: &str) -> ClientCredentials {
        ClientCredentials::from_dir(&self.dir, name).expect("reading client keys")
    }

    /// The trader's credentials.
    #[must_use]
    pub fn trader(&self) -> ClientCredentials {
        self.client("trader")
    }

    /// Makes a new key pair `name` and lists it with `role` for `accounts` (e.g. `["7"]`);
    /// the node sees it after a SIGHUP (or when started after this). Returns its credentials.
    pub fn add(&self, name: &str, role: &str, accounts: &[&str]) -> ClientCredentials {
        let cert = caldera_auth::Certificate::generate().unwrap();
        cert.write(&self.dir, name).unwrap();
        let list = accounts
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let path = self.dir.join("entitlements.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[[client]]\nname = \"{name}\"\nkey = \"{}\"\nrole = \"{role}\"\naccounts = [{list}]\n",
            cert.public
        ));
        std::fs::write(&path, text).unwrap();
        self.client(name)
    }

    /// Removes the `[[client]]` entry named `name` from the entitlements file.
    pub fn remove(&self, name: &str) {
        let path = self.dir.join("entitlements.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .split("\n[[client]]")
            .filter(|block| !block.contains(&format!("name = \"{name}\"")))
            .collect();
        std::fs::write(&path, kept.join("\n[[client]]")).unwrap();
    }
}

/// A running `caldera serve`.
pub struct Node {
    /// The process.
    pub child: Child,
    /// Order-entry endpoint.
    pub order_entry: String,
    /// Market-data endpoint.
    pub market_data: String,
    /// Where it writes its final snapshot on exit.
    pub snapshot: PathBuf,
    /// Its directory (configuration, log).
    pub dir: PathBuf,
    /// Its journal directory (empty for a Kafka journal).
    pub journal: PathBuf,
    /// Its keys (`--keys`).
    pub keys: Keys,
    /// How [`Node::client`] connects: the trader key, or plain TCP for [`Node::start_insecure`].
    pub credentials: ClientCredentials,
}

/// A fresh directory under the system's temporary directory.
///
/// It lives as long as the test that made it: when the test's thread ends, the directories it
/// made are removed, unless a panic happened on that thread (a failed test keeps its
/// journals and logs to look at) or `CALDERA_KEEP_TEST_DIRS` is set. Every process the test
/// started has been stopped by then (they are locals of the test, killed when dropped).
#[must_use]
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "caldera-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    cleanup::remove_when_the_test_passes(&d);
    d
}

/// Removing a passed test's directories (see [`temp_dir`]).
mod cleanup {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, Once};
    use std::thread::ThreadId;

    /// Threads that panicked: their directories are kept.
    static PANICKED: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());
    static HOOK: Once = Once::new();

    /// The directories this thread made, removed when the thread ends.
    #[derive(Default)]
    struct Made(Vec<PathBuf>);

    impl Drop for Made {
        fn drop(&mut self) {
            let me = std::thread::current().id();
            let failed = PANICKED.lock().map_or(true, |p| p.contains(&me));
            if failed || std::env::var_os("CALDERA_KEEP_TEST_DIRS").is_some() {
                return;
            }
            for d in &self.0 {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }

    thread_local! {
        static MADE: RefCell<Made> = RefCell::new(Made::default());
    }

    pub(super) fn remove_when_the_test_passes(dir: &Path) {
        HOOK.call_once(|| {
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if let Ok(mut p) = PANICKED.lock() {
                    p.push(std::thread::current().id());
                }
                report(info);
            }));
        });
        // A thread that is already ending (no thread-local left) keeps the directory.
        let _ = MADE.try_with(|m| m.borrow_mut().0.push(dir.to_path_buf()));
    }
}

impl Node {
    /// Starts `caldera serve` with an extra TOML snippet appended to a test config, journaling
    /// to a fresh directory.
    #[must_use]
    pub fn start(tag: &str, extra_toml: &str) -> Node {
        let dir = temp_dir(tag);
        let journal = dir.join("journal");
        Self::start_on(tag, extra_toml, &journal)
    }

    /// Starts `caldera serve` with a journal given in the TOML snippet (e.g. Kafka).
    #[must_use]
    pub fn start_kafka(tag: &str, extra_toml: &str) -> Node {
        Self::launch(tag, extra_toml, None, Keys::create(tag))
    }

    /// [`Node::start_kafka`] with extra environment variables (`CALDERA_FAULT`).
    #[must_use]
    pub fn start_kafka_with_env(tag: &str, extra_toml: &str, env: &[(&str, &str)]) -> Node {
        Self::launch_env(tag, extra_toml, None, Keys::create(tag), env)
    }

    /// Starts `caldera serve` on an existing (or new) journal directory.
    #[must_use]
    pub fn start_on(tag: &str, extra_toml: &str, journal: &Path) -> Node {
        Self::launch(tag, extra_toml, Some(journal), Keys::create(tag))
    }

    /// Starts `caldera serve` on `journal` with extra environment variables (e.g.
    /// `CALDERA_FAULT`, which debug builds honour).
    #[must_use]
    pub fn start_with_env(
        tag: &str,
        extra_toml: &str,
        journal: &Path,
        env: &[(&str, &str)],
    ) -> Node {
        Self::launch_env(tag, extra_toml, Some(journal), Keys::create(tag), env)
    }

    /// Starts `caldera serve` (fresh journal) with these keys.
    #[must_use]
    pub fn start_with_keys(tag: &str, extra_toml: &str, keys: Keys) -> Node {
        let journal = temp_dir(tag).join("journal");
        Self::launch(tag, extra_toml, Some(&journal), keys)
    }

    /// Starts `caldera serve --insecure` (fresh journal): plain TCP, no authentication.
    #[must_use]
    pub fn start_insecure(tag: &str, extra_toml: &str) -> Node {
        let journal = temp_dir(tag).join("journal");
        let mut keys = Keys::create(tag);
        keys.dir = PathBuf::new();
        Self::launch(tag, extra_toml, Some(&journal), keys)
    }

    fn launch(tag: &str, extra_toml: &str, journal: Option<&Path>, keys: Keys) -> Node {
        Self::launch_env(tag, extra_toml, journal, keys, &[])
    }

    fn launch_env(
        tag: &str,
        extra_toml: &str,
        journal: Option<&Path>,
        keys: Keys,
        env: &[(&str, &str)],
    ) -> Node {
        let insecure = keys.dir.as_os_str().is_empty();
        let dir = temp_dir(tag);
        let (oe, md) = (free_port(), free_port());
        let order_entry = format!("tcp://127.0.0.1:{oe}");
        let market_data = format!("tcp://127.0.0.1:{md}");
        let cfg = dir.join("caldera.toml");
        // A snippet with its own `[threads]` section sets the wait strategy itself.
        let threads = if extra_toml.contains("[threads]") {
            ""
        } else {
            "[threads]\nwait = \"park\"\n"
        };
        let toml = format!(
            "[gateway]\norder_entry = \"{order_entry}\"\nmarket_data = \"{market_data}\"\nmd_snapshot_interval_ms = 0\n{extra_toml}\n{threads}"
        );
        std::fs::write(&cfg, toml).unwrap();
        let snapshot = dir.join("final.snapshot");
        let mut cmd = Command::new(caldera_bin());
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .arg("--snapshot-on-exit")
            .arg(&snapshot);
        if insecure {
            cmd.arg("--insecure");
        } else {
            cmd.arg("--keys").arg(&keys.dir);
        }
        if let Some(j) = journal {
            cmd.arg("--journal").arg(format!("file://{}", j.display()));
        }
        cmd.envs(env.iter().copied());
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
            journal: journal.map(Path::to_path_buf).unwrap_or_default(),
            credentials: if insecure {
                ClientCredentials::Insecure
            } else {
                keys.trader()
            },
            keys,
        };
        node.wait_ready();
        node
    }

    /// An order-entry session of the trader key (entitled to accounts 1–9999).
    #[must_use]
    pub fn client(&self, ctx: &zmq::Context) -> OrderClient {
        OrderClient::connect(ctx, &self.order_entry, &self.credentials).unwrap()
    }

    fn wait_ready(&self) {
        let ctx = zmq::Context::new();
        let mut c = self.client(&ctx);
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

    /// Sends a signal.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits up to `limit` for the process to exit by itself; its exit code (`None`: still
    /// running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
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

/// `GET path` from an HTTP listener at `addr` (`HOST:PORT`): (status code, body).
#[must_use]
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// The value of the series `name` (with its labels, e.g. `caldera_auth_mode{mode="none"}`) in
/// a Prometheus text exposition; panics when it is not exported.
#[must_use]
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{name} not exported"))
        .parse()
        .unwrap()
}

/// Reads reports until none arrive for `quiet`.
pub fn drain(c: &mut OrderClient, out: &mut Vec<ServerReport>, quiet: Duration) {
    while c.recv(out, quiet).unwrap() > 0 {}
}

/// Runs `caldera` with arguments and returns its stdout (panics on failure).
#[must_use]
pub fn caldera(args: &[&str]) -> String {
    let out = Command::new(caldera_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "caldera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A tansu 0.6.0 broker on a free 127.0.0.1 port: memory storage ([`Broker::start`]), or an
/// SQLite file that survives a restart ([`Broker::start_persistent`], [`Broker::restart`]).
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Working directory (log; the SQLite file when persistent).
    dir: PathBuf,
    /// `memory://tansu/` or `sqlite://tansu.db` (relative to `dir`).
    storage: &'static str,
}

/// The tansu binary (`$CALDERA_TANSU`, or `tansu` on the PATH or in `~/.cargo/bin`).
#[must_use]
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
    /// Starts it with memory storage and creates `topic` with one partition.
    #[must_use]
    pub fn start(topic: &str) -> Broker {
        Self::start_with(topic, "memory://tansu/")
    }

    /// Starts it with SQLite storage (tansu's `libsql` feature, which scripts/test.sh installs)
    /// so that a restart keeps the topic, and creates `topic` with one partition.
    #[must_use]
    pub fn start_persistent(topic: &str) -> Broker {
        Self::start_with(topic, "sqlite://tansu.db")
    }

    fn start_with(topic: &str, storage: &'static str) -> Broker {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir = temp_dir("tansu");
        let child = Self::spawn(&addr, &dir, storage);
        let url = format!("tcp://{addr}");
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
        Broker {
            child,
            addr,
            dir,
            storage,
        }
    }

    fn spawn(addr: &str, dir: &Path, storage: &str) -> Child {
        let url = format!("tcp://{addr}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                storage,
            ])
            .current_dir(dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Kills the broker (SIGKILL: no clean shutdown), waits `down`, and starts it again on the
    /// same port and storage.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(&self.addr, &self.dir, self.storage);
    }

    /// What the broker printed (its `tansu.log`).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    /// `kafka://ADDR/TOPIC`.
    #[must_use]
    pub fn uri(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.addr)
    }
    /// Sends a signal (SIGSTOP/SIGCONT freeze and thaw it). After SIGSTOP, returns only once
    /// every thread of the broker has stopped: `kill` returns before they have, and on a busy
    /// machine a thread can go on serving requests for a while after it.
    pub fn signal(&self, s: rustix::process::Signal) {
        let pid = self.child.id();
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), s)
            .unwrap();
        if s == rustix::process::Signal::STOP {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !all_threads_stopped(pid) {
                assert!(Instant::now() < deadline, "tansu ({pid}) did not stop");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/PID/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    })
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process with its log file, killed when dropped.
pub struct Process {
    /// The process.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout piped and stderr to `log`.
    #[must_use]
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Process {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Process { child, log }
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.child.id() as i32).unwrap()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), sig).unwrap();
    }

    /// Whether its log contains `needle`.
    #[must_use]
    pub fn log_has(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|s| s.contains(needle))
    }

    /// Waits until its log contains `needle` (panics after `within`).
    pub fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log_has(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit; returns (exit code or -signal, last stdout line).
    pub fn wait(mut self, limit: Duration) -> (i32, String) {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let code = status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0));
        (code, out.lines().last().unwrap_or("").to_string())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `endpoint` answers a heartbeat from a client with `credentials` within `within`.
#[must_use]
pub fn answering(endpoint: &str, credentials: &ClientCredentials, within: Duration) -> bool {
    let ctx = zmq::Context::new();
    let mut c = OrderClient::connect(&ctx, endpoint, credentials).unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        c.push(caldera_client::requests::heartbeat(1));
        c.flush().unwrap();
        if c.recv(&mut out, Duration::from_millis(100)).unwrap() > 0 {
            return true;
        }
    }
    false
}
