//! `submit`, `jobs`, `log --job`, `resubmit`, `cancel`, `clean --submission` against a real
//! single-node SLURM cluster (scripts/slurm.sh, started by scripts/test.sh and .ci/run), and
//! the same plan with `--executor local`.

mod common;

use common::{FIXTURE, bin, copy_fixture, text};
use flowcam_pipeline::synthetic::SyntheticSession;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn require_slurm() {
    let up = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%a"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("up"));
    assert!(
        up,
        "the batch tests need a running SLURM cluster: scripts/slurm.sh start (scripts/test.sh \
         starts it when it runs as root)"
    );
}

/// The binary, run in `dir` (where a submission's tasks run too).
fn flowcam(dir: &Path, args: &[&str]) -> Output {
    bin().args(args).current_dir(dir).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A root of sessions A, B, C (copies of the bundled session) and Broken (its `.lst`
/// unreadable).
fn root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for name in [
        "A_54.0143_-2.7770_04052023_1",
        "B_54.0143_-2.7770_04052023_1",
        "C_54.0143_-2.7770_04052023_1",
        "Broken_54.0143_-2.7770_04052023_1",
    ] {
        copy_fixture(&root, name);
    }
    std::fs::write(
        root.join("Broken_54.0143_-2.7770_04052023_1")
            .join(format!("{FIXTURE}.lst")),
        "not a particle list\n",
    )
    .unwrap();
    root
}

fn submission_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("submission "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no submission in {stdout}"))
        .to_string()
}

fn jobs(dir: &Path, id: &str) -> Value {
    serde_json::from_str(&ok(flowcam(dir, &["jobs", id, "-o", "out", "--json"]))).unwrap()
}

/// Polls `jobs` until the last round is collected (three minutes at most).
fn collected(dir: &Path, id: &str) -> Value {
    collected_within(dir, id, Duration::from_secs(180))
}

fn collected_within(dir: &Path, id: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let view = jobs(dir, id);
        if view["collected"] == true && view["collect"][1] == "completed" {
            return view;
        }
        assert!(start.elapsed() < limit, "not collected: {view:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn task_of<'a>(view: &'a Value, session: &str) -> &'a Value {
    view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["sessions"].to_string().contains(session))
        .unwrap()
}

fn outcome<'a>(view: &'a Value, session: &str) -> &'a str {
    task_of(view, session)["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["folder"].as_str().unwrap().ends_with(session))
        .and_then(|s| s["outcome"]["state"].as_str())
        .unwrap_or("not run")
}

