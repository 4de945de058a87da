//! The built binary as an ingest server runs it from cron: a pass over a root of session
//! folders (new, broken, still being copied, already complete), kills and overlapping runs,
//! the configuration file's precedence, `status`, `log`, progress, `--quiet` and
//! `--on-failure`. No S3 server: every run has `--no-upload`.
//!
//! Each test runs the binary in its own temporary working folder (so no stray `.env` or
//! `flowcam-pipeline.toml` is picked up) with `RUST_LOG` and every `FLOWCAM_*` variable
//! removed from its environment. Sessions are synthetic and small; time is controlled by
//! setting the files' modification times into the past rather than by waiting.

mod common;

use common::{task, text};
use flowcam_pipeline::synthetic::SyntheticSession;
use serde_json::Value;
use std::fs::{self, File, FileTimes};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The binary, run from `cwd`, with no inherited log filter or `FLOWCAM_*` setting.
fn bin(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowcam-pipeline"));
    command.env_remove("RUST_LOG").current_dir(cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FLOWCAM_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the binary from `cwd` with `args` and waits for it.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    bin(cwd).args(args).output().unwrap()
}

/// A processing run (not a subcommand): `args` plus `--no-upload`.
fn pass(cwd: &Path, args: &[&str]) -> Output {
    bin(cwd).args(args).arg("--no-upload").output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes a small synthetic session `<parent>/<prefix>` (narrow pages keep debug builds
/// fast). Particles are spread evenly over the pages.
fn synthetic(parent: &Path, prefix: &str, particles: usize, pages: usize) -> PathBuf {
    SyntheticSession {
        particles,
        pages,
        prefix: prefix.into(),
        page_width: 400,
        ..SyntheticSession::default()
    }
    .write(parent)
    .unwrap()
}

/// File name of page `page` (1-based) of the synthetic session `prefix`.
fn page_name(prefix: &str, page: usize) -> String {
    format!("{prefix}_images_{page:06}.tif")
}

/// Sets the modification time of a folder, and of everything in it, an hour into the past:
/// the session looks as if its copy ended long ago, well past the 60 s settle time.
fn age(folder: &Path) {
    let past = SystemTime::now() - Duration::from_secs(3600);
    let times = FileTimes::new().set_accessed(past).set_modified(past);
    for entry in fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        File::open(&path).unwrap().set_times(times).unwrap();
    }
    File::open(folder).unwrap().set_times(times).unwrap();
}

/// Replaces a collage page's bytes with something that is not a TIFF.
fn corrupt(session: &Path, page: &str) {
    let path = session.join(page);
    assert!(path.is_file(), "{} is not there", path.display());
    fs::write(&path, b"not a TIFF at all: the copy was damaged".repeat(20)).unwrap();
}

/// The finished vignettes of a session's output folder (no temporaries).
fn vignette_count(session_out: &Path) -> usize {
    common::vignette_files(&session_out.join("vignettes")).len()
}

/// Rows of a session's manifest.csv (without the header).
fn manifest_rows(session_out: &Path) -> usize {
    let text = fs::read_to_string(session_out.join("manifest.csv")).unwrap();
    text.lines().count() - 1
}

/// The run reports kept in a session's history (`runs/`), oldest first.
fn history(session_out: &Path) -> Vec<Value> {
    let Ok(entries) = fs::read_dir(session_out.join("runs")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
        .collect()
}

/// A run report that did something: some task is not `already_complete`.
fn did_work(report: &Value) -> bool {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["state"] != "already_complete")
}

/// `status --json` over `path` with outputs in `out`: one object per session.
fn status_json(cwd: &Path, path: &Path, out: &Path) -> Vec<Value> {
    let output = run_in(cwd, &["status", s(path), "-o", s(out), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let json: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", text(&output)));
    json.as_array().unwrap().clone()
}

/// The status object of session `experiment`.
fn find<'a>(statuses: &'a [Value], experiment: &str) -> &'a Value {
    statuses
        .iter()
        .find(|v| v["experiment"] == experiment)
        .unwrap_or_else(|| panic!("no session {experiment} in {statuses:?}"))
}

/// The lines of a pass's stdout that start with `prefix` (`"ran"`, `"FAILED"`...).
fn lines_starting<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// New, broken, still-copying and complete sessions under one root: each gets what it needs
/// and one failure stops nobody; the next pass takes the copy once it has settled.
#[test]
fn a_pass_runs_new_sessions_fails_broken_ones_waits_for_copies_and_skips_complete_ones() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");

    // Processed by an earlier run (given directly: no settle time).
    let done = synthetic(&root, "done", 40, 1);
    age(&done);
    let earlier = pass(cwd, &["-d", s(&done), "-o", s(&out)]);
    assert_eq!(earlier.status.code(), Some(0), "{}", text(&earlier));
    let done_report = fs::read(out.join("done/run-report.json")).unwrap();

    let fresh = synthetic(&root, "fresh", 60, 2);
    let broken = synthetic(&root, "broken", 60, 2);
    corrupt(&broken, &page_name("broken", 2));
    let copying = synthetic(&root, "copying", 60, 2);
    age(&fresh);
    age(&broken);
    // `done` keeps its times: a changed input time would make it stale (make-like).
    // `copying` was just written: it is within the default settle time of 60 s.

    let first = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let shown = stdout(&first);
    assert_eq!(
        lines_starting(&shown, "ran"),
        ["ran       fresh"],
        "{shown}"
    );
    let failed = lines_starting(&shown, "FAILED");
    assert_eq!(failed.len(), 1, "{shown}");
    assert!(
        failed[0].starts_with("FAILED    broken: ")
            && failed[0].contains("broken_images_000002.tif"),
        "{shown}"
    );
    let waiting = lines_starting(&shown, "waiting");
    assert_eq!(waiting.len(), 1, "{shown}");
    assert!(
        waiting[0].starts_with("waiting   copying: ") && waiting[0].contains("settle time 60 s"),
        "{shown}"
    );
    assert!(
        !shown.contains("done"),
        "a complete session gets no line: {shown}"
    );
    assert!(
        shown.contains(&format!(
            "4 sessions under {}: 1 complete, 1 ran, 1 waiting, 0 busy, 1 failed",
            root.display()
        )),
        "{shown}"
    );

    // The new one is complete.
    assert_eq!(vignette_count(&out.join("fresh")), 60);
    assert_eq!(manifest_rows(&out.join("fresh")), 60);
    // The broken one kept what succeeded (page 1) and has no manifest.
    assert_eq!(vignette_count(&out.join("broken")), 30);
    assert!(!out.join("broken/manifest.csv").exists());
    // The copy in progress was not touched: not even an output folder.
    assert!(!out.join("copying").exists());
    // The complete one was skipped without writing anything.
    assert_eq!(
        fs::read(out.join("done/run-report.json")).unwrap(),
        done_report
    );
    assert_eq!(history(&out.join("done")).len(), 1);

    // The copy has settled: the next pass takes it; the broken one fails again.
    age(&copying);
    let second = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let shown = stdout(&second);
    assert_eq!(
        lines_starting(&shown, "ran"),
        ["ran       copying"],
        "{shown}"
    );
    let failed = lines_starting(&shown, "FAILED");
    assert_eq!(failed.len(), 1, "{shown}");
    assert!(failed[0].contains("broken_images_000002.tif"), "{shown}");
    assert!(lines_starting(&shown, "waiting").is_empty(), "{shown}");
    assert!(
        shown.contains("4 sessions under") && shown.contains(": 2 complete, 1 ran, 0 waiting"),
        "{shown}"
    );
    assert_eq!(vignette_count(&out.join("copying")), 60);
    assert_eq!(manifest_rows(&out.join("copying")), 60);

    let statuses = status_json(cwd, &root, &out);
    assert_eq!(statuses.len(), 4);
    for name in ["done", "fresh", "copying"] {
        assert_eq!(find(&statuses, name)["state"], "complete", "{statuses:?}");
    }
    assert_eq!(find(&statuses, "copying")["vignettes"], 60);
    assert_eq!(find(&statuses, "broken")["state"], "failed");
    // Both failed runs are in the broken session's history.
    let runs = history(&out.join("broken"));
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(task(run, "DecollageImages")["state"], "failed");
    }
}

