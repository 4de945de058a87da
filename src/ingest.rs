//! Finding the sessions under a root folder, and telling whether one is ready.
//!
//! An ingest server receives session folders from USB sticks and network shares, often
//! while they are still being copied. A folder holding a `.lst` file is a session. It is
//! *waiting* (not failed, and not touched) while any of its files changed within the settle
//! time, or while its `.lst` names a collage page that is not there yet; cron's next pass
//! takes it once it is complete.

use crate::flowcam::lst::{self, ListPart};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Whether a folder holds a `.lst` file (any case).
pub fn is_session(folder: &Path) -> bool {
    lst::files_in(folder).is_ok_and(|found| !found.is_empty())
}

/// Whether `folder`, which has no `.lst`, still holds what only a session folder holds
/// (collage pages, the instrument's side files): a session whose list is missing, not an
/// empty root, so that a run given it fails instead of finding "no sessions".
pub fn looks_like_a_session(folder: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
        [".tif", ".tiff", ".ctx", ".cla", "_run_summary.txt"]
            .iter()
            .any(|end| name.ends_with(end))
    })
}

/// The sessions at `root`: the root itself when it is one, else the session folders one
/// level down (at any depth with `recursive`; a session's own subfolders are not searched).
/// Hidden folders and `skip` (the output root, when it lies inside the root) are passed
/// over. Sorted by path.
pub fn find_sessions(root: &Path, recursive: bool, skip: &Path) -> io::Result<Vec<PathBuf>> {
    if is_session(root) {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    let skip = skip.canonicalize().unwrap_or_else(|_| skip.to_path_buf());
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The root must be readable; a subfolder we may not read is passed over.
            Err(e) if dir == root => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", root.display())));
            }
            Err(e) => {
                tracing::warn!(folder = %dir.display(), "cannot read folder: {e}");
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden || !path.is_dir() || path.canonicalize().is_ok_and(|p| p == skip) {
                continue;
            }
            if is_session(&path) {
                found.push(path);
            } else if recursive {
                pending.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A session looked up by name among the folders found under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Missing,
    One(PathBuf),
    /// Several folders (at different depths) have the name: they would share one output
    /// folder, so none of them is the session of that name.
    Several(Vec<PathBuf>),
}

impl Lookup {
    /// The session called `name` among `folders`.
    pub fn among(folders: &[PathBuf], name: &str) -> Lookup {
        let mut found: Vec<PathBuf> = folders
            .iter()
            .filter(|folder| folder.file_name().is_some_and(|n| n == name))
            .cloned()
            .collect();
        match found.len() {
            0 => Lookup::Missing,
            1 => Lookup::One(found.remove(0)),
            _ => Lookup::Several(found),
        }
    }

    pub fn one(self) -> Option<PathBuf> {
        match self {
            Lookup::One(folder) => Some(folder),
            _ => None,
        }
    }
}

/// Whether a session folder may be processed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Still arriving; the reason says what was seen.
    Waiting(String),
}

/// Checks that nothing in `folder` changed within `settle` of `now`, and that every
/// collage page its `.lst` names is there. A `.lst` that cannot be read or parsed is left
/// to the pipeline, which reports it properly: after the settle time it is not a copy in
/// progress but a broken file.
pub fn readiness(folder: &Path, settle: Duration, now: SystemTime) -> Readiness {
    match settled(folder, settle, now) {
        Readiness::Ready => collages_present(folder),
        waiting => waiting,
    }
}

/// Waiting while any entry of `folder` changed within `settle` of `now`.
pub fn settled(folder: &Path, settle: Duration, now: SystemTime) -> Readiness {
    if settle.is_zero() {
        return Readiness::Ready;
    }
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Readiness::Ready;
    };
    let mut newest: Option<(SystemTime, String)> = None;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if let Ok(modified) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            newest = Some((modified, entry.file_name().to_string_lossy().into_owned()));
        }
    }
    if let Some((modified, name)) = newest {
        // A time in the future (a copy from a PC whose clock runs ahead) says nothing about
        // when the copy ended; waiting for it could take hours, so it counts as settled.
        let Ok(age) = now.duration_since(modified) else {
            tracing::info!(folder = %folder.display(), file = %name, "modification time in the future");
            return Readiness::Ready;
        };
        if age < settle {
            return Readiness::Waiting(format!(
                "{name} changed {} s ago (settle time {} s)",
                age.as_secs(),
                settle.as_secs()
            ));
        }
    }
    Readiness::Ready
}

