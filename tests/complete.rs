//! Complete means complete: outputs touched from outside, particles moved between pages,
//! planar pages, signals, kills and hostile files never leave the tool reporting complete
//! while an output is missing, wrong or partial, and the next plain run repairs each case.

mod common;

use common::*;
use flowcam_pipeline::synthetic::SyntheticSession;
use flowcam_pipeline::tasks::Session;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary, killing it (and failing the test) if it takes longer than `limit`: for
/// the cases that used to hang or to start threads without end.
fn run_bin_within(args: &[&str], limit: Duration) -> Output {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", text(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// `status --json` of one session.
fn status(input: &Path, out: &Path) -> serde_json::Value {
    common::status_json(input, out)[0].clone()
}

/// Every `.NAME.partial` under `dir`, at any depth (files, and the folders of pages being
/// written).
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().ends_with(".partial") {
                found.push(path);
            } else if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

/// The vignette files of a session output, by name, with their bytes.
fn vignette_bytes(session_out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = vignette_files(&session_out.join("vignettes"))
        .into_iter()
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn synthetic(dir: &Path, prefix: &str, particles: usize, pages: usize) -> PathBuf {
    SyntheticSession {
        particles,
        pages,
        prefix: prefix.into(),
        ..SyntheticSession::default()
    }
    .write(dir)
    .unwrap()
}

fn finished_markers(session_out: &Path) -> usize {
    fs::read_dir(session_out.join(".state/DecollageImages.items")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".done"))
            .count()
    })
}

