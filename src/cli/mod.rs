//! The `flowcam-pipeline` command line: parsing, exit codes and what gets printed. The work
//! itself is done by [`crate::tasks`] through [`crate::engine`].

use crate::TOOL_VERSION;
use crate::clean::{CleanError, Cleaned};
use crate::config::Config;
use crate::engine::{LockError, Runner, TaskReport, runner::Observer};
use crate::flowcam::Collage;
use crate::interrupt::Interrupt;
use crate::pass::{Outcome, PassOptions, SessionOutcome};
use crate::progress::{Progress, ProgressMode};
use crate::status::{SessionStatus, StatusQuery, TaskProgress};
use crate::tasks::{
    BlankPolicy, DecollageOptions, Delivery, ExtractOptions, PipelineOptions, Session,
    UploadOptions,
};
use crate::upload::{DestinationConfig, DestinationOptions, S3Settings};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit codes, documented in the README.
mod batch;

pub mod exit {
    /// Everything is complete.
    pub const OK: u8 = 0;
    /// A task failed (bad input data, missing or corrupt collage, I/O error).
    pub const TASK_FAILED: u8 = 1;
    /// The command line could not be parsed (clap's own code).
    pub const USAGE: u8 = 2;
    /// Another run holds the session's lock.
    pub const LOCKED: u8 = 3;
    /// The session cannot be set up: folder missing, invalid folder name, no `.lst`,
    /// output inside the input folder, output not writable.
    pub const SETUP: u8 = 4;
    /// Stopped by SIGINT (Ctrl-C): 128 + 2, the shell's convention.
    pub const INTERRUPTED_SIGINT: u8 = 130;
    /// Stopped by SIGTERM: 128 + 15.
    pub const INTERRUPTED_SIGTERM: u8 = 143;
}

/// The most `--workers` accepted: far more than any machine's cores, few enough threads
/// that starting them cannot exhaust a machine.
pub const MAX_WORKERS: u64 = 256;
/// The most `--sessions` (at once under a root) accepted.
pub const MAX_SESSIONS: u64 = 256;

#[derive(Parser, Debug)]
#[command(
    name = "flowcam-pipeline",
    version,
    about = "FlowCam session -> EXIF-tagged particle vignettes",
    long_about = "Turns a FlowCam session folder (.lst particle list + collage TIFF pages) into one \
                  TIFF vignette per particle, with the sample's position, date and depth and the \
                  particle's time and measurements in its EXIF. Reruns do only what is missing.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show each session (under a root, or one) and each task's state: complete, stale and
    /// why, waiting, failed with the last error, not started; counts and the last run.
    Status(Box<StatusArgs>),
    /// Show the last run's log of a session (its folder, or its name under the output
    /// folder).
    Log(LogArgs),
    /// Remove a session's outputs (and only those), or with --submission a submission's
    /// folder.
    Clean(CleanArgs),
    /// Plan the sessions that need work into a job array and submit it to SLURM (or run
    /// it here with --executor local), then a collect job; prints the job ids.
    Submit(Box<batch::SubmitArgs>),
    /// Show submissions, or one: each array task's state (from SLURM) and what became of
    /// its sessions, and the collect job.
    Jobs(batch::JobsArgs),
    /// Submit again the tasks of a submission whose sessions failed or never ran.
    Resubmit(batch::ResubmitArgs),
    /// Cancel what of a submission is queued or running.
    Cancel(batch::SubmissionArgs),
    /// One array task of a submission (what the scheduler runs).
    #[command(hide = true)]
    BatchTask(batch::BatchTaskArgs),
    /// The collect step of a submission (what the scheduler runs after its array).
    #[command(hide = true)]
    BatchCollect(batch::BatchTaskArgs),
    /// Print the declared interface of a task (or of every task): parameters, inputs,
    /// outputs, as JSON.
    Describe {
        /// A task's name (`describe` alone lists them all).
        task: Option<String>,
    },
    /// Run one task alone from a JSON request {"context", "parameters", "inputs",
    /// "outputs"}; prints a JSON result naming the outputs it produced.
    Operation {
        /// `[TASK] JSON`: the task (`describe` lists them; when left out, the
        /// FLOWCAM_TASK environment variable names it, as a per-task image sets it), then
        /// the request as JSON text, or - to read it from standard input. With
        /// --json-file, only the task.
        #[arg(value_name = "ARGS", num_args = 0..=2)]
        args: Vec<String>,
        /// Read the request from this file.
        #[arg(long, value_name = "PATH")]
        json_file: Option<PathBuf>,
    },
    /// Serve a web dashboard of the sessions under a root (and its JSON API) on
    /// 127.0.0.1:8080 unless told otherwise. Reads only.
    Serve(Box<ServeArgs>),
    /// Benchmark floor: decode every collage of a session and nothing else.
    #[command(hide = true)]
    DecodeOnly {
        #[arg(long)]
        directory: PathBuf,
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
}

