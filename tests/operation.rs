//! The operation bridge (`flowcam-pipeline operation TASK JSON|-|--json-file PATH`) and the
//! task declarations (`tasks/*.json`), through the built binary:
//!
//! - every declared parameter's rules (type, range, allowed values) refused with their exact
//!   message, and every other kind of bad request, all problems told at once, exit 2 and
//!   nothing written;
//! - `describe`;
//! - the request from standard input and from `--json-file`;
//! - ReadMetadata -> DecollageImages -> ExportEcoTaxa chained through their JSON results,
//!   byte for byte the same files as the pipeline makes;
//! - the declarations, the command line and the configuration keys cannot drift apart;
//! - the release binary runs the Dockerfile's exact entrypoint.

mod common;

use clap::{CommandFactory, Parser};
use common::*;
use flowcam_pipeline::cli::Cli;
use flowcam_pipeline::config::{Config, KEYS};
use flowcam_pipeline::declare::{self, Declaration, Parameter, ParameterType};
use flowcam_pipeline::operation;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A folder name that carries a position: 54.0143 N, 2.7770 W, 4 May 2023, 1 m deep.
const POSITIONED: &str = "Tank25_54.0143_-2.7770_04052023_1";

/// The built binary, run in `dir` (so that no `.env` or configuration file of the
/// developer's is read) without the test environment's FLOWCAM_* and AWS_* variables.
fn bin(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowcam-pipeline"));
    command
        .current_dir(dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // EcoTaxa's process_date: the same day for every run of a test.
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("FLOWCAM_")
            || (name.starts_with("AWS_") && name != "AWS_EC2_METADATA_DISABLED")
        {
            command.env_remove(name);
        }
    }
    command
}

fn operation(dir: &Path, task: &str, request: &Value) -> Output {
    bin(dir)
        .args(["operation", task, &request.to_string()])
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON result of an operation that completed (exit 0).
fn completed(output: &Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}\nstdout:\n{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    let result: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)));
    assert_eq!(result["status"], "complete", "{result:#}");
    assert_eq!(result["errors"], json!([]), "{result:#}");
    result
}

/// The problems a refused request was told, one per `error: ` line on stderr; checks the
/// exit code (2) and that nothing went to stdout.
fn refused(output: &Output) -> BTreeSet<String> {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(output.stdout.is_empty(), "stdout: {}", text(&output.stdout));
    stderr
        .lines()
        .map(|line| {
            line.strip_prefix("error: ")
                .unwrap_or_else(|| panic!("not an error line: {line:?} in\n{stderr}"))
                .to_string()
        })
        .collect()
}

/// The files a result names for one output.
fn files(result: &Value, output: &str) -> Vec<PathBuf> {
    result["outputs"][output]
        .as_array()
        .unwrap_or_else(|| panic!("no output {output} in {result:#}"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// Every path under `dir`, for "nothing was written".
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(folder) = todo.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            found.insert(path);
        }
    }
    found
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A file name that matches an input's pattern (`*` made `x`).
fn sample_name(pattern: &str) -> String {
    pattern.rsplit('/').next().unwrap().replace('*', "x")
}

/// One file (made in `dir`) for each input of `declaration` that needs at least one.
fn valid_inputs(declaration: &Declaration, dir: &Path) -> Map<String, Value> {
    std::fs::create_dir_all(dir).unwrap();
    let mut inputs = Map::new();
    for port in declaration.inputs.iter().filter(|p| !p.allows(0)) {
        let path = dir.join(sample_name(&port.pattern));
        std::fs::write(&path, b"").unwrap();
        inputs.insert(port.name.clone(), json!([path_str(&path)]));
    }
    inputs
}

/// A value `p` accepts.
fn valid_value(p: &Parameter) -> Value {
    if let Some(default) = &p.default {
        return default.clone();
    }
    match p.ty {
        ParameterType::Boolean => json!(false),
        ParameterType::Integer => json!(p.min().unwrap_or(1.0) as i64),
        ParameterType::Number => json!(p.min().unwrap_or(0.0)),
        ParameterType::String => json!("plankton"),
        ParameterType::Enum => json!(p.values.as_ref().unwrap()[0]),
        ParameterType::Array => json!([]),
    }
}

/// What a parameter of type `ty` must be, as the messages say it.
fn kind(ty: ParameterType) -> &'static str {
    match ty {
        ParameterType::Boolean => "a boolean (true or false)",
        ParameterType::Integer => "an integer",
        ParameterType::Number => "a number",
        ParameterType::String => "a string",
        ParameterType::Enum => "one of the allowed strings",
        ParameterType::Array => "an array",
    }
}

/// A value of the wrong type for `ty`.
fn wrong_type(ty: ParameterType) -> Value {
    match ty {
        ParameterType::Boolean => json!("yes"),
        ParameterType::Integer | ParameterType::Number => json!("many"),
        ParameterType::String | ParameterType::Enum => json!(42),
        ParameterType::Array => json!("a,b"),
    }
}

/// A number just outside `bound`, of the parameter's type.
fn beyond(p: &Parameter, bound: f64, step: f64) -> Value {
    match p.ty {
        ParameterType::Integer => json!(bound as i64 + step as i64),
        _ => json!(bound + step),
    }
}

/// The rule of a parameter's range, as the messages say it.
fn range_rule(p: &Parameter) -> String {
    match (p.min(), p.max()) {
        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => unreachable!(),
    }
}

