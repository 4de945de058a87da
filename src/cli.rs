//! The `flowcam-pipeline` command line: parsing, exit codes and what gets printed. The work
//! itself is done by [`crate::tasks`] through [`crate::engine`].

use crate::TOOL_VERSION;
use crate::engine::{Freshness, LockError, Runner, TaskReport, WorkspaceLock, runner::Observer};
use crate::flowcam::Collage;
use crate::tasks::{DecollageOptions, Delivery, FlowCamPipeline, Session, UploadOptions};
use crate::upload::{ApiSettings, DestinationConfig, S3Settings};
use clap::{Args, Parser, Subcommand};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Exit codes, documented in the README.
pub mod exit {
    /// Everything is complete.
    pub const OK: u8 = 0;
    /// A task failed (bad input data, missing or corrupt collage, I/O error).
    pub const TASK_FAILED: u8 = 1;
    /// The command line could not be parsed (clap's own code).
    pub const USAGE: u8 = 2;
    /// Another run holds the session's lock.
    pub const LOCKED: u8 = 3;
    /// The session cannot be set up: folder missing, invalid folder name, output inside the
    /// input folder, output not writable.
    pub const SETUP: u8 = 4;
}

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
    /// Show each task of a session: complete, stale (and why) or missing.
    Status(TaskArgs),
    /// Remove a session's outputs (and only those).
    Clean(SessionArgs),
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
    /// The FlowCam session folder (read only; never written).
    /// (Optional in the type only so that subcommands can leave the top level's unset;
    /// clap still requires it.)
    #[arg(long, short = 'd', required = true)]
    pub directory: Option<PathBuf>,
    /// Where outputs go, one folder per session.
    #[arg(long, short = 'o', default_value = "output")]
    pub output_directory: PathBuf,
    /// Names the session's output folder and prefixes vignette names [default: the session
    /// folder's name].
    #[arg(long)]
    pub experiment_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct TaskArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Leave the particle's measurements out of the vignettes' ImageDescription.
    #[arg(long)]
    pub no_embed_measurements: bool,
    #[command(flatten)]
    pub upload: UploadArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Upload")]
