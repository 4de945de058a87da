//! Provenance stamps: why a task is (or is not) complete.
//!
//! A stamp is written last, after a task's outputs are durable. It records the tool
//! version, the task's parameters, and the fingerprint of every input it read. The task is
//! complete only while all of those still match and every target exists.

use crate::engine::{Digest, FileFingerprint, Parameters, Task};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    pub tool_version: String,
    pub task: String,
    pub parameters: Parameters,
    /// Path -> fingerprint, taken before the task ran.
    pub inputs: BTreeMap<String, FileFingerprint>,
    pub completed_at: String,
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
    Freshness::Complete
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
