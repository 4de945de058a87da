//! The batch verbs' command line: `submit`, `jobs`, `resubmit`, `cancel`, `clean
//! --submission`, `log --job`, and the hidden `batch-task` / `batch-collect` that the
//! scheduler runs. Parsing and printing only: [`crate::batch`] decides.

use super::{Cli, Command, RunArgs, exit};
use crate::batch::{self, BatchError, Executor, JobState, Resources, Submission};
use crate::interrupt::Interrupt;
use clap::{Args, CommandFactory, FromArgMatches};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Sessions per array task.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    /// A session with more collage pages than this is split: each share of its pages is an
    /// array task of its own, and the collect job finishes the session (0: never split).
    #[arg(long, default_value_t = 500, value_name = "PAGES")]
    pub pages_per_task: u64,
    /// Cores per array task (its --workers follow them unless given).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cores: u32,
    /// Memory per array task, as sbatch takes it (e.g. 4G).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Wall time per array task, as sbatch takes it (e.g. 02:00:00).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub qos: Option<String>,
    /// Array tasks running at once (sbatch --array's %; with --executor local, side by
    /// side).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_running: Option<u32>,
    /// Another sbatch argument, as given (repeat it for more).
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Who runs the tasks: SLURM (submit returns at once) or this machine (submit returns
    /// when they have run).
    #[arg(long, value_enum, default_value_t = Executor::Slurm)]
    pub executor: Executor,
    /// Print what was submitted as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ResubmitArgs {
    #[command(flatten)]
    pub target: SubmissionArgs,
    /// Wall time per array task from now on (a task killed by its time limit needs more).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Memory per array task from now on (a task killed for its memory needs more).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
}

#[derive(Args, Debug)]
pub struct SubmissionArgs {
    /// A submission's id (or its folder).
    pub submission: String,
    /// The output folder the submission is under.
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// A submission's id (or its folder); without one, every submission.
    pub submission: Option<String>,
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
    /// As JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BatchTaskArgs {
    /// The submission's folder.
    #[arg(long)]
    pub submission: PathBuf,
    /// The array task's index.
    #[arg(long)]
    pub task: Option<usize>,
}

/// Everything `submit` was given after the word `submit`, for the tasks to parse again.
fn submit_argv() -> Vec<String> {
    std::env::args()
        .skip_while(|a| a != "submit")
        .skip(1)
        .collect()
}

fn print_error(e: &BatchError) -> u8 {
    eprintln!("error: {e}");
    match e {
        BatchError::Busy(_) => exit::LOCKED,
        _ => exit::SETUP,
    }
}

pub fn submit(args: &SubmitArgs) -> u8 {
    let run = &args.run;
    let directory = run.session.directory.as_deref().expect("clap requires it");
    let (single, folders) = match super::sessions_at(
        directory,
        run.tasks.recursive,
        &run.session.output_directory,
    ) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let mut pass = super::pass_options(run, single);
    pass.output_root = crate::tasks::absolute(&pass.output_root);
    let interrupt = Interrupt::install();
    let runner = super::runner_for(run, single, &interrupt);
    let request = batch::SubmitRequest {
        directory: directory.to_path_buf(),
        folders: folders
            .iter()
            .map(|f| {
                f.canonicalize()
                    .unwrap_or_else(|_| crate::tasks::absolute(f))
            })
            .collect(),
        workdir: std::env::current_dir().unwrap_or_default(),
        binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("flowcam-pipeline")),
        argv: submit_argv(),
        executor: args.executor,
        resources: Resources {
            cores: args.cores,
            memory: args.memory.clone(),
            time: args.time.clone(),
            partition: args.partition.clone(),
            account: args.account.clone(),
            qos: args.qos.clone(),
            max_running: args.max_running,
            sbatch_args: args.sbatch_args.clone(),
        },
        batch_size: args.batch_size as usize,
        pages_per_task: args.pages_per_task as usize,
        pass,
    };
    let done = match batch::submit(request, &runner) {
        Ok(done) => done,
        Err(e) => return print_error(&e),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&done).unwrap_or_default()
        );
        return exit::OK;
    }
    if !run.logging.quiet {
        for skipped in &done.skipped {
            println!("skipped {}: {}", skipped.folder.display(), skipped.reason);
        }
    }
    match (&done.submission, &done.round) {
        (Some(id), Some(round)) => {
            println!(
                "submission {id}: {} sessions in {} array tasks",
                done.sessions, done.tasks
            );
            println!("array job {}", round.array);
            if let Some(collect) = &round.collect {
                println!("collect job {collect}");
            }
        }
        _ => {
            if !run.logging.quiet {
                println!("nothing to submit");
            }
        }
    }
    exit::OK
}

fn open(output_root: &Path, name: &str) -> Result<Submission, u8> {
    Submission::find(output_root, name).map_err(|e| {
        eprintln!("error: {e}");
        exit::SETUP
    })
}

