//! Builds the task graph from a root and drives each task through its lifecycle (see the
//! module documentation of [`crate::engine`]).

use crate::engine::report::{ItemCounts, RunReport, TaskReport, TaskState};
use crate::engine::stamp::{self, Freshness, ItemMarker, OutputCheck, OutputRecord, Stamp};
use crate::engine::workers::{self, Slots};
use crate::engine::{
    Digest, FileFingerprint, Item, Plan, Staging, StopTask, Task, TaskRef, write_file,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("no task {0} to share out in this graph")]
    NoSuchTask(String),
}

/// Hooks for progress display; every method has a do-nothing default.
pub trait Observer: Send + Sync {
    /// A task starts running with `items` items to do (already done ones excluded).
    fn task_started(&self, _task: &str, _items: usize) {}
    fn item_finished(&self, _task: &str, _item: &str, _ok: bool) {}
    fn task_finished(&self, _report: &TaskReport) {}
}

struct Silent;
impl Observer for Silent {}

/// A share of one task's items, for a run that splits the task across processes (array
/// tasks on a cluster): only the items `items` (indices into its plan's items) run, and the
/// task is neither finished nor stamped, nor swept of orphans and temporaries, since other
/// shares write beside it. A run over the whole task, once every share is done, finds their
/// items done by their markers and finishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The task's id.
    pub task: String,
    pub items: std::ops::Range<usize>,
}

/// Runs task graphs. Holds no state between runs besides its CPU slots.
pub struct Runner {
    tool_version: String,
    force: bool,
    /// Threads a CPU-bound task may use, and CPU slots shared by all tasks running at once.
    slots: Slots,
    observer: Box<dyn Observer>,
    /// Set from outside (a signal handler): start no more items or tasks.
    stop: Arc<AtomicBool>,
}