/// The bad values to try for one parameter, each with the exact message it must give, in
/// groups that fit one request each (a request holds one value per parameter).
fn bad_values(p: &Parameter) -> Vec<(&'static str, Value, String)> {
    let name = &p.name;
    let mut bad = Vec::new();
    let wrong = wrong_type(p.ty);
    bad.push((
        "type",
        wrong.clone(),
        format!("parameter `{name}` must be {}, got {wrong}", kind(p.ty)),
    ));
    if p.ty == ParameterType::Integer {
        bad.push((
            "fraction",
            json!(2.5),
            format!("parameter `{name}` must be an integer, got 2.5"),
        ));
    }
    if let Some(lo) = p.min() {
        let v = beyond(p, lo, -1.0);
        bad.push((
            "below",
            v.clone(),
            format!("parameter `{name}` must be {}, got {v}", range_rule(p)),
        ));
    }
    if let Some(hi) = p.max() {
        let v = beyond(p, hi, 1.0);
        bad.push((
            "above",
            v.clone(),
            format!("parameter `{name}` must be {}, got {v}", range_rule(p)),
        ));
    }
    if let Some(values) = &p.values {
        bad.push((
            "enum",
            json!("surely-not-allowed"),
            format!(
                "parameter `{name}` must be one of {}, got \"surely-not-allowed\"",
                values.join(", ")
            ),
        ));
    }
    if let (ParameterType::Array, Some(items)) = (p.ty, p.items) {
        let element = match items {
            ParameterType::String | ParameterType::Enum => json!(7),
            _ => json!({"not": "right"}),
        };
        bad.push((
            "element",
            json!([element.clone()]),
            format!(
                "parameter `{name}`: every element must be {}, got {element}",
                kind(items)
            ),
        ));
    }
    bad
}

#[test]
fn every_declared_parameter_rule_is_enforced_with_its_exact_message() {
    let dir = tempfile::tempdir().unwrap();
    let all = declare::all();
    assert_eq!(all.len(), 5);
    let mut checked = 0;
    let mut told = BTreeSet::new();
    for declaration in &all {
        let task = &declaration.task;
        let inputs = valid_inputs(declaration, &dir.path().join(format!("inputs-{task}")));
        let required: Map<String, Value> = declaration
            .parameters
            .iter()
            .filter(|p| p.required)
            .map(|p| (p.name.clone(), valid_value(p)))
            .collect();

        // The valid request (every parameter at a good value) has no problem: what follows
        // fails for the parameters alone.
        let mut good = required.clone();
        for p in &declaration.parameters {
            good.insert(p.name.clone(), valid_value(p));
        }
        let request = operation::parse(
            &json!({"parameters": good, "inputs": inputs, "outputs": "unused"}).to_string(),
        )
        .unwrap();
        assert_eq!(
            operation::validate(declaration, &request),
            Vec::<String>::new(),
            "{task}"
        );

        // One request per kind of mistake, every parameter wrong at once.
        let mut groups: Vec<(&str, Map<String, Value>, BTreeSet<String>)> = Vec::new();
        for p in &declaration.parameters {
            for (group, value, message) in bad_values(p) {
                let index = match groups.iter().position(|(g, _, _)| *g == group) {
                    Some(i) => i,
                    None => {
                        groups.push((group, required.clone(), BTreeSet::new()));
                        groups.len() - 1
                    }
                };
                groups[index].1.insert(p.name.clone(), value);
                groups[index].2.insert(message);
            }
            checked += 1;
        }
        // And a parameter the task does not declare (for tasks with none, the only one).
        let declared: Vec<&str> = declaration
            .parameters
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let mut unknown = required.clone();
        unknown.insert("colour".into(), json!("blue"));
        groups.push((
            "unknown",
            unknown,
            BTreeSet::from([format!(
                "parameter `colour` is not declared for {task} (declared: {})",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )]),
        ));
        for (group, parameters, expected) in groups {
            let out = dir.path().join(format!("out-{task}-{group}"));
            let before = tree(dir.path());
            let request = json!({
                "parameters": parameters,
                "inputs": inputs,
                "outputs": path_str(&out),
            });
            let problems = refused(&operation(dir.path(), task, &request));
            assert_eq!(problems, expected, "{task}, {group}: {request:#}");
            assert!(!out.exists(), "{task}, {group}: {} was made", out.display());
            assert_eq!(
                tree(dir.path()),
                before,
                "{task}, {group}: something was written"
            );
            told.extend(problems);
        }
    }
    let declared: usize = all.iter().map(|d| d.parameters.len()).sum();
    assert_eq!(checked, declared);
    assert!(
        checked >= 9,
        "every parameter of DecollageImages and UploadToS3"
    );
    // The messages as a user reads them, written out.
    for message in [
        "parameter `embed-measurements` must be a boolean (true or false), got \"yes\"",
        "parameter `s3-bucket` must be a string, got 42",
        "parameter `api-batch-size` must be an integer, got \"many\"",
        "parameter `api-batch-size` must be an integer, got 2.5",
        "parameter `api-batch-size` must be between 1 and 999, got 0",
        "parameter `api-batch-size` must be between 1 and 999, got 1000",
        "parameter `upload-concurrency` must be between 1 and 1024, got 1025",
        "parameter `verify-remote` must be a boolean (true or false), got \"yes\"",
        "parameter `colour` is not declared for ReadMetadata (declared: none)",
        "parameter `colour` is not declared for DecollageImages (declared: embed-measurements, blanks, grey-vignettes)",
    ] {
        assert!(told.contains(message), "{message:?} not in {told:#?}");
    }
}