/// Waiting while the `.lst` names a collage page that is not in the folder.
fn collages_present(folder: &Path) -> Readiness {
    let lst = lst::files_in(folder)
        .ok()
        .and_then(|found| found.into_iter().next());
    let Some(lst) = lst else {
        return Readiness::Ready;
    };
    // Only a regular file inside the folder is read (a FIFO would block the pass); any
    // other is left to the pipeline, which names it.
    let opened = folder
        .canonicalize()
        .map_err(anyhow::Error::from)
        .and_then(|real| crate::flowcam::input::open_regular(&lst, &real));
    let Ok(file) = opened else {
        return Readiness::Ready;
    };
    let mut column = None;
    let mut collages = BTreeSet::new();
    let parsed = lst::parse_rows(&lst, file, |part| match part {
        ListPart::Fields(fields) => column = fields.iter().position(|f| f.name == "collage_file"),
        ListPart::Row(values) => {
            if let Some(value) = column.and_then(|c| values.get(c))
                && !collages.contains(*value)
            {
                collages.insert(value.to_string());
            }
        }
    });
    if parsed.is_err() {
        return Readiness::Ready;
    }
    let missing: Vec<&String> = collages
        .iter()
        .filter(|c| lst::check_plain_file_name(c).is_ok() && !folder.join(c).exists())
        .collect();
    match missing.as_slice() {
        [] => Readiness::Ready,
        [one] => Readiness::Waiting(format!("collage {one} named by the .lst is not there yet")),
        [first, ..] => Readiness::Waiting(format!(
            "{} collages named by the .lst are not there yet ({first}, ...)",
            missing.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticSession;

    fn synthetic(parent: &Path, prefix: &str) -> PathBuf {
        SyntheticSession {
            particles: 20,
            pages: 2,
            prefix: prefix.into(),
            ..SyntheticSession::default()
        }
        .write(parent)
        .unwrap()
    }

    #[test]
    fn sessions_are_found_one_level_down_or_deeper_when_recursive() {
        let root = tempfile::tempdir().unwrap();
        let a = synthetic(root.path(), "a");
        let nested = root.path().join("2023/may");
        std::fs::create_dir_all(&nested).unwrap();
        let b = synthetic(&nested, "b");
        std::fs::create_dir_all(root.path().join(".hidden")).unwrap();
        synthetic(&root.path().join(".hidden"), "c");
        let out = root.path().join("output");
        std::fs::create_dir_all(out.join("x")).unwrap();
        std::fs::write(out.join("x/copy.lst"), "").unwrap();

        let shallow = find_sessions(root.path(), false, &out).unwrap();
        assert_eq!(shallow, vec![a.clone()]);
        let deep = find_sessions(root.path(), true, &out).unwrap();
        let mut expected = vec![a.clone(), b];
        expected.sort();
        assert_eq!(deep, expected);
        // A session folder given directly is the one session.
        assert_eq!(find_sessions(&a, false, &out).unwrap(), vec![a]);
    }

    #[test]
    fn a_fresh_folder_waits_for_the_settle_time() {
        let root = tempfile::tempdir().unwrap();
        let session = synthetic(root.path(), "s");
        let now = SystemTime::now();
        match readiness(&session, Duration::from_secs(60), now) {
            Readiness::Waiting(why) => assert!(why.contains("settle time 60 s"), "{why}"),
            Readiness::Ready => panic!("just written, should wait"),
        }
        let later = now + Duration::from_secs(120);
        assert_eq!(
            readiness(&session, Duration::from_secs(60), later),
            Readiness::Ready
        );
        assert_eq!(readiness(&session, Duration::ZERO, now), Readiness::Ready);
    }

    #[test]
    fn files_from_the_future_count_as_settled() {
        let root = tempfile::tempdir().unwrap();
        let session = synthetic(root.path(), "s");
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        for entry in std::fs::read_dir(&session).unwrap() {
            let file = std::fs::File::open(entry.unwrap().path()).unwrap();
            file.set_modified(ahead).unwrap();
        }
        let ready = readiness(&session, Duration::from_secs(60), SystemTime::now());
        assert_eq!(ready, Readiness::Ready);
    }

    #[test]
    fn a_missing_collage_waits_and_names_it() {
        let root = tempfile::tempdir().unwrap();
        let session = synthetic(root.path(), "s");
        let page = std::fs::read_dir(&session)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "tif"))
            .unwrap();
        std::fs::remove_file(&page).unwrap();
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        match readiness(&session, Duration::ZERO, SystemTime::now()) {
            Readiness::Waiting(why) => assert!(why.contains(&name), "{why}"),
            Readiness::Ready => panic!("a page is missing"),
        }
    }
}