impl Runner {
    /// `workers` = 0 means one per core. No thread starts until a task has items to run.
    pub fn new(tool_version: impl Into<String>, workers: usize) -> Runner {
        let workers = match workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Runner {
            tool_version: tool_version.into(),
            force: false,
            slots: Slots::new(workers),
            observer: Box::new(Silent),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that, once set (say, by a SIGTERM handler), makes the runner start no further
    /// item or task: items in flight finish and commit (or drop their temporaries), and the
    /// run ends with the unfinished tasks [`TaskState::Interrupted`].
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = flag;
        self
    }

    /// Whether the stop flag is set.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// What is on disk of `task`'s per-item outputs against its stamp (nothing to check
    /// without a stamp).
    pub fn outputs(task: &dyn Task) -> OutputCheck {
        match stamp::read(&stamp::stamp_path(task)) {
            Ok(Some(stamp)) => stamp::check_outputs(task, &stamp),
            // No stamp (never complete, or a run interrupted or going on): no record to
            // check files against, but leftover temporaries are still worth telling.
            _ => OutputCheck {
                temporaries: stamp::temporaries_in(&stamp::written_folders(task, &[])),
                ..OutputCheck::default()
            },
        }
    }

    /// Rerun every task and item regardless of stamps and markers.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    pub fn observer(mut self, observer: Box<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The graph under `root`, requirements before dependants.
    pub fn graph(root: &TaskRef) -> Result<Vec<(TaskRef, Vec<usize>)>, GraphError> {
        fn visit(
            task: &TaskRef,
            order: &mut Vec<(TaskRef, Vec<usize>)>,
            index: &mut HashMap<String, usize>,
            path: &mut Vec<String>,
        ) -> Result<usize, GraphError> {
            let id = task.id();
            if let Some(pos) = path.iter().position(|p| *p == id) {
                let mut cycle = path[pos..].to_vec();
                cycle.push(id);
                return Err(GraphError::Cycle(cycle));
            }
            if let Some(&i) = index.get(&id) {
                return Ok(i);
            }
            path.push(id.clone());
            let mut deps = Vec::new();
            for req in task.requires() {
                deps.push(visit(&req, order, index, path)?);
            }
            path.pop();
            order.push((task.clone(), deps));
            index.insert(id, order.len() - 1);
            Ok(order.len() - 1)
        }
        let mut order = Vec::new();
        visit(root, &mut order, &mut HashMap::new(), &mut Vec::new())?;
        Ok(order)
    }

    /// The state of every task under `root` without running anything: a task whose
    /// requirement is not complete is stale too, since it will rerun after it.
    pub fn status(&self, root: &TaskRef) -> Result<Vec<(TaskRef, Freshness)>, GraphError> {
        let graph = Self::graph(root)?;
        let mut states: Vec<Freshness> = Vec::with_capacity(graph.len());
        for (task, deps) in &graph {
            let upstream = deps
                .iter()
                .find(|&&d| states[d] != Freshness::Complete)
                .map(|&d| graph[d].0.id());
            let own = own_freshness(task.as_ref(), &self.tool_version);
            let state = match (own, upstream) {
                (Freshness::Complete, Some(dep)) => {
                    Freshness::Stale(format!("requirement {dep} is not complete"))
                }
                (own, _) => own,
            };
            states.push(state);
        }
        Ok(graph.into_iter().map(|(t, _)| t).zip(states).collect())
    }

    /// Runs everything under `root` that is not complete.
    pub fn run(&self, root: &TaskRef) -> Result<RunReport, GraphError> {
        self.run_with(root, None)
    }

    /// Runs everything under `root` that is not complete, the task `share` names only for
    /// its share of items (see [`Share`]).
    pub fn run_share(&self, root: &TaskRef, share: &Share) -> Result<RunReport, GraphError> {
        self.run_with(root, Some(share))
    }

    fn run_with(&self, root: &TaskRef, share: Option<&Share>) -> Result<RunReport, GraphError> {
        let graph = Self::graph(root)?;
        if let Some(share) = share
            && !graph.iter().any(|(t, _)| t.id() == share.task)
        {
            return Err(GraphError::NoSuchTask(share.task.clone()));
        }
        let started_at = chrono::Local::now().to_rfc3339();
        let start = Instant::now();
        let mut reports: Vec<TaskReport> = Vec::with_capacity(graph.len());
        for (task, deps) in &graph {
            let task_start = Instant::now();
            let mut report = TaskReport {
                id: task.id(),
                name: task.name().to_string(),
                state: TaskState::Ran,
                reason: None,
                items: ItemCounts::default(),
                errors: Vec::new(),
                notes: Vec::new(),
                duration_ms: 0,
            };
            let blocked_by = deps.iter().map(|&d| &reports[d]).find(|r| {
                matches!(
                    r.state,
                    TaskState::Failed | TaskState::Blocked | TaskState::Interrupted
                )
            });
            if let Some(dep) = blocked_by {
                report.state = if dep.state == TaskState::Interrupted {
                    TaskState::Interrupted
                } else {
                    TaskState::Blocked
                };
                report.reason = Some(format!("requirement {} did not complete", dep.id));
            } else if let Some(share) = share.filter(|s| s.task != report.id) {
                // A share runs only its own items: what they need must be complete (run
                // alone, before), never run here beside the other shares. `--force` does
                // not apply to it.
                if own_freshness(task.as_ref(), &self.tool_version) == Freshness::Complete {
                    report.state = TaskState::AlreadyComplete;
                } else {
                    report.state = TaskState::Failed;
                    report.errors = vec![format!(
                        "{} is not complete, and a share of {} runs only its items; run again",
                        report.id, share.task
                    )];
                }
            } else {
                let upstream_ran = deps.iter().any(|&d| reports[d].state == TaskState::Ran);
                let rerun = task.rerun_reason();
                match own_freshness(task.as_ref(), &self.tool_version) {
                    Freshness::Complete if !self.force && !upstream_ran && rerun.is_none() => {
                        report.state = TaskState::AlreadyComplete;
                    }
                    _ if task.outputs().is_empty() => {
                        // A wrapper: its requirements did the work.
                    }
                    _ if self.stopped() => {
                        report.state = TaskState::Interrupted;
                        report.reason = Some("the run was interrupted before it started".into());
                    }
                    freshness => {
                        report.reason = Some(match freshness {
                            _ if self.force => "--force".to_string(),
                            Freshness::Complete if rerun.is_some() => rerun.unwrap_or_default(),
                            Freshness::Stale(why) => why,
                            Freshness::Missing => "it has not run before".to_string(),
                            Freshness::Complete => "a requirement reran".to_string(),
                        });
                        // A panic in the task's own code (prepare, finish, ...) fails this
                        // task like an error instead of aborting the whole run.
                        let share = share.filter(|s| s.task == report.id);
                        let outcome = catch_unwind(AssertUnwindSafe(|| {
                            self.execute(task.as_ref(), share, &mut report.items, &mut report.notes)
                        }))
                        .unwrap_or_else(|panic| {
                            Execution::Failed(vec![format!(
                                "internal error (panic): {}",
                                panic_message(panic.as_ref())
                            )])
                        });
                        match outcome {
                            Execution::Done => {}
                            Execution::Failed(errors) => {
                                report.state = TaskState::Failed;
                                report.errors = errors;
                            }
                            Execution::Interrupted => {
                                report.state = TaskState::Interrupted;
                                report.reason = Some(format!(
                                    "interrupted with {} of its {} items done; a rerun resumes it",
                                    report.items.ran + report.items.skipped,
                                    report.items.total
                                ));
                            }
                        }
                    }
                }
            }
            report.duration_ms = task_start.elapsed().as_millis() as u64;
            self.observer.task_finished(&report);
            reports.push(report);
        }
        Ok(RunReport {
            tool_version: self.tool_version.clone(),
            started_at,
            duration_ms: start.elapsed().as_millis() as u64,
            interrupted: reports.iter().any(|r| r.state == TaskState::Interrupted),
            tasks: reports,
        })
    }

    /// Runs one task: prepare, the items that are not done (in parallel), a check that
    /// every item's files are on disk, finish, a sweep of temporaries, stamp.
    fn execute(
        &self,
        task: &dyn Task,
        share: Option<&Share>,
        counts: &mut ItemCounts,
        notes: &mut Vec<String>,
    ) -> Execution {
        match self.try_execute(task, share, counts, notes) {
            Ok(execution) => execution,
            Err(errors) => Execution::Failed(errors),
        }
    }

    fn try_execute(
        &self,
        task: &dyn Task,
        share: Option<&Share>,
        counts: &mut ItemCounts,
        notes: &mut Vec<String>,
    ) -> Result<Execution, Vec<String>> {
        let one = |e: anyhow::Error| vec![format!("{e:#}")];
        // Whatever happens next, the old stamp must not vouch for half-replaced outputs.
        let stamp_path = stamp::stamp_path(task);
        remove_durably(&stamp_path).map_err(one)?;

        let mut recorded = BTreeMap::new();
        for input in task.inputs().map_err(one)? {
            match FileFingerprint::of(&input) {
                Ok(Some(f)) => recorded.insert(input.to_string_lossy().into_owned(), f),
                Ok(None) => return Err(vec![format!("input {} is missing", input.display())]),
                Err(e) => return Err(vec![format!("input {}: {e}", input.display())]),
            };
        }
        let plan = task.prepare().map_err(one)?;
        let items = plan.items();
        counts.total = items.len();
        // A share's items: the rest are other shares' (and none is a share's without
        // markers to tell the finishing run that it is done).
        let mine = |index: usize| share.is_none_or(|s| s.items.contains(&index));
        if let Some(share) = share {
            if !plan.item_markers() {
                return Err(vec![format!(
                    "{} cannot be shared out: its items keep no markers",
                    task.id()
                )]);
            }
            counts.total = share.items.end.min(items.len()) - share.items.start.min(items.len());
        }

        let parameters = serde_json::to_string(&task.parameters()).unwrap_or_default();
        let base = Digest::new()
            .str(&self.tool_version)
            .str(&task.id())
            .str(&parameters);
        let marker_dir = stamp::item_marker_dir(task);
        let workspace = task.workspace();
        let markers = plan.item_markers();
        // Per item: its digest, its marker, and what its marker says now.
        let mut slots: Vec<ItemSlot> = Vec::with_capacity(items.len());
        let mut todo = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if !mine(index) {
                slots.push(ItemSlot::default());
                continue;
            }
            if !markers {
                slots.push(ItemSlot::default());
                todo.push(index);
                continue;
            }
            let mut digest = base.clone().str(&item.key).str(&item.fingerprint);
            for input in &item.inputs {
                let fingerprint = FileFingerprint::of(input).ok().flatten();
                if let Some(f) = fingerprint {
                    recorded.insert(input.to_string_lossy().into_owned(), f);
                }
                digest = digest.file(input, fingerprint);
            }
            let name = stamp::item_marker_name(&item.key);
            let mut slot = ItemSlot {
                digest: digest.hex(),
                marker: Some(marker_dir.join(&name)),
                name,
                previous: None,
            };
            let previous = slot.read_marker(&workspace);
            let done = previous
                .as_ref()
                .is_some_and(|m| m.digest == slot.digest && m.problem().is_none());
            if self.force || !done || plan.must_run(index) {
                // Kept only for the items that run: what they produced before and no longer
                // does is removed. A done item's records are read again when needed, so
                // that a million files' are never all in memory.
                slot.previous = previous.map(|m| m.outputs);
                todo.push(index);
            }
            slots.push(slot);
        }
        if share.is_some() {
            counts.skipped = counts.total - todo.len();
        } else {
            counts.skipped = items.len() - todo.len() + plan.already_done();
            counts.total += plan.already_done();
        }
        if markers && !todo.is_empty() {
            std::fs::create_dir_all(&marker_dir)
                .map_err(|e| vec![format!("{}: {e}", marker_dir.display())])?;
        }

        self.observer.task_started(&task.id(), todo.len());
        let outcomes = self.run_items(task, plan.as_ref(), &items, &slots, &todo);
        let mut errors: Vec<String> = Vec::new();
        let mut replaced: Vec<PathBuf> = Vec::new();
        for outcome in outcomes {
            match outcome {
                ItemOutcome::Done(no_longer) => {
                    counts.ran += 1;
                    replaced.extend(no_longer);
                }
                ItemOutcome::NotAttempted => counts.not_attempted += 1,
                ItemOutcome::Failed(e) | ItemOutcome::Stopped(e) => {
                    counts.failed += 1;
                    // A cause shared by many items (the server went away) is told once.
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                }
            }
        }
        if let Some(share) = share
            && !replaced.is_empty()
        {
            // Files its items no longer produce: the finishing run removes the ones no item
            // produces then, as it does its own.
            write_replaced(&marker_dir, &workspace, share, &replaced).map_err(one)?;
        }
        if markers && share.is_none() {
            // Only now that every item has committed: a file is an orphan only if no item of
            // this plan produces it (a particle moved to another page keeps its vignette,
            // whichever page ran first).
            let current: HashSet<&str> = slots.iter().map(|s| s.name.as_str()).collect();
            let targets = task.outputs();
            remove_orphans(
                &marker_dir,
                &workspace,
                &current,
                &slots,
                replaced,
                &targets,
            );
        }
        if !errors.is_empty() {
            return Ok(Execution::Failed(errors));
        }
        if counts.not_attempted > 0 {
            return Ok(Execution::Interrupted);
        }
        // The folders the items' files are in, as the check below reads their markers.
        let mut folders: BTreeSet<PathBuf> = BTreeSet::new();
        if markers {
            // Before the task's own outputs (a manifest) and its stamp vouch for them, every
            // file of every item must be there as recorded: something may have deleted or
            // changed one since it was written. Such items run again, once; if their files
            // change again, the task fails naming them.
            for round in 0..2 {
                let broken: Vec<usize> = (0..items.len())
                    .filter(|&i| mine(i) && slots[i].intact(&workspace, &mut folders).is_err())
                    .collect();
                if broken.is_empty() {
                    break;
                }
                if round == 1 {
                    counts.failed += broken.len();
                    counts.ran = counts.ran.saturating_sub(broken.len());
                    return Err(broken
                        .iter()
                        .filter_map(|&i| {
                            slots[i]
                                .intact(&workspace, &mut folders)
                                .err()
                                .map(|p| (i, p))
                        })
                        .map(|(i, p)| {
                            format!(
                                "{}: {p}, changed by something else during the run",
                                items[i].key
                            )
                        })
                        .collect());
                }
                tracing::warn!(
                    task = %task.id(),
                    items = broken.len(),
                    "files changed during the run; redoing their items"
                );
                let outcomes = self.run_items(task, plan.as_ref(), &items, &slots, &broken);
                for outcome in outcomes {
                    match outcome {
                        ItemOutcome::Done(_) => {}
                        ItemOutcome::NotAttempted => return Ok(Execution::Interrupted),
                        ItemOutcome::Failed(e) | ItemOutcome::Stopped(e) => return Err(vec![e]),
                    }
                }
            }
        }

        if let Some(share) = share {
            notes.push(format!(
                "items {}-{} of {} (a share): finished by a run over all of them",
                share.items.start + 1,
                share.items.end.min(items.len()),
                items.len()
            ));
            return Ok(Execution::Done);
        }
        let mut staging = Staging::new();
        plan.finish(&mut staging).map_err(one)?;
        staging.commit().map_err(|e| vec![e.to_string()])?;
        *notes = plan.notes();

        // A completed task leaves no temporary in any folder it writes (an interrupted
        // earlier run's, say); the session's lock keeps every other writer out.
        let mut written = stamp::written_folders(task, &[]);
        written.append(&mut folders);
        let staging_dir = stamp::item_staging_dir(task);
        if let Err(e) = std::fs::remove_dir_all(&staging_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(vec![format!(
                "cannot remove the leftovers in {}: {e}",
                staging_dir.display()
            )]);
        }
        for leftover in stamp::temporaries_in(&written) {
            // A file, or the folder of an owning item that was interrupted.
            if let Err(e) = crate::engine::atomic::remove_any(&leftover)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(vec![format!(
                    "cannot remove the leftover {}: {e}",
                    leftover.display()
                )]);
            }
        }

