//! Engine snapshot files in `<journal dir>/snapshots/`, named by the last event sequence they
//! include. Each file: `CALDSNAP` magic, sequence u64, CRC32C u32, length u64, engine snapshot.
//! Written to a temporary file, synced, renamed: a crash never leaves a half snapshot.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CALDSNAP";

/// Snapshot store errors.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The snapshot directory of a journal.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep: usize,
}

impl SnapshotStore {
    /// The store under `journal_dir/snapshots`, keeping the newest `keep` files.
    #[must_use]
    pub fn new(journal_dir: &Path, keep: usize) -> Self {
        Self {
            dir: journal_dir.join("snapshots"),
            keep: keep.max(1),
        }
    }

    /// Writes a snapshot that includes every event up to `seq`; prunes old ones.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, seq: u64, engine_snapshot: &[u8]) -> Result<PathBuf, SnapshotFileError> {
        let e = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotFileError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(e(&self.dir))?;
        let path = self.dir.join(format!("{seq:020}.snap"));
        let tmp = self.dir.join(format!("{seq:020}.snap.tmp"));
        let mut f = fs::File::create(&tmp).map_err(e(&tmp))?;
        let mut head = Vec::with_capacity(28);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&seq.to_le_bytes());
        head.extend_from_slice(&crc32c::crc32c(engine_snapshot).to_le_bytes());
        head.extend_from_slice(&(engine_snapshot.len() as u64).to_le_bytes());
        f.write_all(&head).map_err(e(&tmp))?;
        f.write_all(engine_snapshot).map_err(e(&tmp))?;
        f.sync_all().map_err(e(&tmp))?;
        fs::rename(&tmp, &path).map_err(e(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(e(&self.dir))?;
        let mut all = self.list();
        while all.len() > self.keep {
            let (_, old) = all.remove(0);
            let _ = fs::remove_file(old);
        }
        Ok(path)
    }

    fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
            .collect();
        v.sort();
        v
    }

    /// Every snapshot file, oldest first: (sequence, path, what is wrong with it or `None`).
    #[must_use]
    pub fn check_all(&self) -> Vec<(u64, PathBuf, Option<String>)> {
        self.list()
            .into_iter()
            .map(|(seq, path)| {
                let problem = match fs::read(&path) {
                    Ok(b) => check(seq, &b).err(),
                    Err(e) => Some(format!("unreadable: {e}")),
                };
                (seq, path, problem)
            })
            .collect()
    }

    /// The newest snapshot that verifies: (sequence, engine snapshot bytes). Damaged files are
    /// skipped (and logged), falling back to older ones.
    #[must_use]
    pub fn latest(&self) -> Option<(u64, Vec<u8>)> {
        self.latest_at_most(u64::MAX)
    }

    /// The newest snapshot that verifies and covers no sequence after `max_seq` (the end of
    /// the log: a snapshot beyond it covers events a crash removed from the log, and is
    /// skipped with a warning).
    #[must_use]
    pub fn latest_at_most(&self, max_seq: u64) -> Option<(u64, Vec<u8>)> {
        for (seq, path) in self.list().into_iter().rev() {
            if seq > max_seq {
                tracing::warn!(path = %path.display(), seq, log_ends_at = max_seq, "snapshot is ahead of the journal (its last events were never synced, or were lost): ignored, trying an older one");
                continue;
            }
            match fs::read(&path) {
                Ok(b) => match check(seq, &b) {
                    Ok(()) => return Some((seq, b[28..].to_vec())),
                    Err(why) => {
                        tracing::warn!(path = %path.display(), why, "snapshot damaged; trying an older one");
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "snapshot unreadable; trying an older one");
                }
            }
        }
        None
    }
}

/// Checks a snapshot file's header and checksum against the sequence in its name.
fn check(seq: u64, b: &[u8]) -> Result<(), String> {
    if b.len() < 28 || &b[..8] != MAGIC {
        return Err("not a snapshot file (bad magic or too short)".into());
    }
    let s = u64::from_le_bytes(b[8..16].try_into().expect("8"));
    let crc = u32::from_le_bytes(b[16..20].try_into().expect("4"));
    let len = u64::from_le_bytes(b[20..28].try_into().expect("8"));
    let body = &b[28..];
    if s != seq {
        return Err(format!("holds sequence {s}, named {seq}"));
    }
    if body.len() as u64 != len {
        return Err(format!("{} bytes, header says {len}", body.len()));
    }
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(())
}