fn state_text(state: &JobState) -> &str {
    state.as_str()
}

pub fn jobs(args: &JobsArgs) -> u8 {
    let submissions = match &args.submission {
        Some(name) => match open(&args.output_directory, name) {
            Ok(s) => vec![s],
            Err(code) => return code,
        },
        None => Submission::all(&args.output_directory),
    };
    let views: Vec<batch::SubmissionView> = submissions.iter().map(batch::view).collect();
    if args.json {
        let value = match &args.submission {
            Some(_) => serde_json::to_value(&views[0]),
            None => serde_json::to_value(&views),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value.unwrap_or_default()).unwrap_or_default()
        );
        return exit::OK;
    }
    if views.is_empty() {
        println!(
            "no submissions under {}",
            Submission::folder(&args.output_directory).display()
        );
    }
    for view in &views {
        println!(
            "submission {} ({:?}, {} round{}){}",
            view.id,
            view.executor,
            view.rounds,
            if view.rounds == 1 { "" } else { "s" },
            if view.collected { ", collected" } else { "" }
        );
        for task in &view.tasks {
            println!(
                "  task {:<4} {:<12} {:<14} {}",
                task.task,
                task.job.as_deref().unwrap_or("-"),
                state_text(&task.state),
                task.sessions
                    .iter()
                    .map(|s| {
                        let name = s
                            .folder
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let outcome = match &s.outcome {
                            None => "not run".to_string(),
                            Some(o) => serde_json::to_value(o)
                                .ok()
                                .and_then(|v| v["state"].as_str().map(str::to_string))
                                .unwrap_or_default(),
                        };
                        match &s.pages {
                            Some(share) => format!("{name} {}: {outcome}", pages_text(share)),
                            None => format!("{name}: {outcome}"),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some((job, state)) = &view.collect {
            println!("  collect   {job:<12} {}", state_text(state));
        }
        for line in &view.finished {
            println!("  finished  {}", line_text(line));
        }
        let redo = view.to_redo();
        if !redo.is_empty() && !view.active() {
            println!(
                "  to redo: tasks {} (flowcam-pipeline resubmit {})",
                redo.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                view.id
            );
        }
    }
    exit::OK
}

/// `FOLDER: STATE[: ERRORS]`, what became of a session.
fn line_text(line: &batch::SessionLine) -> String {
    let outcome = serde_json::to_value(&line.outcome).unwrap_or_default();
    let errors = outcome["errors"]
        .as_array()
        .map(|e| {
            let errors: Vec<&str> = e.iter().filter_map(|e| e.as_str()).collect();
            format!(": {}", errors.join("; "))
        })
        .unwrap_or_default();
    format!(
        "{}: {}{errors}",
        line.folder.display(),
        outcome["state"].as_str().unwrap_or_default()
    )
}

/// `pages 1-125` (counted from 1), or `pages 876-` for the last share.
fn pages_text(share: &batch::PageShare) -> String {
    match share.end {
        Some(end) => format!("pages {}-{end}", share.first + 1),
        None => format!("pages {}-", share.first + 1),
    }
}

pub fn resubmit(args: &ResubmitArgs) -> u8 {
    let mut submission = match open(&args.target.output_directory, &args.target.submission) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut resources = submission.plan.resources.clone();
    if let Some(time) = &args.time {
        resources.time = Some(time.clone());
    }
    if let Some(memory) = &args.memory {
        resources.memory = Some(memory.clone());
    }
    if let Err(e) = submission.set_resources(resources) {
        return print_error(&e.into());
    }
    match batch::resubmit(&submission) {
        Ok(None) => {
            println!(
                "nothing to resubmit: every task ended and its sessions are complete, or is still queued or running"
            );
            exit::OK
        }
        Ok(Some(round)) => {
            println!(
                "resubmitted tasks {} of submission {}",
                round
                    .tasks
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                submission.id()
            );
            println!("array job {}", round.array);
            if let Some(collect) = &round.collect {
                println!("collect job {collect}");
            }
            exit::OK
        }
        Err(e) => print_error(&e),
    }
}

pub fn cancel(args: &SubmissionArgs) -> u8 {
    let submission = match open(&args.output_directory, &args.submission) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match batch::cancel(&submission) {
        Ok(jobs) if jobs.is_empty() => {
            println!(
                "nothing of submission {} is queued or running",
                submission.id()
            );
            exit::OK
        }
        Ok(jobs) => {
            println!("cancelled {}", jobs.join(" "));
            exit::OK
        }
        Err(e) => print_error(&e),
    }
}

pub fn clean_submission(output_root: &Path, name: &str) -> u8 {
    let submission = match open(output_root, name) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match batch::clean(&submission) {
        Ok(()) => {
            println!("removed {}", submission.dir.display());
            exit::OK
        }
        Err(e) => print_error(&e),
    }
}

/// `log --job ID [--task N]`: an array task's log, or the collect job's.
pub fn show_job_log(output_root: &Path, job: &str, task: Option<usize>) -> u8 {
    let Some((submission, found_task)) = batch::find_by_job(output_root, job) else {
        eprintln!(
            "error: no submission under {} has a job or id {job}",
            Submission::folder(output_root).display()
        );
        return exit::SETUP;
    };
    let path = match task.or(found_task) {
        Some(task) if task >= submission.plan.tasks.len() => {
            eprintln!(
                "error: submission {} has tasks 0 to {}",
                submission.id(),
                submission.plan.tasks.len().saturating_sub(1)
            );
            return exit::SETUP;
        }
        Some(task) => submission.task_log(task),
        None => submission.collect_log(),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&bytes);
            exit::OK
        }
        Err(_) => {
            eprintln!("no log yet at {} (the job has not started)", path.display());
            exit::TASK_FAILED
        }
    }
}

/// The run arguments of a submission, parsed again from what `submit` was given (and the
/// configuration file, as `submit` read it).
fn submitted_run(submission: &Submission) -> Result<SubmitArgs, String> {
    let argv = std::iter::once("flowcam-pipeline".to_string())
        .chain(std::iter::once("submit".to_string()))
        .chain(submission.plan.argv.iter().cloned());
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| format!("the submission's arguments no longer parse: {e}"))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let sub = matches.subcommand_matches("submit").ok_or("not a submit")?;
    let Some(Command::Submit(mut args)) = cli.command else {
        return Err("not a submit".into());
    };
    super::apply_config(&mut args.run, sub).map_err(|_| "the configuration file".to_string())?;
    Ok(*args)
}

/// What a submission's jobs run with: the submit's own options, parsed again.
struct Submitted {
    submission: Submission,
    options: crate::pass::PassOptions,
    runner: crate::engine::Runner,
    interrupt: Interrupt,
}

/// `collect`: the run finishes sessions whose pages its shares made, never cutting one
/// again, so `--force` does not apply to it.
fn submitted(dir: &Path, collect: bool) -> Result<Submitted, u8> {
    let submission = Submission::open(dir).map_err(|e| {
        eprintln!("error: {e}");
        exit::SETUP
    })?;
    let args = submitted_run(&submission).map_err(|e| {
        eprintln!("error: {e}");
        exit::SETUP
    })?;
    let mut run = args.run;
    if collect {
        run.force = false;
    }
    if run.workers == 0 {
        run.workers = args.cores as usize;
    }
    let v = &run.logging;
    super::init_logging(v.verbose, v.quiet, v.log_format, None);
    let mut options = super::pass_options(&run, false);
    options.skip_complete = true;
    let interrupt = Interrupt::install();
    let runner = super::runner_for(&run, false, &interrupt);
    Ok(Submitted {
        submission,
        options,
        runner,
        interrupt,
    })
}

/// `batch-task --submission DIR --task N`: one array task, as the scheduler runs it.
pub fn batch_task(args: &BatchTaskArgs) -> u8 {
    let Some(task) = args.task else {
        eprintln!("error: batch-task needs --task N");
        return exit::USAGE;
    };
    let Submitted {
        submission,
        options,
        runner,
        interrupt,
    } = match submitted(&args.submission, false) {
        Ok(submitted) => submitted,
        Err(code) => return code,
    };
    println!(
        "=== task {task} of submission {} on {} at {}",
        submission.id(),
        batch::hostname(),
        chrono::Utc::now().to_rfc3339()
    );
    let report = match batch::run_task(&submission, task, &options, &runner) {
        Ok(report) => report,
        Err(e) => return print_error(&e),
    };
    let mut failed = false;
    for line in &report.sessions {
        println!("{}", line_text(line));
        failed |= matches!(line.outcome, crate::pass::Outcome::Failed { .. });
    }
    match interrupt.exit_code() {
        Some(code) => code,
        None if failed => exit::TASK_FAILED,
        None => exit::OK,
    }
}

/// `batch-collect --submission DIR`: the submission's summary, after its array.
pub fn batch_collect(args: &BatchTaskArgs) -> u8 {
    let Submitted {
        submission,
        options,
        runner,
        interrupt,
    } = match submitted(&args.submission, true) {
        Ok(submitted) => submitted,
        Err(code) => return code,
    };
    let collected = batch::collect(&submission, &options, &runner);
    if let Some(code) = interrupt.exit_code() {
        return code;
    }
    match collected {
        Ok(summary) => {
            println!(
                "=== collect of submission {} at {}",
                submission.id(),
                chrono::Utc::now().to_rfc3339()
            );
            println!("{}", summary["totals"]);
            let finished: Vec<batch::SessionLine> =
                serde_json::from_value(summary["finished"].clone()).unwrap_or_default();
            for line in &finished {
                println!("finished {}", line_text(line));
            }
            exit::OK
        }
        Err(e) => print_error(&e),
    }
}
