//! A submission's folder, `<output>/.submissions/<ID>/`: everything `submit` planned and
//! everything its jobs recorded, so that `jobs`, `log`, `resubmit`, `cancel` and `status`
//! need nothing but this folder and the scheduler.
//!
//! ```text
//! plan.json           what was planned: the sessions of each array task, the resources,
//!                     the submit's own arguments (the tasks parse them again)
//! jobs.json           each round sent to the scheduler: its task indices, array job id,
//!                     collect job id (a resubmission is a new round)
//! task.sh, collect.sh the batch scripts: this same binary, with the task's index
//! logs/task-N.log     array task N's log (appended to by each round)
//! logs/collect.log
//! reports/task-N.json what became of each session of task N (written when it ends)
//! summary.json        the collect job's summary of the submission
//! ```

use crate::engine::atomic::write_file;
use crate::pass::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The folder of submissions under the output folder.
pub const FOLDER: &str = ".submissions";

/// Who runs the array tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    /// SLURM: `sbatch` a job array and a collect job that depends on it.
    Slurm,
    /// This machine: the array tasks, then the collect step, as child processes.
    Local,
}

/// What each array task asks of the scheduler.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Cores per array task.
    pub cores: u32,
    /// Memory per array task, as SLURM writes it (`4G`, `500M`).
    pub memory: Option<String>,
    /// Wall time per array task (`HH:MM:SS`, `D-HH:MM`...).
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Array tasks running at once (the `%` of the array; with the local executor, the
    /// tasks run side by side).
    pub max_running: Option<u32>,
    /// Further `sbatch` arguments, as given.
    pub sbatch_args: Vec<String>,
}

/// What `submit` planned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub created_at: String,
    /// The folder given to `submit` (a root, or one session).
    pub directory: PathBuf,
    pub output_root: PathBuf,
    /// Where `submit` ran: the tasks run there too (its `.env`, its configuration file).
    pub workdir: PathBuf,
    /// The binary the tasks run.
    pub binary: PathBuf,
    /// The arguments `submit` was given: each task parses them again, so that it runs with
    /// exactly the options of the submit (and none of them is copied here by hand).
    pub argv: Vec<String>,
    pub executor: Executor,
    pub resources: Resources,
    /// The session folders of each array task, by index.
    pub tasks: Vec<Vec<PathBuf>>,
    /// The tasks that run a share of one session's pages, by index: the session (the
    /// task's only one) was too large for one task, and the collect step finishes it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shares: BTreeMap<usize, PageShare>,
}

/// A share of one session's collage pages: its pages `first..end` in the order
/// `metadata.csv` first names them (to the last page when `end` is none, so that pages
/// the plan did not count are still some share's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageShare {
    pub first: usize,
    pub end: Option<usize>,
}

impl PageShare {
    pub fn pages(&self) -> std::ops::Range<usize> {
        self.first..self.end.unwrap_or(usize::MAX)
    }
}

impl Plan {
    /// The sessions split by pages, each with its tasks, in task order.
    pub fn split_sessions(&self) -> Vec<(PathBuf, Vec<usize>)> {
        let mut split: Vec<(PathBuf, Vec<usize>)> = Vec::new();
        for &task in self.shares.keys() {
            let Some(folder) = self.tasks.get(task).and_then(|f| f.first()) else {
                continue;
            };
            match split.iter_mut().find(|(f, _)| f == folder) {
                Some((_, tasks)) => tasks.push(task),
                None => split.push((folder.clone(), vec![task])),
            }
        }
        split
    }
}

/// One round sent to the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    pub at: String,
    /// The array tasks of this round (all of them at first, the ones redone after).
    pub tasks: Vec<usize>,
    /// The array job's id (with the local executor, `local`).
    pub array: String,
    pub collect: Option<String>,
}

/// What one array task did, written when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: usize,
    pub started_at: String,
    pub finished_at: String,
    pub host: String,
    /// The scheduler's job id of the task, if it ran under one.
    pub job: Option<String>,
    /// The task's peak memory (resident set), in KiB, where the system tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    pub sessions: Vec<SessionLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionLine {
    pub folder: PathBuf,
    pub experiment: Option<String>,
    /// The share of its pages the task ran, when it ran a share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<PageShare>,
    pub outcome: Outcome,
}

impl SessionLine {
    /// Whether the session ended complete.
    pub fn succeeded(&self) -> bool {
        self.outcome.succeeded()
    }
}

impl TaskReport {
    /// Whether every session of the task ended complete.
    pub fn succeeded(&self) -> bool {
        self.sessions.iter().all(SessionLine::succeeded)
    }
}

/// A submission's folder and its plan.
#[derive(Debug, Clone)]
pub struct Submission {
    pub dir: PathBuf,
    pub plan: Plan,
}

