//! The built binary, as cron and people run it: exit codes, reruns, kills, locks, cleaning.

mod common;

use common::*;
use flowcam_pipeline::engine::WorkspaceLock;
use flowcam_pipeline::synthetic::SyntheticSession;
use std::path::Path;
use std::time::{Duration, Instant};

fn run_report(out: &Path, experiment: &str) -> serde_json::Value {
    let path = out.join(experiment).join("run-report.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn end_to_end_on_the_fixture_then_a_rerun_that_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = fixture_dir();
    let args = [
        "--directory",
        input.to_str().unwrap(),
        "--output-directory",
        out.to_str().unwrap(),
        "--no-upload",
    ];
    let first = run_bin(&args);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("4 ran successfully"), "{}", text(&first));
    let session_out = out.join(FIXTURE);
    let vignettes = common::vignette_files(&session_out.join("vignettes"));
    assert_eq!(vignettes.len(), 102);
    let manifest = std::fs::read_to_string(session_out.join("manifest.csv")).unwrap();
    assert_eq!(manifest.lines().count(), 103);
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = vignettes.iter().map(|p| mtime(p)).collect();

    let second = run_bin(&args);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("4 complete ones"), "{}", text(&second));
    assert!(!stdout.contains("ran successfully"), "{}", text(&second));
    let after: Vec<_> = vignettes.iter().map(|p| mtime(p)).collect();
    assert_eq!(before, after, "a no-op rerun rewrites nothing");
    let report = run_report(&out, FIXTURE);
    assert_eq!(
        task(&report, "DecollageImages")["state"],
        "already_complete"
    );

    // status agrees, and notices a changed input.
    let status = run_bin(&[
        "status",
        "--directory",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(shown.matches(" complete").count(), 4, "{}", text(&status));
}

#[test]
fn status_names_the_changed_input_and_the_rerun_redoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = copy_fixture(dir.path(), FIXTURE);
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let first = run_bin(&["-d", i, "-o", o]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));

    let lst = input.join(format!("{FIXTURE}.lst"));
    let mut content = std::fs::read(&lst).unwrap();
    content.extend_from_slice(b"\n\n");
    std::fs::write(&lst, content).unwrap();
    let status = run_bin(&["status", "-d", i, "-o", o]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("ReadMetadata     stale: input") && shown.contains(".lst changed"),
        "{shown}"
    );
    assert!(
        shown.contains("DecollageImages  stale: requirement ReadMetadata"),
        "{shown}"
    );

    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let report = run_report(&out, FIXTURE);
    assert_eq!(task(&report, "ReadMetadata")["state"], "ran");
    // The rows did not change, so the page is not cut again.
    let decollage = task(&report, "DecollageImages");
    assert_eq!(decollage["items"]["skipped"], 1, "{decollage}");
    assert_eq!(decollage["items"]["ran"], 0, "{decollage}");
}

