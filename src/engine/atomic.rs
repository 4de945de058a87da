//! Atomic, durable output: the one way tasks write files.
//!
//! Each file is written to a hidden temporary beside its target (`.NAME.partial`), all of a
//! batch's temporaries are made durable together, then renamed over their targets and the
//! folders synced. A reader therefore sees either the old file or the complete new one, and
//! a crash leaves at most `.partial` leftovers, which the next write of the same target
//! replaces.
//!
//! Syncing thousands of small files one by one costs about 0.4 ms each here; a batch of
//! more than [`FSYNC_EACH_LIMIT`] files is instead flushed with one `syncfs` on Linux.
//!
//! A batch can instead keep its temporaries in a folder of its own
//! ([`Staging::in_folder`]), on the same filesystem: then concurrent batches whose targets
//! share one folder do not queue on that folder's lock while they create files (a new
//! file's inode is made under its folder's lock); only the renames, which are cheap, meet
//! there. Measured by `scripts/bench-create.sh`: two writers creating in one folder cost
//! about 1.6 times the system time of one, the same two staging apart about 0.9 times.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Up to this many files, a batch fsyncs each file; above it, one filesystem-wide sync is
/// cheaper.
pub const FSYNC_EACH_LIMIT: usize = 8;

/// Files written but not yet committed. Dropping a `Staging` without committing removes its
/// temporaries, so a failed task item leaves nothing behind under any name.
#[derive(Default)]
pub struct Staging {
    staged: Vec<(PathBuf, PathBuf)>,
    targets: HashSet<PathBuf>,
    /// Folders already found to be real folders, not links.
    folders: HashSet<PathBuf>,
    /// The folder of this batch's temporaries, when not beside their targets.
    temp_folder: Option<PathBuf>,
    /// The target of each temporary in `temp_folder`, by name (a second target of the same
    /// name, in another folder, has its temporary beside it instead).
    temp_names: std::collections::HashMap<std::ffi::OsString, PathBuf>,
}

impl Staging {
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch whose temporaries go into `folder` (created when needed; it must be on the
    /// filesystem of the targets, for the renames), not beside their targets.
    pub fn in_folder(folder: PathBuf) -> Self {
        let mut staging = Self::default();
        staging.temp_folder = Some(folder);
        staging
    }

    /// Writes `bytes` for `target` (to its temporary; visible only after [`commit`]).
    ///
    /// [`commit`]: Staging::commit
    pub fn write(&mut self, target: impl Into<PathBuf>, bytes: &[u8]) -> io::Result<()> {
        self.stage(target.into(), |file| file.write_all(bytes))
    }

    /// Writes `target` through a writer (to its temporary; visible only after [`commit`]),
    /// for a file too large to hold in memory first, such as a table of a million rows.
    ///
    /// [`commit`]: Staging::commit
    pub fn stream(
        &mut self,
        target: impl Into<PathBuf>,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.stage(target.into(), |file| {
            let mut writer = io::BufWriter::with_capacity(1 << 16, file);
            write(&mut writer)?;
            writer.flush()
        })
    }

    /// Creates `target`'s temporary, lets `write` fill it, and stages it.
    fn stage(
        &mut self,
        target: PathBuf,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let temp = self.temp_for(&target);
        for folder in [target.parent(), temp.parent()].into_iter().flatten() {
            if !self.folders.contains(folder) {
                check_not_a_link(folder)?;
                self.folders.insert(folder.to_path_buf());
            }
        }
        let result = match create_temp(&temp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                for folder in [target.parent(), temp.parent()].into_iter().flatten() {
                    fs::create_dir_all(folder)?;
                }
                create_temp(&temp)
            }
            other => other,
        };
        let mut file = result.map_err(|e| with_path(e, &temp))?;
        let written = write(&mut file).and_then(|()| {
            if self.staged.len() < FSYNC_EACH_LIMIT {
                // Small batches sync as they go; large ones sync once in `commit`.
                file.sync_all()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(with_path(e, &temp));
        }
        // Writing a target again replaces its temporary; it is still committed once.
        if self.targets.insert(target.clone()) {
            self.staged.push((temp, target));
        }
        Ok(())
    }

    /// Where `target`'s temporary goes: this batch's folder, unless a target of the same
    /// name (in another folder) has its temporary there already.
    fn temp_for(&mut self, target: &Path) -> PathBuf {
        let beside = temp_path(target);
        let (Some(folder), Some(name)) = (&self.temp_folder, beside.file_name()) else {
            return beside;
        };
        let ours = folder.join(name);
        match self.temp_names.get(name) {
            Some(other) if other != target => beside,
            Some(_) => ours,
            None => {
                self.temp_names
                    .insert(name.to_os_string(), target.to_path_buf());
                ours
            }
        }
    }

    /// The targets staged so far.
    pub fn targets(&self) -> impl Iterator<Item = &Path> {
        self.staged.iter().map(|(_, t)| t.as_path())
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Makes every staged file durable, renames each over its target and syncs the folders.
    /// Returns the committed targets in the order they were written.
    pub fn commit(mut self) -> io::Result<Vec<PathBuf>> {
        if self.staged.len() > FSYNC_EACH_LIMIT {
            // On failure `self` is dropped, which removes every temporary.
            sync_many(&self.staged[FSYNC_EACH_LIMIT..])?;
        }
        let mut rest = std::mem::take(&mut self.staged).into_iter();
        let mut committed = Vec::with_capacity(rest.len());
        let mut folders = BTreeSet::new();
        while let Some((temp, target)) = rest.next() {
            if let Err(e) = fs::rename(&temp, &target) {
                for (temp, _) in std::iter::once((temp, target.clone())).chain(rest) {
                    let _ = fs::remove_file(temp);
                }
                return Err(with_path(e, &target));
            }
            if let Some(parent) = target.parent() {
                folders.insert(parent.to_path_buf());
            }
            committed.push(target);
        }
        for folder in folders {
            sync_dir(&folder)?;
        }
        if let Some(folder) = &self.temp_folder {
            // Empty now, unless something else put a file there: then it stays.
            let _ = fs::remove_dir(folder);
        }
        Ok(committed)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for (temp, _) in &self.staged {
            let _ = fs::remove_file(temp);
        }
        if let Some(folder) = &self.temp_folder {
            let _ = fs::remove_dir(folder);
        }
    }
}

/// A folder written into must be a folder, not a symbolic link (say, a `vignettes` link
/// planted to send the outputs, the orphan removal and the sweep of temporaries
/// elsewhere). A folder that does not exist yet is fine: it is created as a folder.
fn check_not_a_link(folder: &Path) -> io::Result<()> {
    match fs::symlink_metadata(folder) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::other(format!(
            "{} is a symbolic link: refusing to write through it (remove it; the folder \
             is made anew)",
            folder.display()
        ))),
        _ => Ok(()),
    }
}

/// Creates a temporary as a new file, never through whatever is already at its name: a
/// stale entry (a leftover, or a symlink planted there to make us write elsewhere) is
/// removed first, and the file is opened with `O_CREAT | O_EXCL | O_NOFOLLOW`, so that if
/// anything reappears at the name in between, the write fails instead of leaving the folder.
///
/// The name is tried first as it is (usually free: one system call), and cleared only when
/// something is there.
fn create_temp(temp: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    match options.open(temp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => return other,
    }
    match fs::remove_file(temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(e, temp)),
    }
    options.open(temp)
}