fn json_error(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let bytes = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| json_error(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| json_error(path, e))?;
    write_file(path, &bytes)
}

/// Quotes a word for `sh`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl Submission {
    /// The folder of submissions under `output_root`.
    pub fn folder(output_root: &Path) -> PathBuf {
        output_root.join(FOLDER)
    }

    /// Writes a new submission's folder: the plan, the scripts, the logs' folder.
    pub fn create(plan: Plan) -> io::Result<Submission> {
        let dir = Self::folder(&plan.output_root).join(&plan.id);
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("reports"))?;
        let submission = Submission { dir, plan };
        write_json(&submission.dir.join("plan.json"), &submission.plan)?;
        submission.write_script("task.sh", "batch-task", "--task \"$SLURM_ARRAY_TASK_ID\"")?;
        submission.write_script("collect.sh", "batch-collect", "")?;
        write_json(&submission.dir.join("jobs.json"), &Vec::<Round>::new())?;
        Ok(submission)
    }

    fn write_script(&self, name: &str, verb: &str, extra: &str) -> io::Result<()> {
        let text = format!(
            "#!/bin/sh\n# {verb} of submission {id} (written by flowcam-pipeline submit)\n\
             exec {binary} {verb} --submission {dir} {extra}\n",
            id = self.plan.id,
            binary = shell_quote(&self.plan.binary.display().to_string()),
            dir = shell_quote(&self.dir.display().to_string()),
        );
        let path = self.dir.join(name);
        write_file(&path, text.as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
    }

    /// The submission in `dir`.
    pub fn open(dir: &Path) -> io::Result<Submission> {
        Ok(Submission {
            dir: dir.to_path_buf(),
            plan: read_json(&dir.join("plan.json"))?,
        })
    }

    /// The submission called `name` under `output_root` (its id), or at the path `name`.
    pub fn find(output_root: &Path, name: &str) -> io::Result<Submission> {
        let by_id = Self::folder(output_root).join(name);
        let dir = if crate::orders::plain_name(name).is_ok() && by_id.join("plan.json").is_file() {
            by_id
        } else {
            PathBuf::from(name)
        };
        if !dir.join("plan.json").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no submission {name} (neither an id under {} nor a submission folder)",
                    Self::folder(output_root).display()
                ),
            ));
        }
        Self::open(&dir)
    }

    /// Every submission under `output_root`, oldest first (ids sort by time).
    pub fn all(output_root: &Path) -> Vec<Submission> {
        let mut found: Vec<Submission> = std::fs::read_dir(Self::folder(output_root))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| Self::open(&e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| a.plan.id.cmp(&b.plan.id));
        found
    }

    pub fn id(&self) -> &str {
        &self.plan.id
    }

    pub fn task_log(&self, task: usize) -> PathBuf {
        self.dir.join("logs").join(format!("task-{task}.log"))
    }

    pub fn collect_log(&self) -> PathBuf {
        self.dir.join("logs").join("collect.log")
    }

    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn report_path(&self, task: usize) -> PathBuf {
        self.dir.join("reports").join(format!("task-{task}.json"))
    }

    /// What array task `task` recorded when it last ended, if it did.
    pub fn report(&self, task: usize) -> Option<TaskReport> {
        read_json(&self.report_path(task)).ok()
    }

    pub fn write_report(&self, report: &TaskReport) -> io::Result<()> {
        write_json(&self.report_path(report.task), report)
    }

    /// Forgets what task `task` recorded, before it is run again.
    pub fn clear_report(&self, task: usize) -> io::Result<()> {
        match std::fs::remove_file(self.report_path(task)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn rounds(&self) -> Vec<Round> {
        read_json(&self.dir.join("jobs.json")).unwrap_or_default()
    }

    pub fn add_round(&self, round: Round) -> io::Result<()> {
        let mut rounds = self.rounds();
        rounds.push(round);
        write_json(&self.dir.join("jobs.json"), &rounds)
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join("summary.json")
    }

    /// Changes the resources the next rounds ask for (`resubmit --time`, `--memory`).
    pub fn set_resources(&mut self, resources: Resources) -> io::Result<()> {
        self.plan.resources = resources;
        write_json(&self.dir.join("plan.json"), &self.plan)
    }

    /// The collect step's summary, once written.
    pub fn summary(&self) -> Option<serde_json::Value> {
        read_json(&self.summary_path()).ok()
    }

    /// The round that last sent task `task`, and the task's job id in it.
    pub fn last_round_of(&self, task: usize) -> Option<Round> {
        self.rounds()
            .into_iter()
            .rev()
            .find(|r| r.tasks.contains(&task))
    }
}
