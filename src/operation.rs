//! The operation bridge: one task run alone from a JSON request, the way workflow systems
//! (Stage2-style operation runners, Galaxy, Nextflow) chain containerised steps.
//!
//! ```json
//! {"context": {"experiment": "..."}, "parameters": {...},
//!  "inputs": {"<input name>": ["path", ...]}, "outputs": "<folder>"}
//! ```
//!
//! The request is validated against the task's declaration (`tasks/<Task>.json`), every
//! problem at once and nothing written when there is one. The task then runs through the
//! engine like any other, in the outputs folder: inputs that live elsewhere are linked into
//! it first (hard links, or copies across filesystems), so the task reads them where it
//! always does. The result names the files of each declared output, ready to fill the next
//! operation's inputs.

use crate::TOOL_VERSION;
use crate::declare::{self, Declaration};
use crate::engine::{RunReport, Runner, Task, TaskRef, TaskState};
use crate::tasks::{
    DecollageImages, DecollageOptions, ReadMetadata, Session, UploadOptions, UploadToS3,
    ecotaxa::ExportEcoTaxa,
};
use crate::upload::{DestinationConfig, DestinationOptions, S3Settings};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The context keys a request may carry.
pub const CONTEXT_KEYS: &[&str] = &["experiment", "session_dir"];

/// A request, once its JSON shape is known to be right.
#[derive(Debug, Clone)]
pub struct Request {
    pub context: Map<String, Value>,
    pub parameters: Map<String, Value>,
    pub inputs: Map<String, Value>,
    pub outputs: PathBuf,
}

/// A request as far as it could be read, and every problem with its shape.
struct Parsed {
    request: Request,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OperationResult {
    pub task: String,
    /// `complete` or `failed`.
    pub status: &'static str,
    /// Each declared output's files, absolute.
    pub outputs: BTreeMap<String, Vec<PathBuf>>,
    pub errors: Vec<String>,
    pub report: RunReport,
}

/// Parses a request, naming every problem with its shape.
pub fn parse(text: &str) -> Result<Request, Vec<String>> {
    let parsed = read(text)?;
    if parsed.problems.is_empty() {
        Ok(parsed.request)
    } else {
        Err(parsed.problems)
    }
}

/// Reads what can be read of a request; `Err` only when it is not a JSON object at all.
fn read(text: &str) -> Result<Parsed, Vec<String>> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| vec![format!("the request is not valid JSON: {e}")])?;
    let Value::Object(mut object) = value else {
        return Err(vec![format!(
            "the request must be a JSON object with context, parameters, inputs and outputs, got {value}"
        )]);
    };
    let mut problems = Vec::new();
    for key in object.keys() {
        if !["context", "parameters", "inputs", "outputs"].contains(&key.as_str()) {
            problems.push(format!(
                "unknown key `{key}` in the request (known: context, parameters, inputs, outputs)"
            ));
        }
    }
    let mut section = |name: &str| match object.remove(name) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.push(format!("`{name}` must be a JSON object, got {other}"));
            Map::new()
        }
    };
    let context = section("context");
    let parameters = section("parameters");
    let inputs = section("inputs");
    let outputs = match object.remove("outputs") {
        Some(Value::String(folder)) if !folder.trim().is_empty() => Some(PathBuf::from(folder)),
        Some(other) => {
            problems.push(format!(
                "`outputs` must name a folder (a string), got {other}"
            ));
            None
        }
        None => {
            problems.push("`outputs` is missing: name the folder the task writes to".into());
            None
        }
    };
    for (key, value) in &context {
        if !CONTEXT_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "context key `{key}` is not known (known: {})",
                CONTEXT_KEYS.join(", ")
            ));
        } else if !value.is_string() {
            problems.push(format!("context `{key}` must be a string, got {value}"));
        }
    }
    Ok(Parsed {
        request: Request {
            context,
            parameters,
            inputs,
            outputs: outputs.unwrap_or_default(),
        },
        problems,
    })
}

fn files<'a>(request: &'a Request, input: &str) -> Vec<&'a str> {
    request
        .inputs
        .get(input)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn first_file(request: &Request, input: &str) -> PathBuf {
    PathBuf::from(files(request, input).first().copied().unwrap_or_default())
}

