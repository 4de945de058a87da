//! Builds the task graph from a root and drives each task through its lifecycle (see the
//! module documentation of [`crate::engine`]).

use crate::engine::report::{ItemCounts, RunReport, TaskReport, TaskState};
use crate::engine::stamp::{self, Freshness, Stamp};
use crate::engine::{
    Digest, FileFingerprint, Item, Plan, Staging, StopTask, Task, TaskRef, write_file,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
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

/// Runs task graphs. Holds no state between runs besides its thread pool.
pub struct Runner {
    tool_version: String,
    force: bool,
    pool: rayon::ThreadPool,
    observer: Box<dyn Observer>,
}

/// What an item marker vouches for: the item's identity digest and the files it produced.
#[derive(Serialize, Deserialize)]
struct ItemMarker {
    digest: String,
    outputs: Vec<PathBuf>,
}

impl Runner {
    /// `workers` = 0 means one per core.
    pub fn new(tool_version: impl Into<String>, workers: usize) -> Runner {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("worker-{i}"))
            .build()
            .expect("thread pool");
        Runner {
            tool_version: tool_version.into(),
            force: false,
            pool,
            observer: Box::new(Silent),
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
        let graph = Self::graph(root)?;
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
                duration_ms: 0,
            };
            let blocked_by = deps
                .iter()
                .map(|&d| &reports[d])
                .find(|r| matches!(r.state, TaskState::Failed | TaskState::Blocked));
            if let Some(dep) = blocked_by {
                report.state = TaskState::Blocked;
                report.reason = Some(format!("requirement {} did not complete", dep.id));
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
                        let outcome = catch_unwind(AssertUnwindSafe(|| {
                            self.execute(task.as_ref(), &mut report.items)
                        }))
                        .unwrap_or_else(|panic| {
                            Err(vec![format!(
                                "internal error (panic): {}",
                                panic_message(panic.as_ref())
                            )])
                        });
                        if let Err(errors) = outcome {
                            report.state = TaskState::Failed;
                            report.errors = errors;
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
            tasks: reports,
        })
    }

    /// Runs one task: prepare, the items that are not done (in parallel), finish, stamp.
    fn execute(&self, task: &dyn Task, counts: &mut ItemCounts) -> Result<(), Vec<String>> {
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

        let parameters = serde_json::to_string(&task.parameters()).unwrap_or_default();
        let base = Digest::new()
            .str(&self.tool_version)
            .str(&task.id())
            .str(&parameters);
        let marker_dir = stamp::item_marker_dir(task);
        let markers = plan.item_markers();
        let mut todo = Vec::new();
        let mut current_markers = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            if !markers {
                todo.push((index, String::new(), None));
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
            let digest = digest.hex();
            let marker_name = stamp::item_marker_name(&item.key);
            let marker = marker_dir.join(&marker_name);
            current_markers.insert(marker_name);
            if self.force || !item_done(&marker, &digest) {
                todo.push((index, digest, Some(marker)));
            }
        }
        counts.skipped = items.len() - todo.len() + plan.already_done();
        counts.total += plan.already_done();
        if markers && !todo.is_empty() {
            std::fs::create_dir_all(&marker_dir)
                .map_err(|e| vec![format!("{}: {e}", marker_dir.display())])?;
        }

        self.observer.task_started(&task.id(), todo.len());
        let task_id = task.id();
        let own_pool = match plan.concurrency() {
            Some(n) if n != self.pool.current_num_threads() => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("io-worker-{i}"))
                    .build()
                    .map_err(|e| vec![format!("cannot start {n} workers: {e}")])?,
            ),
            _ => None,
        };
        let pool = own_pool.as_ref().unwrap_or(&self.pool);
        let stopped = AtomicBool::new(false);
        let results: Vec<ItemOutcome> = pool.install(|| {
            todo.par_iter()
                .with_max_len(1)
                .map(|(index, digest, marker)| {
                    if stopped.load(Ordering::Relaxed) {
                        return ItemOutcome::NotAttempted;
                    }
                    let item = &items[*index];
                    let outcome = run_item(plan.as_ref(), *index, item, digest, marker.as_deref());
                    if matches!(outcome, ItemOutcome::Stopped(_)) {
                        stopped.store(true, Ordering::Relaxed);
                    }
                    self.observer.item_finished(
                        &task_id,
                        &item.key,
                        matches!(outcome, ItemOutcome::Done),
                    );
                    outcome
                })
                .collect()
        });
        let mut errors: Vec<String> = Vec::new();
        for outcome in results {
            match outcome {
                ItemOutcome::Done => counts.ran += 1,
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
        if !errors.is_empty() {
            return Err(errors);
        }
        if markers {
            remove_orphan_items(&marker_dir, &current_markers);
        }

        let mut staging = Staging::new();
        plan.finish(&mut staging).map_err(one)?;
        staging.commit().map_err(|e| vec![e.to_string()])?;

        let stamp = Stamp {
            tool_version: self.tool_version.clone(),
            task: task.id(),
            parameters: task.parameters(),
            inputs: recorded,
            completed_at: chrono::Local::now().to_rfc3339(),
        };
        let json = serde_json::to_vec_pretty(&stamp).expect("stamp serializes");
        write_file(&stamp_path, &json).map_err(|e| vec![e.to_string()])
    }
}