#[derive(Args, Debug)]
pub struct SessionArgs {
    /// A FlowCam session folder (a folder with a .lst), or a root folder whose subfolders
    /// are sessions. Read only; never written.
    /// (Optional in the type only so that subcommands can leave the top level's unset;
    /// clap still requires it.)
    #[arg(long, short = 'd', required = true)]
    pub directory: Option<PathBuf>,
    /// Where outputs go, one folder per session.
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
    /// Names the session's output folder and prefixes vignette names [default: the session
    /// folder's name].
    #[arg(long)]
    pub experiment_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct CleanArgs {
    /// The session folder whose outputs go.
    #[arg(long, short = 'd', required_unless_present = "submission")]
    pub directory: Option<PathBuf>,
    /// Where outputs go, one folder per session.
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
    /// Names the session's output folder [default: the session folder's name].
    #[arg(long)]
    pub experiment_name: Option<String>,
    /// Remove this submission's folder instead (refused while its jobs are queued or
    /// running).
    #[arg(long, value_name = "ID", conflicts_with = "directory")]
    pub submission: Option<String>,
}

/// What the tasks do: shared by running and `status`, which must build the same graph.
#[derive(Args, Debug)]
pub struct TaskArgs {
    /// The configuration file [default: ./flowcam-pipeline.toml when it exists].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Under a root, look for sessions at any depth, not only one level down.
    #[arg(long)]
    pub recursive: bool,
    /// Leave the particle's measurements out of the vignettes' ImageDescription.
    #[arg(long)]
    pub no_embed_measurements: bool,
    /// Blank vignettes (uniform pixels, or in a blank class list that fits the session):
    /// keep them unmarked, flag them (written and uploaded, marked blank) or skip them
    /// (neither written nor uploaded; still listed and counted).
    #[arg(long, value_name = "POLICY", default_value = "flag", value_parser = blank_policy())]
    pub blanks: BlankPolicy,
    /// Cut the vignettes of a page whose three channels are equal everywhere (as the
    /// FlowCam's pages are) as 8-bit grey: the same pixels in a third of the bytes, TIFF
    /// and EcoTaxa PNG. A page in colour keeps its colour.
    #[arg(long)]
    pub grey_vignettes: bool,
    /// A CSV of sample facts by session folder name (session, latitude, longitude,
    /// sample_date, depth_m, station, sample_id); it takes precedence over the folder
    /// name and the .ctx.
    #[arg(long, value_name = "PATH")]
    pub sample_sheet: Option<PathBuf>,
    /// The trailing number of a folder name (..._04052023_1) is a replicate or session
    /// number, not the depth in metres.
    #[arg(long)]
    pub no_depth_from_name: bool,
    /// Also export the session for EcoTaxa: PNG vignettes with the same EXIF,
    /// ecotaxa_<session>.tsv and a zip ready for EcoTaxa's import.
    #[arg(long)]
    pub ecotaxa: bool,
    #[command(flatten)]
    pub upload: UploadArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Upload")]
pub struct UploadArgs {
    /// Upload the session to this bucket (with --api-url: the upload API's bucket_name).
    #[arg(long, value_name = "BUCKET", env = "FLOWCAM_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint for JASMIN, Garage, MinIO... [default: AWS_ENDPOINT_URL, else
    /// AWS_URL_ENDPOINT, else AWS itself]. Implies path-style addressing.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Object keys are <PREFIX>/<experiment>/<file>.
    #[arg(long, value_name = "PREFIX", env = "FLOWCAM_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Deliver through the lab's upload API (POST <URL>/upload/) instead of S3 directly.
    #[arg(long, value_name = "URL", env = "FLOWCAM_API_URL")]
    pub api_url: Option<String>,
    /// Files per upload API request.
    #[arg(long, default_value_t = crate::upload::api::MAX_BATCH, env = "FLOWCAM_API_BATCH_SIZE",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=crate::upload::api::MAX_BATCH as u64))]
    pub api_batch_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32, env = "FLOWCAM_UPLOAD_CONCURRENCY",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub upload_concurrency: usize,
    /// Create the bucket if it does not exist.
    #[arg(long)]
    pub create_bucket: bool,
    /// Check the destination itself instead of trusting the upload ledger (S3: list, compare
    /// size and ETag; upload API: ask whether each key exists); sends what is missing or
    /// different.
    #[arg(long)]
    pub verify_remote: bool,
    /// Make the vignettes but do not upload, even with --s3-bucket.
    #[arg(long)]
    pub no_upload: bool,
    /// Upload the EcoTaxa zip too (makes it, as --ecotaxa does).
    #[arg(long)]
    pub upload_ecotaxa: bool,
    /// Cut each vignette and send it to the destination from memory, never writing it
    /// locally (the tables, manifest and ledger still are). Off by default: see the README.
    #[arg(long, requires = "s3_bucket", conflicts_with = "no_upload")]
    pub no_local_vignettes: bool,
    /// The configuration file's endpoint, used when neither --s3-endpoint nor the
    /// environment gives one.
    #[arg(skip)]
    pub config_endpoint: Option<String>,
}

impl UploadArgs {
    /// The delivery these options ask for, if any.
    pub fn delivery(&self) -> Option<Delivery> {
        if self.no_upload {
            return None;
        }
        let Some(bucket) = self.s3_bucket.clone() else {
            let asked = [
                (self.api_url.is_some(), "--api-url"),
                (self.s3_prefix.is_some(), "--s3-prefix"),
                (self.verify_remote, "--verify-remote"),
                (self.create_bucket, "--create-bucket"),
                (self.upload_ecotaxa, "--upload-ecotaxa"),
                (self.no_local_vignettes, "--no-local-vignettes"),
            ];
            let given: Vec<&str> = asked
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| *n)
                .collect();
            if !given.is_empty() {
                tracing::warn!(
                    "{} given without --s3-bucket: nothing is uploaded",
                    given.join(", ")
                );
            }
            return None;
        };
        let destination = DestinationConfig::new(DestinationOptions {
            bucket,
            api_url: self.api_url.clone(),
            endpoint: S3Settings::endpoint_from(self.s3_endpoint.as_deref())
                .or_else(|| self.config_endpoint.clone()),
            api_batch_size: self.api_batch_size,
            concurrency: self.upload_concurrency,
            create_bucket: self.create_bucket,
        });
        Some(Delivery {
            destination,
            options: UploadOptions {
                prefix: self.s3_prefix.clone(),
                verify_remote: self.verify_remote,
                extra: None,
                direct: self.no_local_vignettes,
            },
            upload_ecotaxa: self.upload_ecotaxa,
        })
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Parallel workers for per-item work, 0 to 256 [0: one per core for a session, two
    /// per core under a root]. Threads start only for items there are.
    #[arg(long, short = 'j', default_value_t = 0, env = "FLOWCAM_WORKERS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_WORKERS))]
    pub workers: usize,
    /// Memory for decoded collage pages, shared by all workers, in MiB (64 to 1048576). A
    /// worker waits for its page's share; a page larger than the limit runs alone.
    #[arg(long, value_name = "MIB", default_value_t = crate::budget::DEFAULT_MIB,
          env = "FLOWCAM_MEMORY_LIMIT",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(crate::budget::MIN_MIB as u64..=crate::budget::MAX_MIB as u64))]
    pub memory_limit: usize,
    /// Rerun every task regardless of stamps.
    #[arg(long)]
    pub force: bool,
    /// Sessions processed at once under a root.
    #[arg(long, default_value_t = 4, env = "FLOWCAM_SESSIONS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_SESSIONS))]
    pub sessions: usize,
    /// A session whose files changed more recently than this is still arriving and waits
    /// [default: 60 under a root, 0 for a session folder given directly].
    #[arg(long, value_name = "SECONDS", env = "FLOWCAM_SETTLE_SECONDS")]
    pub settle_seconds: Option<u64>,
    /// Run this shell command when a session fails, with FLOWCAM_SESSION, FLOWCAM_ERROR,
    /// FLOWCAM_ERRORS, FLOWCAM_SESSION_DIR and FLOWCAM_OUTPUT_DIR in its environment.
    #[arg(long, value_name = "CMD", env = "FLOWCAM_ON_FAILURE")]
    pub on_failure: Option<String>,
    /// Progress display: bars on a terminal (auto), periodic lines for log files (plain).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, env = "FLOWCAM_PROGRESS")]
    pub progress: ProgressMode,
    #[command(flatten)]
    pub logging: Verbosity,
}

/// How much to say, and in which form.
#[derive(Args, Debug)]
pub struct Verbosity {
    /// Say more in the logs (-v: info, -vv: debug); RUST_LOG wins over it.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors: no progress, no summary when nothing failed (for cron).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Log lines as text or as JSON objects (for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FLOWCAM_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A session folder or a root of session folders (or give it with -d).
    #[arg(value_name = "ROOT|SESSION", required_unless_present = "directory")]
    pub path: Option<PathBuf>,
    /// The same as ROOT|SESSION.
    #[arg(long, short = 'd', conflicts_with = "path")]
    pub directory: Option<PathBuf>,
    /// Where outputs go, one folder per session.
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
    /// The experiment name the session was run with, if not its folder's name.
    #[arg(long)]
    pub experiment_name: Option<String>,
    /// As for a run: how long a session's files must be unchanged before it is ready
    /// [default: 60 under a root, 0 for a session folder].
    #[arg(long, value_name = "SECONDS", env = "FLOWCAM_SETTLE_SECONDS")]
    pub settle_seconds: Option<u64>,
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// The same, as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A root of session folders (or one session folder).
    #[arg(long, short = 'd')]
    pub directory: PathBuf,
    /// Where the outputs are, one folder per session.
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
    /// The address to listen on: loopback unless you mean to share the dashboard (pages
    /// and reads are open to whoever can reach it).
    #[arg(long, value_name = "ADDRESS:PORT", default_value = crate::serve::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// As for a run: how long a session's files must be unchanged before it is ready.
    #[arg(long, value_name = "SECONDS", env = "FLOWCAM_SETTLE_SECONDS")]
    pub settle_seconds: Option<u64>,
    /// Run the cron pass over the root every SECONDS (the same pass, settle rules and
    /// locks), so that the service replaces cron.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub watch: Option<u64>,
    /// With --watch: sessions processed at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub sessions: u64,
    /// With --watch: run this shell command when a session fails (as for a run).
    #[arg(long, value_name = "CMD", env = "FLOWCAM_ON_FAILURE")]
    pub on_failure: Option<String>,
    /// Orders run at the same time (with FLOWCAM_SERVE_TOKEN set; see the README).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub order_workers: u64,
    #[command(flatten)]
    pub tasks: TaskArgs,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// The session's folder, or its name (experiment) under the output folder.
    #[arg(value_name = "SESSION", required_unless_present = "job")]
    pub session: Option<PathBuf>,
    /// Instead: a submission's job (an array job or task `ARRAY_N`, a collect job, or the
    /// submission's id): with --task N that array task's log, else the collect job's.
    #[arg(long, value_name = "ID", conflicts_with = "session")]
    pub job: Option<String>,
    /// With --job: the array task.
    #[arg(long, value_name = "N", requires = "job")]
    pub task: Option<usize>,
    /// Where outputs go, one folder per session.
    #[arg(
        long,
        short = 'o',
        default_value = "output",
        env = "FLOWCAM_OUTPUT_DIRECTORY"
    )]
    pub output_directory: PathBuf,
}