#[test]
fn every_problem_of_a_request_is_told_at_once_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let upload = declare::find("UploadToS3").unwrap();
    let tables = dir.path().join("tables");
    std::fs::create_dir_all(tables.join("metadata.csv")).unwrap(); // a folder, not a file
    std::fs::create_dir_all(tables.join("other")).unwrap();
    std::fs::write(tables.join("metadata.schema.json"), "{}").unwrap();
    std::fs::write(tables.join("other/metadata.schema.json"), "{}").unwrap();
    let missing = tables.join("gone/manifest.csv");
    let notes = input.join(format!("{FIXTURE}_notes.txt"));
    let schemas = [
        tables.join("metadata.schema.json"),
        tables.join("other/metadata.schema.json"),
    ];
    let request = json!({
        "context": {"experiment": "x", "session": "y"},
        "parameters": {"colour": "blue", "create-bucket": "yes"},
        "inputs": {
            "manifest": [path_str(&missing)],
            "metadata": [path_str(&tables.join("metadata.csv"))],
            "schema": [path_str(&schemas[0]), path_str(&schemas[1])],
            "ecotaxa": [path_str(&notes)],
            "extra": [],
        },
        "output": "typo",
    });
    let before = tree(dir.path());
    let problems = refused(&operation(dir.path(), "UploadToS3", &request));
    let declared: Vec<&str> = upload.parameters.iter().map(|p| p.name.as_str()).collect();
    let expected: BTreeSet<String> = [
        "unknown key `output` in the request (known: context, parameters, inputs, outputs)"
            .to_string(),
        "`outputs` is missing: name the folder the task writes to".to_string(),
        format!(
            "parameter `colour` is not declared for UploadToS3 (declared: {})",
            declared.join(", ")
        ),
        "parameter `create-bucket` must be a boolean (true or false), got \"yes\"".to_string(),
        format!(
            "parameter `s3-bucket` is required: {}",
            upload.parameter("s3-bucket").unwrap().description
        ),
        "input `extra` is not declared for UploadToS3 (declared: manifest, metadata, schema, session, ecotaxa)"
            .to_string(),
        format!(
            "input `manifest`: {}: No such file or directory (os error 2)",
            missing.display()
        ),
        format!(
            "input `metadata`: {} is not a file",
            tables.join("metadata.csv").display()
        ),
        "input `schema` takes exactly 1 file (metadata.schema.json), got 2".to_string(),
        format!(
            "input `ecotaxa`: {} does not match ecotaxa_*.zip",
            notes.display()
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(problems, expected);
    assert_eq!(tree(dir.path()), before, "something was written");

    // DecollageImages: a missing input (count 0 of 1), pages from two folders, a file
    // that is no page, a session folder that is not there, a parameter of the wrong type.
    let other = dir.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let page = input.join(format!("{FIXTURE}_images_000009.tif"));
    std::fs::copy(&page, other.join("page.tif")).unwrap();
    let out = dir.path().join("out");
    let request = json!({
        "context": {"session_dir": path_str(&dir.path().join("no-such-session"))},
        "parameters": {"embed-measurements": "no"},
        "inputs": {
            "schema": [path_str(&schemas[0])],
            "collages": [path_str(&page), path_str(&other.join("page.tif")), path_str(&notes)],
        },
        "outputs": path_str(&out),
    });
    let before = tree(dir.path());
    let problems = refused(&operation(dir.path(), "DecollageImages", &request));
    let expected: BTreeSet<String> = [
        "parameter `embed-measurements` must be a boolean (true or false), got \"no\"".to_string(),
        "input `metadata` takes exactly 1 file (metadata.csv), got 0".to_string(),
        format!("input `collages`: {} does not match *.tif", notes.display()),
        "input `collages`: all pages must be in one folder (the session folder), got 2".to_string(),
        format!(
            "context `session_dir`: {} is not a folder",
            dir.path().join("no-such-session").display()
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(problems, expected);
    assert!(!out.exists());
    assert_eq!(tree(dir.path()), before, "something was written");

    // The shape of the request: each section must be an object, `outputs` a string.
    let request = json!({
        "context": {"experiment": 3},
        "parameters": [1],
        "inputs": {"lst": "one.lst"},
        "outputs": 5,
    });
    let problems = refused(&operation(dir.path(), "ReadMetadata", &request));
    let expected: BTreeSet<String> = [
        "`parameters` must be a JSON object, got [1]",
        "`outputs` must name a folder (a string), got 5",
        "context `experiment` must be a string, got 3",
        "input `lst` must be a list of paths, got \"one.lst\"",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(problems, expected);
    assert_eq!(tree(dir.path()), before, "something was written");
}

#[test]
fn an_unreadable_input_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let upload = declare::find("UploadToS3").unwrap();
    let mut inputs = valid_inputs(&upload, &dir.path().join("tables"));
    let zip = dir.path().join("tables/ecotaxa_x.zip");
    std::fs::write(&zip, b"PK").unwrap();
    std::fs::set_permissions(&zip, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&zip).is_ok() {
        // Running as root (or with CAP_DAC_OVERRIDE): mode 000 is still readable, so there is
        // nothing to refuse. A folder where a file belongs is covered by
        // every_problem_of_a_request_is_told_at_once_and_nothing_is_written.
        eprintln!("skipped: this process reads files of mode 000 (root)");
        return;
    }
    inputs.insert("ecotaxa".into(), json!([path_str(&zip)]));
    let out = dir.path().join("out");
    let request = json!({
        "parameters": {"s3-bucket": "plankton"},
        "inputs": inputs,
        "outputs": path_str(&out),
    });
    let problems = refused(&operation(dir.path(), "UploadToS3", &request));
    let expected: BTreeSet<String> = [format!(
        "input `ecotaxa`: {}: Permission denied (os error 13)",
        zip.display()
    )]
    .into_iter()
    .collect();
    assert_eq!(problems, expected);
    assert!(!out.exists());
}

#[test]
fn malformed_requests_and_unknown_tasks_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let before = tree(dir.path());
    let run = |task: &str, text: &str| {
        bin(dir.path())
            .args(["operation", task, text])
            .output()
            .unwrap()
    };
    let one = |output: &Output| {
        let problems = refused(output);
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap()
    };
    let malformed = one(&run("ReadMetadata", r#"{"outputs": "#));
    assert!(
        malformed.starts_with(
            "the request is not valid JSON: EOF while parsing a value at line 1 column 12"
        ),
        "{malformed}"
    );
    assert_eq!(malformed.matches("column 12").count(), 1, "{malformed}");
    assert_eq!(
        one(&run("ReadMetadata", "[1,2]")),
        "the request must be a JSON object with context, parameters, inputs and outputs, got [1,2]"
    );
    assert_eq!(
        one(&run("ReadMetadata", "\"out\"")),
        "the request must be a JSON object with context, parameters, inputs and outputs, got \"out\""
    );
    assert_eq!(
        one(&run("Nope", r#"{"outputs": "out"}"#)),
        "unknown task Nope (tasks: ReadMetadata, ExtractMetadata, DecollageImages, UploadToS3, ExportEcoTaxa)"
    );
    // Neither JSON nor --json-file: a usage error, also exit 2.
    let output = bin(dir.path())
        .args(["operation", "ReadMetadata"])
        .output()
        .unwrap();
    assert_eq!(
        one(&output),
        "operation needs a request: JSON text, - (standard input) or --json-file"
    );
    // Only the JSON, and no FLOWCAM_TASK to name the task.
    assert_eq!(
        one(&bin(dir.path())
            .args(["operation", r#"{"outputs": "out"}"#])
            .output()
            .unwrap()),
        "no task: name one (operation TASK JSON) or set FLOWCAM_TASK (tasks: ReadMetadata, ExtractMetadata, \
         DecollageImages, UploadToS3, ExportEcoTaxa)"
    );
    let missing = dir.path().join("request.json");
    let output = bin(dir.path())
        .args(["operation", "ReadMetadata", "--json-file"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(
        one(&output),
        format!(
            "{}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert_eq!(tree(dir.path()), before, "something was written");
}

/// A declaration as JSON with every number as a float, so that `1` and `1.0` compare equal.
fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

fn declaration_file(task: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tasks")
        .join(format!("{task}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn describe_prints_the_declarations() {
    let dir = tempfile::tempdir().unwrap();
    let output = bin(dir.path()).arg("describe").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let all: Value = serde_json::from_slice(&output.stdout).unwrap();
    let tasks: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        [
            "ReadMetadata",
            "ExtractMetadata",
            "DecollageImages",
            "UploadToS3",
            "ExportEcoTaxa"
        ]
    );
    for declaration in all.as_array().unwrap() {
        let task = declaration["task"].as_str().unwrap();
        // What tasks/<Task>.json says, no more and no less.
        assert_eq!(
            numbers_as_floats(declaration.clone()),
            numbers_as_floats(declaration_file(task)),
            "{task}"
        );
        for port in ["inputs", "outputs"] {
            assert!(!declaration[port].as_array().unwrap().is_empty(), "{task}");
        }
    }

    let output = bin(dir.path())
        .args(["describe", "UploadToS3"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let one: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(one["task"], "UploadToS3");
    assert_eq!(one, all[3]);
    let names: Vec<&str> = one["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"s3-bucket") && names.contains(&"verify-remote"));

    let output = bin(dir.path()).args(["describe", "Nope"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert_eq!(
        text(&output.stderr).trim_end(),
        "error: unknown task Nope (tasks: ReadMetadata, ExtractMetadata, DecollageImages, UploadToS3, ExportEcoTaxa)"
    );
}

#[test]
fn the_request_can_come_from_standard_input_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let lst = input.join(format!("{FIXTURE}.lst"));
    let request =
        |out: &Path| json!({"inputs": {"lst": [path_str(&lst)]}, "outputs": path_str(out)});

    let from_stdin = dir.path().join("from-stdin");
    let mut child = bin(dir.path())
        .args(["operation", "ReadMetadata", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request(&from_stdin).to_string().as_bytes())
        .unwrap();
    let result = completed(&child.wait_with_output().unwrap());
    assert_eq!(result["task"], "ReadMetadata");
    assert_eq!(
        files(&result, "metadata"),
        [from_stdin.join("metadata.csv")]
    );
    assert_eq!(
        files(&result, "schema"),
        [from_stdin.join("metadata.schema.json")]
    );
    assert_eq!(csv_rows(&from_stdin.join("metadata.csv")).len(), 102);

    let from_file = dir.path().join("from-file");
    let request_file = dir.path().join("request.json");
    std::fs::write(&request_file, request(&from_file).to_string()).unwrap();
    let result = completed(
        &bin(dir.path())
            .args(["operation", "ReadMetadata", "--json-file"])
            .arg(&request_file)
            .output()
            .unwrap(),
    );
    assert_eq!(files(&result, "metadata"), [from_file.join("metadata.csv")]);
    assert_eq!(
        std::fs::read(from_file.join("metadata.csv")).unwrap(),
        std::fs::read(from_stdin.join("metadata.csv")).unwrap()
    );

    // The task named by FLOWCAM_TASK (as a per-task image sets it), only the JSON given,
    // with a runner's own context keys: kept and returned, not refused.
    let from_env = dir.path().join("from-env");
    let mut request_env = request(&from_env);
    request_env["context"] = json!({"job_id": 7, "runner": {"name": "stage2"}});
    let result = completed(
        &bin(dir.path())
            .env("FLOWCAM_TASK", "ReadMetadata")
            .args(["operation", &request_env.to_string()])
            .output()
            .unwrap(),
    );
    assert_eq!(result["task"], "ReadMetadata");
    assert_eq!(
        result["context"],
        json!({"job_id": 7, "runner": {"name": "stage2"}})
    );
    assert_eq!(
        std::fs::read(from_env.join("metadata.csv")).unwrap(),
        std::fs::read(from_stdin.join("metadata.csv")).unwrap()
    );
    // A known context key of the wrong type is still refused.
    request_env["context"] = json!({"experiment": 7});
    let problems = refused(
        &bin(dir.path())
            .env("FLOWCAM_TASK", "ReadMetadata")
            .args(["operation", &request_env.to_string()])
            .output()
            .unwrap(),
    );
    assert!(
        problems.contains("context `experiment` must be a string, got 7"),
        "{problems:?}"
    );

    // The same request again into the same folder: complete, nothing done.
    let result = completed(
        &bin(dir.path())
            .args(["operation", "ReadMetadata", "--json-file"])
            .arg(&request_file)
            .output()
            .unwrap(),
    );
    assert_eq!(result["report"]["tasks"][0]["state"], "already_complete");

    // A bad request on standard input is refused like any other.
    let mut child = bin(dir.path())
        .args(["operation", "ReadMetadata", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{}").unwrap();
    let problems = refused(&child.wait_with_output().unwrap());
    assert!(
        problems.contains("`outputs` is missing: name the folder the task writes to"),
        "{problems:?}"
    );
    assert!(
        problems.contains("input `lst` takes exactly 1 file (*.lst), got 0"),
        "{problems:?}"
    );
}

/// The file names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} ({} bytes) and {} ({} bytes) differ",
        a.display(),
        x.len(),
        b.display(),
        y.len()
    );
}

#[test]
fn operations_chained_through_their_results_make_what_the_pipeline_makes() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let steps = dir.path().join("steps");
    let session = json!({"session_dir": path_str(&input)});

    // 1. ReadMetadata on the .lst.
    let read = steps.join("read");
    let lst = input.join(format!("{FIXTURE}.lst"));
    let result = completed(&operation(
        dir.path(),
        "ReadMetadata",
        &json!({"inputs": {"lst": [path_str(&lst)]}, "outputs": path_str(&read)}),
    ));
    let metadata = files(&result, "metadata");
    let schema = files(&result, "schema");
    assert_eq!(metadata, [read.join("metadata.csv")]);
    assert_eq!(schema, [read.join("metadata.schema.json")]);

    let pages: Vec<String> = names_in(&input)
        .into_iter()
        .filter(|n| n.ends_with(".tif"))
        .map(|n| path_str(&input.join(n)).to_string())
        .collect();
    assert_eq!(pages.len(), 1);

    // 2. ExtractMetadata on the .lst (its side files beside it), that table and the pages.
    let extract = steps.join("extract");
    let result = completed(&operation(
        dir.path(),
        "ExtractMetadata",
        &json!({
            "inputs": {"lst": [path_str(&lst)], "metadata": metadata, "collages": pages},
            "outputs": path_str(&extract),
        }),
    ));
    let record = files(&result, "session");
    assert_eq!(record, [extract.join("session.json")]);

    // 3. DecollageImages on those outputs and the session's pages.
    let decollage = steps.join("decollage");
    let result = completed(&operation(
        dir.path(),
        "DecollageImages",
        &json!({
            "context": session,
            "inputs": {"metadata": metadata, "schema": schema, "session": record, "collages": pages},
            "outputs": path_str(&decollage),
        }),
    ));
    let vignettes = files(&result, "vignettes");
    let manifest = files(&result, "manifest");
    assert_eq!(vignettes.len(), 102);
    assert!(
        vignettes
            .iter()
            .all(|v| v.starts_with(decollage.join("vignettes")))
    );
    assert_eq!(manifest, [decollage.join("manifest.csv")]);

    // 4. ExportEcoTaxa on that result (and the tables of the first two).
    let export = steps.join("export");
    let result = completed(&operation(
        dir.path(),
        "ExportEcoTaxa",
        &json!({
            "context": session,
            "inputs": {"manifest": manifest, "metadata": metadata, "schema": schema, "session": record},
            "outputs": path_str(&export),
        }),
    ));
    let images = files(&result, "images");
    assert_eq!(images.len(), 102);
    let table = files(&result, "table");
    let zip = files(&result, "zip");
    assert_eq!(
        table,
        [export.join(format!("ecotaxa/ecotaxa_{POSITIONED}.tsv"))]
    );
    assert_eq!(zip, [export.join(format!("ecotaxa_{POSITIONED}.zip"))]);

    // The pipeline on the same session.
    let out = dir.path().join("out");
    let output = bin(dir.path())
        .args(["-d", path_str(&input), "-o", path_str(&out)])
        .args(["--ecotaxa", "--no-upload", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let piped = out.join(POSITIONED);

    // Byte for byte: every vignette, the manifest and the tables...
    let names: Vec<String> = common::vignette_files(&piped.join("vignettes"))
        .iter()
        .map(|v| v.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 102);
    let chained: Vec<String> = vignettes
        .iter()
        .map(|v| v.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(chained, names);
    for name in &names {
        same_bytes(
            &common::vignette(&piped.join("vignettes"), name),
            &common::vignette(&decollage.join("vignettes"), name),
        );
    }
    same_bytes(&piped.join("manifest.csv"), &manifest[0]);
    same_bytes(&piped.join("metadata.csv"), &metadata[0]);
    same_bytes(&piped.join("metadata.schema.json"), &schema[0]);
    same_bytes(&piped.join("session.json"), &record[0]);
    // ...the EcoTaxa table and every PNG...
    same_bytes(
        &piped.join(format!("ecotaxa/ecotaxa_{POSITIONED}.tsv")),
        &table[0],
    );
    let pngs = names_in(&piped.join("ecotaxa/images"));
    assert_eq!(pngs.len(), 102);
    let chained: Vec<String> = images
        .iter()
        .map(|v| v.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(chained, pngs);
    for name in &pngs {
        same_bytes(
            &piped.join("ecotaxa/images").join(name),
            &export.join("ecotaxa/images").join(name),
        );
    }
    // ...and the zip: deterministic, since its entries carry no time of their own (the zip
    // crate's `time` feature is off, so every entry is dated 1980-01-01).
    same_bytes(&piped.join(format!("ecotaxa_{POSITIONED}.zip")), &zip[0]);
}

/// The run's options that are not task parameters: they say how, where and how much to
/// run, not what a task makes. A flag or configuration key outside this list must be a
/// declared parameter.
const RUN_LEVEL: &[&str] = &[
    "directory",
    "output-directory",
    "experiment-name",
    "config",
    "recursive",
    "ecotaxa",
    "upload-ecotaxa",
    "upload",
    "no-upload",
    // Where the vignettes go is the run's choice (as upload is), not an operation's.
    "local-vignettes",
    "no-local-vignettes",
    "workers",
    "memory-limit",
    "force",
    "sessions",
    "settle-seconds",
    "on-failure",
    "progress",
    "verbose",
    "quiet",
    "log-format",
    "log-level",
    "help",
    "version",
];

/// The long flag a parameter has on the command line, and whether it is negated.
fn flag_of(p: &Parameter) -> (String, bool) {
    let negated = p.ty == ParameterType::Boolean && p.default == Some(json!(true));
    if negated {
        (format!("no-{}", p.name), true)
    } else {
        (p.name.clone(), false)
    }
}

/// A default as clap writes it.
fn as_flag_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A TOML literal for a JSON scalar.
fn toml_literal(value: &Value) -> String {
    value.to_string()
}

#[test]
fn declarations_command_line_and_configuration_keys_cannot_drift() {
    let mut command = Cli::command();
    command.build();
    let longs = |command: &clap::Command| -> Vec<String> {
        command
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect()
    };
    let run_flags = longs(&command);
    let status = command.find_subcommand("status").unwrap().clone();
    let status_flags = longs(&status);
    let declared: Vec<(String, Parameter)> = declare::all()
        .into_iter()
        .flat_map(|d| {
            let task = d.task.clone();
            d.parameters.into_iter().map(move |p| (task.clone(), p))
        })
        .collect();
    assert!(!declared.is_empty());
    let config = |text: &str| Config::parse(Path::new("flowcam-pipeline.toml"), text);

    for (task, p) in &declared {
        let what = format!("{task}.{}", p.name);
        let (flag, negated) = flag_of(p);
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .unwrap_or_else(|| panic!("{what}: the command line has no --{flag}"));
        assert!(
            status_flags.contains(&flag),
            "{what}: status has no --{flag} (it must judge the same tasks as a run)"
        );
        // A boolean is a flag; everything else takes a value.
        assert_eq!(
            arg.get_action().takes_values(),
            p.ty != ParameterType::Boolean,
            "{what}: --{flag} and the declared type {:?}",
            p.ty
        );
        // The same default.
        let clap_default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if let (Some(default), Some(clap_default)) = (&p.default, clap_default.first()) {
            let expected = if negated {
                (!default.as_bool().unwrap()).to_string()
            } else {
                as_flag_text(default)
            };
            assert_eq!(
                *clap_default, expected,
                "{what}: default {default} declared, --{flag} defaults to {clap_default}"
            );
        }
        // The same allowed values.
        if let Some(values) = &p.values {
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            assert_eq!(&possible, values, "{what}: --{flag}'s values");
        }
        // The same range: the bounds are accepted, one beyond them refused.
        let parse = |value: &Value| {
            Cli::try_parse_from([
                "flowcam-pipeline",
                "-d",
                "session",
                &format!("--{flag}"),
                &as_flag_text(value),
            ])
        };
        if p.ty != ParameterType::Boolean {
            assert!(
                parse(&valid_value(p)).is_ok(),
                "{what}: --{flag} {}",
                valid_value(p)
            );
        }
        for bound in [p.min(), p.max()].into_iter().flatten() {
            assert!(
                parse(&beyond(p, bound, 0.0)).is_ok(),
                "{what}: --{flag} {bound}"
            );
        }
        if let Some(lo) = p.min() {
            let v = beyond(p, lo, -1.0);
            assert!(parse(&v).is_err(), "{what}: --{flag} {v} accepted");
        }
        if let Some(hi) = p.max() {
            let v = beyond(p, hi, 1.0);
            assert!(parse(&v).is_err(), "{what}: --{flag} {v} accepted");
        }
        if matches!(p.ty, ParameterType::Integer | ParameterType::Number) {
            assert!(
                parse(&json!("many")).is_err(),
                "{what}: --{flag} many accepted"
            );
        }

        // The configuration file: the key exactly when the declaration allows it, with the
        // same type and range.
        let name = &p.name;
        assert_eq!(
            KEYS.contains(&name.as_str()),
            p.config,
            "{what}: declared config {} but KEYS {} it",
            p.config,
            if KEYS.contains(&name.as_str()) {
                "has"
            } else {
                "lacks"
            }
        );
        let line = |value: &Value| format!("{name} = {}\n", toml_literal(value));
        if p.config {
            let good = line(&valid_value(p));
            assert!(config(&good).is_ok(), "{what}: {good:?} refused");
            let wrong = line(&wrong_type(p.ty));
            let error = config(&wrong).expect_err(&format!("{what}: {wrong:?} accepted"));
            assert!(
                error.to_string().contains(&format!("`{name}`")),
                "{what}: {error}"
            );
            for v in [
                p.min().map(|lo| beyond(p, lo, -1.0)),
                p.max().map(|hi| beyond(p, hi, 1.0)),
            ]
            .into_iter()
            .flatten()
            {
                let error = config(&line(&v)).expect_err(&format!("{what}: {v} accepted"));
                assert!(
                    error.to_string().contains(&format!("`{name}`")),
                    "{what}: {error}"
                );
            }
        } else {
            assert!(
                config(&line(&valid_value(p))).is_err(),
                "{what}: the configuration file takes {name}, declared config: false"
            );
        }
    }

    // The other way round: nothing on the command line or in the configuration file that
    // is neither a declared parameter nor a run-level option.
    let is_declared = |name: &str| declared.iter().any(|(_, p)| p.name == name);
    let is_declared_flag = |flag: &str| declared.iter().any(|(_, p)| flag_of(p).0 == flag);
    for flag in &run_flags {
        assert!(
            RUN_LEVEL.contains(&flag.as_str()) || is_declared_flag(flag),
            "--{flag} is neither a declared task parameter nor in RUN_LEVEL"
        );
    }
    for key in KEYS {
        assert!(
            RUN_LEVEL.contains(key) || is_declared(key),
            "configuration key {key} is neither a declared task parameter nor in RUN_LEVEL"
        );
    }
    // And the list itself holds only real, undeclared options.
    for option in RUN_LEVEL {
        assert!(
            run_flags.iter().any(|f| f == option) || KEYS.contains(option),
            "RUN_LEVEL lists {option}, which is neither a flag nor a configuration key"
        );
        assert!(
            !is_declared(option) && !is_declared_flag(option),
            "{option} is a declared task parameter, not a run-level option"
        );
    }
}

/// The JSON array of a Dockerfile instruction in exec form (`ENTRYPOINT ["a", "b"]`).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let lines: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix(instruction))
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .collect();
    assert_eq!(lines.len(), 1, "one {instruction} in the Dockerfile");
    serde_json::from_str(lines[0].trim())
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form: {e}"))
}

#[test]
fn the_release_binary_runs_the_dockerfiles_entrypoint() {
    // No container engine runs here: build the binary as the Dockerfile does, and run the
    // exact command line the image's ENTRYPOINT (and CMD) make.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let entrypoint = exec_form(&dockerfile, "ENTRYPOINT");
    let cmd = exec_form(&dockerfile, "CMD");
    assert_eq!(entrypoint[0], "flowcam-pipeline");
    assert!(
        dockerfile.contains(
            "COPY --from=build /src/target/release/flowcam-pipeline /usr/local/bin/flowcam-pipeline"
        ),
        "the image's flowcam-pipeline is the release build"
    );
    let build = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("RUN cargo build"))
        .expect("RUN cargo build ... in the Dockerfile");
    let build: Vec<&str> = build.split_whitespace().collect();
    assert!(build.contains(&"--release"), "{build:?}");

    let mut cargo = Command::new(env!("CARGO"));
    // Without the variables `cargo test` sets for the package under test: a build script
    // (ring's) tracks CARGO_MANIFEST_DIR, so with it set this build would not reuse a
    // release build made from a shell, and the next one from a shell would redo it all.
    for (name, _) in std::env::vars() {
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&name.as_str())
        {
            cargo.env_remove(name);
        }
    }
    let output = cargo
        .current_dir(root)
        .arg("build")
        .args(&build)
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo build {}", build.join(" "));
    let binary = text(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "flowcam-pipeline")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build names the flowcam-pipeline executable");
    assert!(
        binary.ends_with("release/flowcam-pipeline"),
        "{}",
        binary.display()
    );

    // The image's command line, in a working folder of its own (WORKDIR) and with an
    // environment as empty as a container's.
    let work = tempfile::tempdir().unwrap();
    let input = copy_fixture(work.path(), FIXTURE);
    let out = work.path().join("step1");
    let image = |args: &[String]| {
        Command::new(&binary)
            .args(&entrypoint[1..])
            .args(args)
            .current_dir(work.path())
            .env_clear()
            .output()
            .unwrap()
    };
    let request = json!({
        "inputs": {"lst": [path_str(&input.join(format!("{FIXTURE}.lst")))]},
        "outputs": path_str(&out),
    });
    let result = completed(&image(&["ReadMetadata".to_string(), request.to_string()]));
    assert_eq!(result["task"], "ReadMetadata");
    assert_eq!(files(&result, "metadata"), [out.join("metadata.csv")]);
    assert_eq!(csv_rows(&out.join("metadata.csv")).len(), 102);

    // A per-task image (FLOWCAM_TASK set at build time) takes only the JSON.
    let per_task = work.path().join("per-task");
    let request = json!({
        "inputs": {"lst": [path_str(&input.join(format!("{FIXTURE}.lst")))]},
        "outputs": path_str(&per_task),
    });
    let output = Command::new(&binary)
        .args(&entrypoint[1..])
        .arg(request.to_string())
        .current_dir(work.path())
        .env_clear()
        .env("FLOWCAM_TASK", "ReadMetadata")
        .output()
        .unwrap();
    assert_eq!(completed(&output)["task"], "ReadMetadata");
    assert!(
        dockerfile.contains("ENV FLOWCAM_TASK="),
        "the image can be built per task"
    );

    // Without arguments the image runs its CMD: the bridge's help.
    let output = image(&cmd);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let help = text(&output.stdout);
    assert!(help.contains("Usage: flowcam-pipeline operation"), "{help}");
    assert!(help.contains("--json-file"), "{help}");
}

/// Fed only from an earlier result whose folder is not named after the session, the
/// session's name and position cannot be told: the request is refused, naming
/// `session_dir`, rather than exporting under the wrong name without a position.
#[test]
fn a_step_that_cannot_tell_its_session_asks_for_session_dir() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::copy_fixture(dir.path(), "Tank25_54.0143_-2.7770_04052023_1");
    let bin = env!("CARGO_BIN_EXE_flowcam-pipeline");
    let lst = input.join(format!("{}.lst", common::FIXTURE));
    let step = |task: &str, request: String| {
        std::process::Command::new(bin)
            .args(["operation", task, &request])
            .output()
            .unwrap()
    };
    let read = dir.path().join("read");
    let first = step(
        "ReadMetadata",
        format!(
            r#"{{"inputs": {{"lst": ["{}"]}}, "outputs": "{}"}}"#,
            lst.display(),
            read.display()
        ),
    );
    assert_eq!(first.status.code(), Some(0));
    let page = input.join(format!("{}_images_000009.tif", common::FIXTURE));
    let cut = dir.path().join("cut");
    let second = step(
        "DecollageImages",
        format!(
            r#"{{"inputs": {{"metadata": ["{r}/metadata.csv"], "schema": ["{r}/metadata.schema.json"], "collages": ["{}"]}}, "outputs": "{}"}}"#,
            page.display(),
            cut.display(),
            r = read.display()
        ),
    );
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let export = dir.path().join("export");
    let third = step(
        "ExportEcoTaxa",
        format!(
            r#"{{"inputs": {{"manifest": ["{c}/manifest.csv"], "metadata": ["{c}/metadata.csv"], "schema": ["{c}/metadata.schema.json"]}}, "outputs": "{}"}}"#,
            export.display(),
            c = cut.display()
        ),
    );
    assert_eq!(third.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        stderr.contains("context `session_dir` is needed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Tank25_54.0143_-2.7770_04052023_1"),
        "{stderr}"
    );
    assert!(!export.exists());
}

#[test]
fn a_manifest_whose_vignettes_are_missing_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let bin = env!("CARGO_BIN_EXE_flowcam-pipeline");
    let input = common::fixture_dir();
    let run = std::process::Command::new(bin)
        .args([
            "-d",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--no-upload",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    let session_out = out.join(common::FIXTURE);
    std::fs::remove_file(common::vignette(
        &session_out.join("vignettes"),
        &format!("{}_8900.tif", common::FIXTURE),
    ))
    .unwrap();
    let export = dir.path().join("export");
    let request = format!(
        r#"{{"context": {{"session_dir": "{}"}}, "inputs": {{"manifest": ["{o}/manifest.csv"], "metadata": ["{o}/metadata.csv"], "schema": ["{o}/metadata.schema.json"]}}, "outputs": "{}"}}"#,
        input.display(),
        export.display(),
        o = session_out.display()
    );
    let output = std::process::Command::new(bin)
        .args(["operation", "ExportEcoTaxa", &request])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 of its vignettes are not in") && stderr.contains("_8900.tif"),
        "{stderr}"
    );
    assert!(!export.exists(), "nothing written");
}