        let mut targets = BTreeMap::new();
        for target in task.outputs().into_iter().filter(|t| t.is_file()) {
            if let Ok(Some(f)) = FileFingerprint::of(&target) {
                targets.insert(target.to_string_lossy().into_owned(), f);
            }
        }
        let stamp = Stamp {
            tool_version: self.tool_version.clone(),
            task: task.id(),
            parameters: task.parameters(),
            inputs: recorded,
            targets,
            items: if markers {
                slots.into_iter().map(|s| s.name).collect()
            } else {
                Vec::new()
            },
            completed_at: chrono::Local::now().to_rfc3339(),
        };
        let json = serde_json::to_vec_pretty(&stamp).expect("stamp serializes");
        write_file(&stamp_path, &json).map_err(|e| vec![e.to_string()])?;
        Ok(Execution::Done)
    }

    /// Runs the items `which` (indices into `items`) in parallel; outcomes in that order.
    fn run_items(
        &self,
        task: &dyn Task,
        plan: &dyn Plan,
        items: &[Item],
        slots: &[ItemSlot],
        which: &[usize],
    ) -> Vec<ItemOutcome> {
        let task_id = task.id();
        // Items that wait on a network ask for their own concurrency and hold no CPU slot;
        // the others share the runner's slots with every task running at once.
        let (threads, cpu) = match plan.concurrency() {
            Some(n) => (n, false),
            None => (self.slots.limit(), true),
        };
        let stopped_by_item = AtomicBool::new(false);
        let workspace = task.workspace();
        let staging_dir = stamp::item_staging_dir(task);
        let outcomes = workers::run_all(
            which.len(),
            threads,
            |n| {
                let index = which[n];
                let _slot = cpu.then(|| self.slots.acquire());
                if self.stopped() || stopped_by_item.load(Ordering::Relaxed) {
                    return ItemOutcome::NotAttempted;
                }
                let item = &items[index];
                let staging = match (&slots[index].marker, plan.owned_folder(index)) {
                    (Some(_), Some(folder)) => Staging::owning(folder),
                    // Each item stages in a folder of its own: concurrent items whose files
                    // share a folder do not queue on its lock while creating them.
                    (Some(_), None) => Staging::in_folder(staging_dir.join(&slots[index].name)),
                    (None, _) => Staging::new(),
                };
                let outcome = run_item(plan, index, item, &slots[index], &workspace, staging);
                if matches!(outcome, ItemOutcome::Stopped(_)) {
                    stopped_by_item.store(true, Ordering::Relaxed);
                }
                self.observer.item_finished(
                    &task_id,
                    &item.key,
                    matches!(outcome, ItemOutcome::Done(_)),
                );
                outcome
            },
            || false,
        );
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ItemOutcome::NotAttempted))
            .collect()
    }
}