/// Every problem with a request for `task`: its declaration's rules, then what the task
/// itself needs (collage pages in one folder, a session folder that exists).
pub fn validate(declaration: &Declaration, request: &Request) -> Vec<String> {
    let mut problems = declaration.validate(&request.parameters, &request.inputs);
    if declaration.task == "DecollageImages" {
        let folders: std::collections::BTreeSet<PathBuf> = files(request, "collages")
            .iter()
            .filter_map(|f| Path::new(f).parent().map(Path::to_path_buf))
            .collect();
        if folders.len() > 1 {
            problems.push(format!(
                "input `collages`: all pages must be in one folder (the session folder), got {}",
                folders.len()
            ));
        }
    }
    if let Some(dir) = request.context.get("session_dir").and_then(Value::as_str)
        && !Path::new(dir).is_dir()
    {
        problems.push(format!("context `session_dir`: {dir} is not a folder"));
    }
    if !problems.is_empty() {
        return problems;
    }
    // What the task itself needs of its inputs, now that they are known to be there.
    let session_dir = session_dir(declaration, request);
    let out = std::path::absolute(&request.outputs).unwrap_or_else(|_| request.outputs.clone());
    if out.is_file() {
        problems.push(format!(
            "`outputs`: {} is a file, not a folder",
            out.display()
        ));
    }
    if let Ok(session) = session_dir.canonicalize()
        && out
            .canonicalize()
            .unwrap_or_else(|_| out.clone())
            .starts_with(&session)
    {
        problems.push(format!(
            "`outputs`: {} lies inside the session folder {}; the session folder is never \
             written, choose another folder",
            out.display(),
            session.display()
        ));
    }
    match declaration.task.as_str() {
        "ReadMetadata" => {
            let lst_files = crate::flowcam::lst::files_in(&session_dir).map_or(0, |f| f.len());
            if lst_files > 1 {
                problems.push(format!(
                    "input `lst`: its folder {} holds {lst_files} .lst files; a session folder \
                     holds one",
                    session_dir.display()
                ));
            }
        }
        "UploadToS3" | "ExportEcoTaxa" => {
            if let Some(missing) = missing_vignettes(request) {
                problems.push(missing);
                return problems;
            }
            if request.context.contains_key("session_dir") {
                return problems;
            }
            // Without the session folder, its name (and the position it carries) comes from
            // the folder of the manifest, which must then be named after the experiment,
            // as the pipeline's output folders are.
            let manifest = first_file(request, "manifest");
            let folder = session_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let experiment = request
                .context
                .get("experiment")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| manifest_experiment(&manifest));
            if experiment.as_deref().is_some_and(|e| e != folder) {
                problems.push(format!(
                    "context `session_dir` is needed: the vignettes in {} belong to session \
                     {}, but their folder is named {folder}, so the session's name and \
                     position cannot be told from it",
                    manifest.display(),
                    experiment.unwrap_or_default()
                ));
            }
        }
        _ => {}
    }
    problems
}

/// A problem when a vignette the manifest lists is not in `vignettes/` beside it.
fn missing_vignettes(request: &Request) -> Option<String> {
    let manifest = first_file(request, "manifest");
    let folder = manifest.parent()?.join("vignettes");
    let mut missing = Vec::new();
    for (name, _) in manifest_vignettes(&manifest).ok()? {
        if crate::flowcam::lst::check_plain_file_name(&name).is_err()
            || !folder.join(&name).is_file()
        {
            missing.push(name);
        }
    }
    let first = missing.first()?;
    Some(format!(
        "input `manifest`: {} of its vignettes are not in {} (the first: {first})",
        missing.len(),
        folder.display()
    ))
}

/// The experiment a manifest's vignettes were named after (`<experiment>_<id>.tif`).
fn manifest_experiment(manifest: &Path) -> Option<String> {
    let (file, id) = manifest_vignettes(manifest).ok()?.into_iter().next()?;
    file.strip_suffix(&format!("_{}.tif", id?))
        .map(str::to_string)
}