pub fn main() -> ExitCode {
    // First, so that .env can set RUST_LOG, the AWS variables and FLOWCAM_* defaults.
    let dotenv = load_dotenv();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = dotenv {
        eprintln!("error: {e}");
        return ExitCode::from(exit::SETUP);
    }
    let code = match &mut cli.command {
        None => match apply_config(&mut cli.run, &matches) {
            Ok(level) => {
                let v = &cli.run.logging;
                init_logging(v.verbose, v.quiet, v.log_format, level.as_deref());
                run(&cli.run)
            }
            Err(code) => code,
        },
        Some(Command::Status(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            let sub = matches
                .subcommand_matches("status")
                .expect("status matches");
            match load_config(&args.tasks) {
                Ok(config) => {
                    if let Some(config) = &config {
                        let a = &mut **args;
                        merge_view(
                            sub,
                            config,
                            &mut a.tasks,
                            &mut a.output_directory,
                            &mut a.settle_seconds,
                        );
                    }
                    status(args)
                }
                Err(code) => code,
            }
        }
        Some(Command::Serve(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            let sub = matches.subcommand_matches("serve").expect("serve matches");
            match load_config(&args.tasks) {
                Ok(config) => {
                    if let Some(config) = &config {
                        let a = &mut **args;
                        merge_view(
                            sub,
                            config,
                            &mut a.tasks,
                            &mut a.output_directory,
                            &mut a.settle_seconds,
                        );
                        if !from_user(sub, "on_failure") && config.on_failure.is_some() {
                            args.on_failure = config.on_failure.clone();
                        }
                    }
                    serve(args)
                }
                Err(code) => code,
            }
        }
        Some(Command::Log(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            let sub = matches.subcommand_matches("log").expect("log matches");
            match config_output_directory(sub, &mut args.output_directory) {
                Ok(()) => show_log(args),
                Err(code) => code,
            }
        }
        Some(Command::Clean(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            let sub = matches.subcommand_matches("clean").expect("clean matches");
            match config_output_directory(sub, &mut args.output_directory) {
                Ok(()) => match &args.submission {
                    Some(id) => batch::clean_submission(&args.output_directory, id),
                    None => clean(&SessionArgs {
                        directory: args.directory.clone(),
                        output_directory: args.output_directory.clone(),
                        experiment_name: args.experiment_name.clone(),
                    }),
                },
                Err(code) => code,
            }
        }
        Some(Command::Submit(args)) => {
            let sub = matches
                .subcommand_matches("submit")
                .expect("submit matches");
            match apply_config(&mut args.run, sub) {
                Ok(level) => {
                    let v = &args.run.logging;
                    init_logging(v.verbose, v.quiet, v.log_format, level.as_deref());
                    batch::submit(args)
                }
                Err(code) => code,
            }
        }
        Some(Command::Jobs(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            batch::jobs(args)
        }
        Some(Command::Resubmit(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            batch::resubmit(args)
        }
        Some(Command::Cancel(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            batch::cancel(args)
        }
        Some(Command::BatchTask(args)) => batch::batch_task(args),
        Some(Command::BatchCollect(args)) => {
            init_logging(0, false, LogFormat::Text, None);
            batch::batch_collect(args)
        }
        Some(Command::DecodeOnly { directory, workers }) => decode_only(directory, *workers),
        Some(Command::Describe { task }) => describe(task.as_deref()),
        Some(Command::Operation { args, json_file }) => {
            init_logging(0, false, LogFormat::Text, None);
            let interrupt = Interrupt::install();
            let code = operation(args, json_file.as_deref(), &interrupt);
            interrupt.exit_code().unwrap_or(code)
        }
    };
    ExitCode::from(code)
}

/// Logs go to stderr: text (coloured on a terminal) or JSON objects. `RUST_LOG` wins over
/// `-v`/`-q`, which win over the configuration file's `log-level`.
fn init_logging(verbose: u8, quiet: bool, format: LogFormat, configured: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose, configured) {
        (true, _, _) => "error",
        (false, 0, Some(level)) => level,
        (false, 0, None) => "warn",
        (false, 1, _) => "info",
        (false, _, _) => "debug",
    };
    // The AWS libraries warn about every credential source they try (instance metadata on
    // a lab PC...): our own error says what matters. Request signing never logs, at any level.
    let default = format!("{level},aws_config=error,aws_smithy_runtime=error,aws_runtime=error");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let filter = match "aws_sigv4=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Loads `.env` from the working folder (only there, not from parent folders) into the
/// environment, without overriding variables already set.
fn load_dotenv() -> Result<(), String> {
    let path = Path::new(".env");
    if !path.exists() {
        return Ok(());
    }
    // Only the variable's name or line goes into the message: never a value.
    dotenvy::from_path(path).map_err(|e| match e {
        dotenvy::Error::LineParse(_, index) => {
            format!(".env: cannot parse the line at character {index}; write NAME=value lines")
        }
        dotenvy::Error::Io(e) => format!(".env: {e}"),
        other => format!(".env: {}", redact_dotenv_error(&other.to_string())),
    })
}

/// dotenvy's other errors name a variable; keep only that much.
fn redact_dotenv_error(message: &str) -> String {
    message.split('=').next().unwrap_or_default().to_string()
}

/// The configuration file, if any: `--config PATH`, else `./flowcam-pipeline.toml`.
fn load_config(args: &TaskArgs) -> Result<Option<Config>, u8> {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match Config::discover(args.config.as_deref(), &here) {
        Ok(found) => Ok(found.map(|(path, config)| {
            tracing::debug!(config = %path.display(), "configuration file");
            config
        })),
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::SETUP)
        }
    }
}

/// For `log` and `clean`: the configuration file's output folder, unless the user gave one.
fn config_output_directory(matches: &ArgMatches, directory: &mut PathBuf) -> Result<(), u8> {
    if from_user(matches, "output_directory") {
        return Ok(());
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match Config::discover(None, &here) {
        Ok(Some((_, config))) => {
            if let Some(dir) = config.output_directory {
                *directory = dir;
            }
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::SETUP)
        }
    }
}

/// Whether the user gave this option (on the command line or in the environment), which
/// wins over the configuration file.
fn from_user(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills every option the user did not give from the configuration file: CLI >
/// environment > configuration file > built-in defaults. Returns the file's log level.
fn apply_config(args: &mut RunArgs, matches: &ArgMatches) -> Result<Option<String>, u8> {
    let Some(config) = load_config(&args.tasks)? else {
        return Ok(None);
    };
    let m = matches;
    merge_tasks(&mut args.tasks, m, &config);
    if !from_user(m, "output_directory")
        && let Some(v) = &config.output_directory
    {
        args.session.output_directory = v.clone();
    }
    if !from_user(m, "workers")
        && let Some(v) = config.workers
    {
        args.workers = v;
    }
    if !from_user(m, "memory_limit")
        && let Some(v) = config.memory_limit
    {
        args.memory_limit = v;
    }
    if !from_user(m, "sessions")
        && let Some(v) = config.sessions
    {
        args.sessions = v;
    }
    if !from_user(m, "settle_seconds") && config.settle_seconds.is_some() {
        args.settle_seconds = config.settle_seconds;
    }
    if !from_user(m, "on_failure") && config.on_failure.is_some() {
        args.on_failure = config.on_failure.clone();
    }
    if !from_user(m, "progress")
        && let Some(v) = &config.progress
        && let Ok(mode) = <ProgressMode as clap::ValueEnum>::from_str(v, true)
    {
        args.progress = mode;
    }
    if !from_user(m, "log_format")
        && let Some(v) = &config.log_format
        && let Ok(format) = <LogFormat as clap::ValueEnum>::from_str(v, true)
    {
        args.logging.log_format = format;
    }
    Ok(config.log_level.clone())
}

/// The options `status` shares with a run.
/// The configuration file under the options of a command that looks at sessions as a run
/// would (`status`, `serve`): the tasks' options, the output folder and the settle time.
fn merge_view(
    m: &ArgMatches,
    config: &Config,
    tasks: &mut TaskArgs,
    output_directory: &mut PathBuf,
    settle_seconds: &mut Option<u64>,
) {
    merge_tasks(tasks, m, config);
    if !from_user(m, "output_directory")
        && let Some(dir) = &config.output_directory
    {
        *output_directory = dir.clone();
    }
    if !from_user(m, "settle_seconds") && config.settle_seconds.is_some() {
        *settle_seconds = config.settle_seconds;
    }
}

fn merge_tasks(args: &mut TaskArgs, m: &ArgMatches, config: &Config) {
    if !from_user(m, "recursive")
        && let Some(v) = config.recursive
    {
        args.recursive = v;
    }
    if !from_user(m, "no_embed_measurements")
        && let Some(v) = config.embed_measurements
    {
        args.no_embed_measurements = !v;
    }
    if !from_user(m, "grey_vignettes")
        && let Some(v) = config.grey_vignettes
    {
        args.grey_vignettes = v;
    }
    if !from_user(m, "sample_sheet") && config.sample_sheet.is_some() {
        args.sample_sheet = config.sample_sheet.clone();
    }
    if !from_user(m, "blanks")
        && let Some(v) = config.blanks.as_deref().and_then(|v| v.parse().ok())
    {
        args.blanks = v;
    }
    if !from_user(m, "no_depth_from_name")
        && let Some(v) = config.depth_from_name
    {
        args.no_depth_from_name = !v;
    }
    if !from_user(m, "ecotaxa")
        && let Some(v) = config.ecotaxa
    {
        args.ecotaxa = v;
    }
    if !from_user(m, "upload_ecotaxa")
        && let Some(v) = config.upload_ecotaxa
    {
        args.upload.upload_ecotaxa = v;
    }
    if !from_user(m, "no_local_vignettes")
        && let Some(v) = config.local_vignettes
    {
        args.upload.no_local_vignettes = !v;
    }
    let u = &mut args.upload;
    let text = |id: &str, cli: &mut Option<String>, value: &Option<String>| {
        if !from_user(m, id) && value.is_some() {
            *cli = value.clone();
        }
    };
    text("s3_bucket", &mut u.s3_bucket, &config.s3_bucket);
    text("s3_prefix", &mut u.s3_prefix, &config.s3_prefix);
    text("api_url", &mut u.api_url, &config.api_url);
    // The endpoint's environment variables (AWS_ENDPOINT_URL...) are read later and win
    // over the file: see `config_endpoint`.
    if !from_user(m, "s3_endpoint") {
        u.config_endpoint = config.s3_endpoint.clone();
    }
    if !from_user(m, "api_batch_size")
        && let Some(v) = config.api_batch_size
    {
        u.api_batch_size = v;
    }
    if !from_user(m, "upload_concurrency")
        && let Some(v) = config.upload_concurrency
    {
        u.upload_concurrency = v;
    }
    if !from_user(m, "create_bucket")
        && let Some(v) = config.create_bucket
    {
        u.create_bucket = v;
    }
    if !from_user(m, "no_upload")
        && let Some(v) = config.upload
    {
        u.no_upload = !v;
    }
}

fn options(args: &TaskArgs) -> PipelineOptions {
    PipelineOptions {
        decollage: DecollageOptions {
            embed_measurements: !args.no_embed_measurements,
            blanks: args.blanks,
            grey: args.grey_vignettes,
        },
        extract: ExtractOptions {
            sample_sheet: args.sample_sheet.clone(),
            depth_from_name: !args.no_depth_from_name,
        },
        ecotaxa: args.ecotaxa,
    }
}

/// Logs each task as it ends, and each failed item.
struct LogObserver;

impl Observer for LogObserver {
    fn item_finished(&self, task: &str, item: &str, ok: bool) {
        if !ok {
            tracing::debug!(task, item, "item failed");
        }
    }

    fn task_finished(&self, report: &TaskReport) {
        tracing::info!(
            task = %report.id,
            state = ?report.state,
            items_ran = report.items.ran,
            items_skipped = report.items.skipped,
            ms = report.duration_ms,
            "task finished"
        );
        for e in &report.errors {
            tracing::error!(task = %report.id, "{e}");
        }
    }
}

/// Several observers as one.
struct Observers(Vec<Box<dyn Observer>>);

impl Observer for Observers {
    fn task_started(&self, task: &str, items: usize) {
        self.0.iter().for_each(|o| o.task_started(task, items));
    }
    fn item_finished(&self, task: &str, item: &str, ok: bool) {
        self.0.iter().for_each(|o| o.item_finished(task, item, ok));
    }
    fn task_finished(&self, report: &TaskReport) {
        self.0.iter().for_each(|o| o.task_finished(report));
    }
}

/// The sessions `--directory` names: itself, when it is a session folder (or is missing,
/// which the session's setup then reports, naming it), else those under it. The flag says
/// which.
fn sessions_at(
    directory: &Path,
    recursive: bool,
    output_root: &Path,
) -> Result<(bool, Vec<PathBuf>), u8> {
    if crate::ingest::is_session(directory) || !directory.is_dir() {
        return Ok((true, vec![directory.to_path_buf()]));
    }
    match crate::ingest::find_sessions(directory, recursive, output_root) {
        Ok(found) if found.is_empty() && crate::ingest::looks_like_a_session(directory) => {
            eprintln!(
                "error: {} holds collage pages or instrument files but no .lst particle \
                 list, and no session folders: is the .lst missing, or is this the wrong \
                 folder?",
                directory.display()
            );
            Err(exit::SETUP)
        }
        Ok(found) => Ok((false, found)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::SETUP)
        }
    }
}

/// `--settle-seconds`, else 0 for a session folder given directly and 60 under a root.
fn settle_time(given: Option<u64>, single: bool) -> Duration {
    Duration::from_secs(given.unwrap_or(if single { 0 } else { 60 }))
}

fn run(args: &RunArgs) -> u8 {
    let directory = args
        .session
        .directory
        .as_deref()
        .expect("clap requires --directory");
    let output_root = &args.session.output_directory;
    let (single, folders) = match sessions_at(directory, args.tasks.recursive, output_root) {
        Ok(found) => found,
        Err(code) => return code,
    };
    if !single && args.session.experiment_name.is_some() {
        eprintln!(
            "error: --experiment-name names one session, and {} holds several; give it with \
             a session folder",
            directory.display()
        );
        return exit::USAGE;
    }
    let options = pass_options(args, single);
    let quiet = args.logging.quiet;
    let interrupt = Interrupt::install();
    let runner = runner_for(args, single, &interrupt);
    let outcomes = crate::pass::run(&folders, &options, &runner);
    let code = if single {
        single_outcome(&outcomes[0], quiet)
    } else {
        print_pass(directory, &outcomes, quiet);
        if outcomes.iter().any(SessionOutcome::failed) {
            exit::TASK_FAILED
        } else {
            exit::OK
        }
    };
    match interrupt.exit_code() {
        Some(signal_code) if code != exit::TASK_FAILED => {
            eprintln!(
                "interrupted by {}: what was in flight finished; rerun to resume",
                interrupt.signal_name().unwrap_or("a signal")
            );
            signal_code
        }
        _ => code,
    }
}

/// The pass a run makes with these arguments (over one session, or a root's).
fn pass_options(args: &RunArgs, single: bool) -> PassOptions {
    PassOptions {
        output_root: args.session.output_directory.clone(),
        experiment_name: args.session.experiment_name.clone(),
        sessions: args.sessions,
        settle: settle_time(args.settle_seconds, single),
        wait_for_collages: !single,
        force: args.force,
        skip_complete: !single,
        pipeline: options(&args.tasks),
        delivery: args.tasks.upload.delivery(),
        on_failure: args.on_failure.clone(),
    }
}

/// The engine a run uses with these arguments: its workers, memory, progress and logs.
fn runner_for(args: &RunArgs, single: bool, interrupt: &Interrupt) -> Runner {
    let progress = Progress::new(args.progress.resolve(args.logging.quiet));
    // Under a root, sessions' disk waits (file creation, syncs) leave cores idle with one
    // worker per core; two per core keep them busy (see the README's figures).
    let workers = match (args.workers, single) {
        (0, false) => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        (n, _) => n,
    };
    crate::budget::MemoryBudget::pages().set_limit(args.memory_limit << 20);
    Runner::new(TOOL_VERSION, workers)
        .force(args.force)
        .stop_flag(interrupt.flag())
        .observer(Box::new(Observers(vec![
            Box::new(LogObserver),
            Box::new(progress),
        ])))
}

/// What one session given directly prints, and its exit code.
fn single_outcome(outcome: &SessionOutcome, quiet: bool) -> u8 {
    let name = outcome.experiment.clone().unwrap_or_default();
    match (&outcome.outcome, &outcome.report) {
        (Outcome::Busy { holder }, _) => {
            eprintln!(
                "error: session {name} is being processed by another run ({holder}); this run \
                 exits without touching it"
            );
            exit::LOCKED
        }
        (Outcome::Waiting { reason }, _) => {
            if !quiet {
                println!("waiting: session {name} is still arriving: {reason}");
            }
            exit::OK
        }
        (Outcome::Failed { errors }, None) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            exit::SETUP
        }
        (Outcome::Interrupted, report) => {
            if let Some(report) = report
                && !quiet
            {
                print!("{}", report.summary());
            }
            exit::OK
        }
        (Outcome::Complete, None) => {
            if !quiet {
                println!("complete: session {name} (nothing to do; nothing written)");
            }
            exit::OK
        }
        (outcome, Some(report)) => {
            let failed = matches!(outcome, Outcome::Failed { .. });
            if failed || !quiet {
                print!("{}", report.summary());
            }
            if failed { exit::TASK_FAILED } else { exit::OK }
        }
        (_, None) => exit::OK,
    }
}

/// One line per session that is not simply complete, then the counts. With `--quiet`, only
/// failures.
fn print_pass(root: &Path, outcomes: &[SessionOutcome], quiet: bool) {
    let mut counts = [0usize; 6];
    for o in outcomes {
        let name = o
            .experiment
            .clone()
            .unwrap_or_else(|| o.folder.display().to_string());
        let (index, line) = match &o.outcome {
            Outcome::Complete => (0, None),
            Outcome::Ran => (1, Some(format!("ran       {name}"))),
            Outcome::Waiting { reason } => (2, Some(format!("waiting   {name}: {reason}"))),
            Outcome::Busy { holder } => (3, Some(format!("busy      {name}: held by {holder}"))),
            Outcome::Interrupted => (5, Some(format!("stopped   {name}: interrupted"))),
            Outcome::Failed { errors } => {
                let first = errors.first().map(String::as_str).unwrap_or("");
                let more = match errors.len() {
                    0 | 1 => String::new(),
                    n => format!(" (and {} more; see its run-report.json)", n - 1),
                };
                (4, Some(format!("FAILED    {name}: {first}{more}")))
            }
        };
        counts[index] += 1;
        if let Some(line) = line
            && (!quiet || index == 4)
        {
            println!("{line}");
        }
    }
    if quiet {
        return;
    }
    if outcomes.is_empty() {
        println!("no sessions under {}", root.display());
        return;
    }
    let stopped = match counts[5] {
        0 => String::new(),
        n => format!(", {n} interrupted"),
    };
    println!(
        "{} sessions under {}: {} complete, {} ran, {} waiting, {} busy, {} failed{stopped}",
        outcomes.len(),
        root.display(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4]
    );
}

fn open_session(args: &SessionArgs) -> Result<Arc<Session>, u8> {
    let directory = args
        .directory
        .as_deref()
        .expect("clap requires --directory");
    Session::new(
        directory,
        &args.output_directory,
        args.experiment_name.as_deref(),
    )
    .map(Arc::new)
    .map_err(|e| {
        eprintln!("error: {e}");
        exit::SETUP
    })
}

/// Prints why the session's lock could not be taken; the exit code.
fn lock_error(session: &Session, e: LockError) -> u8 {
    match e {
        LockError::Held { holder, .. } => {
            eprintln!(
                "error: session {} is being processed by another run ({holder}); \
                 this run exits without touching it",
                session.experiment
            );
            exit::LOCKED
        }
        LockError::Io { .. } => {
            eprintln!("error: {e}");
            exit::SETUP
        }
    }
}

fn serve(args: &ServeArgs) -> u8 {
    if !args.directory.is_dir() {
        eprintln!("error: {}: not a folder", args.directory.display());
        return exit::SETUP;
    }
    let single = crate::ingest::is_session(&args.directory);
    let catalog = crate::serve::catalog::Catalog::new(
        &args.directory,
        &args.output_directory,
        args.tasks.recursive,
        options(&args.tasks),
        args.tasks.upload.delivery(),
        settle_time(args.settle_seconds, single),
    );
    let interrupt = Interrupt::install();
    let pass = PassOptions {
        output_root: args.output_directory.clone(),
        experiment_name: None,
        sessions: args.sessions as usize,
        settle: settle_time(args.settle_seconds, single),
        wait_for_collages: !single,
        force: false,
        skip_complete: true,
        pipeline: options(&args.tasks),
        delivery: args.tasks.upload.delivery(),
        on_failure: args.on_failure.clone(),
    };
    let (desk, workers) = match order_desk(args, &catalog, &pass, &interrupt) {
        Ok(Some((desk, workers))) => (Some(desk), Some(workers)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::SETUP;
        }
    };
    let watch = args.watch.map(|seconds| {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runner = Runner::new(TOOL_VERSION, workers)
            .stop_flag(interrupt.flag())
            .observer(Box::new(LogObserver));
        let folders = catalog.clone();
        crate::serve::watch::spawn(
            std::time::Duration::from_secs(seconds),
            move || folders.folders(),
            pass.clone(),
            runner,
        )
    });
    let orders_on = desk.is_some();
    let served = crate::serve::run(
        catalog,
        watch,
        desk,
        args.listen,
        interrupt.flag(),
        |address| {
            println!("serving {} on http://{address}/", args.directory.display());
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            if !orders_on {
                // Whoever started us may have stopped reading: never a panic for a note.
                let _ = writeln!(
                    std::io::stderr(),
                    "orders are off ({} is not set)",
                    crate::serve::orders::TOKEN_VARIABLE
                );
            }
        },
    );
    // Running orders finish their items in flight and go back to the queue.
    if let Some(workers) = workers {
        workers.join();
    }
    match served {
        Ok(()) => interrupt.exit_code().unwrap_or(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::SETUP
        }
    }
}

/// The service's destination as the upload task's parameters, for task orders (none
/// without --s3-bucket, or with --no-upload).
fn destination_parameters(upload: &UploadArgs) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut parameters = serde_json::Map::new();
    let (false, Some(bucket)) = (upload.no_upload, &upload.s3_bucket) else {
        return parameters;
    };
    parameters.insert("s3-bucket".into(), Value::String(bucket.clone()));
    let endpoint = upload
        .s3_endpoint
        .clone()
        .or(upload.config_endpoint.clone());
    for (name, value) in [
        ("s3-endpoint", endpoint),
        ("s3-prefix", upload.s3_prefix.clone()),
        ("api-url", upload.api_url.clone()),
    ] {
        if let Some(value) = value {
            parameters.insert(name.into(), Value::String(value));
        }
    }
    parameters.insert("create-bucket".into(), Value::Bool(upload.create_bucket));
    parameters
}

/// The orders side of `serve`, when a token is set: the store (under the output folder)
/// and its workers, started.
fn order_desk(
    args: &ServeArgs,
    catalog: &crate::serve::catalog::Catalog,
    pass: &PassOptions,
    interrupt: &Interrupt,
) -> Result<Option<(crate::serve::orders::Desk, crate::orders::work::Workers)>, String> {
    use crate::serve::orders::{CatalogRoot, Desk, TOKEN_VARIABLE, Token};
    let Some(secret) = std::env::var(TOKEN_VARIABLE).ok().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let token = Token::new(&secret)?;
    let output_root = crate::tasks::absolute(&args.output_directory);
    let store = crate::orders::store::Store::open(&output_root.join(".orders").join("orders.redb"))
        .map_err(|e| e.to_string())?;
    let env = std::sync::Arc::new(crate::orders::work::Env {
        root: std::sync::Arc::new(CatalogRoot(catalog.clone())),
        output_root,
        pass: pass.clone(),
        destination: destination_parameters(&args.tasks.upload),
        engine_workers: 0,
        stop: interrupt.flag(),
    });
    let store = std::sync::Arc::new(store);
    let workers = crate::orders::work::Workers::start(
        store.clone(),
        env.clone(),
        args.order_workers as usize,
    );
    let wake = workers.waker();
    Ok(Some((
        Desk {
            token,
            store,
            env,
            wake: Box::new(wake),
        },
        workers,
    )))
}

fn status(args: &StatusArgs) -> u8 {
    let directory = args
        .path
        .as_deref()
        .or(args.directory.as_deref())
        .expect("clap requires a folder");
    let (single, folders) =
        match sessions_at(directory, args.tasks.recursive, &args.output_directory) {
            Ok(found) => found,
            Err(code) => return code,
        };
    if single && !directory.is_dir() {
        eprintln!("error: session folder {}: not found", directory.display());
        return exit::SETUP;
    }
    let query = StatusQuery {
        output_root: &args.output_directory,
        experiment: if single {
            args.experiment_name.as_deref()
        } else {
            None
        },
        options: options(&args.tasks),
        delivery: args.tasks.upload.delivery(),
        settle: settle_time(args.settle_seconds, single),
    };
    let mut statuses: Vec<SessionStatus> = folders
        .iter()
        .map(|folder| crate::status::session_status(folder, &query))
        .collect();
    crate::batch::mark_claimed(&mut statuses, &args.output_directory);
    if args.json {
        let json = serde_json::to_string_pretty(&statuses).expect("status serializes");
        println!("{json}");
        return exit::OK;
    }
    if single {
        print_session_status(&statuses[0]);
    } else {
        print_status_table(&statuses);
    }
    exit::OK
}

/// `2026-11-22 10:04:05` from an RFC 3339 time, for tables.
fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn print_session_status(status: &SessionStatus) {
    println!("session   {}", status.experiment.as_deref().unwrap_or("?"));
    println!("input     {}", status.folder.display());
    if let Some(out) = &status.output {
        println!("output    {}", out.display());
    }
    let state = match &status.reason {
        Some(reason) => format!("{}: {reason}", status.state),
        None => status.state.to_string(),
    };
    println!("state     {state}");
    let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    println!(
        "counts    {} particles, {} vignettes, {} blanks, {} uploaded",
        count(status.particles),
        count(status.vignettes),
        count(status.blanks),
        count(status.uploaded)
    );
    if !status.damaged.is_empty() {
        println!(
            "damaged   {} vignettes missing or changed since they were written:",
            status.damaged.len()
        );
        for line in status.damaged.iter().take(10) {
            println!("            {line}");
        }
        if status.damaged.len() > 10 {
            println!("            ... and {} more", status.damaged.len() - 10);
        }
    }
    if status.temporaries > 0 {
        println!(
            "leftovers {} temporary files of an interrupted run (the next run removes them)",
            status.temporaries
        );
    }
    println!(
        "last run  {}",
        status
            .last_run
            .as_deref()
            .map_or("never".to_string(), short_time)
    );
    if let Some(f) = &status.last_failure {
        println!("last failure {}: {}", f.at, f.error);
    }
    for task in &status.tasks {
        let text = match (&task.reason, task.state) {
            (_, TaskProgress::NotStarted) => "missing".to_string(),
            (Some(why), state) => format!("{state}: {why}"),
            (None, state) => state.to_string(),
        };
        println!("  {:<16} {text}", task.task);
    }
}

fn print_status_table(statuses: &[SessionStatus]) {
    let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    let width = statuses
        .iter()
        .map(|s| s.experiment.as_deref().map_or(0, str::len))
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<width$}  {:<11}  {:>9}  {:>9}  {:>8}  {:<19}  note",
        "SESSION", "STATE", "PARTICLES", "VIGNETTES", "UPLOADED", "LAST RUN"
    );
    for s in statuses {
        let name = s
            .experiment
            .clone()
            .unwrap_or_else(|| s.folder.display().to_string());
        let note = match (&s.reason, &s.last_failure) {
            (Some(reason), _) => reason.clone(),
            (None, Some(f)) => format!("last failed {}: {}", f.at, f.error),
            (None, None) => String::new(),
        };
        println!(
            "{name:<width$}  {:<11}  {:>9}  {:>9}  {:>8}  {:<19}  {note}",
            s.state,
            count(s.particles),
            count(s.vignettes),
            count(s.uploaded),
            s.last_run
                .as_deref()
                .map_or("never".to_string(), short_time),
        );
    }
}

/// `log SESSION`: the last run's section of the session's `pipeline.log`.
fn show_log(args: &LogArgs) -> u8 {
    let session = match (&args.job, &args.session) {
        (Some(job), _) => return batch::show_job_log(&args.output_directory, job, args.task),
        (None, Some(session)) => session,
        (None, None) => unreachable!("clap requires SESSION or --job"),
    };
    let out = if session.is_dir() && crate::ingest::is_session(session) {
        match Session::new(session, &args.output_directory, None) {
            Ok(session) => session.output,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::SETUP;
            }
        }
    } else {
        args.output_directory.join(session)
    };
    match crate::history::last_log(&out) {
        Some(text) => {
            print!("{text}");
            exit::OK
        }
        None => {
            eprintln!(
                "error: no run log at {}",
                crate::history::log_path(&out).display()
            );
            exit::SETUP
        }
    }
}

