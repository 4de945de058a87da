//! Batches: a cron pass's work sent to a cluster's scheduler instead of done here. `submit`
//! plans which sessions need work, splits them into the tasks of one job array, and records
//! all of it in a submission folder ([`submission`]); the scheduler ([`slurm`]) runs each
//! array task (this same binary, `batch-task`) and then a collect job (`batch-collect`)
//! that writes the submission's summary. SLURM schedules; this module plans and records.
//!
//! A session is in at most one active submission: `submit` skips sessions that an earlier
//! submission still has queued or running ([`claims`]), and while a task processes a
//! session it holds the session's lock like any run, so the session is `busy` to all others.
//!
//! ```text
//!  submit ──> plan.json ──sbatch──> array tasks 0..N ──(afterany)──> collect ──> summary.json
//!                                     │ each writes reports/task-N.json
//!  jobs: states from SLURM + reports   resubmit: tasks that failed or never ran, a new round
//! ```

pub mod slurm;
pub mod submission;

use crate::engine::{LockError, Runner, WorkspaceLock};
use crate::ingest::{Readiness, readiness};
use crate::pass::{self, Outcome, PassOptions};
use crate::tasks::Session;
use chrono::Utc;
use serde::Serialize;
pub use slurm::JobState;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
pub use submission::{
    Executor, PageShare, Plan, Resources, Round, SessionLine, Submission, TaskReport,
};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("another submit is planning in {0} right now; try again in a moment")]
    Busy(String),
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

/// Where a session stands in a submission that is still active.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub submission: String,
    pub task: usize,
    /// The array task's job id (`ARRAY_N`), when the scheduler gave one.
    pub job: Option<String>,
    pub state: JobState,
}

impl Claim {
    /// `in submission ID (task N, job J)`, as `submit` and `status` say it.
    pub fn describe(&self) -> String {
        format!(
            "in submission {} (task {}{})",
            self.submission,
            self.task,
            self.job
                .as_deref()
                .map(|j| format!(", job {j}"))
                .unwrap_or_default()
        )
    }
}

/// The job id of array task `task` in `round`.
fn task_job(round: &Round, task: usize) -> Option<String> {
    (round.array != "local").then(|| format!("{}_{task}", round.array))
}

/// Each array task's state in `submission`, by index, as the scheduler (or, locally, the
/// submission's lock and reports) tells it now. `states` are SLURM's answers.
fn task_states(
    submission: &Submission,
    states: &HashMap<String, JobState>,
) -> HashMap<usize, (Option<String>, JobState)> {
    let mut found = HashMap::new();
    let local_running = submission.plan.executor == Executor::Local && local_lock_held(submission);
    for round in submission.rounds() {
        for &task in &round.tasks {
            let job = task_job(&round, task);
            let state = match &job {
                Some(id) => states
                    .get(id)
                    .or_else(|| states.get(&round.array))
                    .cloned()
                    .unwrap_or(JobState::Unknown),
                None => match submission.report(task) {
                    Some(report) if report.succeeded() => JobState::Completed,
                    Some(_) => JobState::Failed,
                    None if local_running => JobState::Pending,
                    None => JobState::Unknown,
                },
            };
            found.insert(task, (job, state));
        }
    }
    if submission.plan.executor == Executor::Local && local_running {
        // The task whose log is being written is running.
        for (task, (_, state)) in found.iter_mut() {
            if *state == JobState::Pending && submission.task_log(*task).exists() {
                *state = JobState::Running;
            }
        }
    }
    found
}

/// Every job id of the submission's rounds, for one question to the scheduler.
fn job_ids(submission: &Submission) -> Vec<String> {
    submission
        .rounds()
        .into_iter()
        .flat_map(|r| [Some(r.array), r.collect])
        .flatten()
        .filter(|id| id != "local")
        .collect()
}

/// Whether the submission is settled: its last round's collect step wrote the summary.
fn settled(submission: &Submission) -> bool {
    let rounds = submission.rounds().len();
    submission
        .summary()
        .and_then(|s| s["round"].as_u64())
        .is_some_and(|r| r as usize >= rounds)
}