/// The vignettes a manifest lists: its `file` column, with `particle_id` when it has one.
fn manifest_vignettes(manifest: &Path) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut reader = csv::Reader::from_path(manifest)?;
    let headers = reader.headers()?.clone();
    let file = headers
        .iter()
        .position(|h| h == "file")
        .ok_or_else(|| anyhow::anyhow!("{}: no file column", manifest.display()))?;
    let id = headers.iter().position(|h| h == "particle_id");
    reader
        .records()
        .map(|record| {
            let record = record?;
            Ok((record[file].to_string(), id.map(|i| record[i].to_string())))
        })
        .collect()
}

/// The FlowCam session folder a request works on: `context.session_dir`, else the folder
/// of its main input.
fn session_dir(declaration: &Declaration, request: &Request) -> PathBuf {
    if let Some(dir) = request.context.get("session_dir").and_then(Value::as_str) {
        return PathBuf::from(dir);
    }
    let main = match declaration.task.as_str() {
        "ReadMetadata" => "lst",
        "DecollageImages" => "collages",
        _ => "manifest",
    };
    first_file(request, main)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A requirement the request's inputs already satisfy: complete by construction.
struct Provided {
    state_dir: PathBuf,
}

impl Task for Provided {
    fn name(&self) -> &'static str {
        "ProvidedInputs"
    }

    fn outputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }
}

/// Makes `file` available as `dest` (a hard link, else a copy), unless it already is.
fn stage(file: &Path, dest: &Path) -> std::io::Result<()> {
    let same = match (file.canonicalize(), dest.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(dest);
    std::fs::hard_link(file, dest)
        .or_else(|_| std::fs::copy(file, dest).map(|_| ()))
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{} -> {}: {e}", file.display(), dest.display()),
            )
        })
}

/// Links the tables (and, with `vignettes`, the vignettes beside the manifest) into the
/// outputs folder.
fn stage_tables(request: &Request, out: &Path, vignettes: bool) -> anyhow::Result<()> {
    for (input, name) in [
        ("metadata", "metadata.csv"),
        ("schema", "metadata.schema.json"),
        ("manifest", "manifest.csv"),
    ] {
        if let Some(file) = files(request, input).first() {
            stage(Path::new(file), &out.join(name))?;
        }
    }
    if vignettes {
        let manifest = first_file(request, "manifest");
        let from = manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join("vignettes");
        for (name, _) in manifest_vignettes(&manifest)? {
            crate::flowcam::lst::check_plain_file_name(&name).map_err(anyhow::Error::msg)?;
            stage(&from.join(&name), &out.join("vignettes").join(&name))?;
        }
    }
    Ok(())
}

/// Builds the one task the request asks for, its inputs staged in the outputs folder.
fn build(declaration: &Declaration, request: &Request) -> anyhow::Result<TaskRef> {
    let out = std::path::absolute(&request.outputs)?;
    let context = |key: &str| request.context.get(key).and_then(Value::as_str);
    let experiment = context("experiment");
    let parameter = |name: &str| declaration.value(&request.parameters, name).cloned();
    let flag = |name: &str| parameter(name).and_then(|v| v.as_bool()).unwrap_or(false);
    let text = |name: &str| parameter(name).and_then(|v| v.as_str().map(str::to_string));
    let number = |name: &str| parameter(name).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let provided: TaskRef = Arc::new(Provided {
        state_dir: out.join(".state"),
    });
    // The session folder: given, else where the inputs are (for tables from an earlier
    // operation, a folder named after the experiment, which carries the position too;
    // `validate` checks that it is).
    let session = session_dir(declaration, request);
    let session_from = |_: &str| session.clone();
    let task: TaskRef = match declaration.task.as_str() {
        "ReadMetadata" => {
            let session = Session::at(&session_from("lst"), &out, experiment)?;
            Arc::new(ReadMetadata::new(Arc::new(session)))
        }
        "DecollageImages" => {
            let session = Session::at(&session_from("collages"), &out, experiment)?;
            std::fs::create_dir_all(&out)?;
            stage_tables(request, &out, false)?;
            let options = DecollageOptions {
                embed_measurements: flag("embed-measurements"),
            };
            Arc::new(DecollageImages::new(Arc::new(session), provided, options))
        }
        "UploadToS3" => {
            let session = Session::at(&session_from("manifest"), &out, experiment)?;
            std::fs::create_dir_all(&out)?;
            stage_tables(request, &out, true)?;
            let destination = DestinationConfig::new(DestinationOptions {
                bucket: text("s3-bucket").unwrap_or_default(),
                api_url: text("api-url"),
                endpoint: S3Settings::endpoint_from(text("s3-endpoint").as_deref()),
                api_batch_size: number("api-batch-size"),
                concurrency: number("upload-concurrency"),
                create_bucket: flag("create-bucket"),
            });
            let options = UploadOptions {
                prefix: text("s3-prefix"),
                verify_remote: flag("verify-remote"),
                extra: files(request, "ecotaxa").first().map(PathBuf::from),
            };
            Arc::new(UploadToS3::new(
                Arc::new(session),
                provided,
                destination,
                options,
            ))
        }
        "ExportEcoTaxa" => {
            let session = Session::at(&session_from("manifest"), &out, experiment)?;
            std::fs::create_dir_all(&out)?;
            stage_tables(request, &out, true)?;
            Arc::new(ExportEcoTaxa::new(Arc::new(session), provided))
        }
        other => anyhow::bail!("task {other} has no operation"),
    };
    Ok(task)
}

