//! The writer lock of a file journal: an exclusive `flock` on `DIR/LOCK`, held for the
//! writer's lifetime. The kernel releases it the instant the holder dies, which is how a
//! standby on the same host detects a crashed primary (it blocks on the lock). A stopped
//! (SIGSTOP) holder keeps the lock, so a standby that sees no heartbeat fences it by killing the
//! holder, found through `/proc/locks` (see docs/failover.md).

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
    /// inode), or `None` when it is free or unknown.
    #[must_use]
    pub fn holder_pid(dir: &Path) -> Option<i32> {
        let ino = std::fs::metadata(dir.join("LOCK")).ok()?.ino();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        // "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF"
        locks.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
                return None;
            }
            let lock_ino: u64 = f[5].rsplit(':').next()?.parse().ok()?;
            (lock_ino == ino).then(|| f[4].parse().ok()).flatten()
        })
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}