/// Atomically replaces `target` with `bytes`, durable when this returns.
pub fn write_file(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut staging = Staging::new();
    staging.write(target, bytes)?;
    staging.commit().map(drop)
}

/// The hidden temporary that stands in for `target` until it is committed.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.partial"))
}

/// True for the temporaries this module creates, so cleaners can recognise leftovers.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}

/// Makes renames and removals inside `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, dir))
}

#[cfg(target_os = "linux")]
fn sync_many(staged: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    // One syncfs flushes every dirty file of the filesystem that holds them: a single
    // journal commit instead of one per file.
    let (temp, _) = &staged[0];
    let file = File::open(temp).map_err(|e| with_path(e, temp))?;
    rustix::fs::syncfs(&file).map_err(|e| with_path(e.into(), temp))
}

#[cfg(not(target_os = "linux"))]
fn sync_many(staged: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    for (temp, _) in staged {
        File::open(temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| with_path(e, temp))?;
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_visible_before_commit_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/a.txt");
        {
            let mut staging = Staging::new();
            staging.write(&target, b"hello").unwrap();
            assert!(!target.exists());
            assert!(temp_path(&target).exists());
        }
        assert!(
            !temp_path(&target).exists(),
            "dropped staging removes temps"
        );
        assert!(!target.exists());
    }

    #[test]
    fn commit_renames_every_file_of_a_large_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut staging = Staging::new();
        for i in 0..50 {
            staging
                .write(dir.path().join(format!("{i}.bin")), &[i as u8; 10])
                .unwrap();
        }
        let committed = staging.commit().unwrap();
        assert_eq!(committed.len(), 50);
        for i in 0..50u8 {
            assert_eq!(
                fs::read(dir.path().join(format!("{i}.bin"))).unwrap(),
                vec![i; 10]
            );
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| is_temp_name(&e.file_name().to_string_lossy()))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_batch_in_its_own_folder_commits_into_the_targets_folders() {
        let dir = tempfile::tempdir().unwrap();
        let temps = dir.path().join("state/staging/page-1");
        let mut staging = Staging::in_folder(temps.clone());
        let (a, b) = (dir.path().join("out/x.tif"), dir.path().join("other/x.tif"));
        staging.write(&a, b"a").unwrap();
        staging.write(&b, b"b").unwrap();
        staging.write(&a, b"a2").unwrap();
        assert!(
            temps.join(".x.tif.partial").is_file(),
            "first x in the folder"
        );
        assert!(temp_path(&b).is_file(), "a second x beside its target");
        assert!(!a.exists() && !b.exists(), "nothing visible before commit");
        assert_eq!(staging.commit().unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(fs::read(&a).unwrap(), b"a2");
        assert_eq!(fs::read(&b).unwrap(), b"b");
        assert!(!temps.exists(), "the emptied folder is removed");
        assert!(!temp_path(&b).exists());

        let mut dropped = Staging::in_folder(temps.clone());
        dropped.write(dir.path().join("out/y.tif"), b"y").unwrap();
        drop(dropped);
        assert!(!temps.exists(), "a dropped batch leaves nothing");
        assert!(!dir.path().join("out/y.tif").exists());
    }

    #[test]
    fn a_batch_folder_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("temps")).unwrap();
        let mut staging = Staging::in_folder(dir.path().join("temps"));
        let error = staging.write(dir.path().join("x"), b"x").unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn write_file_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        write_file(&target, b"one").unwrap();
        write_file(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
    }
}
