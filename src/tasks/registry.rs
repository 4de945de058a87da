//! The pipeline's tasks, one entry each: everything the rest of the tool needs to know
//! about a task besides how it runs. The operation bridge, `describe` and `clean` read
//! this list, so that a new task touches its own file, its declaration
//! (`tasks/<Task>.json`), one line here and the pipeline's wiring.

use crate::declare::Declaration;
use crate::engine::TaskRef;
use crate::operation::Bridge;
use crate::tasks::Session;
use std::path::PathBuf;

/// One task the pipeline knows.
pub struct TaskEntry {
    pub name: &'static str,
    /// Its declaration, `tasks/<name>.json`, embedded.
    pub source: &'static str,
    /// The input whose folder is the session folder when a request names none.
    pub session_input: &'static str,
    /// What the task needs of a request beyond its declaration's rules.
    pub check: fn(&Bridge) -> Vec<String>,
    /// Builds the task alone, its requirements satisfied by the request's inputs.
    pub build: fn(&Bridge) -> anyhow::Result<TaskRef>,
    /// The top-level entries of a session's output folder it writes (for `clean`).
    pub owned: fn(&Session) -> Vec<PathBuf>,
}

impl TaskEntry {
    /// The parsed declaration; the embedded files are checked by a test, so a broken one
    /// never ships.
    pub fn declaration(&self) -> Declaration {
        crate::declare::parse(self.name, self.source)
    }
}

/// Every task, in pipeline order.
pub const TASKS: &[TaskEntry] = &[
    super::read_metadata::ENTRY,
    super::extract_metadata::ENTRY,
    super::decollage::ENTRY,
    super::upload::ENTRY,
    super::ecotaxa::ENTRY,
];

pub fn find(name: &str) -> Option<&'static TaskEntry> {
    TASKS.iter().find(|t| t.name == name)
}

pub fn names() -> Vec<&'static str> {
    TASKS.iter().map(|t| t.name).collect()
}
