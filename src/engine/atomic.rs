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
//! file's inode is made under its folder's lock); only the renames meet there.
//!
//! A batch can also own a folder whole ([`Staging::owning`]): its files in that folder are
//! written under their own names into a hidden sibling (`.NAME.partial/`), made durable
//! together, and the sibling then takes the folder's place in one rename (an exchange with
//! the old folder, whose files are then removed, when there was one). No file is renamed
//! on its own, and concurrent batches owning different folders share no folder's lock
//! (`scripts/bench-files.sh`, two writers: 0.93x the system time of renaming each file
//! from a staging folder into one shared folder on a disk in its slow state, 0.52x in a
//! quiet period). A reader sees the old folder or the new one, whole.

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
    /// The folder this batch replaces whole, if any.
    owned: Option<Owned>,
}

/// A folder a batch fills whole ([`Staging::owning`]).
struct Owned {
    /// The folder the files end up in.
    folder: PathBuf,
    /// Its hidden sibling, where they are written under their own names.
    partial: PathBuf,
    /// Whether `partial` has been made by this batch (and so is ours to remove).
    made: bool,
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

    /// A batch that owns `folder` whole: the files it writes directly inside `folder` go
    /// under their own names into `.NAME.partial/` beside it, which replaces `folder` at
    /// [`commit`] (files of the old folder that this batch did not write are gone then).
    /// Files elsewhere are staged as usual. For an item whose outputs are exactly one
    /// folder's files, such as a collage page's vignettes.
    ///
    /// [`commit`]: Staging::commit
    pub fn owning(folder: PathBuf) -> Self {
        let mut staging = Self::default();
        staging.owned = Some(Owned {
            partial: temp_path(&folder),
            folder,
            made: false,
        });
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
        if let Some(owned) = self.owned.as_mut() {
            if target.parent() == Some(owned.folder.as_path()) {
                return stage_owned(owned, &mut self.staged, &mut self.targets, target, write);
            }
            if target.starts_with(&owned.folder) {
                // Its temporary would go into the old folder, which is replaced whole.
                return Err(io::Error::other(format!(
                    "{}: only files directly inside the owned folder {} can be written",
                    target.display(),
                    owned.folder.display()
                )));
            }
        }
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
        let file = result.map_err(|e| with_path(e, &temp))?;
        fill(
            &mut self.staged,
            &mut self.targets,
            file,
            temp,
            target,
            write,
        )
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
        let mut committed = Vec::with_capacity(self.staged.len());
        let mut folders = BTreeSet::new();
        if let Some(owned) = self.owned.as_mut().filter(|o| o.made) {
            // Each file was synced as it was written (or by `syncfs`, which on Linux also
            // makes their names durable); their names in the folder too.
            if self.staged.len() <= FSYNC_EACH_LIMIT || cfg!(not(target_os = "linux")) {
                sync_dir(&owned.partial)?;
            }
            publish(&owned.partial, &owned.folder)?;
            owned.made = false;
            if let Some(parent) = owned.folder.parent() {
                folders.insert(parent.to_path_buf());
            }
            let published = owned.folder.as_path();
            self.staged.retain(|(_, target)| {
                let ours = target.parent() == Some(published);
                if ours {
                    committed.push(target.clone());
                }
                !ours
            });
        }
        let mut rest = std::mem::take(&mut self.staged).into_iter();
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
        if let Some(owned) = self.owned.as_ref().filter(|o| o.made) {
            let _ = remove_any(&owned.partial);
        }
        for (temp, _) in &self.staged {
            let _ = fs::remove_file(temp);
        }
        if let Some(folder) = &self.temp_folder {
            let _ = fs::remove_dir(folder);
        }
    }
}