fn clean(args: &SessionArgs) -> u8 {
    let session = match open_session(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match crate::clean::clean(&session) {
        Ok(Cleaned::Nothing) => {
            println!(
                "nothing to clean: {} does not exist",
                session.output.display()
            );
            exit::OK
        }
        Ok(Cleaned::Removed(removed)) => {
            println!(
                "removed {removed} outputs of session {} from {}",
                session.experiment,
                session.output.display()
            );
            exit::OK
        }
        Err(CleanError::Locked(e)) => lock_error(&session, e),
        Err(e) => {
            eprintln!("error: {e}");
            exit::TASK_FAILED
        }
    }
}

fn describe(task: Option<&str>) -> u8 {
    let all = crate::declare::all();
    let json = match task {
        None => serde_json::to_string_pretty(&all),
        Some(name) => match all.iter().find(|d| d.task == name) {
            Some(declaration) => serde_json::to_string_pretty(declaration),
            None => {
                let known: Vec<&str> = all.iter().map(|d| d.task.as_str()).collect();
                eprintln!("error: unknown task {name} (tasks: {})", known.join(", "));
                return exit::USAGE;
            }
        },
    };
    println!("{}", json.expect("declarations serialize"));
    exit::OK
}

/// `operation TASK JSON`: exit 0 when the task completed, 1 when it failed (the result says
/// why), 2 when the request is invalid (every problem on stderr, nothing written).
fn operation(args: &[String], json_file: Option<&Path>, interrupt: &Interrupt) -> u8 {
    let (task, json) = match crate::operation::resolve(args, json_file.is_some()) {
        Ok(found) => found,
        Err(problem) => {
            eprintln!("error: {problem}");
            return exit::USAGE;
        }
    };
    let text = match (json, json_file) {
        (Some("-"), _) => {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => text,
                Err(e) => {
                    eprintln!("error: cannot read the request from standard input: {e}");
                    return exit::USAGE;
                }
            }
        }
        (Some(text), _) => text.to_string(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return exit::USAGE;
            }
        },
        (None, None) => unreachable!("a request was required above"),
    };
    let result = crate::operation::run_text(&task, &text, interrupt.flag());
    match result {
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            exit::USAGE
        }
        Ok(result) => {
            let json = serde_json::to_string_pretty(&result).expect("result serializes");
            println!("{json}");
            if result.status == "complete" {
                exit::OK
            } else {
                exit::TASK_FAILED
            }
        }
    }
}

