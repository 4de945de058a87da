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
use crate::tasks::registry::{self, TaskEntry};
use crate::tasks::{Manifest, Session};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The context keys the bridge reads. Others are a runner's own (a Stage2-style runner
/// passes its job's keys along): they are kept and returned in the result, not refused.
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
    /// The request's context keys the bridge does not read, returned as given.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
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
        if CONTEXT_KEYS.contains(&key.as_str()) && !value.is_string() {
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

/// A request on its way to one task: what the task's registry entry reads to check the
/// request and to build the task alone (see [`crate::tasks::registry`]).
pub struct Bridge<'a> {
    pub declaration: &'a Declaration,
    pub request: &'a Request,
    /// The outputs folder, absolute.
    pub out: PathBuf,
    /// The FlowCam session folder the request works on: `context.session_dir`, else the
    /// folder of the task's main input.
    pub session_dir: PathBuf,
}

impl<'a> Bridge<'a> {
    fn new(entry: &TaskEntry, declaration: &'a Declaration, request: &'a Request) -> Bridge<'a> {
        let out = std::path::absolute(&request.outputs).unwrap_or_else(|_| request.outputs.clone());
        let mut bridge = Bridge {
            declaration,
            request,
            out,
            session_dir: PathBuf::new(),
        };
        bridge.session_dir = match bridge.context("session_dir") {
            Some(dir) => PathBuf::from(dir),
            None => bridge
                .first_file(entry.session_input)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        bridge
    }

