//! `clean`: removes what this tool wrote for one session, and nothing else. What is ours
//! is what each task's registry entry owns plus the runs' own files (history, log, stamps)
//! and leftover temporaries; anything else in the folder (a user's notes) is kept, and
//! the folder itself goes only when that leaves it empty.

use crate::engine::{LockError, WorkspaceLock};
use crate::tasks::Session;
use crate::tasks::registry::TASKS;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `clean` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleaned {
    /// The output folder did not exist.
    Nothing,
    /// This many of our top-level entries were removed.
    Removed(usize),
}

/// Every top-level entry of the session's output folder this tool writes.
pub fn owned_outputs(session: &Session) -> Vec<PathBuf> {
    let mut owned = session.run_outputs();
    for task in TASKS {
        owned.extend((task.owned)(session));
    }
    owned
}

/// Removes the session's outputs under its lock (another run holding it is an error).
pub fn clean(session: &Session) -> Result<Cleaned, CleanError> {
    if !session.output.exists() {
        return Ok(Cleaned::Nothing);
    }
    let lock = WorkspaceLock::acquire(&session.output)?;
    let mut removed = 0;
    for path in owned_outputs(session) {
        // Never follow a link out of the folder: a link is removed, not what it names.
        let result = match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        match result {
            Ok(()) => removed += 1,
            Err(source) => return Err(CleanError::Remove { path, source }),
        }
    }
    // Leftover temporaries of interrupted writes are ours too.
    if let Ok(entries) = std::fs::read_dir(&session.output) {
        for entry in entries.flatten() {
            if crate::engine::atomic::is_temp_name(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_file(lock.path());
    drop(lock);
    // Only if nothing else (not ours) is left in it.
    let _ = std::fs::remove_dir(&session.output);
    Ok(Cleaned::Removed(removed))
}
