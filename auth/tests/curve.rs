//! CURVE and ZAP over real TCP sockets on 127.0.0.1: a listed key is admitted and its frames
//! carry its key as `User-Id`; an unlisted key, or a client without CURVE, never gets a frame
//! through, and both are counted.

use caldera_auth::{Authenticator, Certificate, ClientCredentials, Guard, ServerKeys};
use caldera_pipeline::{Idle, WaitStrategy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Server {
    ctx: zmq::Context,
    router: zmq::Socket,
    endpoint: String,
    guard: Arc<Guard>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Authenticator, Option<usize>)>>,
    server: ServerKeys,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server(dir: &std::path::Path, listed: &[(&str, &Certificate, &str)]) -> Server {
    let server_cert = Certificate::generate().unwrap();
    server_cert.write(dir, "server").unwrap();
    let mut text = String::new();
    for (name, cert, role) in listed {
        text.push_str(&format!(
            "[[client]]\nname = \"{name}\"\nkey = \"{}\"\nrole = \"{role}\"\naccounts = [\"1-10\"]\n",
            cert.public
        ));
    }
    let path = dir.join("entitlements.toml");
    std::fs::write(&path, text).unwrap();
    let guard = Arc::new(Guard::load(&path, server_cert.public).unwrap());
    let keys = ServerKeys::read(&dir.join("server.key_secret")).unwrap();
    let ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let mut auth = Authenticator::bind(
        &ctx,
        Arc::clone(&guard),
        Arc::clone(&reload),
        Arc::clone(&stop),
    )
    .unwrap();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    keys.apply(&router).unwrap();
    router.bind("tcp://127.0.0.1:0").unwrap();
    auth.watch(&ctx, &router, "test").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();
    let thread = caldera_pipeline::spawn(
        "caldera-auth",
        auth,
        Idle::with_phases(WaitStrategy::Park, 0, 0),
        None,
    )
    .unwrap();
    Server {
        ctx,
        router,
        endpoint,
        guard,
        stop,
        reload,
        thread: Some(thread),
        server: keys,
    }
}

fn client(ctx: &zmq::Context, endpoint: &str, creds: &ClientCredentials) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    creds.apply(&s).unwrap();
    s.connect(endpoint).unwrap();
    s
}

fn creds(cert: &Certificate, server: &ServerKeys) -> ClientCredentials {
    ClientCredentials::Curve {
        public: cert.public,
        secret: cert.secret.clone().unwrap(),
        server: server.public,
    }
}

/// The next frame on the server: (User-Id, payload), or None within `wait`.
fn next_frame(router: &zmq::Socket, wait: Duration) -> Option<(Option<String>, Vec<u8>)> {
    if router
        .poll(zmq::POLLIN, i64::try_from(wait.as_millis()).unwrap())
        .unwrap()
        == 0
    {
        return None;
    }
    let _ident = router.recv_bytes(0).unwrap();
    let mut payload = zmq::Message::new();
    router.recv(&mut payload, 0).unwrap();
    let user = payload.gets("User-Id").map(str::to_string);
    Some((user, payload.to_vec()))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn listed_keys_are_admitted_with_their_key_as_user_id_and_others_never_reach_the_server() {
    assert_eq!(
        zmq::has("curve"),
        Some(true),
        "libzmq must be built with CURVE"
    );
    let dir = tempfile::tempdir().unwrap();
    let alice = Certificate::generate().unwrap();
    let mallory = Certificate::generate().unwrap();
    let s = server(dir.path(), &[("alice", &alice, "trade")]);

    let a = client(&s.ctx, &s.endpoint, &creds(&alice, &s.server));
    a.send("hello", 0).unwrap();
    let (user, payload) = next_frame(&s.router, Duration::from_secs(5)).expect("alice's frame");
    assert_eq!(user.as_deref(), Some(alice.public.z85().as_str()));
    assert_eq!(payload, b"hello");

    // An unlisted key: ZAP says no, nothing arrives.
    let m = client(&s.ctx, &s.endpoint, &creds(&mallory, &s.server));
    m.send("let me in", 0).unwrap();
    wait_for("the ZAP refusal", || {
        s.guard.counters.denied.load(Ordering::Relaxed) >= 1
    });
    assert!(next_frame(&s.router, Duration::from_millis(300)).is_none());

    // No CURVE at all: the handshake fails before authentication.
    let plain = client(&s.ctx, &s.endpoint, &ClientCredentials::Insecure);
    plain.send("plain", 0).unwrap();
    wait_for("the failed handshake", || {
        s.guard.counters.handshake_failures.load(Ordering::Relaxed) >= 1
    });
    assert!(next_frame(&s.router, Duration::from_millis(300)).is_none());

    // The right key pair with the wrong server key: no session either.
    let wrong = ClientCredentials::Curve {
        public: alice.public,
        secret: alice.secret.clone().unwrap(),
        server: mallory.public,
    };
    let w = client(&s.ctx, &s.endpoint, &wrong);
    w.send("wrong server", 0).unwrap();
    assert!(next_frame(&s.router, Duration::from_millis(500)).is_none());
    assert_eq!(s.guard.counters.admitted.load(Ordering::Relaxed), 1);
}

#[test]
fn a_reload_admits_new_keys_and_refuses_removed_ones_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Certificate::generate().unwrap();
    let bob = Certificate::generate().unwrap();
    let s = server(dir.path(), &[("alice", &alice, "trade")]);
    let path = dir.path().join("entitlements.toml");
    let v1 = s.guard.version();

    // A broken file is refused; alice stays listed.
    std::fs::write(&path, "[[client]]\nname = 1\n").unwrap();
    s.reload.store(true, Ordering::Release);
    wait_for("the refused reload", || {
        s.guard.counters.reload_failures.load(Ordering::Relaxed) == 1
    });
    assert_eq!(s.guard.version(), v1);
    assert!(s.guard.client(&alice.public).is_some());

    // bob replaces alice.
    std::fs::write(
        &path,
        format!(
            "[[client]]\nname = \"bob\"\nkey = \"{}\"\nrole = \"read\"\naccounts = [7]\n",
            bob.public
        ),
    )
    .unwrap();
    s.reload.store(true, Ordering::Release);
    wait_for("the reload", || s.guard.version() > v1);
    assert!(s.guard.client(&alice.public).is_none());
    let b = s.guard.client(&bob.public).unwrap();
    assert!(b.may_use(7) && !b.may_use(8));

    let a = client(&s.ctx, &s.endpoint, &creds(&alice, &s.server));
    a.send("alice again", 0).unwrap();
    wait_for("alice's refusal", || {
        s.guard.counters.denied.load(Ordering::Relaxed) >= 1
    });
    let c = client(&s.ctx, &s.endpoint, &creds(&bob, &s.server));
    c.send("bob", 0).unwrap();
    let (user, _) = next_frame(&s.router, Duration::from_secs(5)).expect("bob's frame");
    assert_eq!(user.as_deref(), Some(bob.public.z85().as_str()));
}

#[test]
fn certificates_round_trip_in_the_zeromq_file_format_and_secrets_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let c = Certificate::generate().unwrap();
    let (public, secret) = c.write(dir.path(), "k").unwrap();
    let p = Certificate::read(&public).unwrap();
    assert_eq!(p.public, c.public);
    assert!(p.secret.is_none());
    assert!(Certificate::read_secret(&public).is_err());
    let (pk, sk) = Certificate::read_secret(&secret).unwrap();
    assert_eq!(pk, c.public);
    assert_eq!(sk, c.secret.clone().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!format!("{sk:?}").contains(&sk.z85()));
}
