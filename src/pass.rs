//! One pass over some session folders, as cron runs it: each session is found complete
//! (in a few `stat` calls), waiting (still being copied), busy (another run holds it), run,
//! or failed; up to `sessions` at once, and one failing never stops the others.

use crate::engine::stamp::Freshness;
use crate::engine::{
    GraphError, LockError, LockMode, RunReport, Runner, Share, TaskRef, WorkspaceLock,
};
use crate::history;
use crate::ingest::{Readiness, readiness};
use crate::tasks::{Delivery, FlowCamPipeline, PipelineOptions, Session};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct PassOptions {
    pub output_root: PathBuf,
    /// Only for a pass over one session.
    pub experiment_name: Option<String>,
    /// Sessions processed at once.
    pub sessions: usize,
    /// A session whose files changed more recently than this waits.
    pub settle: Duration,
    /// Also wait while the `.lst` names collage pages that are not there yet (an ingest
    /// pass); off for a session given directly, where a missing page is an error to report.
    pub wait_for_collages: bool,
    pub force: bool,
    /// Skip sessions whose stamps say complete without running them, writing nothing
    /// (a pass over a root); else run the engine anyway, which writes a run report.
    pub skip_complete: bool,
    pub pipeline: PipelineOptions,
    pub delivery: Option<Delivery>,
    /// A shell command run when a session fails, with the session and error in its
    /// environment (see [`notify_failure`]).
    pub on_failure: Option<String>,
}

/// What became of one session in this pass.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Everything was already complete: nothing done.
    Complete,
    /// Work was done and everything is complete now.
    Ran,
    Failed {
        errors: Vec<String>,
    },
    /// Still arriving; processed by a later pass.
    Waiting {
        reason: String,
    },
    /// Another run holds the session's lock.
    Busy {
        holder: String,
    },
    /// A signal stopped the pass: the session was left part-done or not started; the next
    /// pass resumes it.
    Interrupted,
}

impl Outcome {
    /// Whether the session ended complete (already, or by this run).
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Complete | Outcome::Ran)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionOutcome {
    pub folder: PathBuf,
    pub experiment: Option<String>,
    pub outcome: Outcome,
    #[serde(skip)]
    pub report: Option<RunReport>,
}

impl SessionOutcome {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    pub fn interrupted(&self) -> bool {
        matches!(self.outcome, Outcome::Interrupted)
    }
}

/// The pipeline's root task for a session with these options.
pub fn pipeline(session: &Arc<Session>, options: &PassOptions) -> TaskRef {
    Arc::new(FlowCamPipeline::new(
        session.clone(),
        options.pipeline.clone(),
        options.delivery.clone(),
    ))
}

/// Processes every folder, `options.sessions` at a time; outcomes in the folders' order.
/// Folders that would share an output folder (same name at different depths) are not run:
/// they would overwrite each other's outputs and objects.
pub fn run(folders: &[PathBuf], options: &PassOptions, runner: &Runner) -> Vec<SessionOutcome> {
    let clashes = name_clashes(folders, options);
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<Option<SessionOutcome>> = vec![None; folders.len()];
    let slots: Vec<std::sync::Mutex<&mut Option<SessionOutcome>>> =
        outcomes.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..options.sessions.clamp(1, folders.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(folder) = folders.get(i) else { break };
                    let outcome = match clashes.get(&i) {
                        _ if runner.stopped() => SessionOutcome {
                            folder: folder.clone(),
                            experiment: None,
                            outcome: Outcome::Interrupted,
                            report: None,
                        },
                        Some(other) => clash(folder, other, options),
                        None => run_session(folder, options, runner),
                    };
                    **slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                }
            });
        }
    });
    drop(slots);
    outcomes.into_iter().flatten().collect()
}