/// A `.lst` that names a page which is not there yet is a copy in progress, not a failure,
/// even once every file present has settled.
#[test]
fn a_session_whose_lst_names_a_missing_collage_waits_until_it_arrives() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let session = synthetic(&root, "partial", 60, 3);
    let page = session.join(page_name("partial", 2));
    let bytes = fs::read(&page).unwrap();
    fs::remove_file(&page).unwrap();
    age(&session);

    let first = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let shown = stdout(&first);
    assert_eq!(
        lines_starting(&shown, "waiting"),
        ["waiting   partial: collage partial_images_000002.tif named by the .lst is not there yet"],
        "{shown}"
    );
    assert!(lines_starting(&shown, "FAILED").is_empty(), "{shown}");
    assert!(shown.contains("1 waiting, 0 busy, 0 failed"), "{shown}");
    assert!(
        !out.join("partial").exists(),
        "a waiting session is not touched"
    );
    let statuses = status_json(cwd, &root, &out);
    let status = find(&statuses, "partial");
    assert_eq!(status["state"], "waiting", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("partial_images_000002.tif"),
        "{status}"
    );

    // The page arrives (and settles): the session is processed.
    fs::write(&page, bytes).unwrap();
    age(&session);
    let second = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(
        lines_starting(&stdout(&second), "ran"),
        ["ran       partial"],
        "{}",
        text(&second)
    );
    assert_eq!(vignette_count(&out.join("partial")), 60);
    assert_eq!(manifest_rows(&out.join("partial")), 60);
    assert_eq!(
        find(&status_json(cwd, &root, &out), "partial")["state"],
        "complete"
    );
}