/// How one task's execution ended.
enum Execution {
    Done,
    Failed(Vec<String>),
    /// The stop flag was set: some items never started.
    Interrupted,
}

/// One planned item as the engine tracks it.
#[derive(Default)]
struct ItemSlot {
    digest: String,
    /// Marker file name (empty for plans that keep their own record).
    name: String,
    /// Marker path, for plans with markers.
    marker: Option<PathBuf>,
    /// For an item that runs, the files its marker listed before it ran.
    previous: Option<Vec<OutputRecord>>,
}

impl ItemSlot {
    fn read_marker(&self, workspace: &Path) -> Option<ItemMarker> {
        ItemMarker::read(self.marker.as_ref()?, workspace)
    }

    /// Whether its marker, as on disk now, is this run's and every file it lists is there
    /// as recorded; notes the folders of its files.
    fn intact(&self, workspace: &Path, folders: &mut BTreeSet<PathBuf>) -> Result<(), String> {
        let marker = self
            .read_marker(workspace)
            .filter(|m| m.digest == self.digest)
            .ok_or("it has no record of its files")?;
        folders.extend(
            stamp::folders_of(marker.outputs.iter().map(|r| r.path.as_path()))
                .map(Path::to_path_buf),
        );
        match marker.problem() {
            Some(problem) => Err(problem.to_string()),
            None => Ok(()),
        }
    }
}