/// The sessions that submissions under `output_root` have queued or running, by folder.
pub fn claims(output_root: &Path) -> HashMap<PathBuf, Claim> {
    let active: Vec<Submission> = Submission::all(output_root)
        .into_iter()
        .filter(|s| !settled(s))
        .collect();
    let ids: Vec<String> = active.iter().flat_map(job_ids).collect();
    let states = slurm::states(&ids);
    let mut claims = HashMap::new();
    for submission in &active {
        for (task, (job, state)) in task_states(submission, &states) {
            if !state.active() {
                continue;
            }
            for folder in submission.plan.tasks.get(task).into_iter().flatten() {
                claims.insert(
                    folder.clone(),
                    Claim {
                        submission: submission.id().to_string(),
                        task,
                        job: job.clone(),
                        state: state.clone(),
                    },
                );
            }
        }
    }
    claims
}

/// What `submit` is asked to do.
pub struct SubmitRequest {
    /// The folder given (a root or a session), and the session folders found under it.
    pub directory: PathBuf,
    pub folders: Vec<PathBuf>,
    pub workdir: PathBuf,
    pub binary: PathBuf,
    pub argv: Vec<String>,
    pub executor: Executor,
    pub resources: Resources,
    /// Sessions per array task.
    pub batch_size: usize,
    /// A session with more collage pages than this is split by pages across tasks of its
    /// own (0: never).
    pub pages_per_task: usize,
    /// The run's options, for judging which sessions need work.
    pub pass: PassOptions,
}

/// Why a session was not submitted.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub folder: PathBuf,
    pub reason: String,
}

/// What `submit` did.
#[derive(Debug, Serialize)]
pub struct Submitted {
    /// The new submission's id (none when nothing needed work).
    pub submission: Option<String>,
    pub folder: Option<PathBuf>,
    pub sessions: usize,
    pub tasks: usize,
    pub round: Option<Round>,
    pub skipped: Vec<Skipped>,
}

/// Plans the sessions that need work into array tasks and sends them to the executor
/// (SLURM: returns at once, the jobs queued; local: returns when they have run).
pub fn submit(request: SubmitRequest, runner: &Runner) -> Result<Submitted, BatchError> {
    let output_root = crate::tasks::absolute(&request.pass.output_root);
    let folder = Submission::folder(&output_root);
    // Two submits at once (cron overlapping a slow one) would plan the same sessions.
    let _planning = match WorkspaceLock::acquire(&folder) {
        Ok(lock) => lock,
        Err(LockError::Held { holder, .. }) => return Err(BatchError::Busy(holder)),
        Err(e @ LockError::Io { .. }) => return Err(BatchError::Refused(e.to_string())),
    };
    let claimed = claims(&output_root);
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for folder in &request.folders {
        match needs_work(folder, &request.pass, runner, &claimed) {
            Ok(()) => chosen.push(folder.clone()),
            Err(reason) => skipped.push(Skipped {
                folder: folder.clone(),
                reason,
            }),
        }
    }
    let mut done = Submitted {
        submission: None,
        folder: None,
        sessions: chosen.len(),
        tasks: 0,
        round: None,
        skipped,
    };
    if chosen.is_empty() {
        return Ok(done);
    }
    let (mut whole, mut tasks, mut shares) = (Vec::new(), Vec::new(), BTreeMap::new());
    for folder in chosen {
        let pages = page_count(&folder);
        let per = request.pages_per_task;
        if per == 0 || pages <= per {
            whole.push(folder);
            continue;
        }
        let parts = pages.div_ceil(per);
        for part in 0..parts {
            shares.insert(
                tasks.len(),
                PageShare {
                    first: part * per,
                    end: (part + 1 < parts).then_some((part + 1) * per),
                },
            );
            tasks.push(vec![folder.clone()]);
        }
    }
    tasks.extend(
        whole
            .chunks(request.batch_size.max(1))
            .map(<[PathBuf]>::to_vec),
    );
    let now = Utc::now();
    let plan = Plan {
        id: format!(
            "{}-{:04x}",
            now.format("%Y%m%dT%H%M%S%.3fZ"),
            std::process::id() & 0xffff
        ),
        created_at: now.to_rfc3339(),
        directory: request.directory.clone(),
        output_root,
        workdir: request.workdir.clone(),
        binary: request.binary.clone(),
        argv: request.argv.clone(),
        executor: request.executor,
        resources: request.resources.clone(),
        tasks,
        shares,
    };
    let submission = Submission::create(plan)?;
    done.submission = Some(submission.id().to_string());
    done.folder = Some(submission.dir.clone());
    done.tasks = submission.plan.tasks.len();
    let all: Vec<usize> = (0..submission.plan.tasks.len()).collect();
    match send(&submission, &all) {
        Ok(round) => done.round = Some(round),
        Err(e) => {
            if submission.rounds().is_empty() {
                // Nothing was queued: the folder would only claim what no job runs.
                let _ = std::fs::remove_dir_all(&submission.dir);
            }
            return Err(e);
        }
    }
    Ok(done)
}

