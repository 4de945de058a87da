//! SLURM, through its own commands: `sbatch` submits, `scancel` cancels, and a job's state
//! comes from `sacct` when the cluster keeps accounting (JASMIN's LOTUS does), else from
//! `scontrol` (which remembers a finished job for `MinJobAge`), else from `squeue`
//! (pending and running only). SLURM schedules; nothing here waits or polls.

use super::submission::{Resources, Submission};
use serde::Serialize;
use std::collections::HashMap;
use std::process::Command;

/// A job's state, as SLURM names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    /// Any other state SLURM reports (`NODE_FAIL`, `PREEMPTED`, `SUSPENDED`...).
    Other(String),
    /// SLURM no longer knows the job (it ended long ago) or cannot be asked.
    Unknown,
}

impl JobState {
    pub fn parse(text: &str) -> JobState {
        // sacct writes `CANCELLED by 0`; scontrol `CANCELLED`.
        match text.split_whitespace().next().unwrap_or_default() {
            "PENDING" | "REQUEUED" | "CONFIGURING" => JobState::Pending,
            "RUNNING" | "COMPLETING" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            "TIMEOUT" | "DEADLINE" => JobState::Timeout,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "" => JobState::Unknown,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Still waiting or running: it may yet change what it records.
    pub fn active(&self) -> bool {
        matches!(self, JobState::Pending | JobState::Running)
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Timeout => "timeout",
            JobState::OutOfMemory => "out_of_memory",
            JobState::Other(s) => s,
            JobState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{command}` could not start ({source}): is SLURM installed here (sbatch on the PATH)?"
    )]
    Missing {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
}

fn run(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let output = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| SlurmError::Missing {
            command: program.to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(SlurmError::Failed {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The resources as `sbatch` options.
fn resource_options(resources: &Resources) -> Vec<String> {
    let mut options = vec![format!("--cpus-per-task={}", resources.cores.max(1))];
    for (flag, value) in [
        ("--mem", &resources.memory),
        ("--time", &resources.time),
        ("--partition", &resources.partition),
        ("--account", &resources.account),
        ("--qos", &resources.qos),
    ] {
        if let Some(value) = value {
            options.push(format!("{flag}={value}"));
        }
    }
    options.extend(resources.sbatch_args.iter().cloned());
    options
}

/// `sbatch --parsable` prints `ID` or `ID;cluster`.
fn job_id(stdout: &str) -> String {
    stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Submits the array tasks `tasks` of `submission`: the array job's id.
pub fn submit_array(submission: &Submission, tasks: &[usize]) -> Result<String, SlurmError> {
    let plan = &submission.plan;
    let list: Vec<String> = tasks.iter().map(usize::to_string).collect();
    let mut array = list.join(",");
    if let Some(max) = plan.resources.max_running {
        array.push_str(&format!("%{max}"));
    }
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name=flowcam-{}", plan.id),
        format!("--array={array}"),
        format!("--chdir={}", plan.workdir.display()),
        format!(
            "--output={}",
            submission.dir.join("logs").join("task-%a.log").display()
        ),
        "--open-mode=append".to_string(),
    ];
    args.extend(resource_options(&plan.resources));
    args.push(submission.script("task.sh").display().to_string());
    run("sbatch", &args).map(|out| job_id(&out))
}

/// Submits the collect job, run after every task of the array job `after` ended however
/// it ended: its id.
pub fn submit_collect(submission: &Submission, after: &str) -> Result<String, SlurmError> {
    let plan = &submission.plan;
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name=flowcam-{}-collect", plan.id),
        format!("--dependency=afterany:{after}"),
        format!("--chdir={}", plan.workdir.display()),
        format!("--output={}", submission.collect_log().display()),
        "--open-mode=append".to_string(),
    ];
    if plan.shares.is_empty() {
        args.push("--cpus-per-task=1".to_string());
        for (flag, value) in [
            ("--partition", &plan.resources.partition),
            ("--account", &plan.resources.account),
            ("--qos", &plan.resources.qos),
        ] {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
    } else {
        // It finishes the split sessions (manifest, EcoTaxa, upload): an array task's work.
        args.extend(resource_options(&plan.resources));
    }
    args.push(submission.script("collect.sh").display().to_string());
    run("sbatch", &args).map(|out| job_id(&out))
}

/// The states of jobs and array tasks, keyed `ID` for a job and `ID_N` for task N of an
/// array job, as SLURM knows them now. Jobs SLURM has forgotten are missing.
pub fn states(jobs: &[String]) -> HashMap<String, JobState> {
    let jobs: Vec<&String> = jobs
        .iter()
        .filter(|j| !j.is_empty() && *j != "local")
        .collect();
    if jobs.is_empty() {
        return HashMap::new();
    }
    let list = jobs
        .iter()
        .map(|j| j.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // Accounting, where the cluster keeps it.
    if let Ok(out) = run(
        "sacct",
        &[
            "-n".into(),
            "-P".into(),
            "-X".into(),
            "-j".into(),
            list.clone(),
            "--format=JobID,State".into(),
        ],
    ) {
        let found: HashMap<String, JobState> = out
            .lines()
            .filter_map(|line| line.split_once('|'))
            .map(|(id, state)| (id.trim().to_string(), JobState::parse(state)))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let mut found = HashMap::new();
    for job in &jobs {
        if let Ok(out) = run(
            "scontrol",
            &["-o".into(), "show".into(), "job".into(), job.to_string()],
        ) {
            for line in out.lines() {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{name}=")))
                        .map(str::to_string)
                };
                let state = JobState::parse(&field("JobState").unwrap_or_default());
                match (field("ArrayJobId"), field("ArrayTaskId")) {
                    // A whole array cancelled while pending is one record whose task
                    // is NO_VAL: it stands for every task.
                    (Some(array), Some(task))
                        if task.parse::<u64>().is_ok_and(|n| n >= 0xFFFF_FFFE) =>
                    {
                        found.insert(array, state);
                    }
                    (Some(array), Some(task)) => {
                        // A pending array's tasks may be listed as a range (`2-5%1`).
                        for n in expand(&task) {
                            found.insert(format!("{array}_{n}"), state.clone());
                        }
                    }
                    _ => {
                        if let Some(id) = field("JobId") {
                            found.insert(id, state);
                        }
                    }
                }
            }
        }
    }
    if found.is_empty()
        && let Ok(out) = run(
            "squeue",
            &[
                "-h".into(),
                "-r".into(),
                "-j".into(),
                list,
                "-o".into(),
                "%i %T".into(),
            ],
        )
    {
        for line in out.lines() {
            if let Some((id, state)) = line.split_once(' ') {
                found.insert(id.to_string(), JobState::parse(state));
            }
        }
    }
    found
}

/// `2`, `2-5`, `2,4-5%1` as the task numbers they name.
fn expand(tasks: &str) -> Vec<usize> {
    let tasks = tasks.split('%').next().unwrap_or_default();
    let mut numbers = Vec::new();
    for part in tasks.trim_matches(['[', ']']).split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    numbers.extend(a..=b.min(a + 100_000));
                }
            }
            None => numbers.extend(part.parse::<usize>().ok()),
        }
    }
    numbers
}

/// Cancels jobs (whatever of them is queued or running).
pub fn cancel(jobs: &[String]) -> Result<(), SlurmError> {
    let jobs: Vec<String> = jobs.iter().filter(|j| *j != "local").cloned().collect();
    if jobs.is_empty() {
        return Ok(());
    }
    run("scancel", &jobs).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_task_ranges_read_as_slurm_writes_them() {
        assert_eq!(JobState::parse("CANCELLED by 0"), JobState::Cancelled);
        assert_eq!(JobState::parse("RUNNING"), JobState::Running);
        assert_eq!(
            JobState::parse("NODE_FAIL"),
            JobState::Other("NODE_FAIL".into())
        );
        assert_eq!(expand("2-4%1"), vec![2, 3, 4]);
        assert_eq!(expand("[0,3-4]"), vec![0, 3, 4]);
        assert_eq!(job_id("123;cluster\n"), "123");
    }
}
