//! A small HTTP listener for `/metrics`, `/healthz` and `/readyz`.

use super::Metrics;
use crate::status::Role;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most connections answered at once; more are closed at once (a probe retries). Each has
/// its own thread and a 2 s read timeout, so a client that connects and sends nothing holds
/// one of them for 2 s and delays no one else.
const MAX_CONNECTIONS: usize = 32;

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a background thread. Returns the
/// bound address (`addr` may use port 0).
///
/// # Errors
/// When the address cannot be bound.
pub fn serve_http(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("caldera-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    drop(conn);
                    continue;
                }
                let (m, done) = (Arc::clone(&metrics), Arc::clone(&active));
                let spawned = std::thread::Builder::new()
                    .name("caldera-http".into())
                    .stack_size(256 << 10)
                    .spawn(move || {
                        let _ = answer(conn, &m);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, m: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    // Read the request head (the path is all that matters).
    while n < buf.len() {
        let k = conn.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if head_complete(&buf[..n]) {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", m.render()),
        ("GET", "/healthz") => {
            if m.node.role() == Role::Fenced {
                (
                    "500 Internal Server Error",
                    "text/plain",
                    "fenced\n".to_string(),
                )
            } else {
                ("200 OK", "text/plain", "ok\n".to_string())
            }
        }
        ("GET", "/readyz") => {
            let role = format!("{:?}\n", m.node.role()).to_lowercase();
            if m.ready() {
                ("200 OK", "text/plain", role)
            } else {
                ("503 Service Unavailable", "text/plain", role)
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// The request head is complete: a blank line ends an HTTP/1.x head; a bare `GET /path` line
/// (no version) is complete at its newline. Reading the whole head before answering matters:
/// closing a connection with unread request bytes resets it, and the client loses the answer.
fn head_complete(b: &[u8]) -> bool {
    if b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n") {
        return true;
    }
    match b.iter().position(|&c| c == b'\n') {
        Some(eol) => !b[..eol].windows(5).any(|w| w == b"HTTP/"),
        None => false,
    }
}