/// Starts a run and waits until `markers` pages are done (and the run still going).
fn start_and_wait(args: &[&str], session_out: &Path, markers: usize) -> std::process::Child {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while finished_markers(session_out) < markers {
        assert!(Instant::now() < deadline, "no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished before the test could interrupt it: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

#[test]
fn deleted_emptied_and_truncated_vignettes_are_seen_by_status_and_repaired_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "touched", 400, 4);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let first = run_bin(&["-d", i, "-o", o]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let session_out = out.join("touched");
    let original = vignette_bytes(&session_out);
    assert_eq!(original.len(), 400);
    assert_eq!(status(&input, &out)["state"], "complete");

    // Page 2 holds particles 101..=200: delete one, empty one, truncate one.
    let vignette = |id: usize| {
        session_out.join(format!(
            "vignettes/touched_images_000002.tif/touched_{id}.tif"
        ))
    };
    fs::remove_file(vignette(101)).unwrap();
    fs::File::create(vignette(150)).unwrap();
    let truncated = fs::OpenOptions::new()
        .write(true)
        .open(vignette(200))
        .unwrap();
    truncated.set_len(20).unwrap();
    drop(truncated);

    let seen = status(&input, &out);
    assert_eq!(seen["state"], "stale", "{seen}");
    assert_eq!(seen["vignettes"], 397, "{seen}");
    let damaged = seen["damaged"].to_string();
    for (id, what) in [
        (101, "is missing"),
        (150, "changed size"),
        (200, "changed size"),
    ] {
        assert!(
            damaged.contains(&format!("touched_{id}.tif {what}")),
            "{id}: {damaged}"
        );
    }
    let decollage = seen["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "DecollageImages")
        .unwrap()
        .clone();
    assert!(
        decollage["reason"]
            .as_str()
            .unwrap()
            .contains("3 of 400 produced files are missing or changed"),
        "{decollage}"
    );

    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let report = json(&session_out.join("run-report.json"));
    let items = &task(&report, "DecollageImages")["items"];
    assert_eq!(
        (items["ran"].as_u64(), items["skipped"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(vignette_bytes(&session_out), original);
    assert_eq!(status(&input, &out)["state"], "complete");

    // All of them gone: every page is redone.
    fs::remove_dir_all(session_out.join("vignettes")).unwrap();
    assert_eq!(status(&input, &out)["vignettes"], 0);
    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(vignette_bytes(&session_out), original);
    assert_eq!(status(&input, &out)["vignettes"], 400);
}

#[test]
fn a_page_dropped_from_the_list_takes_its_folder_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "dropped", 200, 2);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let vignettes = out.join("dropped/vignettes");
    let (page1, page2) = (
        vignettes.join("dropped_images_000001.tif"),
        vignettes.join("dropped_images_000002.tif"),
    );
    assert_eq!(fs::read_dir(&page2).unwrap().count(), 100);
    let lst = input.join("dropped.lst");
    let list = fs::read_to_string(&lst).unwrap();
    let kept: Vec<&str> = list
        .lines()
        .filter(|l| !l.contains("dropped_images_000002.tif"))
        .collect();
    fs::write(&lst, kept.join("\n") + "\n").unwrap();
    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert!(!page2.exists(), "the dropped page's folder is gone");
    assert_eq!(fs::read_dir(&page1).unwrap().count(), 100);
    assert_eq!(vignette_files(&vignettes).len(), 100);
    let seen = status(&input, &out);
    assert_eq!(
        (seen["state"].as_str(), seen["vignettes"].as_u64()),
        (Some("complete"), Some(100)),
        "{seen}"
    );
}

#[test]
fn flat_vignettes_of_an_interrupted_move_to_page_folders_are_removed() {
    // A run of an earlier build wrote vignettes/<file>; the move to page folders was
    // killed after the pages' markers listed their folders and before the flat files were
    // removed: the task has no stamp, and the flat files are listed nowhere.
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "flat", 60, 2);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let vignettes = out.join("flat/vignettes");
    let mut flat = Vec::new();
    for path in vignette_files(&vignettes).iter().step_by(7) {
        let name = path.file_name().unwrap();
        fs::copy(path, vignettes.join(name)).unwrap();
        flat.push(vignettes.join(name));
    }
    fs::write(vignettes.join("notes.txt"), "the lab's own").unwrap();
    fs::remove_file(out.join("flat/.state/DecollageImages.stamp.json")).unwrap();
    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let report = json(&out.join("flat/run-report.json"));
    let items = &task(&report, "DecollageImages")["items"];
    assert_eq!(items["ran"], 0, "no page cut again: {items}");
    for path in &flat {
        assert!(!path.exists(), "{} left", path.display());
    }
    assert!(
        vignettes.join("notes.txt").is_file(),
        "not a vignette: kept"
    );
    assert_eq!(vignette_files(&vignettes).len(), 60);
    assert_eq!(status(&input, &out)["state"], "complete");
}

#[test]
fn a_page_folder_swapped_for_a_link_to_a_copy_is_cut_again() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "linkpage", 40, 2);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let page = out.join("linkpage/vignettes/linkpage_images_000002.tif");
    let copy = dir.path().join("copy");
    let copied = Command::new("cp")
        .args(["-a", page.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    fs::remove_dir_all(&page).unwrap();
    std::os::unix::fs::symlink(&copy, &page).unwrap();
    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let report = json(&out.join("linkpage/run-report.json"));
    let items = &task(&report, "DecollageImages")["items"];
    assert_eq!(
        (items["ran"].as_u64(), items["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        fs::symlink_metadata(&page).unwrap().is_dir(),
        "a real folder again"
    );
    assert_eq!(
        fs::read_dir(&copy).unwrap().count(),
        20,
        "the copy is untouched"
    );
}

#[test]
fn a_vignette_touched_from_outside_is_stale_even_with_the_same_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "touch", 50, 1);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let path = out.join("touch/vignettes/touch_images_000001.tif/touch_7.tif");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let seen = status(&input, &out);
    assert_eq!(seen["state"], "stale", "{seen}");
    assert!(
        seen["damaged"][0]
            .as_str()
            .unwrap()
            .contains("touch_7.tif was modified"),
        "{seen}"
    );
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    assert_ne!(fs::read(&path).unwrap(), bytes, "the rerun rewrote it");
    assert_eq!(status(&input, &out)["state"], "complete");
}

/// Moves particle 1 (the list's first row, so its new page is planned first) from page 1 to
/// page 2, at the same place (page 2 has a particle there too, so the crop is in bounds).
fn move_first_particle_to_page_two(input: &Path, name: &str) {
    let lst = input.join(format!("{name}.lst"));
    let text = fs::read_to_string(&lst).unwrap();
    let page1 = format!("{name}_images_000001.tif");
    let page2 = format!("{name}_images_000002.tif");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let first_row = lines.iter().position(|l| l.starts_with("1|")).unwrap();
    assert!(lines[first_row].contains(&page1));
    lines[first_row] = lines[first_row].replace(&page1, &page2);
    fs::write(&lst, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_particle_moved_to_another_page_keeps_its_vignette_with_one_worker_and_with_two() {
    for workers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let input = synthetic(dir.path(), "moved", 200, 2);
        let out = dir.path().join("out");
        let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
        let first = run_bin(&["-d", i, "-o", o, "-j", workers]);
        assert_eq!(first.status.code(), Some(0), "{}", text(&first));
        move_first_particle_to_page_two(&input, "moved");
        let rerun = run_bin(&["-d", i, "-o", o, "-j", workers]);
        assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
        let session_out = out.join("moved");
        let vignette = session_out.join("vignettes/moved_images_000002.tif/moved_1.tif");
        assert!(
            !session_out
                .join("vignettes/moved_images_000001.tif/moved_1.tif")
                .exists(),
            "-j {workers}: the moved particle's old vignette is gone"
        );
        assert!(
            vignette.is_file(),
            "-j {workers}: the moved particle lost its vignette"
        );
        let row = csv_rows(&session_out.join("manifest.csv"))
            .into_iter()
            .find(|r| r["particle_id"] == "1")
            .unwrap();
        assert_eq!(row["collage"], "moved_images_000002.tif");
        assert_eq!(vignette_bytes(&session_out).len(), 200);
        assert_eq!(status(&input, &out)["state"], "complete", "-j {workers}");
        // And a third run has nothing to repair.
        let third = run_bin(&["-d", i, "-o", o, "-j", workers]);
        assert!(
            String::from_utf8_lossy(&third.stdout).contains("4 complete ones"),
            "{}",
            text(&third)
        );
    }
}

/// An uncompressed TIFF with one strip per plane (PlanarConfiguration=2) from interleaved
/// RGB pixels; `short` drops bytes from the last strip.
fn planar_tiff(width: u32, height: u32, rgb: &[u8], short: usize) -> Vec<u8> {
    let plane = (width * height) as usize;
    let mut planes = vec![0u8; plane * 3];
    for i in 0..plane {
        for c in 0..3 {
            planes[c * plane + i] = rgb[i * 3 + c];
        }
    }
    let entries: u16 = 10;
    let ifd = 8u32;
    let extra = ifd + 2 + entries as u32 * 12 + 4; // BitsPerSample, offsets, counts
    let bits_at = extra;
    let offsets_at = extra + 6;
    let counts_at = offsets_at + 12;
    let data_at = counts_at + 12;
    let mut out = Vec::new();
    out.extend_from_slice(b"II*\0");
    out.extend_from_slice(&ifd.to_le_bytes());
    out.extend_from_slice(&entries.to_le_bytes());
    let mut entry = |tag: u16, ty: u16, count: u32, value: u32| {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    };
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    entry(256, LONG, 1, width);
    entry(257, LONG, 1, height);
    entry(258, SHORT, 3, bits_at);
    entry(259, SHORT, 1, 1); // no compression
    entry(262, SHORT, 1, 2); // RGB
    entry(273, LONG, 3, offsets_at);
    entry(277, SHORT, 1, 3);
    entry(278, LONG, 1, height);
    entry(279, LONG, 3, counts_at);
    entry(284, SHORT, 1, 2); // planar
    out.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..3 {
        out.extend_from_slice(&8u16.to_le_bytes());
    }
    for c in 0..3u32 {
        out.extend_from_slice(&(data_at + c * plane as u32).to_le_bytes());
    }
    for _ in 0..3 {
        out.extend_from_slice(&(plane as u32).to_le_bytes());
    }
    out.extend_from_slice(&planes[..planes.len() - short]);
    out
}

#[test]
fn planar_pages_give_the_same_pixels_as_interleaved_ones_and_a_short_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "planar", 60, 1);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let chunky = vignette_bytes(&out.join("planar"));

    // The same page, planar. Give it colour so that a plane mix-up cannot pass unseen.
    let page = input.join("planar_images_000001.tif");
    let (w, h, _, mut rgb) = decode(&page);
    for (n, px) in rgb.chunks_mut(3).enumerate() {
        px[1] = px[1].wrapping_add((n % 7) as u8);
        px[2] = px[2].wrapping_sub((n % 5) as u8);
    }
    fs::write(&page, planar_tiff(w, h, &rgb, 0)).unwrap();
    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let manifest = csv_rows(&out.join("planar/manifest.csv"));
    let rows = metadata_rows(&Session::new(&input, &out, None).unwrap());
    assert_eq!(manifest.len(), 60);
    for entry in &manifest {
        let row = &rows[&entry["particle_id"]];
        let n = |k: &str| row[k].parse::<u32>().unwrap();
        let (x, y, cw, ch) = (n("image_x"), n("image_y"), n("image_w"), n("image_h"));
        let (vw, vh, channels, pixels) = decode(
            &out.join("planar/vignettes")
                .join(&entry["collage"])
                .join(&entry["file"]),
        );
        assert_eq!((vw, vh, channels), (cw, ch, 3));
        let mut expected = Vec::new();
        for row in y..y + ch {
            let start = ((row * w + x) * 3) as usize;
            expected.extend_from_slice(&rgb[start..start + (cw * 3) as usize]);
        }
        assert_eq!(pixels, expected, "particle {}", entry["particle_id"]);
    }
    assert_ne!(vignette_bytes(&out.join("planar")), chunky);

    // A planar page whose last plane is cut short: an error naming the page, no panic, and
    // the earlier vignettes are kept.
    fs::write(&page, planar_tiff(w, h, &rgb, 1000)).unwrap();
    let broken = run_bin(&["-d", i, "-o", o]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    let said = text(&broken);
    assert!(said.contains("planar_images_000001.tif"), "{said}");
    assert!(!said.contains("panic"), "{said}");
}

#[test]
fn a_killed_force_rerun_leaves_no_temporary_once_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "forced", 12_000, 12);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let session_out = out.join("forced");
    let markers = session_out.join(".state/DecollageImages.items");
    let marker_time = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = fs::read_dir(&markers)
        .unwrap()
        .map(|e| marker_time(&e.unwrap().path()))
        .collect();

    let mut child = bin()
        .args(["-d", i, "-o", o, "-j", "1", "--force"])
        .spawn()
        .unwrap();
    // Kill it while it is writing a page's vignettes: some markers rewritten, not all.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rewritten = fs::read_dir(&markers)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".done"))
            .filter(|e| !before.contains(&marker_time(&e.path())))
            .count();
        // Each page writes its vignettes into a hidden folder of its own.
        if rewritten >= 1 && !partials(&session_out.join("vignettes")).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no progress");
        assert!(child.try_wait().unwrap().is_none(), "finished too soon");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !partials(&session_out).is_empty(),
        "killed with temporaries"
    );
    let seen = status(&input, &out);
    assert_ne!(seen["state"], "complete");
    assert!(
        seen["temporaries"].as_u64().unwrap() > 0,
        "status tells of them: {seen}"
    );

    let rerun = run_bin(&["-d", i, "-o", o]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(partials(&session_out), Vec::<PathBuf>::new());
    let seen = status(&input, &out);
    assert_eq!(seen["state"], "complete", "{seen}");
    assert_eq!(seen["vignettes"], 12_000);
}

#[test]
fn sigterm_and_sigint_finish_in_flight_record_interrupted_and_exit_143_and_130() {
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let dir = tempfile::tempdir().unwrap();
        let input = synthetic(dir.path(), "signal", 16_000, 16);
        let out = dir.path().join("out");
        let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
        let session_out = out.join("signal");
        let child = start_and_wait(&["-d", i, "-o", o, "-j", "1"], &session_out, 2);
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(code),
            "SIG{signal}: {}",
            text(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr)
                .contains(&format!("interrupted by SIG{signal}")),
            "{}",
            text(&output)
        );
        let report = json(&session_out.join("run-report.json"));
        assert_eq!(report["interrupted"], true, "{report}");
        let decollage = task(&report, "DecollageImages");
        assert_eq!(decollage["state"], "interrupted", "{decollage}");
        let done = decollage["items"]["ran"].as_u64().unwrap();
        assert!((2..16).contains(&done), "{decollage}");
        assert_eq!(task(&report, "FlowCamPipeline")["state"], "interrupted");
        // Kept in the history and the log, and shown by status.
        let runs = fs::read_dir(session_out.join("runs")).unwrap().count();
        assert_eq!(runs, 1);
        let log = fs::read_to_string(session_out.join("pipeline.log")).unwrap();
        assert!(log.contains("=== end: INTERRUPTED"), "{log}");
        assert_eq!(status(&input, &out)["state"], "interrupted");
        // The pages that finished are whole and marked; nothing partial stays behind.
        assert_eq!(finished_markers(&session_out) as u64, done);
        assert!(partials(&session_out).is_empty());

        let rerun = run_bin(&["-d", i, "-o", o]);
        assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
        let report = json(&session_out.join("run-report.json"));
        let items = &task(&report, "DecollageImages")["items"];
        assert_eq!(items["skipped"].as_u64(), Some(done));
        assert_eq!(status(&input, &out)["state"], "complete");
    }
}