/// The collage pages a session folder holds, as far as a listing tells (its `.tif`
/// files): enough to plan its shares, since the last share runs to the last page.
fn page_count(folder: &Path) -> usize {
    std::fs::read_dir(folder).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                Path::new(&e.file_name()).extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("tif") || x.eq_ignore_ascii_case("tiff")
                })
            })
            .count()
    })
}

/// Why a session needs no job now, if it does not.
fn needs_work(
    folder: &Path,
    options: &PassOptions,
    runner: &Runner,
    claimed: &HashMap<PathBuf, Claim>,
) -> Result<(), String> {
    if let Some(claim) = claimed.get(folder) {
        return Err(format!("{} {}", claim.state.as_str(), claim.describe()));
    }
    // A folder that is no session fails in its task, where the error is recorded.
    let Ok(session) = Session::new(folder, &options.output_root, None) else {
        return Ok(());
    };
    let session = std::sync::Arc::new(session);
    if !options.force && pass::is_complete(runner, &pass::pipeline(&session, options)) {
        return Err("complete".into());
    }
    let ready = if options.wait_for_collages {
        readiness(folder, options.settle, SystemTime::now())
    } else {
        crate::ingest::settled(folder, options.settle, SystemTime::now())
    };
    if let Readiness::Waiting(reason) = ready {
        return Err(format!("waiting: {reason}"));
    }
    if let Err(LockError::Held { holder, .. }) = WorkspaceLock::acquire(&session.output) {
        return Err(format!("busy: another run holds it ({holder})"));
    }
    Ok(())
}

/// Sends array tasks `tasks` (and a collect step after them) to the submission's executor,
/// and records the round.
fn send(submission: &Submission, tasks: &[usize]) -> Result<Round, BatchError> {
    match submission.plan.executor {
        Executor::Slurm => {
            let array = slurm::submit_array(submission, tasks)?;
            let mut round = Round {
                at: Utc::now().to_rfc3339(),
                tasks: tasks.to_vec(),
                array: array.clone(),
                collect: None,
            };
            let collect = slurm::submit_collect(submission, &array);
            round.collect = collect.as_ref().ok().cloned();
            submission.add_round(round.clone())?;
            collect?;
            Ok(round)
        }
        Executor::Local => {
            let round = Round {
                at: Utc::now().to_rfc3339(),
                tasks: tasks.to_vec(),
                array: "local".into(),
                collect: Some("local".into()),
            };
            submission.add_round(round.clone())?;
            run_locally(submission, tasks)?;
            Ok(round)
        }
    }
}

fn local_lock_held(submission: &Submission) -> bool {
    matches!(
        WorkspaceLock::acquire(&submission.dir),
        Err(LockError::Held { .. })
    )
}