    /// A context value the bridge reads.
    pub fn context(&self, key: &str) -> Option<&'a str> {
        self.request.context.get(key).and_then(Value::as_str)
    }

    /// The files given for `input`.
    pub fn files(&self, input: &str) -> Vec<&'a str> {
        self.request
            .inputs
            .get(input)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The first file given for `input` (empty when none).
    pub fn first_file(&self, input: &str) -> PathBuf {
        PathBuf::from(self.files(input).first().copied().unwrap_or_default())
    }

    fn parameter(&self, name: &str) -> Option<&Value> {
        self.declaration.value(&self.request.parameters, name)
    }

    /// A boolean parameter, its default when not given.
    pub fn flag(&self, name: &str) -> bool {
        self.parameter(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// A string parameter.
    pub fn text(&self, name: &str) -> Option<String> {
        self.parameter(name)
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// An integer parameter (0 when not given and without default).
    pub fn number(&self, name: &str) -> usize {
        self.parameter(name).and_then(Value::as_u64).unwrap_or(0) as usize
    }

    /// The session the task works on, its outputs in the outputs folder (created).
    pub fn session(&self) -> anyhow::Result<Arc<Session>> {
        let session = Session::at(&self.session_dir, &self.out, self.context("experiment"))?;
        std::fs::create_dir_all(&self.out)?;
        Ok(Arc::new(session))
    }

    /// The task's requirement, satisfied by the request's inputs.
    pub fn provided(&self) -> TaskRef {
        Arc::new(Provided {
            state_dir: self.out.join(".state"),
        })
    }

    /// Links the tables given (metadata, schema, manifest, session.json) into the outputs
    /// folder and, with `vignettes`, the vignettes beside the manifest.
    pub fn stage_tables(&self, vignettes: bool) -> anyhow::Result<()> {
        for (input, name) in TABLES {
            if let Some(file) = self.files(input).first() {
                stage(Path::new(file), &self.out.join(name))?;
            }
        }
        if vignettes {
            let manifest = self.first_file("manifest");
            let from = manifest
                .parent()
                .unwrap_or(Path::new("."))
                .join("vignettes");
            for row in Manifest::read(&manifest)?.vignettes() {
                stage(
                    &row.path_in(&from),
                    &row.path_in(&self.out.join("vignettes")),
                )?;
            }
        }
        Ok(())
    }

    /// What a task working on the vignettes needs: every vignette the manifest lists
    /// beside it, and a session whose name can be told.
    pub fn check_vignettes(&self) -> Vec<String> {
        let manifest = self.first_file("manifest");
        let Ok(rows) = Manifest::read(&manifest) else {
            return Vec::new();
        };
        let folder = manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join("vignettes");
        let missing: Vec<&str> = rows
            .vignettes()
            .filter(|row| !row.path_in(&folder).is_file())
            .map(|row| row.file.as_str())
            .collect();
        if let Some(first) = missing.first() {
            return vec![format!(
                "input `manifest`: {} of its vignettes are not in {} (the first: {first})",
                missing.len(),
                folder.display()
            )];
        }
        if self.context("session_dir").is_some() {
            return Vec::new();
        }
        // Without the session folder, its name (and the position it carries) comes from
        // the folder of the manifest, which must then be named after the experiment, as
        // the pipeline's output folders are.
        let folder = self
            .session_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let experiment = self.context("experiment").map(str::to_string).or_else(|| {
            let row = rows.vignettes().next()?;
            row.file
                .strip_suffix(&format!("_{}.tif", row.particle_id))
                .map(str::to_string)
        });
        if experiment.as_deref().is_some_and(|e| e != folder) {
            return vec![format!(
                "context `session_dir` is needed: the vignettes in {} belong to session \
                 {}, but their folder is named {folder}, so the session's name and \
                 position cannot be told from it",
                manifest.display(),
                experiment.unwrap_or_default()
            )];
        }
        Vec::new()
    }
}

/// The tables a request may hand on, by input name, and their names in a session's
/// output folder.
const TABLES: [(&str, &str); 4] = [
    ("metadata", "metadata.csv"),
    ("schema", "metadata.schema.json"),
    ("manifest", "manifest.csv"),
    ("session", "session.json"),
];

/// Every problem with a request for the task `declaration` declares (see [`check`]).
pub fn validate(declaration: &Declaration, request: &Request) -> Vec<String> {
    match registry::find(&declaration.task) {
        Some(entry) => check(entry, declaration, request),
        None => vec![format!("unknown task {}", declaration.task)],
    }
}

/// Every problem with a request for the task of `entry`: its declaration's rules, then
/// what the bridge and the task itself need (a session folder that exists, an outputs
/// folder outside it, the task's own checks).
fn check(entry: &TaskEntry, declaration: &Declaration, request: &Request) -> Vec<String> {
    let mut problems = declaration.validate(&request.parameters, &request.inputs);
    let bridge = Bridge::new(entry, declaration, request);
    if let Some(dir) = bridge.context("session_dir")
        && !Path::new(dir).is_dir()
    {
        problems.push(format!("context `session_dir`: {dir} is not a folder"));
    }
    problems.extend((entry.check)(&bridge));
    if !problems.is_empty() {
        return problems;
    }
    let out = &bridge.out;
    if out.is_file() {
        problems.push(format!(
            "`outputs`: {} is a file, not a folder",
            out.display()
        ));
    }
    if let Ok(session) = bridge.session_dir.canonicalize()
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
    problems
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

/// The files of each declared output, found in the outputs folder.
fn collect_outputs(declaration: &Declaration, out: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut found = BTreeMap::new();
    for port in &declaration.outputs {
        let parts: Vec<&str> = port.pattern.split('/').collect();
        let mut files = matching_paths(out, &parts);
        files.sort();
        found.insert(port.name.clone(), files);
    }
    found
}

/// The files under `folder` that the pattern's parts match, one part a level (the last
/// names files, the others folders); temporaries never match.
fn matching_paths(folder: &Path, parts: &[&str]) -> Vec<PathBuf> {
    let Some((first, rest)) = parts.split_first() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !declare::matches(first, &name) || crate::engine::atomic::is_temp_name(&name) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        match rest.is_empty() {
            true if kind.is_file() => found.push(entry.path()),
            false if kind.is_dir() => found.extend(matching_paths(&entry.path(), rest)),
            _ => {}
        }
    }
    found
}

/// The task and the request text of `operation [TASK] JSON` (or `[TASK] --json-file`):
/// the task named, else the one `FLOWCAM_TASK` names (set per image, so that a runner
/// that passes only the JSON reaches the right task).
pub fn resolve(args: &[String], json_file: bool) -> Result<(String, Option<&str>), String> {
    let from_env = || {
        std::env::var(TASK_VARIABLE)
            .ok()
            .filter(|task| !task.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "no task: name one (operation TASK JSON) or set {TASK_VARIABLE} (tasks: {})",
                    registry::names().join(", ")
                )
            })
    };
    let needs_request = "operation needs a request: JSON text, - (standard input) or --json-file";
    match (args, json_file) {
        ([task, json], false) => Ok((task.clone(), Some(json.as_str()))),
        ([task], true) => Ok((task.clone(), None)),
        ([task], false) if registry::find(task).is_some() => Err(needs_request.into()),
        ([json], false) => Ok((from_env()?, Some(json.as_str()))),
        ([], true) => Ok((from_env()?, None)),
        ([], false) => Err(needs_request.into()),
        (_, _) => Err("give the request either as JSON or with --json-file, not both".into()),
    }
}