fn own_freshness(task: &dyn Task, tool_version: &str) -> Freshness {
    if task.outputs().is_empty() {
        Freshness::Complete
    } else {
        stamp::freshness(task, tool_version)
    }
}

/// Ok when the item has a record and every file in it is as recorded; else the first
/// problem.
/// Files an item produced last time but not this time (say, a particle removed from the
/// list, or moved to another page): candidates for removal once every item has committed.
fn produced_no_longer(before: &Option<Vec<OutputRecord>>, now: &[OutputRecord]) -> Vec<PathBuf> {
    let Some(before) = before else {
        return Vec::new();
    };
    let now: HashSet<&Path> = now.iter().map(|r| r.path.as_path()).collect();
    before
        .iter()
        .filter(|r| !now.contains(r.path.as_path()))
        .map(|r| r.path.clone())
        .collect()
}

enum ItemOutcome {
    /// Committed; the files it produced before and no longer does (its marker lists the
    /// ones it did: every item's records kept until the task ends would be a million paths
    /// for a million files).
    Done(Vec<PathBuf>),
    Failed(String),
    /// Failed with [`crate::engine::StopTask`]: no further items start.
    Stopped(String),
    NotAttempted,
}

fn run_item(
    plan: &dyn Plan,
    index: usize,
    item: &Item,
    slot: &ItemSlot,
    workspace: &Path,
    mut staging: Staging,
) -> ItemOutcome {
    let outcome = catch_unwind(AssertUnwindSafe(|| plan.run_item(index, &mut staging)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return match e.downcast_ref::<StopTask>() {
                Some(stop) => ItemOutcome::Stopped(stop.0.clone()),
                None => ItemOutcome::Failed(format!("{}: {e:#}", item.key)),
            };
        }
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            return ItemOutcome::Failed(format!("{}: internal error (panic): {message}", item.key));
        }
    }
    match commit_item(staging, item, slot, workspace) {
        Ok(outputs) => ItemOutcome::Done(produced_no_longer(&slot.previous, &outputs)),
        Err(e) => ItemOutcome::Failed(e),
    }
}