/// The local executor: the tasks as child processes of this same binary (`max_running` at
/// a time), each writing its log as a SLURM task would, then the collect step.
fn run_locally(submission: &Submission, tasks: &[usize]) -> Result<(), BatchError> {
    let _running =
        WorkspaceLock::acquire(&submission.dir).map_err(|e| BatchError::Refused(e.to_string()))?;
    let at_once = submission.plan.resources.max_running.unwrap_or(1).max(1) as usize;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let spawn = |verb: &str, task: Option<usize>, log: &Path| -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = std::process::Command::new(&submission.plan.binary);
        command
            .arg(verb)
            .arg("--submission")
            .arg(&submission.dir)
            .current_dir(&submission.plan.workdir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(task) = task {
            command.args(["--task", &task.to_string()]);
        }
        command.status().map(|_| ())
    };
    std::thread::scope(|scope| {
        for _ in 0..at_once.min(tasks.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&task) = tasks.get(i) else { break };
                    if let Err(e) = spawn("batch-task", Some(task), &submission.task_log(task)) {
                        tracing::error!("task {task} could not start: {e}");
                    }
                }
            });
        }
    });
    spawn("batch-collect", None, &submission.collect_log())?;
    Ok(())
}

/// Runs array task `task` of `submission` here, with the run's `options`: each session as
/// a cron pass runs it (its lock, its stamps), and what became of each recorded.
pub fn run_task(
    submission: &Submission,
    task: usize,
    options: &PassOptions,
    runner: &Runner,
) -> Result<TaskReport, BatchError> {
    let folders = submission.plan.tasks.get(task).ok_or_else(|| {
        BatchError::Refused(format!(
            "submission {} has no task {task} (it has {})",
            submission.id(),
            submission.plan.tasks.len()
        ))
    })?;
    let started_at = Utc::now().to_rfc3339();
    let share = submission.plan.shares.get(&task).copied();
    let outcomes = match (share, folders.as_slice()) {
        (Some(share), [folder]) => vec![pass::run_pages(folder, share.pages(), options, runner)],
        _ => pass::run(folders, options, runner),
    };
    let report = TaskReport {
        task,
        started_at,
        finished_at: Utc::now().to_rfc3339(),
        host: hostname(),
        job: std::env::var("SLURM_ARRAY_JOB_ID")
            .ok()
            .map(|array| format!("{array}_{task}")),
        peak_rss_kib: peak_rss_kib(),
        sessions: outcomes
            .into_iter()
            .map(|o| SessionLine {
                folder: o.folder,
                experiment: o.experiment,
                pages: share,
                outcome: o.outcome,
            })
            .collect(),
    };
    submission.write_report(&report)?;
    Ok(report)
}

/// This process's peak resident set so far, in KiB (Linux's `VmHWM`): what a task asks of
/// `--memory`, recorded in its report.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// This machine's name, for the tasks' reports and logs.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// One array task as `jobs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub task: usize,
    pub job: Option<String>,
    pub state: JobState,
    /// Each session of the task and, once the task ended, what became of it.
    pub sessions: Vec<SessionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub folder: PathBuf,
    pub experiment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<PageShare>,
    pub outcome: Option<Outcome>,
}

/// A submission as `jobs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SubmissionView {
    pub id: String,
    pub created_at: String,
    pub executor: Executor,
    pub folder: PathBuf,
    pub rounds: usize,
    pub tasks: Vec<TaskView>,
    pub collect: Option<(String, JobState)>,
    /// Whether the last round's collect step wrote its summary.
    pub collected: bool,
    /// What the last collect step made of the sessions split by pages.
    pub finished: Vec<SessionLine>,
}

impl SubmissionView {
    /// Tasks whose sessions failed, or which never ended (killed, out of time, cancelled)
    /// and are not queued or running.
    pub fn to_redo(&self) -> Vec<usize> {
        // A split session the collect step did not finish: its shares again (they find
        // their pages done), then a collect step that finishes it.
        let unfinished: Vec<&Path> = self
            .finished
            .iter()
            .filter(|l| !l.succeeded())
            .map(|l| l.folder.as_path())
            .collect();
        self.tasks
            .iter()
            .filter(|t| !t.state.active())
            .filter(|t| {
                t.sessions.iter().any(|s| {
                    unfinished.contains(&s.folder.as_path())
                        || !s.outcome.as_ref().is_some_and(Outcome::succeeded)
                })
            })
            .map(|t| t.task)
            .collect()
    }

