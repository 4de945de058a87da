//! Provenance stamps: why a task is (or is not) complete.
//!
//! A stamp is written last, after a task's outputs are durable. It records the tool
//! version, the task's parameters, the fingerprint of every input it read, and the item
//! markers of the items it planned. The task is complete only while all of those still
//! match, every target exists, every file an item produced is still on disk with the size
//! and modification time it was recorded with, and no temporary of an interrupted write is
//! left in the folders it writes: complete is checked, not assumed. For the real session
//! that is about 9,000 `stat` calls and two folder listings, a few milliseconds.

use crate::engine::atomic::is_temp_name;
use crate::engine::{Digest, FileFingerprint, Parameters, Task};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    pub tool_version: String,
    pub task: String,
    pub parameters: Parameters,
    /// Path -> fingerprint, taken before the task ran.
    pub inputs: BTreeMap<String, FileFingerprint>,
    /// The marker file names of the items the task planned (see [`item_marker_name`]); each
    /// marker lists the files its item produced, with their fingerprints.
    #[serde(default)]
    pub items: Vec<String>,
    /// The task's own file targets (a manifest, a ledger) as they were when the stamp was
    /// written: one emptied or replaced later makes the task stale.
    #[serde(default)]
    pub targets: BTreeMap<String, FileFingerprint>,
    pub completed_at: String,
}

/// What an item marker vouches for: the item's identity digest and every file it produced,
/// with the size and modification time each had once durable.
///
/// On disk the paths are relative to the task's workspace ([`Task::workspace`]), so that a
/// copied or moved output folder vouches for its own files and never for (or against) the
/// folder it was copied from; in memory they are absolute. A marker whose paths leave the
/// workspace is not a marker: its item runs again, and nothing outside is ever removed.
#[derive(Debug, Clone)]
pub struct ItemMarker {
    pub digest: String,
    pub outputs: Vec<OutputRecord>,
}

#[derive(Serialize, Deserialize)]
struct StoredMarker {
    digest: String,
    outputs: Vec<OutputRecord>,
}

impl ItemMarker {
    /// The first way in which the files it lists are not as recorded: a folder of them that
    /// is no longer a folder, or a file missing or changed.
    pub fn problem(&self) -> Option<OutputProblem> {
        folders_of(self.outputs.iter().map(|r| r.path.as_path()))
            .find_map(folder_problem)
            .or_else(|| self.outputs.iter().find_map(OutputRecord::problem))
    }

    /// The marker's JSON, paths made relative to `workspace`; an error names a file outside.
    pub fn to_json(&self, workspace: &Path) -> io::Result<Vec<u8>> {
        let outputs = self
            .outputs
            .iter()
            .map(|r| match r.path.strip_prefix(workspace) {
                Ok(relative) => Ok(OutputRecord {
                    path: relative.to_path_buf(),
                    fingerprint: r.fingerprint,
                }),
                Err(_) => Err(io::Error::other(format!(
                    "{} lies outside the task's folder {}: refused",
                    r.path.display(),
                    workspace.display()
                ))),
            })
            .collect::<io::Result<Vec<_>>>()?;
        let stored = StoredMarker {
            digest: self.digest.clone(),
            outputs,
        };
        Ok(serde_json::to_vec(&stored).expect("marker serializes"))
    }