/// A run killed with SIGKILL in the middle of a session leaves its `.lock` file behind, but
/// not a lock: the next pass takes the session and finishes it.
#[test]
fn a_killed_run_leaves_no_lock_that_blocks_the_next() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let session = SyntheticSession {
        particles: 20_000,
        pages: 20,
        prefix: "big".into(),
        ..SyntheticSession::default()
    }
    .write(&root)
    .unwrap();
    age(&session);
    let session_out = out.join("big");
    let args = ["-d", s(&root), "-o", s(&out), "--no-upload"];

    // One worker, so that the kill lands while most pages are still to do.
    let mut child = bin(cwd)
        .args(args)
        .args(["-j", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(session_out.join(".lock").exists() && vignette_count(&session_out) > 0) {
        assert!(Instant::now() < deadline, "no vignette after 120 s");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(session_out.join(".lock").exists(), "the lock file stays");
    assert!(
        !session_out.join("manifest.csv").exists(),
        "killed too late to test anything"
    );
    assert!(vignette_count(&session_out) < 20_000);

    let rerun = run_in(cwd, &args);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let shown = stdout(&rerun);
    assert_eq!(lines_starting(&shown, "ran"), ["ran       big"], "{shown}");
    assert!(
        lines_starting(&shown, "busy").is_empty() && !stderr(&rerun).contains("another run"),
        "{}",
        text(&rerun)
    );
    assert!(shown.contains("0 busy, 0 failed"), "{shown}");
    assert_eq!(manifest_rows(&session_out), 20_000);
    assert_eq!(vignette_count(&session_out), 20_000);
    assert_eq!(
        find(&status_json(cwd, &root, &out), "big")["state"],
        "complete"
    );
}

/// Two passes started together over the same root share the work: every session is
/// processed by exactly one of them, the other finding it busy or complete.
#[test]
fn two_overlapping_passes_process_each_session_once() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let names: Vec<String> = (1..=6).map(|i| format!("s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let session = synthetic(&root, name, 100 + 10 * i, 2);
        age(&session);
    }
    let args = [
        "-d",
        s(&root),
        "-o",
        s(&out),
        "--sessions",
        "2",
        "--no-upload",
    ];
    let spawn = || {
        bin(cwd)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let both = format!("run A: {}\nrun B: {}", text(&a), text(&b));
    assert_eq!(a.status.code(), Some(0), "{both}");
    assert_eq!(b.status.code(), Some(0), "{both}");
    let all = stdout(&a) + &stdout(&b);
    assert!(lines_starting(&all, "FAILED").is_empty(), "{both}");
    assert!(lines_starting(&all, "waiting").is_empty(), "{both}");
    // Each session was run (did work) by exactly one of the two.
    let mut ran: Vec<&str> = lines_starting(&all, "ran")
        .iter()
        .map(|l| l.trim_start_matches("ran").trim())
        .collect();
    ran.sort();
    assert_eq!(ran, names, "{both}");

    for (i, name) in names.iter().enumerate() {
        let particles = 100 + 10 * i;
        let session_out = out.join(name);
        let runs = history(&session_out);
        assert_eq!(runs.len(), 1, "{name}: {runs:?}\n{both}");
        assert!(did_work(&runs[0]));
        let decollage = task(&runs[0], "DecollageImages");
        assert_eq!(decollage["state"], "ran", "{name}: {decollage}");
        assert_eq!(decollage["items"]["ran"], 2, "{name}: {decollage}");
        let log = fs::read_to_string(session_out.join("pipeline.log")).unwrap();
        assert_eq!(log.matches("=== run ").count(), 1, "{name}: {log}");
        assert_eq!(vignette_count(&session_out), particles, "{name}");
        assert_eq!(manifest_rows(&session_out), particles, "{name}");
    }
}

/// Command line > environment > configuration file > built-in default, and a configuration
/// file that is wrong stops the run (exit 4) naming the key.
#[test]
fn configuration_precedence_and_strict_keys() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let session = synthetic(&cwd.join("in"), "cfg", 30, 1);
    let done = |dir: &str| cwd.join(dir).join("cfg/manifest.csv").is_file();
    fs::write(
        cwd.join("flowcam-pipeline.toml"),
        "output-directory = \"from-config\"\n",
    )
    .unwrap();

    // The command line wins over the environment and the file.
    let output = bin(cwd)
        .args(["-d", s(&session), "-o", "from-cli", "--no-upload"])
        .env("FLOWCAM_OUTPUT_DIRECTORY", "from-env")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(done("from-cli"));
    assert!(!cwd.join("from-env").exists() && !cwd.join("from-config").exists());
    assert!(!cwd.join("output").exists());

    // The environment wins over the file.
    let output = bin(cwd)
        .args(["-d", s(&session), "--no-upload"])
        .env("FLOWCAM_OUTPUT_DIRECTORY", "from-env")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(done("from-env"));
    assert!(!cwd.join("from-config").exists());

    // The file wins over the default.
    let output = pass(cwd, &["-d", s(&session)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(done("from-config"));
    assert!(!cwd.join("output").exists());
    // status reads the same file.
    let output = run_in(cwd, &["status", s(&session), "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let statuses: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(statuses[0]["state"], "complete", "{statuses}");
    assert!(
        statuses[0]["output"]
            .as_str()
            .unwrap()
            .ends_with("from-config/cfg"),
        "{statuses}"
    );

    // --config names another file, which then replaces ./flowcam-pipeline.toml.
    fs::write(
        cwd.join("other.toml"),
        "output-directory = \"from-explicit\"\n",
    )
    .unwrap();
    let output = pass(cwd, &["-d", s(&session), "--config", "other.toml"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(done("from-explicit"));

    // An unknown key (a typo) is an error naming it, and nothing runs.
    fs::write(
        cwd.join("flowcam-pipeline.toml"),
        "workers = 1\noutput-directroy = \"typo\"\n",
    )
    .unwrap();
    let output = pass(cwd, &["-d", s(&session), "-o", "never"]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let message = stderr(&output);
    assert!(message.contains("flowcam-pipeline.toml"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(
        message.contains("unknown key `output-directroy`"),
        "{message}"
    );
    assert!(
        message.contains("did you mean `output-directory`?"),
        "{message}"
    );
    assert!(!cwd.join("never").exists() && !cwd.join("typo").exists());

    // A value of the wrong type names its key.
    fs::write(cwd.join("flowcam-pipeline.toml"), "workers = \"four\"\n").unwrap();
    let output = pass(cwd, &["-d", s(&session), "-o", "never"]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let message = stderr(&output);
    assert!(message.contains("key `workers`"), "{message}");
    assert!(message.contains("line 1"), "{message}");
    assert!(!cwd.join("never").exists());

    // status refuses the same file the same way.
    let output = run_in(cwd, &["status", s(&session)]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(
        stderr(&output).contains("key `workers`"),
        "{}",
        text(&output)
    );
}

/// `status` over a root: one entry per session, each in its own state, with counts and the
/// last error; the text form has one line per session.
#[test]
fn status_over_a_root_shows_each_state() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let good = synthetic(&root, "good", 50, 2);
    let broken = synthetic(&root, "broken", 40, 2);
    corrupt(&broken, &page_name("broken", 1));
    age(&good);
    age(&broken);
    let output = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // Arrived after that pass: one settled and never run, one still being copied.
    let never = synthetic(&root, "never", 20, 1);
    age(&never);
    synthetic(&root, "arriving", 20, 1);

    let statuses = status_json(cwd, &root, &out);
    assert_eq!(statuses.len(), 4, "{statuses:?}");

    let good = find(&statuses, "good");
    assert_eq!(good["state"], "complete", "{good}");
    assert_eq!(good["particles"], 50, "{good}");
    assert_eq!(good["vignettes"], 50, "{good}");
    assert!(good["last_run"].is_string(), "{good}");
    assert!(good["last_failure"].is_null(), "{good}");
    for t in good["tasks"].as_array().unwrap() {
        assert_eq!(t["state"], "complete", "{good}");
    }

    let broken = find(&statuses, "broken");
    assert_eq!(broken["state"], "failed", "{broken}");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("broken_images_000001.tif"),
        "{broken}"
    );
    let error = broken["last_failure"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("DecollageImages(broken): ")
            && error.contains("broken_images_000001.tif"),
        "{broken}"
    );
    assert_eq!(broken["last_failure"]["at"], broken["last_run"], "{broken}");
    assert_eq!(broken["particles"], 40, "{broken}");
    // Counted on disk: the good page's vignettes are there, the broken page's are not.
    assert_eq!(broken["vignettes"], 20, "{broken}");
    let decollage = broken["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "DecollageImages")
        .unwrap();
    assert_eq!(decollage["state"], "failed", "{broken}");

    let never = find(&statuses, "never");
    assert_eq!(never["state"], "not_started", "{never}");
    assert!(never["last_run"].is_null(), "{never}");

    let arriving = find(&statuses, "arriving");
    assert_eq!(arriving["state"], "waiting", "{arriving}");
    assert!(
        arriving["reason"].as_str().unwrap().contains("settle time"),
        "{arriving}"
    );

    // The table: a header, then one line per session, naming its state.
    let output = run_in(cwd, &["status", s(&root), "-o", s(&out)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let shown = stdout(&output);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 5, "{shown}");
    assert!(lines[0].starts_with("SESSION"), "{shown}");
    for (name, state) in [
        ("arriving", "waiting"),
        ("broken", "failed"),
        ("good", "complete"),
        ("never", "not_started"),
    ] {
        let mine: Vec<&&str> = lines[1..]
            .iter()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {shown}");
        assert_eq!(
            mine[0].split_whitespace().nth(1),
            Some(state),
            "{name}: {shown}"
        );
    }
    let good_line = lines.iter().find(|l| l.starts_with("good ")).unwrap();
    let columns: Vec<&str> = good_line.split_whitespace().collect();
    assert_eq!(&columns[..4], ["good", "complete", "50", "50"], "{shown}");
}

/// Progress is for people at a terminal: piped output gets none by default; `plain` gives a
/// few lines on stderr; bars draw nothing when stderr is not a terminal.
#[test]
fn progress_is_silent_when_piped_and_plain_lines_go_to_stderr() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let session = synthetic(&cwd.join("in"), "prog", 60, 2);
    let no_control = |output: &Output| {
        let err = stderr(output);
        assert!(!err.contains('\r'), "{}", text(output));
        assert!(!err.contains("\x1b["), "{}", text(output));
        assert!(!stdout(output).contains("\x1b["), "{}", text(output));
    };

    let auto = pass(cwd, &["-d", s(&session), "-o", "auto"]);
    assert_eq!(auto.status.code(), Some(0), "{}", text(&auto));
    assert!(
        stdout(&auto).contains("ran successfully"),
        "{}",
        text(&auto)
    );
    assert!(!stderr(&auto).contains("progress"), "{}", text(&auto));
    assert!(
        lines_starting(&stdout(&auto), "progress ").is_empty(),
        "{}",
        text(&auto)
    );
    no_control(&auto);

    let bars = pass(
        cwd,
        &["-d", s(&session), "-o", "bars", "--progress", "bars"],
    );
    assert_eq!(bars.status.code(), Some(0), "{}", text(&bars));
    assert!(
        !stderr(&bars).contains("DecollageImages"),
        "{}",
        text(&bars)
    );
    no_control(&bars);

    let plain = pass(
        cwd,
        &["-d", s(&session), "-o", "plain", "--progress", "plain"],
    );
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));
    let err = stderr(&plain);
    let lines = lines_starting(&err, "progress ");
    assert!(
        lines.contains(&"progress DecollageImages(prog): started, 2 items to do"),
        "{}",
        text(&plain)
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("progress DecollageImages(prog): done, 2 items in ")),
        "{}",
        text(&plain)
    );
    assert!(
        lines_starting(&stdout(&plain), "progress ").is_empty(),
        "{}",
        text(&plain)
    );
    no_control(&plain);

    // --quiet silences even an explicit --progress plain.
    let quiet = pass(
        cwd,
        &[
            "-d",
            s(&session),
            "-o",
            "quiet",
            "--progress",
            "plain",
            "-q",
        ],
    );
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet));
    assert!(!stderr(&quiet).contains("progress"), "{}", text(&quiet));
    assert_eq!(manifest_rows(&cwd.join("quiet/prog")), 60);
}

/// For cron: `--quiet` on a pass with nothing to do prints nothing at all, and on a pass
/// with a failure prints only the failure.
#[test]
fn quiet_prints_nothing_when_there_is_nothing_to_do() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let done = synthetic(&root, "done", 30, 1);
    age(&done);
    let first = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(
        stdout(&first).contains("ran       done"),
        "{}",
        text(&first)
    );
    // A copy in progress is nothing to do either.
    synthetic(&root, "arriving", 20, 1);

    let quiet = pass(cwd, &["-d", s(&root), "-o", s(&out), "--quiet"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet));
    assert!(quiet.stdout.is_empty(), "{}", text(&quiet));
    assert!(quiet.stderr.is_empty(), "{}", text(&quiet));
    // Without --quiet the same pass does say what it saw.
    let loud = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(loud.status.code(), Some(0), "{}", text(&loud));
    assert!(
        stdout(&loud).contains("waiting   arriving"),
        "{}",
        text(&loud)
    );

    // The complete session given directly: nothing either.
    let single = pass(cwd, &["-d", s(&done), "-o", s(&out), "-q"]);
    assert_eq!(single.status.code(), Some(0), "{}", text(&single));
    assert!(
        single.stdout.is_empty() && single.stderr.is_empty(),
        "{}",
        text(&single)
    );

    // A failure is still reported, alone.
    let broken = synthetic(&root, "broken", 20, 1);
    corrupt(&broken, &page_name("broken", 1));
    age(&broken);
    let failing = pass(cwd, &["-d", s(&root), "-o", s(&out), "-q"]);
    assert_eq!(failing.status.code(), Some(1), "{}", text(&failing));
    let shown = stdout(&failing);
    assert_eq!(shown.lines().count(), 1, "{}", text(&failing));
    assert!(
        shown.starts_with("FAILED    broken: "),
        "{}",
        text(&failing)
    );
}

/// `--on-failure` runs its command once per failed session, with the session and its first
/// error in the environment; sessions that succeed or wait are not notified.
#[test]
fn on_failure_notifies_only_the_failed_session() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let good = synthetic(&root, "good", 30, 1);
    let broken = synthetic(&root, "broken", 40, 2);
    corrupt(&broken, &page_name("broken", 2));
    age(&good);
    age(&broken);
    synthetic(&root, "arriving", 20, 1);
    let command = r#"echo "$FLOWCAM_SESSION|$FLOWCAM_ERROR|$FLOWCAM_SESSION_DIR|$FLOWCAM_OUTPUT_DIR" >> notified.txt"#;
    let args = ["-d", s(&root), "-o", s(&out), "--on-failure", command];

    let output = pass(cwd, &args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let notified = fs::read_to_string(cwd.join("notified.txt")).unwrap();
    let lines: Vec<&str> = notified.lines().collect();
    assert_eq!(lines.len(), 1, "{notified}");
    let fields: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(fields.len(), 4, "{notified}");
    assert_eq!(fields[0], "broken");
    assert!(
        fields[1].starts_with("DecollageImages(broken): broken_images_000002.tif"),
        "{notified}"
    );
    assert!(fields[2].ends_with("root/broken"), "{notified}");
    assert!(fields[3].ends_with("out/broken"), "{notified}");

    // The next pass: the broken one fails again and is notified again; nothing else.
    let output = pass(cwd, &args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let notified = fs::read_to_string(cwd.join("notified.txt")).unwrap();
    assert_eq!(notified.lines().count(), 2, "{notified}");
    assert!(
        notified.lines().all(|l| l.starts_with("broken|")),
        "{notified}"
    );
}

/// `log SESSION` shows the last run's section of the session's log, by folder or by name.
#[test]
fn log_shows_the_last_run_of_a_session() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let root = cwd.join("root");
    let out = cwd.join("out");
    let good = synthetic(&root, "good", 30, 1);
    let broken = synthetic(&root, "broken", 30, 2);
    corrupt(&broken, &page_name("broken", 1));
    age(&good);
    age(&broken);
    let output = pass(cwd, &["-d", s(&root), "-o", s(&out)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let started = history(&out.join("good"))[0]["started_at"]
        .as_str()
        .unwrap()
        .to_string();

    // A no-op pass changes neither the history nor the log.
    let output = pass(cwd, &["-d", s(&good), "-o", s(&out)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    for which in [s(&good), "good"] {
        let output = run_in(cwd, &["log", which, "-o", s(&out)]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let log = stdout(&output);
        assert!(log.starts_with(&format!("=== run {started} ")), "{log}");
        assert_eq!(log.matches("=== run ").count(), 1, "{log}");
        assert!(log.contains("===== execution summary ====="), "{log}");
        assert!(
            log.contains("DecollageImages(good) [1 items: 1 ran"),
            "{log}"
        );
        assert!(log.contains("=== end: ok in "), "{log}");
    }

    let output = run_in(cwd, &["log", "broken", "-o", s(&out)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let log = stdout(&output);
    assert!(log.contains("error: broken_images_000001.tif"), "{log}");
    assert!(log.contains("=== end: FAILED in "), "{log}");

    // A session that never ran has no log to show.
    let output = run_in(cwd, &["log", "nothing-here", "-o", s(&out)]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(stderr(&output).contains("no run log"), "{}", text(&output));
}

#[test]
fn same_named_sessions_at_different_depths_fail_instead_of_sharing_an_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (y2023, y2024) = (root.join("2023"), root.join("2024"));
    fs::create_dir_all(&y2023).unwrap();
    fs::create_dir_all(&y2024).unwrap();
    let a = synthetic(&y2023, "tank", 20, 1);
    let b = synthetic(&y2024, "tank", 30, 1);
    let other = synthetic(&root, "other", 20, 1);
    for session in [&a, &b, &other] {
        age(session);
    }
    let out = dir.path().join("out");
    let output = pass(dir.path(), &["-d", s(&root), "-o", s(&out), "--recursive"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let printed = stdout(&output);
    assert_eq!(lines_starting(&printed, "FAILED").len(), 2, "{printed}");
    assert!(printed.contains("have the same name"), "{printed}");
    assert!(printed.contains("ran       other"), "{printed}");
    assert!(!out.join("tank").exists(), "nothing written for either");
}

#[test]
fn log_and_clean_find_the_output_folder_of_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "cfg", 20, 1);
    fs::write(
        dir.path().join("flowcam-pipeline.toml"),
        "output-directory = \"from-config\"\n",
    )
    .unwrap();
    let first = pass(dir.path(), &["-d", s(&input)]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(dir.path().join("from-config/cfg/manifest.csv").exists());
    let log = run_in(dir.path(), &["log", "cfg"]);
    assert_eq!(log.status.code(), Some(0), "{}", text(&log));
    assert!(stdout(&log).contains("=== run "), "{}", text(&log));
    let clean = run_in(dir.path(), &["clean", "-d", s(&input)]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(!dir.path().join("from-config/cfg/manifest.csv").exists());
}