fn own_freshness(task: &dyn Task, tool_version: &str) -> Freshness {
    if task.outputs().is_empty() {
        Freshness::Complete
    } else {
        stamp::freshness(task, tool_version)
    }
}

/// An item is done when its marker carries the same digest and its outputs still exist.
fn item_done(marker: &Path, digest: &str) -> bool {
    read_marker(marker).is_some_and(|m| m.digest == digest && m.outputs.iter().all(|o| o.exists()))
}

fn read_marker(marker: &Path) -> Option<ItemMarker> {
    let bytes = std::fs::read(marker).ok()?;
    serde_json::from_slice(&bytes).ok()
}

enum ItemOutcome {
    Done,
    Failed(String),
    /// Failed with [`crate::engine::StopTask`]: no further items start.
    Stopped(String),
    NotAttempted,
}

fn run_item(
    plan: &dyn Plan,
    index: usize,
    item: &Item,
    digest: &str,
    marker: Option<&Path>,
) -> ItemOutcome {
    let mut staging = Staging::new();
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
    match commit_item(staging, item, digest, marker) {
        Ok(()) => ItemOutcome::Done,
        Err(e) => ItemOutcome::Failed(e),
    }
}

/// Makes an item's outputs durable, then (when the engine keeps markers) its marker.
fn commit_item(
    staging: Staging,
    item: &Item,
    digest: &str,
    marker: Option<&Path>,
) -> Result<(), String> {
    let Some(marker) = marker else {
        staging.commit().map_err(|e| format!("{}: {e}", item.key))?;
        return Ok(());
    };
    let previous = read_marker(marker);
    let outputs = staging.commit().map_err(|e| format!("{}: {e}", item.key))?;
    // Files the item produced last time but not this time (say, a particle removed from the
    // list) would otherwise linger as orphans.
    if let Some(previous) = previous {
        let now: BTreeSet<&PathBuf> = outputs.iter().collect();
        for old in previous.outputs.iter().filter(|o| !now.contains(o)) {
            let _ = std::fs::remove_file(old);
        }
    }
    let json = serde_json::to_vec(&ItemMarker {
        digest: digest.to_string(),
        outputs,
    })
    .expect("marker serializes");
    write_file(marker, &json).map_err(|e| format!("{}: {e}", item.key))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Removes what earlier runs did for items this plan no longer has (say, a collage page
/// dropped from the list): their outputs, unless a current item produces the same file now,
/// and their markers.
fn remove_orphan_items(marker_dir: &Path, current: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(marker_dir) else {
        return;
    };
    let orphans: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".done") && !current.contains(&name)
        })
        .map(|e| e.path())
        .collect();
    if orphans.is_empty() {
        return;
    }
    let kept: HashSet<PathBuf> = current
        .iter()
        .filter_map(|name| read_marker(&marker_dir.join(name)))
        .flat_map(|m| m.outputs)
        .collect();
    for marker in orphans {
        if let Some(old) = read_marker(&marker) {
            for output in old.outputs.iter().filter(|o| !kept.contains(*o)) {
                let _ = std::fs::remove_file(output);
            }
        }
        let _ = std::fs::remove_file(&marker);
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
