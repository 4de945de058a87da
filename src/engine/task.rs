//! What a task is: identity, parameters, requirements, inputs, targets, and its work in the
//! prepare / per-item / finish shape.

use crate::engine::Staging;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Parameters that change a task's outputs. They go into its stamp, so changing one makes
/// the task (and, through its outputs, everything downstream) stale. Options that only
/// change how fast the work is done (worker counts) do not belong here.
pub type Parameters = BTreeMap<String, String>;

pub type TaskRef = Arc<dyn Task>;

/// A unit of work with declared file targets, in the manner of a Luigi task.
///
/// The engine owns scheduling, parallelism, resume and error collection; a task supplies
/// only its own logic through [`Task::prepare`] and the returned [`Plan`].
pub trait Task: Send + Sync {
    /// The task's kind, e.g. `DecollageImages`.
    fn name(&self) -> &'static str;

    /// A unique identity within one graph, shown in summaries and reports.
    fn id(&self) -> String {
        self.name().to_string()
    }

    fn parameters(&self) -> Parameters {
        Parameters::new()
    }

    fn requires(&self) -> Vec<TaskRef> {
        Vec::new()
    }

    /// Files the task reads that are known before it runs (inputs discovered while planning
    /// belong to [`Item::inputs`]). An error here (say, an ambiguous input folder) makes the
    /// task incomplete, and running it reports the error.
    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }

    /// The targets. A task with none is a wrapper: complete when its requirements are.
    fn outputs(&self) -> Vec<PathBuf>;

    /// Where the engine keeps this task's stamp and item markers.
    fn state_dir(&self) -> PathBuf;

    /// The folder every file of this task's items lies in (by default the state folder's
    /// parent: a session's output folder). Markers record paths relative to it, and the
    /// engine never removes or vouches for a file outside it.
    fn workspace(&self) -> PathBuf {
        let state = self.state_dir();
        state.parent().map_or(state.clone(), Path::to_path_buf)
    }

    /// A reason to run even though the stamp says complete: an explicit request to check
    /// something the stamp cannot see (say, objects in a remote store).
    fn rerun_reason(&self) -> Option<String> {
        None
    }

    /// The serial planning step: read what is needed and list the work items.
    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(NoWork))
    }
}

/// One independently resumable piece of a task's work (for decollage: one collage page).
#[derive(Clone, Debug)]
pub struct Item {
    /// Unique within the task; names the item in errors and its marker.
    pub key: String,
    /// Files this item reads; their fingerprints join the item's identity.
    pub inputs: Vec<PathBuf>,
    /// Anything else the item's output depends on (for decollage: a digest of its rows).
    pub fingerprint: String,
}

/// The work planned by [`Task::prepare`].
pub trait Plan: Send + Sync {
    fn items(&self) -> Vec<Item> {
        Vec::new()
    }

    /// Does item `index` of [`Plan::items`], writing every output through `out`. Called in
    /// parallel, and only for items whose outputs are not already done.
    fn run_item(&self, _index: usize, _out: &mut Staging) -> anyhow::Result<()> {
        Ok(())
    }

    /// The folder item `index` fills whole, if it has one: its files there are written under
    /// their own names into a hidden sibling that replaces the folder when the item commits
    /// ([`Staging::owning`]), so concurrent items share no folder and no file is renamed on
    /// its own. Files the folder held that the item did not write this time are gone then.
    /// Each item must own a different folder.
    fn owned_folder(&self, _index: usize) -> Option<PathBuf> {
        None
    }

    /// How many items run at once when it should not be the runner's worker count: items
    /// that mostly wait on a network (uploads) want many more in flight than there are
    /// cores.
    fn concurrency(&self) -> Option<usize> {
        None
    }

    /// Whether the engine keeps a marker per finished item. A plan that records finished
    /// items itself (an upload ledger appended as each object is confirmed) returns false
    /// and lists only the work still to do; every item it lists runs.
    fn item_markers(&self) -> bool {
        true
    }

    /// Whether item `index` must run although its marker says it is done: the plan knows
    /// something its marker cannot (say, that an object it delivered is no longer at the
    /// destination).
    fn must_run(&self, _index: usize) -> bool {
        false
    }

    /// Items the plan left out of [`Plan::items`] because its own record says they are done
    /// (with [`Plan::item_markers`] false); counted as skipped in the report.
    fn already_done(&self) -> usize {
        0
    }

    /// The serial last step, after every item succeeded (for example, a manifest).
    fn finish(&self, _out: &mut Staging) -> anyhow::Result<()> {
        Ok(())
    }

    /// What the task has to tell about its work, one line each, for the run's summary and
    /// report (asked after `finish` succeeded).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An item error that dooms the rest of the task (the destination is unreachable, the
/// credentials are refused): the runner starts no further items, counts them as not
/// attempted, and reports the cause once instead of once per item.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StopTask(pub String);

/// The plan of a task with nothing to do.
pub struct NoWork;

impl Plan for NoWork {}