/// The files of each declared output, found in the outputs folder.
fn collect_outputs(declaration: &Declaration, out: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut found = BTreeMap::new();
    for port in &declaration.outputs {
        let (dir, pattern) = match port.pattern.rsplit_once('/') {
            Some((dir, pattern)) => (out.join(dir), pattern),
            None => (out.to_path_buf(), port.pattern.as_str()),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.is_file()
                            && p.file_name()
                                .is_some_and(|n| declare::matches(pattern, &n.to_string_lossy()))
                            && !crate::engine::atomic::is_temp_name(
                                &p.file_name().unwrap_or_default().to_string_lossy(),
                            )
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        found.insert(port.name.clone(), files);
    }
    found
}

/// Reads, validates and runs a request for `task`. `Err` holds every problem with the
/// request, its shape and its contents together (and nothing was written); `Ok` the
/// result, complete or failed.
/// `stop` is the runner's stop flag (see [`Runner::stop_flag`]): a signal handler's.
pub fn run_text(
    task: &str,
    text: &str,
    stop: Arc<AtomicBool>,
) -> Result<OperationResult, Vec<String>> {
    let Some(declaration) = declare::find(task) else {
        let known: Vec<&str> = declare::SOURCES.iter().map(|(n, _)| *n).collect();
        return Err(vec![format!(
            "unknown task {task} (tasks: {})",
            known.join(", ")
        )]);
    };
    let parsed = read(text)?;
    let mut problems = parsed.problems;
    problems.extend(validate(&declaration, &parsed.request));
    if !problems.is_empty() {
        return Err(problems);
    }
    execute(&declaration, &parsed.request, stop)
}

/// Validates the request and runs `task` alone (see [`run_text`]).
pub fn run(task: &str, request: &Request) -> Result<OperationResult, Vec<String>> {
    let Some(declaration) = declare::find(task) else {
        return Err(vec![format!("unknown task {task}")]);
    };
    let problems = validate(&declaration, request);
    if !problems.is_empty() {
        return Err(problems);
    }
    execute(&declaration, request, Arc::default())
}

fn execute(
    declaration: &Declaration,
    request: &Request,
    stop: Arc<AtomicBool>,
) -> Result<OperationResult, Vec<String>> {
    let root = build(declaration, request).map_err(|e| vec![format!("{e:#}")])?;
    let report = Runner::new(TOOL_VERSION, 0)
        .stop_flag(stop)
        .run(&root)
        .map_err(|e| vec![e.to_string()])?;
    let out = std::path::absolute(&request.outputs).unwrap_or_else(|_| request.outputs.clone());
    let errors: Vec<String> = report
        .tasks
        .iter()
        .flat_map(|t| t.errors.iter().map(move |e| format!("{}: {e}", t.id)))
        .collect();
    let complete = report
        .tasks
        .iter()
        .all(|t| matches!(t.state, TaskState::Ran | TaskState::AlreadyComplete));
    Ok(OperationResult {
        task: declaration.task.clone(),
        status: if complete {
            "complete"
        } else if report.interrupted {
            "interrupted"
        } else {
            "failed"
        },
        outputs: collect_outputs(declaration, &out),
        errors,
        report,
    })
}