pub struct UploadArgs {
    /// Upload the session to this bucket (with --api-url: the upload API's bucket_name).
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint for JASMIN, Garage, MinIO... [default: AWS_ENDPOINT_URL, else
    /// AWS_URL_ENDPOINT, else AWS itself]. Implies path-style addressing.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Object keys are <PREFIX>/<experiment>/<file>.
    #[arg(long, value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// Deliver through the lab's upload API (POST <URL>/upload/) instead of S3 directly.
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    pub api_url: Option<String>,
    /// Files per upload API request.
    #[arg(long, default_value_t = crate::upload::api::MAX_BATCH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=crate::upload::api::MAX_BATCH as u64))]
    pub api_batch_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub upload_concurrency: usize,
    /// Create the bucket if it does not exist.
    #[arg(long)]
    pub create_bucket: bool,
    /// Check the bucket itself (list, compare size and ETag) instead of trusting the
    /// upload ledger; sends what is missing or different.
    #[arg(long)]
    pub verify_remote: bool,
    /// Make the vignettes but do not upload, even with --s3-bucket.
    #[arg(long)]
    pub no_upload: bool,
}

impl UploadArgs {
    /// The delivery these options ask for, if any.
    pub fn delivery(&self) -> Option<Delivery> {
        if self.no_upload {
            return None;
        }
        let bucket = self.s3_bucket.clone()?;
        let destination = match &self.api_url {
            Some(url) => DestinationConfig::Api(ApiSettings {
                url: url.clone(),
                bucket,
                batch_size: self.api_batch_size,
                concurrency: self.upload_concurrency,
            }),
            None => {
                let mut s3 = S3Settings::new(bucket);
                s3.endpoint = S3Settings::endpoint_from(self.s3_endpoint.as_deref());
                s3.concurrency = self.upload_concurrency;
                s3.create_bucket = self.create_bucket;
                DestinationConfig::S3(s3)
            }
        };
        Some(Delivery {
            destination,
            options: UploadOptions {
                prefix: self.s3_prefix.clone(),
                verify_remote: self.verify_remote,
            },
        })
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Parallel workers for per-item work [default: one per core].
    #[arg(long, short = 'j', default_value_t = 0)]
    pub workers: usize,
    /// Rerun every task regardless of stamps.
    #[arg(long)]
    pub force: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // First, so that .env can set RUST_LOG as well as the AWS variables.
    if let Err(e) = load_dotenv() {
        eprintln!("error: {e}");
        return ExitCode::from(exit::SETUP);
    }
    init_logging();
    ExitCode::from(match cli.command {
        None => run(&cli.run.tasks, &cli.run),
        Some(Command::Status(args)) => status(&args),
        Some(Command::Clean(args)) => clean(&args),
        Some(Command::DecodeOnly { directory, workers }) => decode_only(&directory, workers),
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // The AWS libraries warn about every credential source they try (instance metadata on
    // a lab PC...): our own error says what matters. Request signing never logs, at any level.
    let quiet = "warn,aws_config=error,aws_smithy_runtime=error,aws_runtime=error";
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(quiet));
    let filter = match "aws_sigv4=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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

fn lock(session: &Session) -> Result<WorkspaceLock, u8> {
    WorkspaceLock::acquire(&session.output).map_err(|e| match e {
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
    })
}

fn options(args: &TaskArgs) -> DecollageOptions {
    DecollageOptions {
        embed_measurements: !args.no_embed_measurements,
    }
}

/// Logs each task as it ends.
struct LogObserver;

impl Observer for LogObserver {
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

fn run(args: &TaskArgs, run: &RunArgs) -> u8 {
    let session = match open_session(&args.session) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _lock = match lock(&session) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let root: crate::engine::TaskRef = Arc::new(FlowCamPipeline::new(
        session.clone(),
        options(args),
        args.upload.delivery(),
    ));
    let runner = Runner::new(TOOL_VERSION, run.workers)
        .force(run.force)
        .observer(Box::new(LogObserver));
    let report = match runner.run(&root) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::TASK_FAILED;
        }
    };
    let json = serde_json::to_vec_pretty(&report).expect("report serializes");
    if let Err(e) = crate::engine::write_file(&session.run_report(), &json) {
        eprintln!("warning: cannot write the run report: {e}");
    }
    print!("{}", report.summary());
    if report.succeeded() {
        exit::OK
    } else {
        exit::TASK_FAILED
    }
}

fn status(args: &TaskArgs) -> u8 {
    let session = match open_session(&args.session) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let root: crate::engine::TaskRef = Arc::new(FlowCamPipeline::new(
        session.clone(),
        options(args),
        args.upload.delivery(),
    ));
    let states = match Runner::new(TOOL_VERSION, 1).status(&root) {
        Ok(states) => states,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::TASK_FAILED;
        }
    };
    println!("session   {}", session.experiment);
    println!("input     {}", session.input.display());
    println!("output    {}", session.output.display());
    match session.name.position {
        Some(p) => println!(
            "position  {:.4}, {:.4} on {}{}",
            p.latitude,
            p.longitude,
            p.date,
            p.depth_m
                .map(|d| format!(", {d} m deep"))
                .unwrap_or_default()
        ),
        None => println!("position  none in the folder name"),
    }
    for (task, state) in &states {
        let text = match state {
            Freshness::Complete => "complete".to_string(),
            Freshness::Stale(why) => format!("stale: {why}"),
            Freshness::Missing => "missing".to_string(),
        };
        println!("  {:<16} {text}", task.name());
    }
    exit::OK
}

fn clean(args: &SessionArgs) -> u8 {
    let session = match open_session(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if !session.output.exists() {
        println!(
            "nothing to clean: {} does not exist",
            session.output.display()
        );
        return exit::OK;
    }
    let lock = match lock(&session) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut removed = 0;
    for path in session.owned_outputs() {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => {
                eprintln!("error: cannot remove {}: {e}", path.display());
                return exit::TASK_FAILED;
            }
        }
    }
    // Leftover temporaries of interrupted writes are ours too.
    if let Ok(entries) = std::fs::read_dir(&session.output) {
        for entry in entries.flatten() {
            if crate::engine::atomic::is_temp_name(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_file(lock.path());
    drop(lock);
    // Only if nothing else (not ours) is left in it.
    let _ = std::fs::remove_dir(&session.output);
    println!(
        "removed {removed} outputs of session {} from {}",
        session.experiment,
        session.output.display()
    );
    exit::OK
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("thread pool");
    let start = Instant::now();
    let results: Vec<_> = pool.install(|| {
        pages
            .par_iter()
            .map(|p| Collage::open(p).map(|c| c.pixels.len()))
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