/// The last run report of `session` under `out`.
fn last_report(dir: &Path, session: &str) -> Value {
    let path = dir.join("out").join(session).join("run-report.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn runs(dir: &Path, session: &str) -> usize {
    std::fs::read_dir(dir.join("out").join(session).join("runs"))
        .map(|e| e.count())
        .unwrap_or(0)
}

#[test]
fn an_array_runs_a_root_and_resubmit_redoes_only_the_broken_session() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    root(dir);
    let common_args = [
        "-d",
        "root",
        "-o",
        "out",
        "--settle-seconds",
        "0",
        "--no-upload",
    ];
    let submitted = ok(flowcam(
        dir,
        &[
            &["submit"][..],
            &common_args,
            &[
                "--batch-size",
                "2",
                "--cores",
                "1",
                "--memory",
                "500M",
                "--time",
                "00:10:00",
            ],
        ]
        .concat(),
    ));
    let id = submission_id(&submitted);
    assert!(
        submitted.contains("4 sessions in 2 array tasks"),
        "{submitted}"
    );
    let array = submitted
        .lines()
        .find_map(|l| l.strip_prefix("array job "))
        .unwrap()
        .to_string();
    assert!(submitted.contains("collect job "), "{submitted}");

    // Called again at once (cron), it submits nothing already queued or running.
    let again = ok(flowcam(dir, &[&["submit"][..], &common_args].concat()));
    assert!(again.contains("nothing to submit"), "{again}");
    assert_eq!(
        again.matches(&format!("in submission {id}")).count(),
        4,
        "{again}"
    );

    let view = collected(dir, &id);
    let broken = task_of(&view, "Broken_");
    assert_eq!(broken["state"], "failed", "{view:#}");
    let other = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] != broken["task"])
        .unwrap();
    assert_eq!(other["state"], "completed", "{view:#}");
    assert_eq!(
        outcome(&view, "Broken_54.0143_-2.7770_04052023_1"),
        "failed"
    );
    for session in ["A_", "B_", "C_"] {
        let name = format!("{session}54.0143_-2.7770_04052023_1");
        assert_eq!(outcome(&view, &name), "ran", "{view:#}");
    }
    let summary: Value = serde_json::from_slice(
        &std::fs::read(dir.join("out/.submissions").join(&id).join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["totals"]["ran"], 3);
    assert_eq!(summary["totals"]["failed"], 1);

    // The failed task's log, by its job id, names the problem.
    let task = broken["task"].as_u64().unwrap();
    let log = ok(flowcam(
        dir,
        &["log", "--job", &format!("{array}_{task}"), "-o", "out"],
    ));
    assert!(log.contains("expected a format version line"), "{log}");
    let status = ok(flowcam(
        dir,
        &["status", "-d", "root", "-o", "out", "--settle-seconds", "0"],
    ));
    assert!(status.contains("failed"), "{status}");

    // Fixed, and resubmitted: only its task goes again, and only it is redone.
    std::fs::copy(
        common::fixture_dir().join(format!("{FIXTURE}.lst")),
        dir.join("root/Broken_54.0143_-2.7770_04052023_1")
            .join(format!("{FIXTURE}.lst")),
    )
    .unwrap();
    let partner = task_of(&view, "Broken_")["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["folder"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .find(|s| !s.starts_with("Broken"));
    let resubmitted = ok(flowcam(dir, &["resubmit", &id, "-o", "out"]));
    assert!(
        resubmitted.contains(&format!("resubmitted tasks {task} of")),
        "{resubmitted}"
    );
    let view = collected(dir, &id);
    assert_eq!(view["rounds"], 2);
    assert_eq!(outcome(&view, "Broken_54.0143_-2.7770_04052023_1"), "ran");
    if let Some(partner) = partner {
        assert_eq!(outcome(&view, &partner), "complete", "not redone: {view:#}");
        assert_eq!(runs(dir, &partner), 1);
    }
    for task in view["tasks"].as_array().unwrap() {
        assert_eq!(task["state"], "completed", "{view:#}");
    }
    let nothing = ok(flowcam(dir, &["resubmit", &id, "-o", "out"]));
    assert!(nothing.contains("nothing to resubmit"), "{nothing}");
    let status = common::status_json(&dir.join("root"), &dir.join("out"));
    for session in status.as_array().unwrap() {
        assert_eq!(session["state"], "complete", "{session}");
    }
    // Everything complete: a cron submit has nothing to do.
    let again = ok(flowcam(dir, &[&["submit"][..], &common_args].concat()));
    assert!(again.contains("nothing to submit"), "{again}");
    ok(flowcam(dir, &["clean", "--submission", &id, "-o", "out"]));
    assert!(!dir.join("out/.submissions").join(&id).exists());
}

#[test]
fn a_queued_submission_shows_in_status_and_cancel_stops_it() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    root(dir);
    // Held back for two minutes: queued while the test looks.
    let submitted = ok(flowcam(
        dir,
        &[
            "submit",
            "-d",
            "root",
            "-o",
            "out",
            "--settle-seconds",
            "0",
            "--no-upload",
            "--sbatch-arg=--begin=now+120",
        ],
    ));
    let id = submission_id(&submitted);
    let status = common::status_json(&dir.join("root"), &dir.join("out"));
    for session in status.as_array().unwrap() {
        assert_eq!(session["state"], "queued", "{session}");
        assert!(session["reason"].as_str().unwrap().contains(&id));
    }
    let view = jobs(dir, &id);
    for task in view["tasks"].as_array().unwrap() {
        assert_eq!(task["state"], "pending", "{view:#}");
    }
    // Not removed while it is queued.
    let refused = flowcam(dir, &["clean", "--submission", &id, "-o", "out"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("cancel it first"),
        "{}",
        text(&refused)
    );

    let cancelled = ok(flowcam(dir, &["cancel", &id, "-o", "out"]));
    assert!(cancelled.starts_with("cancelled "), "{cancelled}");
    let view = jobs(dir, &id);
    for task in view["tasks"].as_array().unwrap() {
        assert_eq!(task["state"], "cancelled", "{view:#}");
    }
    let status = common::status_json(&dir.join("root"), &dir.join("out"));
    for session in status.as_array().unwrap() {
        assert_eq!(session["state"], "not_started", "{session}");
    }
    assert!(
        !dir.join("out/A_54.0143_-2.7770_04052023_1/manifest.csv")
            .exists()
    );
    // Cancelled sessions are submitted again by the next pass.
    let again = ok(flowcam(
        dir,
        &[
            "submit",
            "-d",
            "root",
            "-o",
            "out",
            "--settle-seconds",
            "0",
            "--no-upload",
            "--sbatch-arg=--begin=now+120",
        ],
    ));
    assert!(again.contains("4 sessions in 4 array tasks"), "{again}");
    ok(flowcam(
        dir,
        &["cancel", &submission_id(&again), "-o", "out"],
    ));
    ok(flowcam(dir, &["clean", "--submission", &id, "-o", "out"]));
}

#[test]
fn the_local_executor_runs_the_same_plan_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    root(dir);
    let output = flowcam(
        dir,
        &[
            "submit",
            "-d",
            "root",
            "-o",
            "out",
            "--settle-seconds",
            "0",
            "--no-upload",
            "--executor",
            "local",
            "--max-running",
            "2",
        ],
    );
    // The submit itself succeeds; the broken session's failure is in its task.
    let submitted = ok(output);
    let id = submission_id(&submitted);
    let view = jobs(dir, &id);
    assert_eq!(view["collected"], true, "{view:#}");
    assert_eq!(
        outcome(&view, "Broken_54.0143_-2.7770_04052023_1"),
        "failed"
    );
    assert_eq!(task_of(&view, "Broken_")["state"], "failed");
    assert_eq!(task_of(&view, "A_")["state"], "completed");
    for task in 0..4 {
        let log = ok(flowcam(
            dir,
            &[
                "log",
                "--job",
                &id,
                "--task",
                &task.to_string(),
                "-o",
                "out",
            ],
        ));
        assert!(
            log.starts_with(&format!("=== task {task} of submission {id}")),
            "{log}"
        );
    }
    let vignettes =
        common::vignette_files(&dir.join("out/A_54.0143_-2.7770_04052023_1/vignettes")).len();
    assert_eq!(vignettes, 102);
    let text_jobs = ok(flowcam(dir, &["jobs", &id, "-o", "out"]));
    assert!(text_jobs.contains("to redo: tasks"), "{text_jobs}");
}

