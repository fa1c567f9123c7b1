//! CPU time and memory of this process and of each of its threads, from the kernel (Linux
//! `/proc` and `CLOCK_PROCESS_CPUTIME_ID`): what a request costs is measured, not guessed.

use std::time::Duration;

/// CPU time this process has used so far (all threads, including those that exited).
#[must_use]
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU time the calling thread has used so far.
#[must_use]
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Resident memory of this process, in bytes (0 if unknown).
#[must_use]
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// One live thread: its id, name (`comm`) and CPU time so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name (`/proc/self/task/TID/comm`).
    pub name: String,
    /// CPU time used (ns precision from `schedstat` where the kernel has it).
    pub cpu: Duration,
}

/// Every live thread of this process.
#[must_use]
pub fn threads() -> Vec<ThreadCpu> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let cpu = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map(Duration::from_nanos)
            .or_else(|| stat_cpu(&p))
            .unwrap_or_default();
        out.push(ThreadCpu { tid, name, cpu });
    }
    out.sort_by_key(|t| t.tid);
    out
}

/// utime + stime from `stat` (clock ticks, 100 per second on Linux).
fn stat_cpu(task: &std::path::Path) -> Option<Duration> {
    let s = std::fs::read_to_string(task.join("stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The role of a thread of a Caldera process, from its name: `gateway` (the main thread of
/// `caldera`), `engine`, `journal`, `zmq-io` (libzmq's I/O threads), or the name itself.
#[must_use]
pub fn role_of(t: &ThreadCpu, main_tid: u32, main_role: &str) -> String {
    if t.tid == main_tid {
        return main_role.to_string();
    }
    if t.name.starts_with("ZMQbg/IO") {
        return "zmq-io".into();
    }
    if t.name.starts_with("ZMQbg/") {
        return "zmq-other".into();
    }
    // Linux keeps 15 bytes of a thread name: names are chosen to fit.
    match t.name.strip_prefix("caldera-").unwrap_or(&t.name) {
        "snaps" => "snapshot".into(),
        other => other.to_string(),
    }
}

/// This process's id (the main thread's id).
#[must_use]
pub fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Runs `f` with the calling thread named `name` (at most 15 bytes), then restores its name.
/// Threads a library starts inside `f` inherit the name: libzmq's I/O threads are named this
/// way, so their CPU time is told apart from the thread that created the context.
pub fn with_thread_name<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let old = std::fs::read_to_string("/proc/thread-self/comm")
        .map(|s| s.trim_end().to_string())
        .ok();
    let set = |n: &str| {
        if let Ok(c) = std::ffi::CString::new(n) {
            let _ = rustix::thread::set_name(&c);
        }
    };
    set(name);
    let r = f();
    if let Some(old) = old {
        set(&old);
    }
    r
}