#[test]
fn a_fifo_page_is_an_error_not_a_hang_and_a_link_out_of_the_session_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "hostile", 40, 2);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let page2 = input.join("hostile_images_000002.tif");
    fs::remove_file(&page2).unwrap();
    let made = Command::new("mkfifo").arg(&page2).status().unwrap();
    assert!(made.success());
    let output = run_bin_within(&["-d", i, "-o", o], Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert!(
        said.contains("hostile_images_000002.tif is not a regular file (it is a FIFO)"),
        "{said}"
    );
    // Page 1 was cut all the same.
    assert_eq!(finished_markers(&out.join("hostile")), 1);

    // A page that links out of the session folder is refused too, naming both.
    fs::remove_file(&page2).unwrap();
    let elsewhere = dir.path().join("elsewhere.tif");
    fs::copy(input.join("hostile_images_000001.tif"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &page2).unwrap();
    let output = run_bin(&["-d", i, "-o", o]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("outside the session folder"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_symlink_planted_at_a_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "planted", 20, 1);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let vignettes = out.join("planted/vignettes");
    fs::create_dir_all(&vignettes).unwrap();
    // A link where the page's hidden folder goes, and one where the page's folder goes,
    // each to a folder holding something precious.
    let victims = [dir.path().join("victim-1"), dir.path().join("victim-2")];
    for victim in &victims {
        fs::create_dir(victim).unwrap();
        fs::write(victim.join("planted_5.tif"), "precious").unwrap();
    }
    let page = vignettes.join("planted_images_000001.tif");
    let planted = vignettes.join(".planted_images_000001.tif.partial");
    std::os::unix::fs::symlink(&victims[0], &planted).unwrap();
    std::os::unix::fs::symlink(&victims[1], &page).unwrap();

    let output = run_bin(&["-d", i, "-o", o]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for victim in &victims {
        assert_eq!(fs::read_dir(victim).unwrap().count(), 1, "nothing added");
        assert_eq!(
            fs::read_to_string(victim.join("planted_5.tif")).unwrap(),
            "precious"
        );
    }
    assert!(
        fs::symlink_metadata(&page).unwrap().is_dir(),
        "a real folder"
    );
    let vignette = page.join("planted_5.tif");
    let kind = fs::symlink_metadata(&vignette).unwrap().file_type();
    assert!(kind.is_file(), "the vignette is a regular file, not a link");
    decode(&vignette);
    assert!(
        fs::symlink_metadata(&planted).is_err(),
        "the planted link is gone"
    );
}

#[test]
fn out_of_range_workers_are_a_clear_usage_error() {
    for workers in ["100000", "257", "-1"] {
        let output = run_bin_within(
            &["-d", "/nonexistent", &format!("--workers={workers}")],
            Duration::from_secs(30),
        );
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("--workers"), "{said}");
    }
    let output = run_bin(&["-d", "/nonexistent", "--memory-limit", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}

#[test]
fn the_largest_worker_count_is_accepted_and_gives_the_same_vignettes() {
    // 256 workers on a 2-page session (at most 2 item threads start: see the engine's
    // `workers` tests) give the vignettes of a one-worker run.
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "threads", 100, 2);
    let (i, wide, narrow) = (
        input.to_str().unwrap().to_string(),
        dir.path().join("wide"),
        dir.path().join("narrow"),
    );
    let output = run_bin(&["-d", &i, "-o", wide.to_str().unwrap(), "-j", "256"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = run_bin(&["-d", &i, "-o", narrow.to_str().unwrap(), "-j", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        vignette_bytes(&wide.join("threads")),
        vignette_bytes(&narrow.join("threads"))
    );
}

#[test]
fn a_folder_with_pages_but_no_lst_given_directly_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "nolist", 10, 1);
    fs::remove_file(input.join("nolist.lst")).unwrap();
    let output = run_bin(&["-d", input.to_str().unwrap(), "-o", "/tmp/unused-out"]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(text(&output).contains("no .lst"), "{}", text(&output));
    // An empty root is still a normal, quiet cron pass.
    let empty = dir.path().join("empty-root");
    fs::create_dir(&empty).unwrap();
    let output = run_bin(&["-d", empty.to_str().unwrap(), "-o", "/tmp/unused-out"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn a_session_reached_through_a_symlink_keeps_the_name_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let raw = synthetic(dir.path(), "raw123", 10, 1);
    let link = dir.path().join("Tank_54.0143_-2.7770_04052023_1");
    std::os::unix::fs::symlink(&raw, &link).unwrap();
    let out = dir.path().join("out");
    let output = run_bin(&["-d", link.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let session_out = out.join("Tank_54.0143_-2.7770_04052023_1");
    assert!(
        session_out
            .join("vignettes/raw123_images_000001.tif/Tank_54.0143_-2.7770_04052023_1_1.tif")
            .is_file()
    );
    assert!(!out.join("raw123").exists());
}

#[test]
fn a_complete_session_on_read_only_outputs_reports_complete_without_writing() {
    if !rustix_is_root() {
        eprintln!("skipped: needs root to mount a read-only view of the outputs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "archived", 30, 1);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    // The same folder, made read-only in place (as an archive or a write-protected disk).
    let mount = |args: &[&str]| Command::new("mount").args(args).status().unwrap().success();
    assert!(mount(&["--bind", o, o]));
    let remounted = mount(&["-o", "remount,bind,ro", o]);
    let result = std::panic::catch_unwind(|| {
        assert!(remounted, "cannot remount read-only");
        assert!(
            fs::write(out.join("probe"), "x").is_err(),
            "the outputs are read-only"
        );
        let output = run_bin(&["-d", i, "-o", o]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("complete"),
            "{}",
            text(&output)
        );
        // Work to do on read-only outputs: a clear setup error, not a false "complete".
        let output = run_bin(&["-d", i, "-o", o, "--force"]);
        assert_eq!(output.status.code(), Some(4), "{}", text(&output));
        assert!(
            text(&output).contains("Read-only file system"),
            "{}",
            text(&output)
        );
    });
    Command::new("umount").arg(o).status().unwrap();
    result.unwrap();
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `cp -a`: a copy of an output folder, times kept.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_copied_output_folder_vouches_for_its_own_files_and_never_touches_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "copied", 300, 3);
    let (original, copy) = (dir.path().join("original"), dir.path().join("copy"));
    let i = input.to_str().unwrap();
    let output = run_bin(&["-d", i, "-o", original.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let reference = vignette_bytes(&original.join("copied"));
    copy_tree(&original, &copy);
    let c = copy.to_str().unwrap();

    // The copy's stamps name the original's files, so its first run redoes the tables, but
    // its markers vouch for its own vignettes: no page is cut again.
    let output = run_bin(&["-d", i, "-o", c]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = json(&copy.join("copied/run-report.json"));
    let items = &task(&report, "DecollageImages")["items"];
    assert_eq!(
        (items["ran"].as_u64(), items["skipped"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(status(&input, &copy)["state"], "complete");
    // With its vignettes gone it says so, and is repaired.
    for path in vignette_files(&copy.join("copied/vignettes")) {
        fs::remove_file(path).unwrap();
    }
    let seen = status(&input, &copy);
    assert_eq!(
        (seen["state"].as_str(), seen["vignettes"].as_u64()),
        (Some("stale"), Some(0))
    );
    let output = run_bin(&["-d", i, "-o", c]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(vignette_bytes(&copy.join("copied")), reference);

    // A forced rerun, and one where a particle's id changes (its old vignette is an orphan
    // of the copy), touch nothing in the original.
    let output = run_bin(&["-d", i, "-o", c, "--force"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lst = input.join("copied.lst");
    let text_before = fs::read_to_string(&lst).unwrap();
    let edited: Vec<String> = text_before
        .lines()
        .map(|l| match l.strip_prefix("1|") {
            Some(rest) => format!("9001|{rest}"),
            None => l.to_string(),
        })
        .collect();
    fs::write(&lst, edited.join("\n") + "\n").unwrap();
    let output = run_bin(&["-d", i, "-o", c]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let copied = copy.join("copied/vignettes");
    assert!(
        find_vignette(&copied, "copied_1.tif").is_none(),
        "the copy's orphan goes"
    );
    assert!(find_vignette(&copied, "copied_9001.tif").is_some());
    assert_eq!(
        vignette_bytes(&original.join("copied")),
        reference,
        "the original is untouched"
    );
}

#[test]
fn an_emptied_manifest_or_metadata_table_is_stale_and_the_next_run_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "tables", 50, 1);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let session_out = out.join("tables");
    for table in ["manifest.csv", "metadata.csv"] {
        let path = session_out.join(table);
        let content = fs::read(&path).unwrap();
        fs::File::create(&path).unwrap();
        let seen = status(&input, &out);
        assert_eq!(seen["state"], "stale", "{table}: {seen}");
        assert!(
            seen.to_string().contains("changed since it was written"),
            "{seen}"
        );
        let output = run_bin(&["-d", i, "-o", o]);
        assert_eq!(output.status.code(), Some(0), "{table}: {}", text(&output));
        assert_eq!(fs::read(&path).unwrap(), content, "{table} rewritten");
        assert_eq!(status(&input, &out)["state"], "complete");
    }
}

#[test]
fn a_vignettes_folder_that_links_elsewhere_is_refused_and_nothing_is_written_there() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "linked", 20, 1);
    let out = dir.path().join("out");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(out.join("linked")).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("linked/vignettes")).unwrap();
    let output = run_bin(&["-d", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("is a symbolic link"),
        "{}",
        text(&output)
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_vignette_swapped_for_a_link_to_a_lookalike_is_noticed_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let input = synthetic(dir.path(), "swapped", 20, 1);
    let out = dir.path().join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    let vignette = out.join("swapped/vignettes/swapped_images_000001.tif/swapped_3.tif");
    let lookalike = dir.path().join("lookalike.tif");
    let mut bytes = fs::read(&vignette).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&lookalike, &bytes).unwrap();
    let touched = Command::new("touch")
        .args([
            "-r",
            vignette.to_str().unwrap(),
            lookalike.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(touched.success());
    fs::remove_file(&vignette).unwrap();
    std::os::unix::fs::symlink(&lookalike, &vignette).unwrap();
    let seen = status(&input, &out);
    assert_eq!(seen["state"], "stale", "{seen}");
    assert!(
        seen["damaged"][0]
            .as_str()
            .unwrap()
            .contains("no longer a regular file"),
        "{seen}"
    );
    assert_eq!(run_bin(&["-d", i, "-o", o]).status.code(), Some(0));
    assert!(fs::symlink_metadata(&vignette).unwrap().is_file());
    assert_eq!(
        fs::read(&lookalike).unwrap(),
        bytes,
        "the link's target is left alone"
    );
}

#[test]
fn a_fifo_list_under_a_root_is_a_named_failure_not_a_silent_pass() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let input = synthetic(&root, "fifolist", 10, 1);
    let lst = input.join("fifolist.lst");
    fs::remove_file(&lst).unwrap();
    assert!(Command::new("mkfifo").arg(&lst).status().unwrap().success());
    let out = dir.path().join("out");
    let output = run_bin_within(
        &[
            "-d",
            root.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--settle-seconds",
            "0",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("FAILED    fifolist"), "{said}");
    assert!(said.contains("not a regular file (it is a FIFO)"), "{said}");
}

#[test]
fn a_page_whose_header_claims_a_huge_size_is_refused_before_anything_is_allocated() {
    // Found by the fuzz harness: a forged ImageWidth made the decode allocate (and zero)
    // hundreds of gigabytes, and the process abort.
    let dir = tempfile::tempdir().unwrap();
    let mut page = planar_tiff(4, 4, &[7u8; 48], 0);
    page[18..22].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // ImageWidth's value
    let path = dir.path().join("forged.tif");
    fs::write(&path, &page).unwrap();
    let error = flowcam_pipeline::flowcam::Collage::read(fs::File::open(&path).unwrap(), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("2147483647x4 page"), "{error}");
    assert!(error.contains("over the"), "{error}");
}
