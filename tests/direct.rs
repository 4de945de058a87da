//! `--no-local-vignettes`: vignettes cut and sent to a real Garage S3 server on 127.0.0.1
//! from memory, never written locally, with the guarantees of the local mode (the same
//! objects, per-page resume after kill -9, the ledger, `--verify-remote`).

mod common;

use common::garage::Garage;
use common::workplace::{POSITIONED, Workplace, unique_prefix};
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Every file under `folder` whose name ends in `.tif`, at any depth.
fn tiffs_under(folder: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".tif") {
                found.push(path);
            }
        }
    }
    found
}

/// The "N vignettes sent from memory, M already at the destination" note, as (N, M).
fn sent_and_unchanged(decollage: &serde_json::Value) -> (u64, u64) {
    let note = decollage["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .find(|n| n.contains("sent from memory"))
        .unwrap_or_else(|| panic!("no sending note in {decollage}"));
    let numbers: Vec<u64> = note
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Runs the session into `local` the usual way, then into `direct` with
/// `--no-local-vignettes`, each with `extra` and to a key prefix of its own; both must
/// succeed. Returns the two prefixes and the direct run's arguments.
fn local_then_direct(
    work: &Workplace,
    garage: &Garage,
    name: &str,
    extra: &[&str],
) -> (String, String, Vec<String>) {
    let (local, direct) = (
        unique_prefix(&format!("{name}-local")),
        unique_prefix(&format!("{name}-direct")),
    );
    let with = |prefix: &str, more: &[&str]| -> Vec<String> {
        ["--s3-bucket", garage.bucket(), "--s3-prefix", prefix]
            .iter()
            .chain(extra)
            .chain(more)
            .map(|a| a.to_string())
            .collect()
    };
    for (out, args) in [
        ("local", with(&local, &[])),
        ("direct", with(&direct, &["--no-local-vignettes"])),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        work.succeed(out, &args);
    }
    let args = with(&direct, &["--no-local-vignettes"]);
    (local, direct, args)
}

#[test]
fn the_objects_are_those_of_the_local_mode_and_no_vignette_touches_the_disk() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, POSITIONED);
    let (local, direct, args) = local_then_direct(&work, &garage, "objects", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let out = work.session_out("direct");
    assert!(!out.join("vignettes").exists(), "no vignettes folder");
    assert_eq!(tiffs_under(&work.out("direct")), Vec::<PathBuf>::new());
    assert_eq!(
        sent_and_unchanged(&work.task("direct", "DecollageImages")),
        (102, 0)
    );

    // The same keys, bytes and metadata; the tables too, manifest included.
    let strip = |listing: HashMap<String, (u64, String)>, prefix: &str| {
        listing
            .into_iter()
            .map(|(key, v)| (key.strip_prefix(prefix).unwrap().to_string(), v))
            .collect::<HashMap<_, _>>()
    };
    let local_prefix = format!("{local}/{POSITIONED}/");
    let direct_prefix = format!("{direct}/{POSITIONED}/");
    let from_local = strip(garage.list(garage.bucket(), &local_prefix), &local_prefix);
    let from_direct = strip(garage.list(garage.bucket(), &direct_prefix), &direct_prefix);
    assert_eq!(from_local.len(), 102 + 4);
    assert_eq!(from_local, from_direct);
    for name in from_local.keys() {
        let (local_type, local_meta) =
            garage.head(garage.bucket(), &format!("{local_prefix}{name}"));
        let (direct_type, direct_meta) =
            garage.head(garage.bucket(), &format!("{direct_prefix}{name}"));
        assert_eq!(local_type, direct_type, "{name}");
        assert_eq!(local_meta, direct_meta, "{name}");
    }
    assert_eq!(
        std::fs::read(work.session_out("local").join("manifest.csv")).unwrap(),
        std::fs::read(out.join("manifest.csv")).unwrap()
    );
    let ledger = work.ledger("direct");
    assert_eq!(ledger.len(), 106);

    // Nothing changed: complete, nothing contacted or sent.
    work.succeed("direct", &args);
    assert_eq!(
        work.task("direct", "DecollageImages")["state"],
        "already_complete"
    );
    assert_eq!(
        work.task("direct", "UploadToS3")["state"],
        "already_complete"
    );
}

#[test]
fn a_run_killed_mid_page_resumes_and_sends_only_what_the_ledger_lacks() {
    let garage = Garage::shared();
    let work = Workplace::with_synthetic(&garage, 3000, 3, "direct-killed");
    let prefix = unique_prefix("direct-killed");
    let args = [
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        &prefix,
        "--no-local-vignettes",
        "--upload-concurrency",
        "2",
        "-j",
        "1",
    ];
    let mut child: Child = work
        .command("out", &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while work.ledger("out").len() < 100 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(child.try_wait().unwrap().is_none(), "ended too soon");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let key_prefix = format!("{prefix}/{}/", work.experiment);
    let confirmed = work.ledger("out");
    assert!(confirmed.len() < 3000, "killed too late");
    let remote = garage.list(garage.bucket(), &key_prefix);
    for (key, md5) in &confirmed {
        assert_eq!(remote.get(key).map(|r| &r.1), Some(md5), "{key}");
    }
    let state = work.session_out("out").join(".state");
    assert!(!state.join("DecollageImages.stamp.json").exists());

    work.succeed("out", &args);
    let decollage = work.task("out", "DecollageImages");
    let (sent, unchanged) = sent_and_unchanged(&decollage);
    assert_eq!(sent as usize, 3000 - confirmed.len(), "{decollage}");
    let skipped_pages = decollage["items"]["skipped"].as_u64().unwrap();
    assert_eq!(
        unchanged + sent + 1000 * skipped_pages,
        3000,
        "{decollage}: the pages that ran held the rest"
    );
    let remote = garage.list(garage.bucket(), &key_prefix);
    assert_eq!(remote.len(), 3000 + 4, "every vignette and table");
    assert_eq!(work.ledger("out").len(), 3000 + 4);
    assert!(!state.join("DecollageImages.staging").exists());
    assert_eq!(tiffs_under(&work.out("out")), Vec::<PathBuf>::new());
}

#[test]
fn verify_remote_sends_again_what_left_the_bucket_and_a_lost_ledger_costs_nothing() {
    let garage = Garage::shared();
    let work = Workplace::with_synthetic(&garage, 600, 3, "direct-verify");
    let prefix = unique_prefix("direct-verify");
    let args = [
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        &prefix,
        "--no-local-vignettes",
    ];
    work.succeed("out", &args);
    let key_prefix = format!("{prefix}/{}/", work.experiment);
    let before = garage.list(garage.bucket(), &key_prefix);
    assert_eq!(before.len(), 600 + 4);
    let gone = before.keys().find(|k| k.ends_with(".tif")).unwrap().clone();
    garage.delete(garage.bucket(), &gone);

    // Trusted, the ledger says complete.
    work.succeed("out", &args);
    assert!(
        !garage
            .list(garage.bucket(), &key_prefix)
            .contains_key(&gone)
    );

    // Checked, the page that held it runs again and sends just that object.
    let verify = [&args[..], &["--verify-remote"]].concat();
    work.succeed("out", &verify);
    let decollage = work.task("out", "DecollageImages");
    assert_eq!(decollage["items"]["ran"], 1, "{decollage}");
    assert_eq!(decollage["items"]["skipped"], 2, "{decollage}");
    assert_eq!(sent_and_unchanged(&decollage).0, 1, "{decollage}");
    assert_eq!(garage.list(garage.bucket(), &key_prefix), before);

    // The ledger lost: every page runs, and the listing spares every object.
    std::fs::remove_file(work.ledger_path("out")).unwrap();
    work.succeed("out", &verify);
    let decollage = work.task("out", "DecollageImages");
    assert_eq!(decollage["items"]["ran"], 3, "{decollage}");
    assert_eq!(sent_and_unchanged(&decollage), (0, 600), "{decollage}");
    assert_eq!(work.ledger("out").len(), 600 + 4);
    assert_eq!(garage.list(garage.bucket(), &key_prefix), before);

    // Trusted again, a ledger that lost a vignette's line is not complete: that page runs
    // alone and sends the object again; then nothing is left to do.
    let ledger = work.ledger_path("out");
    let recorded = std::fs::read_to_string(&ledger).unwrap();
    let lost = recorded
        .lines()
        .find(|l| l.ends_with(".tif"))
        .unwrap()
        .to_string();
    let kept: String = recorded
        .lines()
        .filter(|l| *l != lost)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ledger, kept).unwrap();
    work.succeed("out", &args);
    let decollage = work.task("out", "DecollageImages");
    assert_eq!(decollage["items"]["ran"], 1, "{decollage}");
    // The page's other 199 objects are in the ledger and are not sent again.
    assert_eq!(sent_and_unchanged(&decollage), (1, 199), "{decollage}");
    assert_eq!(work.ledger("out").len(), 600 + 4);
    work.succeed("out", &args);
    assert_eq!(
        work.task("out", "DecollageImages")["state"],
        "already_complete"
    );
}

#[test]
fn no_local_vignettes_needs_a_destination() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let out = dir.path().join("out");
    let output = bin()
        .args(["-d", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .arg("--no-local-vignettes")
        .env_remove("FLOWCAM_S3_BUCKET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let said = text(&output);
    assert!(
        said.contains("--no-local-vignettes") && said.contains("--s3-bucket"),
        "{said}"
    );
    assert!(!out.exists(), "nothing made");
}

/// Every file of `folder` by name, with its bytes.
fn files_of(folder: &Path) -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn ecotaxa_cuts_the_pages_again_and_makes_the_same_pngs_and_table() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, POSITIONED);
    let (_, direct, args) = local_then_direct(&work, &garage, "eco", &["--upload-ecotaxa"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(tiffs_under(&work.out("direct")), Vec::<PathBuf>::new());

    let images = |out: &str| files_of(&work.session_out(out).join("ecotaxa/images"));
    let (from_local, from_direct) = (images("local"), images("direct"));
    assert_eq!(from_local.len(), 102);
    assert!(from_local == from_direct, "the PNGs differ");
    // The table too, but for the day it was made.
    let table = |out: &str| {
        let tsv = work
            .session_out(out)
            .join(format!("ecotaxa/ecotaxa_{POSITIONED}.tsv"));
        std::fs::read_to_string(tsv).unwrap()
    };
    assert_eq!(table("local"), table("direct"));
    let zip = format!("{direct}/{POSITIONED}/ecotaxa_{POSITIONED}.zip");
    assert!(
        garage.list(garage.bucket(), &zip).contains_key(&zip),
        "the zip is uploaded"
    );

    // A page that lost its PNG is cut again alone; a rerun then has nothing to do.
    let lost = work
        .session_out("direct")
        .join("ecotaxa/images")
        .join(from_direct.keys().next().unwrap());
    std::fs::remove_file(&lost).unwrap();
    work.succeed("direct", &args);
    let export = work.task("direct", "ExportEcoTaxa");
    assert_eq!(export["items"]["ran"], 1, "{export}");
    assert_eq!(images("direct"), from_local);
}

#[test]
fn the_dashboard_cuts_the_pages_for_a_session_without_local_vignettes() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, POSITIONED);
    let prefix = unique_prefix("dashboard");
    let args = [
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        &prefix,
        "--no-local-vignettes",
    ];
    work.succeed("direct", &args);
    work.succeed("local", &["--no-upload"]);

    // The dashboard, with the options and the server of the run.
    let dotenv = garage.dotenv();
    let vars: Vec<(&str, &str)> = dotenv.lines().filter_map(|l| l.split_once('=')).collect();
    let server = common::serve::Server::start_env(&work.input, &work.out("direct"), &args, &vars);
    let api = server.json(&format!("/api/sessions/{POSITIONED}"));
    assert_eq!(api["status"]["state"], "complete", "{}", api["status"]);
    let base = format!("/sessions/{POSITIONED}");
    let manifest =
        flowcam_pipeline::tasks::Manifest::read(&work.session_out("direct").join("manifest.csv"))
            .unwrap();
    let mut shown = 0;
    for row in manifest.vignettes().step_by(7) {
        let (status, head, png) = server.get(&format!("{base}/images/{}", row.file));
        assert_eq!(status, 200, "{}: {head}", row.file);
        let (pw, ph, _, pixels) = decode_png_bytes(&png);
        let tiff = row.path_in(&work.session_out("local").join("vignettes"));
        let (w, h, _, expected) = common::decode(&tiff);
        assert_eq!((pw, ph), (w, h), "{}", row.file);
        assert!(pixels == expected, "{}: other pixels", row.file);
        shown += 1;
    }
    assert!(shown > 10);
    // The particle page lists the vignette's own tags, read from the cut.
    let first = manifest.vignettes().next().unwrap();
    let page = server.page(&format!("{base}/particles/{}", first.particle_id));
    assert!(
        page.contains("<dt>Make</dt><dd>Fluid Imaging Technologies</dd>"),
        "{page}"
    );
    // Names outside the manifest are still refused.
    let (status, _, _) = server.get(&format!("{base}/images/{POSITIONED}_999999.tif"));
    assert_eq!(status, 404);
    assert!(!work.session_out("direct").join("vignettes").exists());
}