    pub fn active(&self) -> bool {
        self.tasks.iter().any(|t| t.state.active())
            || self.collect.as_ref().is_some_and(|(_, s)| s.active())
    }
}

/// The submission's tasks, their states and their sessions' outcomes.
pub fn view(submission: &Submission) -> SubmissionView {
    let states = slurm::states(&job_ids(submission));
    let task_states = task_states(submission, &states);
    let rounds = submission.rounds();
    let tasks = submission
        .plan
        .tasks
        .iter()
        .enumerate()
        .map(|(task, folders)| {
            let report = submission.report(task);
            let (job, state) = task_states
                .get(&task)
                .cloned()
                .unwrap_or((None, JobState::Unknown));
            // A job SLURM forgot has ended: its report says how.
            let state = match (&state, &report) {
                (JobState::Unknown, Some(r)) if r.succeeded() => JobState::Completed,
                (JobState::Unknown, Some(_)) => JobState::Failed,
                _ => state,
            };
            let sessions = folders
                .iter()
                .map(|folder| {
                    let line = report
                        .as_ref()
                        .and_then(|r| r.sessions.iter().find(|s| &s.folder == folder));
                    SessionView {
                        folder: folder.clone(),
                        experiment: line.and_then(|l| l.experiment.clone()),
                        pages: submission.plan.shares.get(&task).copied(),
                        outcome: line.map(|l| l.outcome.clone()),
                    }
                })
                .collect();
            TaskView {
                task,
                job,
                state,
                sessions,
            }
        })
        .collect();
    let collect = rounds.last().and_then(|r| r.collect.clone()).map(|id| {
        let state = match states.get(&id) {
            Some(state) => state.clone(),
            None if settled(submission) => JobState::Completed,
            None if id == "local" && local_lock_held(submission) => JobState::Pending,
            None => JobState::Unknown,
        };
        (id, state)
    });
    SubmissionView {
        id: submission.id().to_string(),
        created_at: submission.plan.created_at.clone(),
        executor: submission.plan.executor,
        folder: submission.dir.clone(),
        rounds: rounds.len(),
        tasks,
        collect,
        collected: settled(submission),
        finished: submission
            .summary()
            .and_then(|s| serde_json::from_value(s["finished"].clone()).ok())
            .unwrap_or_default(),
    }
}

/// Sends again the tasks of `submission` whose sessions failed or never ran: a new round.
pub fn resubmit(submission: &Submission) -> Result<Option<Round>, BatchError> {
    let view = view(submission);
    let redo = view.to_redo();
    if redo.is_empty() {
        return Ok(None);
    }
    for &task in &redo {
        submission.clear_report(task)?;
    }
    send(submission, &redo).map(Some)
}

/// Cancels what of `submission` is queued or running: the job ids cancelled.
pub fn cancel(submission: &Submission) -> Result<Vec<String>, BatchError> {
    if submission.plan.executor == Executor::Local {
        return Err(BatchError::Refused(
            "a local submission runs in the process that submitted it: stop that one \
             (Ctrl-C or SIGTERM)"
                .into(),
        ));
    }
    let view = view(submission);
    let mut jobs: Vec<String> = view
        .tasks
        .iter()
        .filter(|t| t.state.active())
        .filter_map(|t| t.job.clone())
        .collect();
    if let Some((id, state)) = &view.collect
        && state.active()
    {
        jobs.push(id.clone());
    }
    slurm::cancel(&jobs)?;
    Ok(jobs)
}

/// Removes `submission`'s folder, unless some of it is still queued or running.
pub fn clean(submission: &Submission) -> Result<(), BatchError> {
    if view(submission).active() {
        return Err(BatchError::Refused(format!(
            "submission {} still has jobs queued or running: cancel it first",
            submission.id()
        )));
    }
    std::fs::remove_dir_all(&submission.dir)?;
    Ok(())
}