    /// Reads the marker at `path`, its paths resolved under `workspace`; `None` when it is
    /// missing, unreadable, of another engine version, or names a path that would leave
    /// the workspace.
    pub fn read(path: &Path, workspace: &Path) -> Option<ItemMarker> {
        let bytes = std::fs::read(path).ok()?;
        let stored: StoredMarker = serde_json::from_slice(&bytes).ok()?;
        let inside = |p: &Path| {
            p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        let mut outputs = Vec::with_capacity(stored.outputs.len());
        for record in stored.outputs {
            if !inside(&record.path) || record.path.as_os_str().is_empty() {
                return None;
            }
            outputs.push(OutputRecord {
                path: workspace.join(&record.path),
                fingerprint: record.fingerprint,
            });
        }
        Some(ItemMarker {
            digest: stored.digest,
            outputs,
        })
    }
}

/// One file an item produced, as it was when the item committed. Written as a
/// `[path, size, mtime_ns]` triple: markers list thousands, and a compact form parses in a
/// fraction of the time a keyed one takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(PathBuf, u64, i64)", into = "(PathBuf, u64, i64)")]
pub struct OutputRecord {
    pub path: PathBuf,
    pub fingerprint: FileFingerprint,
}

impl From<(PathBuf, u64, i64)> for OutputRecord {
    fn from((path, size, mtime_ns): (PathBuf, u64, i64)) -> Self {
        OutputRecord {
            path,
            fingerprint: FileFingerprint { size, mtime_ns },
        }
    }
}

impl From<OutputRecord> for (PathBuf, u64, i64) {
    fn from(r: OutputRecord) -> Self {
        (r.path, r.fingerprint.size, r.fingerprint.mtime_ns)
    }
}

impl OutputRecord {
    /// The record of `path` as it is now.
    pub fn of(path: PathBuf) -> io::Result<OutputRecord> {
        match FileFingerprint::of(&path)? {
            Some(fingerprint) => Ok(OutputRecord { path, fingerprint }),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: vanished right after it was written", path.display()),
            )),
        }
    }

    /// Why the file no longer is what was recorded, if it is not. The file itself is
    /// looked at, not what a link in its place points to.
    pub fn problem(&self) -> Option<OutputProblem> {
        // One `lstat`: a regular file's is its `stat` (this runs once per vignette on
        // every rerun and every status).
        let now = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if !meta.is_file() => {
                return Some(OutputProblem::Unreadable(
                    self.path.clone(),
                    "is no longer a regular file (a link or a folder is in its place)".into(),
                ));
            }
            Ok(meta) => FileFingerprint::of_metadata(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Some(OutputProblem::Missing(self.path.clone()));
            }
            Err(e) => Err(e),
        };
        match now {
            Ok(now) if now == self.fingerprint => None,
            Ok(now) => Some(OutputProblem::Changed {
                path: self.path.clone(),
                recorded: self.fingerprint,
                now,
            }),
            Err(e) => Some(OutputProblem::Unreadable(self.path.clone(), e.to_string())),
        }
    }
}

/// A produced file that is not what its item's marker recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputProblem {
    Missing(PathBuf),
    Changed {
        path: PathBuf,
        recorded: FileFingerprint,
        now: FileFingerprint,
    },
    Unreadable(PathBuf, String),
}

impl OutputProblem {
    pub fn path(&self) -> &Path {
        match self {
            OutputProblem::Missing(p) | OutputProblem::Unreadable(p, _) => p,
            OutputProblem::Changed { path, .. } => path,
        }
    }
}

impl fmt::Display for OutputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputProblem::Missing(p) => write!(f, "{} is missing", p.display()),
            OutputProblem::Changed {
                path,
                recorded,
                now,
            } if recorded.size != now.size => write!(
                f,
                "{} changed size ({} -> {} bytes)",
                path.display(),
                recorded.size,
                now.size
            ),
            OutputProblem::Changed { path, .. } => {
                write!(f, "{} was modified after it was written", path.display())
            }
            OutputProblem::Unreadable(p, e) => write!(f, "{} {e}", p.display()),
        }
    }
}

/// What is on disk of a task's per-item outputs, against what its stamp's markers recorded.
#[derive(Debug, Clone, Default)]
pub struct OutputCheck {
    /// Files the markers list.
    pub files: usize,
    /// Those that are missing or not as recorded.
    pub problems: Vec<OutputProblem>,
    /// Markers the stamp names that are gone or unreadable.
    pub missing_markers: Vec<String>,
    /// `.NAME.partial` leftovers of interrupted writes in the folders the task writes.
    pub temporaries: Vec<PathBuf>,
}