/// Makes an item's outputs durable, then (when the engine keeps markers) its marker, which
/// records each file's fingerprint as it is now on disk.
fn commit_item(
    staging: Staging,
    item: &Item,
    slot: &ItemSlot,
    workspace: &Path,
) -> Result<Vec<OutputRecord>, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", item.key);
    let outputs = staging.commit().map_err(fail)?;
    let Some(marker) = &slot.marker else {
        return Ok(Vec::new());
    };
    let marker_data = ItemMarker {
        digest: slot.digest.clone(),
        outputs: outputs
            .into_iter()
            .map(OutputRecord::of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?,
    };
    let json = marker_data.to_json(workspace).map_err(fail)?;
    write_file(marker, &json).map_err(fail)?;
    Ok(marker_data.outputs)
}

/// The text a panic was raised with (empty when it carried no text).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Removes, once every item of the plan has committed, the files earlier runs produced that
/// no item of this plan produces now: those items stopped producing (`candidates`), and
/// those of items this plan no longer has (a collage page dropped from the list), whose
/// markers go too.
/// The suffix of the files in which shares leave what their items no longer produce.
const REPLACED: &str = ".replaced";

/// Records, for the finishing run, the files a share's items no longer produce (relative
/// to the workspace, as markers are).
fn write_replaced(
    marker_dir: &Path,
    workspace: &Path,
    share: &Share,
    replaced: &[PathBuf],
) -> anyhow::Result<()> {
    let relative: Vec<&Path> = replaced
        .iter()
        .filter_map(|p| p.strip_prefix(workspace).ok())
        .collect();
    let name = format!(
        "share-{}-{}{REPLACED}",
        share.items.start,
        std::process::id()
    );
    let json = serde_json::to_vec(&relative)?;
    write_file(&marker_dir.join(name), &json)?;
    Ok(())
}

