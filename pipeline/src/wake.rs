//! Waking a sleeping thread without a lost wake-up and without a system call while it is awake.
//!
//! The protocol, for either kind of sleeper: the sleeper announces it is about to sleep
//! (`sleeping = true`), issues a full fence, re-checks for work, and only then blocks. A
//! producer publishes its work, issues a full fence, and wakes the sleeper only if it announced
//! sleep. One of the two always sees the other's write, so work is never left unseen, and a
//! thread that is awake costs the producer one load.

use rustix::fd::OwnedFd;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// A thread that parks when idle (`std::thread::park`), and the flag producers check.
#[derive(Debug, Default)]
pub struct Parker {
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Parker {
    /// Registers the calling thread as the one this parker wakes.
    pub fn register_current(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Parks the calling (registered) thread for at most `timeout`, unless `has_work` (checked
    /// after announcing sleep) finds work.
    pub fn park_unless(&self, has_work: impl FnOnce() -> bool, timeout: Duration) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !has_work() {
            std::thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Wakes the thread if it is (about to be) parked. Call after publishing work. No
    /// allocation; a system call only when the thread sleeps.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// A thread that sleeps in `poll` (the gateway: its ZeroMQ socket and this eventfd), and the
/// flag producers check.
#[derive(Debug)]
pub struct EventFdWaker {
    sleeping: AtomicBool,
    fd: OwnedFd,
}

impl EventFdWaker {
    /// A new, non-blocking eventfd.
    ///
    /// # Errors
    /// When the eventfd cannot be created.
    pub fn new() -> std::io::Result<Self> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )?;
        Ok(Self {
            sleeping: AtomicBool::new(false),
            fd,
        })
    }

    /// The descriptor to poll for readability.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Announces sleep; the caller then re-checks for work and polls [`EventFdWaker::fd`].
    pub fn announce_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Back from `poll`: clears the announcement and the eventfd.
    pub fn awake(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut b);
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Wakes the thread if it is (about to be) blocked. Call after publishing work.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }
}
