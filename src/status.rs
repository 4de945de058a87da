//! `status`: what is done for a session, read without running anything (no lock taken,
//! nothing written). The command line prints it as text or JSON; the dashboard will read
//! the same structure.

use crate::TOOL_VERSION;
use crate::engine::{Freshness, Runner, TaskRef, TaskState};
use crate::tasks::{Delivery, FlowCamPipeline, PipelineOptions, Session};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskProgress {
    Complete,
    /// Done once, but an input, a parameter or an output changed since.
    Stale,
    /// The last run failed it.
    Failed,
    /// The last run was stopped by a signal before it finished.
    Interrupted,
    NotStarted,
}

/// One session's state, the most pressing of its tasks' (failed before interrupted before
/// waiting before stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Complete,
    Stale,
    /// The instrument may still be writing the folder.
    Waiting,
    Failed,
    Interrupted,
    NotStarted,
    /// Not a session this tool can work on (the reason says why).
    Invalid,
    /// Waiting in a batch job's queue (`submit`).
    Queued,
    /// Being processed by a batch job.
    Running,
}

impl TaskProgress {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskProgress::Complete => "complete",
            TaskProgress::Stale => "stale",
            TaskProgress::Failed => "failed",
            TaskProgress::Interrupted => "interrupted",
            TaskProgress::NotStarted => "not_started",
        }
    }
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Complete => "complete",
            SessionState::Stale => "stale",
            SessionState::Waiting => "waiting",
            SessionState::Failed => "failed",
            SessionState::Interrupted => "interrupted",
            SessionState::NotStarted => "not_started",
            SessionState::Invalid => "invalid",
            SessionState::Queued => "queued",
            SessionState::Running => "running",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for TaskProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One task's line.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    pub task: String,
    pub state: TaskProgress,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One session's status.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStatus {
    pub folder: PathBuf,
    pub experiment: Option<String>,
    pub output: Option<PathBuf>,
    pub state: SessionState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub tasks: Vec<TaskStatus>,
    pub particles: Option<u64>,
    /// Vignette files on disk as they were written.
    pub vignettes: Option<u64>,
    /// Particles found blank (from the manifest), written or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blanks: Option<u64>,
    /// Vignettes missing or changed since they were written, each named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
    /// Temporaries of interrupted writes left in the folders the tasks write.
    #[serde(skip_serializing_if = "is_zero")]
    pub temporaries: u64,
    pub uploaded: Option<u64>,
    pub last_run: Option<String>,
    pub last_failure: Option<LastFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastFailure {
    pub at: String,
    pub error: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What status looks at besides the folder: the pipeline as it would run.
pub struct StatusQuery<'a> {
    pub output_root: &'a Path,
    pub experiment: Option<&'a str>,
    pub options: PipelineOptions,
    pub delivery: Option<Delivery>,
    /// How long a folder must be quiet before it counts as written.
    pub settle: Duration,
}