fn folder_name(folder: &Path) -> String {
    folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Index -> another folder of the same name, for every folder whose name is not unique
/// (a pass with an explicit experiment name has one folder).
fn name_clashes(folders: &[PathBuf], options: &PassOptions) -> HashMap<usize, PathBuf> {
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    if options.experiment_name.is_none() {
        for (i, folder) in folders.iter().enumerate() {
            by_name.entry(folder_name(folder)).or_default().push(i);
        }
    }
    let mut clashes = HashMap::new();
    for indices in by_name.values().filter(|v| v.len() > 1) {
        for &i in indices {
            let other = indices.iter().find(|&&j| j != i).expect("two or more");
            clashes.insert(i, folders[*other].clone());
        }
    }
    clashes
}

/// The failure of a session whose name another session under the root has too.
fn clash(folder: &Path, other: &Path, options: &PassOptions) -> SessionOutcome {
    let result = SessionOutcome {
        folder: folder.to_path_buf(),
        experiment: None,
        outcome: Outcome::Failed {
            errors: vec![format!(
                "{} and {} have the same name and would share the output folder {}; rename one \
                 of them",
                folder.display(),
                other.display(),
                options.output_root.join(folder_name(folder)).display()
            )],
        },
        report: None,
    };
    notify_failure(options, &result, None);
    result
}

/// The session of `folder` and its outcome so far (complete until told otherwise), or the
/// outcome of a folder that is no session.
fn open(
    folder: &Path,
    options: &PassOptions,
) -> Result<(SessionOutcome, Arc<Session>), Box<SessionOutcome>> {
    let mut result = SessionOutcome {
        folder: folder.to_path_buf(),
        experiment: None,
        outcome: Outcome::Complete,
        report: None,
    };
    match Session::new(
        folder,
        &options.output_root,
        options.experiment_name.as_deref(),
    ) {
        Ok(session) => {
            result.experiment = Some(session.experiment.clone());
            Ok((result, Arc::new(session)))
        }
        Err(e) => {
            result.outcome = Outcome::Failed {
                errors: vec![e.to_string()],
            };
            Err(Box::new(result))
        }
    }
}

/// One session: complete, waiting, busy, or run (with its report kept and, on failure, the
/// failure command run).
pub fn run_session(folder: &Path, options: &PassOptions, runner: &Runner) -> SessionOutcome {
    let _span = tracing::info_span!("session", session = %folder.display()).entered();
    let (mut result, session) = match open(folder, options) {
        Ok(opened) => opened,
        Err(failed) => {
            notify_failure(options, &failed, None);
            return *failed;
        }
    };
    let root = pipeline(&session, options);
    let verify = options
        .delivery
        .as_ref()
        .is_some_and(|d| d.options.verify_remote);
    if options.skip_complete && !options.force && !verify && is_complete(runner, &root) {
        return result;
    }
    let ready = if options.wait_for_collages {
        readiness(folder, options.settle, SystemTime::now())
    } else {
        crate::ingest::settled(folder, options.settle, SystemTime::now())
    };
    if let Readiness::Waiting(reason) = ready {
        tracing::info!(session = %session.experiment, "waiting: {reason}");
        result.outcome = Outcome::Waiting { reason };
        return result;
    }
    let _lock = match WorkspaceLock::acquire(&session.output) {
        Ok(lock) => lock,
        Err(LockError::Held { holder, .. }) => {
            result.outcome = Outcome::Busy { holder };
            return result;
        }
        // Outputs on read-only storage (an archive, a USB stick) cannot be locked, but
        // complete ones can still be reported as such: nothing would be written anyway.
        Err(LockError::Io { .. }) if !options.force && !verify && is_complete(runner, &root) => {
            tracing::info!(session = %session.experiment, "complete (outputs not writable: nothing written)");
            return result;
        }
        Err(e) => {
            result.outcome = Outcome::Failed {
                errors: vec![e.to_string()],
            };
            notify_failure(options, &result, Some(&session));
            return result;
        }
    };
    let report = runner.run(&root);
    // Pages ExtractMetadata kept that no task took (DecollageImages failed or never ran).
    crate::flowcam::kept_pages::discard(&session.input);
    conclude(result, report, options, &session)
}

/// The outcome of a session from its run's report (recorded in its history).
fn conclude(
    mut result: SessionOutcome,
    report: Result<RunReport, GraphError>,
    options: &PassOptions,
    session: &Session,
) -> SessionOutcome {
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            result.outcome = Outcome::Failed {
                errors: vec![e.to_string()],
            };
            notify_failure(options, &result, Some(session));
            return result;
        }
    };
    if let Err(e) = history::record(&session.output, &report) {
        tracing::warn!(session = %session.experiment, "cannot keep the run report: {e}");
    }
    result.outcome = if report.succeeded() {
        if report.did_work() {
            Outcome::Ran
        } else {
            Outcome::Complete
        }
    } else if report.interrupted && !report.tasks.iter().any(|t| !t.errors.is_empty()) {
        Outcome::Interrupted
    } else {
        Outcome::Failed {
            errors: report
                .tasks
                .iter()
                .flat_map(|t| t.errors.iter().map(move |e| format!("{}: {e}", t.id)))
                .collect(),
        }
    };
    result.report = Some(report);
    if result.failed() {
        notify_failure(options, &result, Some(session));
    }
    result
}