/// The collect step: finishes the sessions split by pages whose every share is done (a run
/// over the whole session: its manifest, EcoTaxa, upload), then writes the submission's
/// summary, from its tasks' reports and states.
pub fn collect(
    submission: &Submission,
    options: &PassOptions,
    runner: &Runner,
) -> Result<serde_json::Value, BatchError> {
    let started_at = Utc::now().to_rfc3339();
    // Finishing never cuts a page again: with `--force`, the shares forced theirs.
    let finishing = PassOptions {
        force: false,
        ..options.clone()
    };
    let mut finished = Vec::new();
    for (folder, tasks) in submission.plan.split_sessions() {
        let unfinished: Vec<String> = tasks
            .iter()
            .filter(|&&t| !submission.report(t).is_some_and(|r| r.succeeded()))
            .map(usize::to_string)
            .collect();
        let (experiment, outcome) = if unfinished.is_empty() {
            let done = pass::run_session(&folder, &finishing, runner);
            (done.experiment, done.outcome)
        } else {
            let reason = format!(
                "not finished: the pages of task {} did not complete (resubmit)",
                unfinished.join(", ")
            );
            (
                None,
                Outcome::Failed {
                    errors: vec![reason],
                },
            )
        };
        finished.push(SessionLine {
            folder,
            experiment,
            pages: None,
            outcome,
        });
    }
    let view = view(submission);
    let mut totals: HashMap<&str, usize> = HashMap::new();
    for task in &view.tasks {
        for session in &task.sessions {
            let key = match &session.outcome {
                None => "never_ran",
                Some(Outcome::Complete) => "complete",
                Some(Outcome::Ran) => "ran",
                Some(Outcome::Failed { .. }) => "failed",
                Some(Outcome::Waiting { .. }) => "waiting",
                Some(Outcome::Busy { .. }) => "busy",
                Some(Outcome::Interrupted) => "interrupted",
            };
            *totals.entry(key).or_default() += 1;
        }
    }
    let summary = serde_json::json!({
        "submission": view.id,
        "round": view.rounds,
        "started_at": started_at,
        "finished_at": Utc::now().to_rfc3339(),
        "peak_rss_kib": peak_rss_kib(),
        "totals": totals,
        "to_redo": view.to_redo(),
        "tasks": view.tasks,
        "finished": finished,
    });
    let bytes = serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other)?;
    crate::engine::atomic::write_file(&submission.summary_path(), &bytes)?;
    Ok(summary)
}

/// The submission a job id (an array job, one of its tasks `ARRAY_N`, a collect job) or a
/// submission id names, under `output_root`.
pub fn find_by_job(output_root: &Path, job: &str) -> Option<(Submission, Option<usize>)> {
    for submission in Submission::all(output_root) {
        if submission.id() == job {
            return Some((submission, None));
        }
        for round in submission.rounds() {
            if round.array == job || round.collect.as_deref() == Some(job) {
                return Some((submission, None));
            }
            for &task in &round.tasks {
                if task_job(&round, task).as_deref() == Some(job) {
                    return Some((submission, Some(task)));
                }
            }
        }
    }
    None
}

/// Marks the sessions that a submission has queued or running as such (their state, and
/// the job in the reason), whatever their outputs say.
pub fn mark_claimed(statuses: &mut [crate::status::SessionStatus], output_root: &Path) {
    if !Submission::folder(output_root).is_dir() {
        return;
    }
    let claims = claims(&crate::tasks::absolute(output_root));
    if claims.is_empty() {
        return;
    }
    for status in statuses {
        let folder = status
            .folder
            .canonicalize()
            .unwrap_or_else(|_| status.folder.clone());
        if let Some(claim) = claims.get(&folder) {
            status.state = match claim.state {
                JobState::Running => crate::status::SessionState::Running,
                _ => crate::status::SessionState::Queued,
            };
            status.reason = Some(claim.describe());
        }
    }
}
