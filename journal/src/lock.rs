//! The writer lock of a file journal: an exclusive `flock` on `DIR/LOCK`, held for the
//! writer's lifetime. The kernel releases it the instant the holder dies, which is how a
//! standby on the same host detects a crashed primary (it blocks on the lock). A stopped
//! (SIGSTOP) holder keeps the lock, so a standby that sees no heartbeat fences it by killing the
//! holder, found through `/proc/locks` and checked before it is killed (see docs/failover.md).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why the writer lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("journal {0} is in use by another process (its LOCK file is held)")]
    Held(PathBuf),
    /// I/O on the lock file or its directory.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A held writer lock on a journal directory.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
}

fn open_lock_file(dir: &Path) -> Result<(File, PathBuf), LockError> {
    std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    Ok((file, path))
}

impl WriterLock {
    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds it; I/O errors.
    pub fn try_acquire(dir: &Path) -> Result<WriterLock, LockError> {
        let (file, path) = open_lock_file(dir)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| LockError::Held(dir.to_path_buf()))?;
        Ok(Self::held(file, path))
    }

    /// Waits until the lock is free and takes it (returns the moment the holder dies).
    ///
    /// # Errors
    /// I/O errors.
    pub fn acquire_blocking(dir: &Path) -> Result<WriterLock, LockError> {
        let (file, path) = open_lock_file(dir)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            LockError::Io {
                path: path.clone(),
                source: e.into(),
            }
        })?;
        Ok(Self::held(file, path))
    }

    fn held(mut file: File, path: PathBuf) -> WriterLock {
        // For operators: who holds it. Fencing does not trust this (see `holder_pid`).
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        WriterLock { file, path }
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The process holding the lock on `dir`, from `/proc/locks` (matched by the lock file's
    /// device and inode), or `None` when it is free or unknown.
    #[must_use]
    pub fn holder_pid(dir: &Path) -> Option<i32> {
        let meta = std::fs::metadata(dir.join("LOCK")).ok()?;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        holder_in(&locks, meta.dev(), meta.ino())
    }

    /// Fences the process holding the lock on `dir` with SIGKILL, after checking it is what
    /// it must be: the holder in `/proc/locks` (device and inode of `DIR/LOCK`), the PID the
    /// writer recorded in `LOCK`, a process running the same executable as this one, with
    /// `DIR/LOCK` open. Returns what happened; the caller learns the lock is free from
    /// [`WriterLock::acquire_blocking`], never from this.
    #[must_use]
    pub fn fence_holder(dir: &Path) -> Fence {
        let Some(pid) = Self::holder_pid(dir) else {
            return Fence::NoHolder;
        };
        if pid == std::process::id() as i32 {
            return Fence::Refused(pid, "the holder is this process".into());
        }
        let lock_path = dir.join("LOCK");
        let recorded = std::fs::read_to_string(&lock_path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if recorded != Some(pid) {
            return Fence::Refused(
                pid,
                format!("LOCK names {recorded:?}, the kernel says {pid} holds it"),
            );
        }
        let exe = |p: &str| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .ok()
                .and_then(|e| e.file_name().map(|n| n.to_owned()))
        };
        let (theirs, ours) = (exe(&pid.to_string()), exe("self"));
        if theirs.is_none() || theirs != ours {
            return Fence::Refused(
                pid,
                format!("it runs {theirs:?}, not {ours:?} (or its executable is unreadable)"),
            );
        }
        let want = std::fs::canonicalize(&lock_path).ok();
        let holds_open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).ok() == want)
            })
            .unwrap_or(false);
        if want.is_none() || !holds_open {
            return Fence::Refused(pid, "it does not have LOCK open".into());
        }
        let Some(p) = rustix::process::Pid::from_raw(pid) else {
            return Fence::Refused(pid, "not a valid PID".into());
        };
        match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
            Ok(()) => Fence::Killed(pid),
            Err(e) => Fence::Refused(pid, format!("kill failed: {e}")),
        }
    }
}

/// What [`WriterLock::fence_holder`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Nobody holds the lock (or `/proc/locks` could not be read).
    NoHolder,
    /// SIGKILL was delivered to this PID.
    Killed(i32),
    /// Not killed: the PID and why.
    Refused(i32, String),
}

/// The PID holding an exclusive `flock` on the file with this device and inode, from the text
/// of `/proc/locks` ("1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF"; major and minor in
/// hex, the inode in decimal).
#[must_use]
pub fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<i32> {
    // Linux's dev_t encoding (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
            return None;
        }
        let mut id = f[5].split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let i: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && i == ino)
            .then(|| f[4].parse().ok())
            .flatten()
    })
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::{holder_in, Fence, WriterLock};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_holder_is_matched_by_device_and_inode_not_inode_alone() {
        // dev 0x0801 = 08:01; the same inode on 00:2d belongs to another file system.
        let locks = "1: FLOCK  ADVISORY  WRITE 111 00:2d:4242 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 222 08:01:4242 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 333 08:01:4242 0 EOF\n";
        assert_eq!(holder_in(locks, 0x0801, 4242), Some(333));
        assert_eq!(holder_in(locks, 0x002d, 4242), Some(111));
        assert_eq!(holder_in(locks, 0x0802, 4242), None);
        assert_eq!(holder_in(locks, 0x0801, 4243), None);
    }

    #[test]
    fn a_real_lock_is_found_and_this_process_is_never_fenced() {
        let dir = std::env::temp_dir().join(format!("caldera-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lock = WriterLock::try_acquire(&dir).unwrap();
        let meta = std::fs::metadata(dir.join("LOCK")).unwrap();
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        let me = std::process::id() as i32;
        assert_eq!(holder_in(&locks, meta.dev(), meta.ino()), Some(me));
        assert_eq!(WriterLock::holder_pid(&dir), Some(me));
        assert!(matches!(WriterLock::fence_holder(&dir), Fence::Refused(p, _) if p == me));
        drop(lock);
        assert_eq!(WriterLock::holder_pid(&dir), None);
        assert_eq!(WriterLock::fence_holder(&dir), Fence::NoHolder);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