/// The task a session is split by: its items are the collage pages.
const PAGES_TASK: &str = "DecollageImages";

/// Runs a share of a session's collage pages (items `pages` of DecollageImages), for a
/// session split across array tasks. What the pages need (ReadMetadata, ExtractMetadata)
/// runs first with the session's lock held alone: the first share to come does it, the
/// others wait and find it complete. The pages then run with the lock shared among the
/// shares, so no other run (cron, a second submission) touches the session meanwhile, and
/// the run over the whole session (the collect step) finishes it: its manifest, EcoTaxa,
/// upload. Unlike a pass, a share waits for the lock instead of reporting the session busy.
pub fn run_pages(
    folder: &Path,
    pages: std::ops::Range<usize>,
    options: &PassOptions,
    runner: &Runner,
) -> SessionOutcome {
    let _span = tracing::info_span!("session", session = %folder.display()).entered();
    let (mut result, session) = match open(folder, options) {
        Ok(opened) => opened,
        Err(failed) => return *failed,
    };
    let root = pipeline(&session, options);
    let Some(task) = Runner::graph(&root)
        .ok()
        .and_then(|graph| graph.into_iter().find(|(t, _)| t.name() == PAGES_TASK))
        .map(|(t, _)| t)
    else {
        result.outcome = Outcome::Failed {
            errors: vec![format!("the pipeline has no {PAGES_TASK} to split")],
        };
        return result;
    };
    let lock = |mode| WorkspaceLock::wait(&session.output, mode);
    let failed = |e: LockError| Outcome::Failed {
        errors: vec![e.to_string()],
    };
    // At most twice: once to find the requirements complete or run them, once to find
    // them complete (they change under the shared lock only if something broke the lock).
    let mut shared = None;
    for _ in 0..2 {
        let held = match lock(LockMode::Shared) {
            Ok(held) => held,
            Err(e) => {
                result.outcome = failed(e);
                return result;
            }
        };
        let requirements = task.requires();
        if requirements.iter().all(|r| is_complete(runner, r)) {
            shared = Some(held);
            break;
        }
        drop(held);
        let _alone = match lock(LockMode::Exclusive) {
            Ok(held) => held,
            Err(e) => {
                result.outcome = failed(e);
                return result;
            }
        };
        for requirement in &requirements {
            let outcome = conclude(result.clone(), runner.run(requirement), options, &session);
            if !outcome.outcome.succeeded() {
                return outcome;
            }
        }
    }
    let Some(_shared) = shared else {
        result.outcome = Outcome::Failed {
            errors: vec!["what the pages need changed while they waited; run again".into()],
        };
        return result;
    };
    let share = Share {
        task: task.id(),
        items: pages,
    };
    let report = runner.run_share(&task, &share);
    crate::flowcam::kept_pages::discard(&session.input);
    conclude(result, report, options, &session)
}

/// Whether every task of `root` is complete now (a few `stat` calls).
pub fn is_complete(runner: &Runner, root: &TaskRef) -> bool {
    runner
        .status(root)
        .is_ok_and(|states| states.iter().all(|(_, s)| *s == Freshness::Complete))
}

/// Runs `--on-failure` through `sh -c` with, in its environment: `FLOWCAM_SESSION` (the
/// experiment name, or the folder name when the session could not be set up),
/// `FLOWCAM_SESSION_DIR`, `FLOWCAM_OUTPUT_DIR`, `FLOWCAM_ERROR` (the first error) and
/// `FLOWCAM_ERRORS` (all of them, one per line). Its own failure is logged, never fatal.
pub fn notify_failure(options: &PassOptions, outcome: &SessionOutcome, session: Option<&Session>) {
    let Some(command) = &options.on_failure else {
        return;
    };
    let Outcome::Failed { errors } = &outcome.outcome else {
        return;
    };
    let name = outcome.experiment.clone().unwrap_or_else(|| {
        outcome
            .folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let output_dir = session
        .map(|s| s.output.display().to_string())
        .unwrap_or_default();
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .env("FLOWCAM_SESSION", &name)
        .env("FLOWCAM_SESSION_DIR", &outcome.folder)
        .env("FLOWCAM_OUTPUT_DIR", output_dir)
        .env(
            "FLOWCAM_ERROR",
            errors.first().map(String::as_str).unwrap_or(""),
        )
        .env("FLOWCAM_ERRORS", errors.join("\n"))
        .stdin(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(session = %name, "--on-failure command exited with {s}"),
        Err(e) => tracing::warn!(session = %name, "--on-failure command could not start: {e}"),
    }
}