#[test]
fn a_killed_run_resumes_with_only_the_unfinished_collages() {
    let dir = tempfile::tempdir().unwrap();
    let synthetic = SyntheticSession {
        particles: 24_000,
        pages: 24,
        prefix: "big".into(),
        ..SyntheticSession::default()
    };
    let input = synthetic.write(dir.path()).unwrap();
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let markers = out.join("big/.state/DecollageImages.items");

    let mut child = bin().args(["-d", i, "-o", o, "-j", "1"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = std::fs::read_dir(&markers).map_or(0, |d| {
            d.filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".done")
            })
            .count()
        });
        if done >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Finished markers only: the kill may land while a marker is still a temporary.
    let done_before = std::fs::read_dir(&markers)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".done")
        })
        .count();
    assert!(done_before < 24, "killed too late to test resume");

    // Nothing under a final name is half written: every vignette decodes.
    let session_out = out.join("big");
    assert!(!session_out.join("manifest.csv").exists());
    assert!(
        !session_out
            .join(".state/DecollageImages.stamp.json")
            .exists()
    );
    for path in common::vignette_files(&session_out.join("vignettes")) {
        decode(&path);
    }

    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let report = run_report(&out, "big");
    let decollage = task(&report, "DecollageImages");
    let skipped = decollage["items"]["skipped"].as_u64().unwrap();
    let ran = decollage["items"]["ran"].as_u64().unwrap();
    assert!(skipped >= done_before as u64, "{decollage}");
    assert_eq!(skipped + ran, 24);
    let manifest = std::fs::read_to_string(session_out.join("manifest.csv")).unwrap();
    assert_eq!(manifest.lines().count(), 24_001);
    let leftovers = std::fs::read_dir(session_out.join("vignettes"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .count();
    assert_eq!(
        leftovers, 0,
        "the rerun replaced the killed run's temporaries"
    );
}

#[test]
fn a_second_run_on_a_locked_session_names_the_holder_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let lock = WorkspaceLock::acquire(&out.join(FIXTURE)).unwrap();
    let input = fixture_dir();
    let output = run_bin(&["-d", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(!out.join(FIXTURE).join("vignettes").exists());
    drop(lock);
    let output = run_bin(&["-d", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn setup_errors_exit_4_and_task_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let missing = run_bin(&["-d", "/nonexistent/session", "-o", o]);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/session"));

    let bad_name = copy_fixture(dir.path(), "S_95.0_1.0_04052023");
    let output = run_bin(&["-d", bad_name.to_str().unwrap(), "-o", o]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("latitude 95.0"));

    let broken = copy_fixture(dir.path(), "broken");
    std::fs::remove_file(broken.join(format!("{FIXTURE}_images_000009.tif"))).unwrap();
    let output = run_bin(&["-d", broken.to_str().unwrap(), "-o", o]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(stdout.contains("_images_000009.tif"), "{stdout}");

    let usage = run_bin(&["--workers", "many"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn clean_removes_the_sessions_outputs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (i, o) = (fixture_dir(), out.to_str().unwrap().to_string());
    let i = i.to_str().unwrap();
    assert_eq!(run_bin(&["-d", i, "-o", &o]).status.code(), Some(0));
    let mine = out.join(FIXTURE).join("notes-of-mine.txt");
    std::fs::write(&mine, "keep me").unwrap();
    let clean = run_bin(&["clean", "-d", i, "-o", &o]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    let left: Vec<String> = std::fs::read_dir(out.join(FIXTURE))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["notes-of-mine.txt".to_string()]);
    // And the next run starts from scratch.
    let rerun = run_bin(&["-d", i, "-o", &o]);
    assert!(String::from_utf8_lossy(&rerun.stdout).contains("4 ran successfully"));
}

#[test]
fn the_whole_real_session_gives_8976_vignettes() {
    let Some(input) = shared_session() else {
        eprintln!("skipped: ../shared/fixtures/flowcam/{FIXTURE} is not on this machine");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run_bin(&["-d", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let session = session(&input, &out);
    let files = vignettes(&session);
    assert_eq!(files.len(), 8976);
    let manifest = manifest(&session);
    assert_eq!(manifest.len(), 8976);
    let collages: std::collections::BTreeSet<_> =
        manifest.iter().map(|m| m["collage"].clone()).collect();
    assert_eq!(collages.len(), 9);

    // Spot-check pixels on every page against an independent crop.
    let rows = metadata_rows(&session);
    for collage in &collages {
        let (cw, _, channels, page) = decode(&input.join(collage));
        for entry in manifest
            .iter()
            .filter(|m| &m["collage"] == collage)
            .step_by(97)
        {
            let row = &rows[&entry["particle_id"]];
            let n = |k: &str| row[k].parse::<usize>().unwrap();
            let (x, y, w, h) = (n("image_x"), n("image_y"), n("image_w"), n("image_h"));
            let (_, _, _, pixels) = decode(
                &session
                    .vignettes_dir()
                    .join(&entry["collage"])
                    .join(&entry["file"]),
            );
            for dy in 0..h {
                let start = ((y + dy) * cw as usize + x) * channels;
                assert_eq!(
                    &pixels[dy * w * channels..(dy + 1) * w * channels],
                    &page[start..start + w * channels],
                    "{} row {dy}",
                    entry["file"]
                );
            }
        }
    }
}