impl OutputCheck {
    /// Files present as recorded.
    pub fn intact(&self) -> usize {
        self.files - self.problems.len()
    }

    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.missing_markers.is_empty() && self.temporaries.is_empty()
    }

    /// One line for a stale reason: what is wrong, with the first few files named.
    pub fn describe(&self) -> Option<String> {
        const SHOWN: usize = 5;
        let name_some = |items: Vec<String>| {
            let more = items.len().saturating_sub(SHOWN);
            let mut text = items.into_iter().take(SHOWN).collect::<Vec<_>>().join("; ");
            if more > 0 {
                text.push_str(&format!("; and {more} more"));
            }
            text
        };
        if let Some(marker) = self.missing_markers.first() {
            return Some(format!(
                "item marker {marker} is missing or unreadable ({} in all)",
                self.missing_markers.len()
            ));
        }
        if !self.problems.is_empty() {
            return Some(format!(
                "{} of {} produced files are missing or changed: {}",
                self.problems.len(),
                self.files,
                name_some(self.problems.iter().map(|p| p.to_string()).collect())
            ));
        }
        if !self.temporaries.is_empty() {
            return Some(format!(
                "{} temporary files of an interrupted run are left: {}",
                self.temporaries.len(),
                name_some(
                    self.temporaries
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect()
                )
            ));
        }
        None
    }
}

/// Checks every file the stamp's item markers list, and looks for leftover temporaries in
/// every folder the task writes.
pub fn check_outputs(task: &dyn Task, stamp: &Stamp) -> OutputCheck {
    let mut check = OutputCheck::default();
    let marker_dir = item_marker_dir(task);
    let mut produced = Vec::new();
    for name in &stamp.items {
        match ItemMarker::read(&marker_dir.join(name), &task.workspace()) {
            Some(marker) => produced.extend(marker.outputs),
            None => check.missing_markers.push(name.clone()),
        }
    }
    check.files = produced.len();
    // One stat per file: spread over the cores, for a session's thousands of files.
    check.problems = produced
        .par_iter()
        .with_min_len(256)
        .filter_map(OutputRecord::problem)
        .collect();
    let paths: Vec<&Path> = produced.iter().map(|r| r.path.as_path()).collect();
    check
        .problems
        .extend(folders_of(paths.iter().copied()).filter_map(folder_problem));
    check.temporaries = temporaries_in(&written_folders(task, &paths));
    check
}

/// The folders of `files`, each once per run of files in it: files come folder by folder,
/// so this looks at each folder once without a set.
pub fn folders_of<'a>(files: impl Iterator<Item = &'a Path>) -> impl Iterator<Item = &'a Path> {
    let mut last: Option<&Path> = None;
    files.filter_map(|f| f.parent()).filter(move |folder| {
        let new = last != Some(*folder);
        last = Some(folder);
        new
    })
}

/// A folder of produced files that is there but is not a folder (a link to lookalikes,
/// say): readers would read through it. A missing folder is told by its files.
pub fn folder_problem(folder: &Path) -> Option<OutputProblem> {
    match std::fs::symlink_metadata(folder) {
        Ok(meta) if !meta.is_dir() => Some(OutputProblem::Unreadable(
            folder.to_path_buf(),
            "is no longer a folder (a link or a file is in its place)".into(),
        )),
        _ => None,
    }
}

/// Every folder a task writes: its targets' (a folder target itself), its produced files',
/// its own state folders and the staging folders of its items (which only an interrupted
/// run leaves).
pub fn written_folders(task: &dyn Task, produced: &[&Path]) -> BTreeSet<PathBuf> {
    let mut folders = BTreeSet::new();
    for target in task.outputs() {
        if target.is_dir() {
            folders.insert(target.clone());
        }
        if let Some(parent) = target.parent() {
            folders.insert(parent.to_path_buf());
        }
    }
    folders.extend(folders_of(produced.iter().copied()).map(Path::to_path_buf));
    folders.insert(task.state_dir());
    folders.insert(item_marker_dir(task));
    let staging = item_staging_dir(task);
    for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            folders.insert(entry.path());
        }
    }
    folders.insert(staging);
    folders
}