/// Stages `target`, a file directly inside the owned folder, under its own name in the
/// folder's hidden sibling (made afresh on the first file: a leftover of an interrupted run
/// is removed first, whatever it is).
fn stage_owned(
    owned: &mut Owned,
    staged: &mut Vec<(PathBuf, PathBuf)>,
    targets: &mut HashSet<PathBuf>,
    target: PathBuf,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    if !owned.made {
        if let Some(parent) = owned.folder.parent() {
            check_not_a_link(parent)?;
            fs::create_dir_all(parent).map_err(|e| with_path(e, parent))?;
        }
        match remove_any(&owned.partial) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(with_path(e, &owned.partial));
            }
            _ => {}
        }
        fs::create_dir(&owned.partial).map_err(|e| with_path(e, &owned.partial))?;
        owned.made = true;
    }
    let temp = owned.partial.join(target.file_name().unwrap_or_default());
    let file = create_temp(&temp).map_err(|e| with_path(e, &temp))?;
    fill(staged, targets, file, temp, target, write)
}

/// Lets `write` fill `file`, the new temporary `temp` of `target`, and stages it; on
/// failure the temporary goes.
fn fill(
    staged: &mut Vec<(PathBuf, PathBuf)>,
    targets: &mut HashSet<PathBuf>,
    mut file: File,
    temp: PathBuf,
    target: PathBuf,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let written = write(&mut file).and_then(|()| {
        if staged.len() < FSYNC_EACH_LIMIT {
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
    if targets.insert(target.clone()) {
        staged.push((temp, target));
    }
    Ok(())
}

/// Puts the folder `partial` in the place of `folder` in one step: a plain rename when
/// there is no folder yet (or an empty one), else an exchange, after which the old files
/// (now at `partial`) are removed. Where the filesystem cannot exchange (NFS, FUSE, other
/// systems), the old folder is first moved aside (a moment without the folder, never a mix
/// of old and new files), and moved back if the new one cannot take its place. Old files
/// that cannot be removed once the new folder is in place are left to the task's sweep of
/// temporaries: the new folder stands.
fn publish(partial: &Path, folder: &Path) -> io::Result<()> {
    match fs::rename(partial, folder) {
        Ok(()) => return Ok(()),
        // A non-empty folder (or a file) is in the way.
        Err(e) if fs::symlink_metadata(folder).is_err() => return Err(with_path(e, folder)),
        Err(_) => {}
    }
    let old = {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            use rustix::io::Errno;
            match renameat_with(CWD, partial, CWD, folder, RenameFlags::EXCHANGE) {
                Ok(()) => Some(partial.to_path_buf()),
                Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => None,
                Err(e) => return Err(with_path(e.into(), folder)),
            }
        }
        #[cfg(not(target_os = "linux"))]
        None
    };
    let old = match old {
        Some(old) => old,
        None => publish_aside(partial, folder)?,
    };
    if let Err(e) = remove_any(&old) {
        tracing::warn!(folder = %old.display(), error = %e, "old files left for the sweep");
    }
    Ok(())
}

/// [`publish`] where the filesystem cannot exchange: the old folder moved aside, the new
/// one renamed into its place (the old one put back if that fails). Returns where the old
/// one is now.
fn publish_aside(partial: &Path, folder: &Path) -> io::Result<PathBuf> {
    // `.~NAME.partial`: no item's own hidden folder can have this name (a name starting
    // with `~` is refused), so moving aside never touches another's.
    let aside = folder.with_file_name(format!(
        ".~{}.partial",
        folder.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = remove_any(&aside);
    fs::rename(folder, &aside).map_err(|e| with_path(e, folder))?;
    if let Err(e) = fs::rename(partial, folder) {
        let _ = fs::rename(&aside, folder);
        return Err(with_path(e, folder));
    }
    Ok(aside)
}

/// Removes what is at `path`, never following a link: a folder with all it holds, anything
/// else as a file.
pub fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
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
    fn a_batch_owning_a_folder_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("vignettes/page-1");
        let partial = temp_path(&folder);
        let mut staging = Staging::owning(folder.clone());
        for i in 0..20u8 {
            staging
                .write(folder.join(format!("{i}.tif")), &[i; 3])
                .unwrap();
        }
        staging
            .write(dir.path().join("manifest.csv"), b"m")
            .unwrap();
        assert!(partial.join("0.tif").is_file(), "under its own name");
        assert!(!folder.exists(), "nothing visible before commit");
        let committed = staging.commit().unwrap();
        assert_eq!(committed.len(), 21);
        assert!(committed.contains(&folder.join("19.tif")));
        assert_eq!(fs::read(folder.join("7.tif")).unwrap(), [7; 3]);
        assert_eq!(fs::read(dir.path().join("manifest.csv")).unwrap(), b"m");
        assert!(!partial.exists());

        // Again, with fewer files: the old folder is exchanged whole, its extra files gone;
        // a leftover of an interrupted batch is cleared first.
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("stale.tif"), b"old").unwrap();
        let mut staging = Staging::owning(folder.clone());
        staging.write(folder.join("1.tif"), b"new").unwrap();
        staging.write(folder.join("2.tif"), b"new").unwrap();
        assert_eq!(
            fs::read(folder.join("7.tif")).unwrap(),
            [7; 3],
            "old until commit"
        );
        staging.commit().unwrap();
        let mut names: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["1.tif", "2.tif"]);
        assert_eq!(fs::read(folder.join("1.tif")).unwrap(), b"new");
        assert!(!partial.exists(), "the old files are removed");

        // Dropped without commit: the folder stays as it was, the hidden one goes.
        let mut dropped = Staging::owning(folder.clone());
        dropped.write(folder.join("3.tif"), b"x").unwrap();
        drop(dropped);
        assert!(!partial.exists());
        assert!(!folder.join("3.tif").exists());
        assert_eq!(fs::read(folder.join("2.tif")).unwrap(), b"new");
    }

    #[test]
    fn without_an_exchange_the_old_folder_is_moved_aside_and_back_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (folder, partial) = (dir.path().join("a.tif"), dir.path().join(".a.tif.partial"));
        fs::create_dir(&folder).unwrap();
        fs::write(folder.join("old.tif"), b"old").unwrap();
        // The hidden folder of a page named `a.tif.old` is not where the old one goes.
        let other = dir.path().join(".a.tif.old.partial");
        fs::create_dir(&other).unwrap();
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("new.tif"), b"new").unwrap();
        let aside = publish_aside(&partial, &folder).unwrap();
        assert_eq!(fs::read(folder.join("new.tif")).unwrap(), b"new");
        assert_eq!(fs::read(aside.join("old.tif")).unwrap(), b"old");
        assert!(other.is_dir(), "another page's hidden folder is untouched");
        assert!(is_temp_name(&aside.file_name().unwrap().to_string_lossy()));

        // The new folder missing: the old one is put back.
        let gone = dir.path().join(".gone.partial");
        assert!(publish_aside(&gone, &folder).is_err());
        assert_eq!(fs::read(folder.join("new.tif")).unwrap(), b"new");
    }

    #[test]
    fn a_file_below_an_owned_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("page");
        let mut staging = Staging::owning(folder.clone());
        let error = staging.write(folder.join("sub/x.tif"), b"x").unwrap_err();
        assert!(error.to_string().contains("directly inside"), "{error}");
    }

    #[test]
    fn an_owned_folder_that_is_a_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("keep.txt"), b"precious").unwrap();
        let folder = dir.path().join("page");
        std::os::unix::fs::symlink(elsewhere.path(), &folder).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), temp_path(&folder)).unwrap();
        let mut staging = Staging::owning(folder.clone());
        staging.write(folder.join("a.tif"), b"a").unwrap();
        staging.commit().unwrap();
        assert!(fs::symlink_metadata(&folder).unwrap().is_dir());
        assert_eq!(fs::read(folder.join("a.tif")).unwrap(), b"a");
        let there: Vec<_> = fs::read_dir(elsewhere.path()).unwrap().collect();
        assert_eq!(there.len(), 1, "nothing written through either link");
        assert_eq!(
            fs::read(elsewhere.path().join("keep.txt")).unwrap(),
            b"precious"
        );
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