/// Every file under `dir` but the run's own records (`.state`, run reports, the log, the
/// lock), by path relative to it.
fn outputs(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if [".state", "runs", "run-report.json", "pipeline.log", ".lock"]
                .contains(&name.as_str())
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

/// A session of 7 pages, 3 pages a task, runs as three shares of its pages (1-3, 4-6, 7-)
/// on the cluster, and the collect job finishes it: its vignettes, manifest, EcoTaxa export
/// and every other output equal a plain local run's byte for byte, and the finishing run
/// cut no page (the shares did every one).
#[test]
fn a_session_split_by_pages_equals_a_local_run_byte_for_byte() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let session = SyntheticSession {
        particles: 700,
        pages: 7,
        prefix: "Split".into(),
        ..SyntheticSession::default()
    }
    .write(&dir.join("root"))
    .unwrap();
    let name = session.file_name().unwrap().to_string_lossy().into_owned();
    let options = ["--settle-seconds", "0", "--no-upload", "--ecotaxa"];
    ok(flowcam(
        dir,
        &[
            &["-d", session.to_str().unwrap(), "-o", "plain"][..],
            &options,
        ]
        .concat(),
    ));
    let submitted = ok(flowcam(
        dir,
        &[
            &["submit", "-d", "root", "-o", "out"][..],
            &options,
            &[
                "--pages-per-task",
                "3",
                "--cores",
                "1",
                "--time",
                "00:10:00",
            ],
        ]
        .concat(),
    ));
    let id = submission_id(&submitted);
    let view = collected(dir, &id);
    let tasks = view["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3, "{view:#}");
    for (task, first) in tasks.iter().zip([0, 3, 6]) {
        assert_eq!(task["state"], "completed", "{view:#}");
        assert_eq!(task["sessions"][0]["pages"]["first"], first, "{view:#}");
        assert_eq!(task["sessions"][0]["outcome"]["state"], "ran", "{view:#}");
    }
    assert_eq!(view["finished"][0]["outcome"]["state"], "ran", "{view:#}");
    let plain = outputs(&dir.join("plain").join(&name));
    let split = outputs(&dir.join("out").join(&name));
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        split.keys().collect::<Vec<_>>()
    );
    assert!(plain.keys().filter(|p| p.starts_with("vignettes")).count() == 700);
    for (path, bytes) in &plain {
        assert!(&split[path] == bytes, "{} differs", path.display());
    }
    // The collect job's run found every page done by the shares.
    let report = last_report(dir, &name);
    let decollage = common::task(&report, "DecollageImages");
    assert_eq!(decollage["items"]["ran"], 0, "{report:#}");
    assert_eq!(decollage["items"]["skipped"], 7, "{report:#}");
    let status = common::status_json(&dir.join("root"), &dir.join("out"));
    assert!(status.to_string().contains("\"complete\""), "{status:#}");
    let text_jobs = ok(flowcam(dir, &["jobs", &id, "-o", "out"]));
    assert!(text_jobs.contains("pages 4-6"), "{text_jobs}");
    assert!(text_jobs.contains("finished"), "{text_jobs}");
}

/// A task killed by SLURM's time limit (one minute, the least SLURM takes; the kill comes
/// 60 to 90 s in) resumes on `resubmit`: the pages it finished before the kill, measured
/// by ExtractMetadata or cut by DecollageImages, are not done again. The session is large
/// enough that one core of this debug build needs about two and a half minutes for it.
#[test]
fn a_task_killed_by_its_time_limit_resumes_on_resubmit_without_redoing_pages() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pages = 300;
    let session = SyntheticSession {
        particles: 150_000,
        pages,
        prefix: "Long".into(),
        page_width: 1024,
        ..SyntheticSession::default()
    }
    .write(&dir.join("root"))
    .unwrap();
    let name = session.file_name().unwrap().to_string_lossy().into_owned();
    let submitted = ok(flowcam(
        dir,
        &[
            "submit",
            "-d",
            "root",
            "-o",
            "out",
            "--settle-seconds",
            "0",
            "--no-upload",
            "--cores",
            "1",
            "--time",
            "1",
        ],
    ));
    let id = submission_id(&submitted);
    let view = collected_within(dir, &id, Duration::from_secs(600));
    assert_eq!(view["tasks"][0]["state"], "timeout", "{view:#}");
    let state = dir.join("out").join(&name).join(".state");
    let done = |task: &str| {
        std::fs::read_dir(state.join(format!("{task}.items"))).map_or(0, |e| e.count())
    };
    let (measured, cut) = (done("ExtractMetadata"), done("DecollageImages"));
    let extract_complete = state.join("ExtractMetadata.stamp.json").exists();
    assert!(
        measured + cut > 0 && cut < pages,
        "{measured} pages measured and {cut} cut of {pages} before the time limit: the test \
         needs a kill mid-run"
    );
    let text_jobs = ok(flowcam(dir, &["jobs", &id, "-o", "out"]));
    assert!(text_jobs.contains("to redo: tasks 0"), "{text_jobs}");

    // Resubmitted with more time, it does only the pages left.
    let resubmitted = ok(flowcam(
        dir,
        &["resubmit", &id, "-o", "out", "--time", "00:30:00"],
    ));
    assert!(resubmitted.contains(&id), "{resubmitted}");
    let view = collected_within(dir, &id, Duration::from_secs(600));
    assert_eq!(view["tasks"][0]["state"], "completed", "{view:#}");
    assert_eq!(outcome(&view, &name), "ran", "{view:#}");
    let report = last_report(dir, &name);
    let decollage = common::task(&report, "DecollageImages");
    assert_eq!(decollage["items"]["skipped"], cut, "{report:#}");
    assert_eq!(decollage["items"]["ran"], pages - cut, "{report:#}");
    let extract = common::task(&report, "ExtractMetadata");
    if extract_complete {
        assert_eq!(extract["state"], "already_complete", "{report:#}");
    } else {
        assert_eq!(extract["items"]["skipped"], measured, "{report:#}");
        assert_eq!(extract["items"]["ran"], pages - measured, "{report:#}");
    }
    let vignettes = common::vignette_files(&dir.join("out").join(&name).join("vignettes")).len();
    assert_eq!(vignettes, 150_000);
}