/// The leftover temporaries directly inside `folders` (missing folders have none).
pub fn temporaries_in(folders: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in entries.flatten() {
            if is_temp_name(&entry.file_name().to_string_lossy()) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// A task's state as far as its stamp and targets tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    Complete,
    /// Has run before, but something changed; the reason names it.
    Stale(String),
    /// Never completed.
    Missing,
}

pub fn stamp_path(task: &dyn Task) -> PathBuf {
    task.state_dir().join(format!("{}.stamp.json", task.name()))
}

pub fn item_marker_dir(task: &dyn Task) -> PathBuf {
    task.state_dir().join(format!("{}.items", task.name()))
}

/// Where each item of `task` stages its files before they are committed (a folder per
/// item, named as its marker).
pub fn item_staging_dir(task: &dyn Task) -> PathBuf {
    task.state_dir().join(format!("{}.staging", task.name()))
}

/// A file name for an item key that is safe on any filesystem and still unique.
pub fn item_marker_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = Digest::new().str(key).hex();
    format!("{safe}.{}.done", &hash[..8])
}

pub fn read(path: &Path) -> io::Result<Option<Stamp>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Compares a task's current state against its stamp.
pub fn freshness(task: &dyn Task, tool_version: &str) -> Freshness {
    let path = stamp_path(task);
    let stamp = match read(&path) {
        Ok(Some(stamp)) => stamp,
        Ok(None) => return Freshness::Missing,
        Err(e) => return Freshness::Stale(format!("stamp {} unreadable: {e}", path.display())),
    };
    if stamp.task != task.id() {
        return Freshness::Stale(format!(
            "stamp {} belongs to {}",
            path.display(),
            stamp.task
        ));
    }
    if stamp.tool_version != tool_version {
        return Freshness::Stale(format!(
            "tool version changed ({} -> {tool_version})",
            stamp.tool_version
        ));
    }
    if let Some(reason) = parameter_change(&stamp.parameters, &task.parameters()) {
        return Freshness::Stale(reason);
    }
    let inputs = match task.inputs() {
        Ok(inputs) => inputs,
        Err(e) => return Freshness::Stale(format!("inputs: {e:#}")),
    };
    for input in &inputs {
        if !stamp.inputs.contains_key(&*input.to_string_lossy()) {
            return Freshness::Stale(format!("new input {}", input.display()));
        }
    }
    for (input, recorded) in &stamp.inputs {
        match FileFingerprint::of(Path::new(input)) {
            Ok(Some(now)) if now == *recorded => {}
            Ok(Some(now)) if now.size != recorded.size => {
                return Freshness::Stale(format!(
                    "input {input} changed (size {} -> {})",
                    recorded.size, now.size
                ));
            }
            Ok(Some(_)) => {
                return Freshness::Stale(format!("input {input} changed (modified)"));
            }
            Ok(None) => return Freshness::Stale(format!("input {input} is gone")),
            Err(e) => return Freshness::Stale(format!("input {input}: {e}")),
        }
    }
    for output in task.outputs() {
        if !output.exists() {
            return Freshness::Stale(format!("output {} is missing", output.display()));
        }
    }
    for (target, recorded) in &stamp.targets {
        match FileFingerprint::of(Path::new(target)) {
            Ok(Some(now)) if now == *recorded => {}
            Ok(Some(now)) if now.size != recorded.size => {
                return Freshness::Stale(format!(
                    "output {target} changed since it was written (size {} -> {})",
                    recorded.size, now.size
                ));
            }
            Ok(Some(_)) => {
                return Freshness::Stale(format!(
                    "output {target} was modified since it was written"
                ));
            }
            Ok(None) => return Freshness::Stale(format!("output {target} is missing")),
            Err(e) => return Freshness::Stale(format!("output {target}: {e}")),
        }
    }
    match check_outputs(task, &stamp).describe() {
        Some(problem) => Freshness::Stale(problem),
        None => Freshness::Complete,
    }
}

fn parameter_change(old: &Parameters, new: &Parameters) -> Option<String> {
    let keys: std::collections::BTreeSet<_> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a != b {
            let show = |v: Option<&String>| v.map_or("<unset>".to_string(), |v| format!("{v:?}"));
            return Some(format!(
                "parameter {key} changed ({} -> {})",
                show(a),
                show(b)
            ));
        }
    }
    None
}
