//! One run at a time per workspace (here: per session output folder).
//!
//! The lock is an operating-system file lock on `.lock`, so it is released when the process
//! exits, however it exits: a crashed or killed run never leaves a stale lock. The file's
//! text says who holds it, for the message the second run prints. The file itself is never
//! deleted, since deleting a lock file races with a process that is about to lock it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is locked by another run ({holder})", path = .path.display())]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// How a lock is held. Runs hold it alone; the shares of one task split across processes
/// (see [`crate::engine::Share`]) hold it together, which keeps every other run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: File,
    path: PathBuf,
}

impl WorkspaceLock {
    pub const FILE_NAME: &'static str = ".lock";

    fn open(dir: &Path) -> Result<(File, PathBuf), LockError> {
        let path = dir.join(Self::FILE_NAME);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        Ok((file, path))
    }

    /// Waits for the lock of `dir` (created if needed), held as `mode` says. Only the
    /// holder alone says who it is: shared holders would overwrite each other's words.
    pub fn wait(dir: &Path, mode: LockMode) -> Result<WorkspaceLock, LockError> {
        let (mut file, path) = Self::open(dir)?;
        let locked = match mode {
            LockMode::Exclusive => file.lock(),
            LockMode::Shared => file.lock_shared(),
        };
        locked.map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
        if mode == LockMode::Exclusive {
            Self::say_who(&mut file, &path)?;
        }
        Ok(WorkspaceLock { _file: file, path })
    }

    /// Takes the lock of `dir` (created if needed) alone, without waiting.
    pub fn acquire(dir: &Path) -> Result<WorkspaceLock, LockError> {
        let (mut file, path) = Self::open(dir)?;
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    path,
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        Self::say_who(&mut file, &path)?;
        Ok(WorkspaceLock { _file: file, path })
    }

    /// Writes who holds the lock into its file, for the message a second run prints.
    fn say_who(file: &mut File, path: &Path) -> Result<(), LockError> {
        let text = format!(
            "pid {} on {} since {}",
            std::process::id(),
            hostname(),
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S %z")
        );
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|source| LockError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkspaceLock::acquire(dir.path()).unwrap();
        match WorkspaceLock::acquire(dir.path()) {
            Err(LockError::Held { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                )
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        WorkspaceLock::acquire(dir.path()).expect("lock is free after release");
    }

    #[test]
    fn shared_holders_keep_a_lone_run_out_but_not_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let a = WorkspaceLock::wait(dir.path(), LockMode::Shared).unwrap();
        let b = WorkspaceLock::wait(dir.path(), LockMode::Shared).unwrap();
        assert!(matches!(
            WorkspaceLock::acquire(dir.path()),
            Err(LockError::Held { .. })
        ));
        drop((a, b));
        let alone = WorkspaceLock::wait(dir.path(), LockMode::Exclusive).unwrap();
        assert!(matches!(
            WorkspaceLock::acquire(dir.path()),
            Err(LockError::Held { .. })
        ));
        drop(alone);
    }
}