/// The files shares recorded as no longer produced, resolved under `workspace` (a path
/// that would leave it is dropped), and the records themselves.
fn read_replaced(marker_dir: &Path, workspace: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut records) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(marker_dir) else {
        return (files, records);
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(REPLACED) {
            continue;
        }
        let listed: Vec<PathBuf> = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        files.extend(
            listed
                .into_iter()
                .filter(|p| {
                    !p.as_os_str().is_empty()
                        && p.components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                })
                .map(|p| workspace.join(p)),
        );
        records.push(entry.path());
    }
    (files, records)
}

fn remove_orphans(
    marker_dir: &Path,
    workspace: &Path,
    current: &HashSet<&str>,
    slots: &[ItemSlot],
    mut candidates: Vec<PathBuf>,
    targets: &[PathBuf],
) {
    let (from_shares, mut dropped_markers) = read_replaced(marker_dir, workspace);
    candidates.extend(from_shares);
    if let Ok(entries) = std::fs::read_dir(marker_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".done") && !current.contains(name.as_str()) {
                if let Some(old) = ItemMarker::read(&entry.path(), workspace) {
                    candidates.extend(old.outputs.into_iter().map(|r| r.path));
                }
                dropped_markers.push(entry.path());
            }
        }
    }
    if candidates.is_empty() && dropped_markers.is_empty() {
        return;
    }
    // What every item's marker lists now (read again: rare, and never all kept at once
    // otherwise).
    let kept: HashSet<PathBuf> = slots
        .iter()
        .filter_map(|s| s.read_marker(workspace))
        .flat_map(|m| m.outputs.into_iter().map(|r| r.path))
        .collect();
    let mut emptied = BTreeSet::new();
    for orphan in candidates.iter().filter(|p| !kept.contains(p.as_path())) {
        if std::fs::remove_file(orphan).is_ok()
            && let Some(parent) = orphan.parent()
        {
            emptied.insert(parent.to_path_buf());
        }
    }
    // A folder left empty (the folder of a page dropped from the list) goes too, unless it
    // is one of the task's targets; a folder with anything in it stays.
    for folder in emptied.iter().filter(|f| !targets.contains(f)) {
        let _ = std::fs::remove_dir(folder);
    }
    for marker in dropped_markers {
        let _ = std::fs::remove_file(marker);
    }
}

fn remove_durably(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                crate::engine::atomic::sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}