fn decode_only(directory: &Path, workers: usize) -> u8 {
    let mut pages: Vec<PathBuf> = match std::fs::read_dir(directory) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tif")))
            .collect(),
        Err(e) => {
            eprintln!("error: {}: {e}", directory.display());
            return exit::SETUP;
        }
    };
    pages.sort();
    let folder = directory
        .canonicalize()
        .unwrap_or_else(|_| directory.to_path_buf());
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(workers).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("error: cannot start {workers} workers: {e}");
            return exit::SETUP;
        }
    };
    let start = Instant::now();
    let results: Vec<_> = pool.install(|| {
        pages
            .par_iter()
            .map(|p| Collage::open(p, &folder).map(|c| c.pixels.len()))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut bytes = 0;
    for (page, result) in pages.iter().zip(results) {
        match result {
            Ok(n) => bytes += n,
            Err(e) => {
                eprintln!("error: {}: {e:#}", page.display());
                return exit::TASK_FAILED;
            }
        }
    }
    println!(
        "decoded {} collages ({} MB of pixels) in {:.3} s",
        pages.len(),
        bytes / 1_000_000,
        elapsed.as_secs_f64()
    );
    exit::OK
}

/// `--blanks`: one of the policies' names, listed in `--help`.
fn blank_policy() -> impl clap::builder::TypedValueParser<Value = BlankPolicy> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(BlankPolicy::NAMES)
        .map(|name| name.parse::<BlankPolicy>().expect("a listed name"))
}