/// The environment variable that names the task when the command line does not.
pub const TASK_VARIABLE: &str = "FLOWCAM_TASK";

fn entry_for(task: &str) -> Result<(&'static TaskEntry, Declaration), Vec<String>> {
    let entry = registry::find(task).ok_or_else(|| {
        vec![format!(
            "unknown task {task} (tasks: {})",
            registry::names().join(", ")
        )]
    })?;
    Ok((entry, entry.declaration()))
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
    let (entry, declaration) = entry_for(task)?;
    let parsed = read(text)?;
    let mut problems = parsed.problems;
    problems.extend(check(entry, &declaration, &parsed.request));
    if !problems.is_empty() {
        return Err(problems);
    }
    execute(entry, &declaration, &parsed.request, stop)
}

/// Validates the request and runs `task` alone (see [`run_text`]).
pub fn run(task: &str, request: &Request) -> Result<OperationResult, Vec<String>> {
    run_until(task, request, Arc::default())
}

/// [`run`], stopped by `stop` (see [`Runner::stop_flag`]).
pub fn run_until(
    task: &str,
    request: &Request,
    stop: Arc<AtomicBool>,
) -> Result<OperationResult, Vec<String>> {
    let (entry, declaration) = entry_for(task)?;
    let problems = check(entry, &declaration, request);
    if !problems.is_empty() {
        return Err(problems);
    }
    execute(entry, &declaration, request, stop)
}

fn execute(
    entry: &TaskEntry,
    declaration: &Declaration,
    request: &Request,
    stop: Arc<AtomicBool>,
) -> Result<OperationResult, Vec<String>> {
    let bridge = Bridge::new(entry, declaration, request);
    let root = (entry.build)(&bridge).map_err(|e| vec![format!("{e:#}")])?;
    let report = Runner::new(TOOL_VERSION, 0)
        .stop_flag(stop)
        .run(&root)
        .map_err(|e| vec![e.to_string()])?;
    let errors: Vec<String> = report
        .tasks
        .iter()
        .flat_map(|t| t.errors.iter().map(move |e| format!("{}: {e}", t.id)))
        .collect();
    let complete = report
        .tasks
        .iter()
        .all(|t| matches!(t.state, TaskState::Ran | TaskState::AlreadyComplete));
    let context = request
        .context
        .iter()
        .filter(|(key, _)| !CONTEXT_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok(OperationResult {
        task: declaration.task.clone(),
        status: if complete {
            "complete"
        } else if report.interrupted {
            "interrupted"
        } else {
            "failed"
        },
        outputs: collect_outputs(declaration, &bridge.out),
        errors,
        context,
        report,
    })
}
