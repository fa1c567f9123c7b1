//! Waiting without burning the CPU the server needs.

use anyhow::Result;
use std::time::Duration;

/// Blocks a driver thread until one of its sockets may have something to read or a timer
/// fires: one `poll` over the sockets' ZeroMQ signalling descriptors and a timerfd (ns
/// precision) — instead of a non-blocking receive on every socket in a spin, each of which
/// costs libzmq a `poll` system call.
pub(crate) struct Waiter {
    timer: rustix::fd::OwnedFd,
}

/// Longest block without a planned send (a safety net: a ZeroMQ descriptor signals edges).
const MAX_BLOCK: Duration = Duration::from_millis(2);

impl Waiter {
    pub(crate) fn new() -> Result<Self> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        Ok(Self { timer })
    }

    pub(crate) fn wait<'s>(
        &mut self,
        sockets: impl Iterator<Item = &'s zmq::Socket>,
        due_ns: Option<u64>,
    ) -> Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        use std::os::fd::AsRawFd;
        let ns = due_ns.map_or(MAX_BLOCK.as_nanos() as u64, |d| {
            d.min(MAX_BLOCK.as_nanos() as u64)
        });
        if ns < 2_000 {
            return Ok(()); // due now: no point in blocking
        }
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: (ns / 1_000_000_000) as i64,
                tv_nsec: (ns % 1_000_000_000) as i64,
            },
        };
        timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec)?;
        // A ZeroMQ descriptor signals edges, and a send may have consumed the edge of a reply
        // that is already queued: ask each socket first (this also re-arms its descriptor).
        let sockets: Vec<&zmq::Socket> = sockets.collect();
        for s in &sockets {
            if s.get_events().is_ok_and(|e| e.contains(zmq::POLLIN)) {
                return Ok(());
            }
        }
        let mut items: Vec<zmq::PollItem<'_>> = sockets
            .iter()
            .filter_map(|s| s.get_fd().ok())
            .map(|fd| zmq::PollItem::from_fd(fd, zmq::POLLIN))
            .collect();
        items.push(zmq::PollItem::from_fd(self.timer.as_raw_fd(), zmq::POLLIN));
        zmq::poll(&mut items, -1)?;
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.timer, &mut b);
        Ok(())
    }
}