/// The status of the session in `folder`.
pub fn session_status(folder: &Path, query: &StatusQuery) -> SessionStatus {
    let mut status = SessionStatus {
        folder: folder.to_path_buf(),
        experiment: None,
        output: None,
        state: SessionState::Invalid,
        reason: None,
        tasks: Vec::new(),
        particles: None,
        vignettes: None,
        blanks: None,
        damaged: Vec::new(),
        temporaries: 0,
        uploaded: None,
        last_run: None,
        last_failure: None,
    };
    let session = match Session::new(folder, query.output_root, query.experiment) {
        Ok(session) => Arc::new(session),
        Err(e) => {
            status.reason = Some(e.to_string());
            return status;
        }
    };
    status.experiment = Some(session.experiment.clone());
    status.output = Some(session.output.clone());
    let out = &session.output;
    let last_run = crate::history::last_run(out);
    status.last_run = last_run.as_ref().map(|r| r.started_at.clone());
    status.last_failure =
        crate::history::last_failure(out).map(|(at, error)| LastFailure { at, error });
    status.particles = std::fs::read(session.metadata_schema())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["particles"].as_u64());
    status.uploaded = crate::upload::ledger::largest_in(&session.uploads_dir());
    status.blanks = crate::tasks::Manifest::read(&session.manifest())
        .ok()
        .map(|m| m.rows.iter().filter(|r| r.blank).count() as u64);

    let root: TaskRef = Arc::new(FlowCamPipeline::new(
        session.clone(),
        query.options.clone(),
        query.delivery.clone(),
    ));
    let runner = Runner::new(TOOL_VERSION, 1);
    let states = match runner.status(&root) {
        Ok(states) => states,
        Err(e) => {
            status.reason = Some(e.to_string());
            return status;
        }
    };
    // Vignettes are counted on disk: the files DecollageImages' items recorded that are
    // still there as recorded (or, before its first complete run, the files there are).
    if let Some((decollage, _)) = states.iter().find(|(t, _)| t.name() == "DecollageImages") {
        let check = Runner::outputs(decollage.as_ref());
        if check.files > 0 {
            status.vignettes = Some(check.intact() as u64);
            status.damaged = check.problems.iter().map(|p| p.to_string()).collect();
        } else {
            status.vignettes = count_vignettes(&session.vignettes_dir());
        }
        status.temporaries = check.temporaries.len() as u64;
    }
    let last = |name: &str, wanted: TaskState| {
        last_run.as_ref().and_then(|r| {
            r.tasks
                .iter()
                .find(|t| t.name == name && t.state == wanted)
                .map(|t| t.errors.first().cloned().unwrap_or_default())
        })
    };
    for (task, freshness) in states.iter().filter(|(t, _)| !t.outputs().is_empty()) {
        let failed = last(task.name(), TaskState::Failed);
        let interrupted = last(task.name(), TaskState::Interrupted).is_some();
        let (state, reason) = match (freshness, failed) {
            (Freshness::Complete, _) => (TaskProgress::Complete, None),
            (_, Some(error)) => (TaskProgress::Failed, Some(error)),
            (_, None) if interrupted => (
                TaskProgress::Interrupted,
                Some(
                    "the last run was interrupted (SIGINT/SIGTERM); the next run resumes it"
                        .to_string(),
                ),
            ),
            (Freshness::Stale(why), None) => (TaskProgress::Stale, Some(why.clone())),
            (Freshness::Missing, None) => (TaskProgress::NotStarted, None),
        };
        status.tasks.push(TaskStatus {
            task: task.name().to_string(),
            state,
            reason,
        });
    }
    let first = |wanted: TaskProgress| status.tasks.iter().find(|t| t.state == wanted);
    (status.state, status.reason) = if status
        .tasks
        .iter()
        .all(|t| t.state == TaskProgress::Complete)
    {
        (SessionState::Complete, None)
    } else if let Some(t) = first(TaskProgress::Failed) {
        (SessionState::Failed, t.reason.clone())
    } else if let Some(t) = first(TaskProgress::Interrupted) {
        (SessionState::Interrupted, t.reason.clone())
    } else if let crate::ingest::Readiness::Waiting(why) =
        crate::ingest::readiness(folder, query.settle, std::time::SystemTime::now())
    {
        (SessionState::Waiting, Some(why))
    } else if let Some(t) = first(TaskProgress::Stale) {
        (SessionState::Stale, t.reason.clone())
    } else {
        (SessionState::NotStarted, None)
    };
    status
}

/// The files in the page folders of `vignettes` (none when it is missing), temporaries left
/// out.
fn count_vignettes(vignettes: &std::path::Path) -> Option<u64> {
    let pages = crate::tasks::manifest::page_folders(vignettes).ok()?;
    let files = pages
        .iter()
        .flat_map(|page| std::fs::read_dir(page).into_iter().flatten().flatten());
    let visible = |e: &std::fs::DirEntry| {
        !crate::engine::atomic::is_temp_name(&e.file_name().to_string_lossy())
    };
    Some(files.filter(visible).count() as u64)
}
