//! UploadToS3 end to end, through the built binary, against a real Garage S3 server on
//! 127.0.0.1 (and the test's own implementation of the upload API writing into it).

mod common;

use common::garage::Garage;
use common::upload_api::{Storing, UploadApi};
use common::workplace::{POSITIONED, unique_prefix};
use common::*;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The shared working folder, with its one output root `out`.
struct Workplace(common::workplace::Workplace);

/// The output root of every run here.
const OUT: &str = "out";

impl std::ops::Deref for Workplace {
    type Target = common::workplace::Workplace;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Workplace {
    fn with_fixture(garage: &Garage, folder: &str) -> Workplace {
        Workplace(common::workplace::Workplace::with_fixture(garage, folder))
    }

    fn with_synthetic(garage: &Garage, particles: usize, pages: usize, name: &str) -> Workplace {
        Workplace(common::workplace::Workplace::with_synthetic(
            garage, particles, pages, name,
        ))
    }

    fn command(&self, args: &[&str]) -> Command {
        self.0.command(OUT, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.0.run(OUT, args)
    }

    fn succeed(&self, args: &[&str]) -> Output {
        self.0.succeed(OUT, args)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `status --json` with the same upload options: the UploadToS3 task's state.
    fn upload_status(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_flowcam-pipeline"))
            .current_dir(self.dir.path())
            .args(["status", "--json", "-d", self.input.to_str().unwrap()])
            .args(["-o", self.out(OUT).to_str().unwrap()])
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let task = shown[0]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == "UploadToS3")
            .cloned()
            .unwrap_or_else(|| panic!("no UploadToS3 in {shown}"));
        task["state"].as_str().unwrap().to_string()
    }

    fn session_out(&self) -> PathBuf {
        self.0.session_out(OUT)
    }

    fn upload_report(&self) -> serde_json::Value {
        self.0.task(OUT, "UploadToS3")
    }

    fn ledger_path(&self) -> PathBuf {
        self.0.ledger_path(OUT)
    }

    fn ledger(&self) -> HashMap<String, String> {
        self.0.ledger(OUT)
    }

    /// Local files that should be in the bucket: file name -> path.
    fn local_files(&self) -> HashMap<String, PathBuf> {
        let out = self.session_out();
        let mut files: HashMap<String, PathBuf> = common::vignette_files(&out.join("vignettes"))
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
            .collect();
        for table in [
            "metadata.csv",
            "metadata.schema.json",
            "session.json",
            "manifest.csv",
        ] {
            files.insert(table.to_string(), out.join(table));
        }
        files
    }
}

fn md5_hex(path: &Path) -> String {
    hex::encode(Md5::digest(std::fs::read(path).unwrap()))
}

/// Every local file is in the bucket under `key_prefix` with its size and MD5, and nothing
/// else is there.
fn assert_all_delivered(garage: &Garage, bucket: &str, key_prefix: &str, work: &Workplace) {
    let remote = garage.list(bucket, key_prefix);
    let local = work.local_files();
    assert_eq!(remote.len(), local.len(), "objects under {key_prefix}");
    for (name, path) in local {
        let key = format!("{key_prefix}{name}");
        let (size, etag) = remote
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is not in the bucket"));
        assert_eq!(*size, std::fs::metadata(&path).unwrap().len(), "{key}");
        assert_eq!(*etag, md5_hex(&path), "{key}");
    }
}

fn wait_for_ledger_lines(work: &Workplace, child: &mut Child, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while work.ledger().len() < lines {
        assert!(Instant::now() < deadline, "no upload progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be interrupted");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn skipped_blanks_never_reach_the_bucket_and_flagged_ones_are_marked_with_their_class() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, POSITIONED);
    let all = common::blanks::particles(&work.input);
    let painted: Vec<_> = all.iter().take(4).copied().collect();
    common::blanks::paint_uniform(&work.input.join(common::blanks::PAGE), &painted);
    let blank_ids: Vec<u64> = painted.iter().map(|p| p.0).collect();
    let classified = all[10].0;
    std::fs::write(
        work.input.join(format!("{FIXTURE}.cla")),
        common::blanks::class_file(&[("taxa", "Daphnia", &[classified])]),
    )
    .unwrap();
    let prefix = unique_prefix("blanks");
    let key_prefix = format!("{prefix}/{POSITIONED}/");
    let key = |id: u64| format!("{key_prefix}{POSITIONED}_{id}.tif");
    let args = ["--s3-bucket", garage.bucket(), "--s3-prefix", &prefix];

    work.succeed(&[&args[..], &["--blanks", "skip"]].concat());
    let remote = garage.list(garage.bucket(), &key_prefix);
    assert_eq!(remote.len(), 102 - 4 + 4, "98 vignettes and the 4 tables");
    for id in &blank_ids {
        assert!(!remote.contains_key(&key(*id)), "blank {id} was uploaded");
    }
    // The manifest in the bucket still lists them, marked and without a file.
    let manifest =
        String::from_utf8(garage.get(garage.bucket(), &format!("{key_prefix}manifest.csv")))
            .unwrap();
    let listed: Vec<&str> = manifest.lines().filter(|l| l.ends_with(",true")).collect();
    assert_eq!(listed.len(), 4, "{manifest}");
    assert!(listed.iter().all(|l| l.starts_with(",")), "{listed:?}");
    let (_, metadata) = garage.head(garage.bucket(), &key(classified));
    assert_eq!(metadata["class"], "Daphnia");
    assert!(!metadata.contains_key("blank"));

    // flag: the blanks arrive, marked.
    work.succeed(&args);
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);
    for id in &blank_ids {
        let (_, metadata) = garage.head(garage.bucket(), &key(*id));
        assert_eq!(metadata["blank"], "true", "{id}");
    }
}

#[test]
fn the_fixture_lands_with_keys_sizes_and_metadata_and_a_rerun_sends_nothing() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, POSITIONED);
    let prefix = unique_prefix("e2e");
    let args = ["--s3-bucket", garage.bucket(), "--s3-prefix", &prefix];
    work.succeed(&args);

    let key_prefix = format!("{prefix}/{POSITIONED}/");
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);
    assert_eq!(work.local_files().len(), 102 + 4);

    // A vignette carries the sample's position and date and the particle's id and time.
    let manifest = manifest(&session(&work.input, &work.out(OUT)));
    let row = &manifest[0];
    let (content_type, metadata) =
        garage.head(garage.bucket(), &format!("{key_prefix}{}", row["file"]));
    assert_eq!(content_type, "image/tiff");
    assert_eq!(metadata["latitude"], "54.0143");
    assert_eq!(metadata["longitude"], "-2.7770");
    assert_eq!(metadata["sample-date"], "2023-05-04");
    assert_eq!(metadata["depth-m"], "1");
    assert_eq!(metadata["particle-id"], row["particle_id"]);
    assert!(!row["captured_at"].is_empty());
    assert_eq!(metadata["captured-at"], row["captured_at"]);
    // From session.json: the pixel size proven on the particles, and the sample.
    assert_eq!(metadata["um-per-pixel"], "9.25");
    assert_eq!(metadata["sample-id"], POSITIONED);
    // The bundled subset holds none of the 2 classified particles: no class header.
    assert_eq!(row["class"], "");
    assert!(!metadata.contains_key("class"), "{metadata:?}");
    let (content_type, _) = garage.head(garage.bucket(), &format!("{key_prefix}session.json"));
    assert_eq!(content_type, "application/json");
    let (content_type, _) = garage.head(garage.bucket(), &format!("{key_prefix}manifest.csv"));
    assert_eq!(content_type, "text/csv");

    // The ledger holds exactly what was confirmed.
    let ledger = work.ledger();
    assert_eq!(ledger.len(), 106);
    assert_eq!(
        ledger[&format!("{key_prefix}manifest.csv")],
        md5_hex(&work.session_out().join("manifest.csv"))
    );

    // Nothing changed: the whole pipeline is complete, nothing is contacted or sent.
    work.succeed(&args);
    assert_eq!(work.upload_report()["state"], "already_complete");

    // Vignettes rewritten with the same content (forced decollage): the upload reruns,
    // reads and hashes them, and sends nothing.
    let forced = work
        .command(&args)
        .arg("--force")
        .env("RUST_LOG", "flowcam_pipeline=info")
        .output()
        .unwrap();
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    let log = String::from_utf8_lossy(&forced.stderr);
    assert!(
        log.contains("upload complete") && log.contains("sent=0"),
        "{log}"
    );
    assert_eq!(work.ledger().len(), 106);
}

#[test]
fn changed_vignettes_are_sent_again() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("changed");
    let args = ["--s3-bucket", garage.bucket(), "--s3-prefix", &prefix];
    work.succeed(&args);
    let key_prefix = format!("{prefix}/{FIXTURE}/");
    let before = garage.list(garage.bucket(), &key_prefix);

    // Without the measurements in ImageDescription every vignette's content changes.
    let mut changed_args = args.to_vec();
    changed_args.push("--no-embed-measurements");
    work.succeed(&changed_args);
    let upload = work.upload_report();
    assert_eq!(upload["items"]["ran"], 102, "{upload}");
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);
    let after = garage.list(garage.bucket(), &key_prefix);
    let vignette = format!("{key_prefix}{FIXTURE}_8900.tif");
    assert_ne!(before[&vignette], after[&vignette]);
    // metadata.csv did not change and kept its object.
    let csv = format!("{key_prefix}metadata.csv");
    assert_eq!(before[&csv], after[&csv]);
}

#[test]
fn a_run_killed_mid_upload_resumes_and_sends_only_the_rest() {
    let garage = Garage::shared();
    let work = Workplace::with_synthetic(&garage, 3000, 3, "killed");
    let prefix = unique_prefix("killed");
    let args = [
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        &prefix,
        "--upload-concurrency",
        "2",
    ];
    let mut child = work.spawn(&args);
    wait_for_ledger_lines(&work, &mut child, 100);
    child.kill().unwrap();
    child.wait().unwrap();

    // Everything the ledger calls confirmed is really there, with that content.
    let key_prefix = format!("{prefix}/{}/", work.experiment);
    let confirmed = work.ledger();
    assert!(
        confirmed.len() < 3000,
        "killed too late: {}",
        confirmed.len()
    );
    let remote = garage.list(garage.bucket(), &key_prefix);
    for (key, md5) in &confirmed {
        assert_eq!(remote.get(key).map(|r| &r.1), Some(md5), "{key}");
    }
    assert!(
        !work
            .session_out()
            .join(".state/UploadToS3.stamp.json")
            .exists()
    );

    work.succeed(&args);
    let upload = work.upload_report();
    let skipped = upload["items"]["skipped"].as_u64().unwrap();
    let ran = upload["items"]["ran"].as_u64().unwrap();
    assert_eq!(skipped, confirmed.len() as u64, "{upload}");
    assert_eq!(skipped + ran, 3000, "{upload}");
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);
}

#[test]
fn the_server_dying_mid_upload_fails_the_run_cleanly_and_a_rerun_completes() {
    let servers = tempfile::tempdir().unwrap();
    let garage = Garage::private(&servers.path().join("garage"));
    let work = Workplace::with_synthetic(&garage, 2000, 2, "dying");
    let args = ["--s3-bucket", garage.bucket(), "--upload-concurrency", "4"];
    let mut child = work.spawn(&args);
    wait_for_ledger_lines(&work, &mut child, 100);
    garage.kill();

    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run hangs after the server died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("cannot reach"), "{stdout}");
    assert!(stdout.contains("rerun to resume"), "{stdout}");
    // Told once, not once per object.
    assert_eq!(stdout.matches("cannot reach").count(), 1, "{stdout}");
    assert!(
        !work
            .session_out()
            .join(".state/UploadToS3.stamp.json")
            .exists()
    );

    garage.restart();
    let key_prefix = format!("{}/", work.experiment);
    let confirmed = work.ledger();
    let remote = garage.list(garage.bucket(), &key_prefix);
    for (key, md5) in &confirmed {
        assert_eq!(remote.get(key).map(|r| &r.1), Some(md5), "{key}");
    }
    work.succeed(&args);
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);
}

#[test]
fn wrong_credentials_are_named_without_printing_them() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let wrong_secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let env = garage.dotenv().replace(garage.secret(), wrong_secret);
    std::fs::write(work.dir.path().join(".env"), env).unwrap();
    let output = work.run(&["--s3-bucket", garage.bucket()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(all.contains("AWS_SECRET_ACCESS_KEY"), "{all}");
    assert!(
        all.contains("denied access") || all.contains("refused"),
        "{all}"
    );
    let report = std::fs::read_to_string(work.session_out().join("run-report.json")).unwrap();
    for secret in [wrong_secret, garage.vars["AWS_ACCESS_KEY_ID"].as_str()] {
        assert!(!all.contains(secret), "a key was printed:\n{all}");
        assert!(!report.contains(secret), "a key is in the run report");
    }
    // The vignettes are made; nothing is claimed as uploaded.
    assert_eq!(work.local_files().len(), 106);
    assert!(work.ledger().is_empty());
}

#[test]
fn no_credentials_say_where_to_put_them() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    std::fs::remove_file(work.dir.path().join(".env")).unwrap();
    let output = work.run(&[
        "--s3-bucket",
        garage.bucket(),
        "--s3-endpoint",
        garage.endpoint(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("no S3 credentials found"), "{stdout}");
    assert!(stdout.contains(".env"), "{stdout}");
}

#[test]
fn the_python_pipelines_endpoint_variable_is_read() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let env = garage
        .dotenv()
        .replace("AWS_ENDPOINT_URL=", "AWS_URL_ENDPOINT=");
    std::fs::write(work.dir.path().join(".env"), env).unwrap();
    let prefix = unique_prefix("url-endpoint");
    work.succeed(&["--s3-bucket", garage.bucket(), "--s3-prefix", &prefix]);
    assert_all_delivered(
        &garage,
        garage.bucket(),
        &format!("{prefix}/{FIXTURE}/"),
        &work,
    );
}

#[test]
fn a_missing_bucket_is_named_and_create_bucket_creates_it() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let bucket = unique_prefix("bucket").to_lowercase().replace('_', "-");
    let bucket = &bucket[..bucket.len().min(60)];
    let output = work.run(&["--s3-bucket", bucket]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("bucket {bucket} does not exist")),
        "{stdout}"
    );
    assert!(stdout.contains("--create-bucket"), "{stdout}");

    work.succeed(&["--s3-bucket", bucket, "--create-bucket"]);
    assert_all_delivered(&garage, bucket, &format!("{FIXTURE}/"), &work);
}

#[test]
fn an_unreachable_endpoint_is_named() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let output = work.run(&["--s3-bucket", garage.bucket(), "--s3-endpoint", &endpoint]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("cannot reach {endpoint}")),
        "{stdout}"
    );
}

#[test]
fn the_upload_api_gets_batches_of_at_most_seven_and_a_failed_batch_is_resent() {
    let garage = Garage::shared();
    let api = UploadApi::start(garage.client.clone());
    api.fail_request(Some(3));
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("api");
    let args = [
        "--api-url",
        &api.url,
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        &prefix,
        "--api-batch-size",
        "7",
        "--upload-concurrency",
        "1",
    ];
    let first = work.run(&args);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("HTTP 500"), "{stdout}");
    assert!(stdout.contains("simulated storage failure"), "{stdout}");
    let requests = api.take_requests();
    // 102 vignettes in batches of 7; the tables wait for every vignette.
    assert_eq!(requests.len(), 15, "{requests:?}");
    assert!(
        requests.iter().all(|&n| (1..=7).contains(&n)),
        "{requests:?}"
    );
    assert_eq!(requests.iter().sum::<usize>(), 102);
    let failed_batch = requests[2];
    assert_eq!(work.ledger().len(), 102 - failed_batch);

    api.fail_request(None);
    work.succeed(&args);
    // Only the failed batch, then the four tables in one request.
    assert_eq!(api.take_requests(), vec![failed_batch, 4]);
    assert_all_delivered(
        &garage,
        garage.bucket(),
        &format!("{prefix}/{FIXTURE}/"),
        &work,
    );

    work.succeed(&args);
    assert!(api.take_requests().is_empty());
}

#[test]
fn verify_remote_repairs_a_deleted_object() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("verify");
    let args = ["--s3-bucket", garage.bucket(), "--s3-prefix", &prefix];
    work.succeed(&args);
    let key_prefix = format!("{prefix}/{FIXTURE}/");
    let deleted = format!("{key_prefix}{FIXTURE}_8900.tif");
    garage.delete(garage.bucket(), &deleted);

    // The ledger still vouches for it: a plain rerun trusts it.
    work.succeed(&args);
    assert!(
        !garage
            .list(garage.bucket(), &key_prefix)
            .contains_key(&deleted)
    );

    let mut verify_args = args.to_vec();
    verify_args.push("--verify-remote");
    work.succeed(&verify_args);
    let upload = work.upload_report();
    assert_eq!(upload["items"]["ran"], 1, "{upload}");
    assert_eq!(upload["items"]["skipped"], 101, "{upload}");
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);

    // A lost ledger: --verify-remote rebuilds it from the bucket without sending again.
    std::fs::remove_file(work.ledger_path()).unwrap();
    let rebuilt = work
        .command(&verify_args)
        .env("RUST_LOG", "flowcam_pipeline=info")
        .output()
        .unwrap();
    assert_eq!(rebuilt.status.code(), Some(0), "{}", text(&rebuilt));
    let log = String::from_utf8_lossy(&rebuilt.stderr);
    assert!(log.contains("sent=0"), "{log}");
    assert_eq!(work.ledger().len(), 106);
}

#[test]
fn upload_ecotaxa_sends_the_zip_before_the_manifest() {
    let garage = Garage::shared();
    let work = Workplace::with_fixture(&garage, POSITIONED);
    let prefix = unique_prefix("ecotaxa");
    let args = [
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        &prefix,
        "--upload-ecotaxa",
    ];
    work.succeed(&args);
    let key_prefix = format!("{prefix}/{POSITIONED}/");
    let zip_name = format!("ecotaxa_{POSITIONED}.zip");
    let zip = work.session_out().join(&zip_name);
    let remote = garage.list(garage.bucket(), &key_prefix);
    assert_eq!(remote.len(), 102 + 5, "vignettes, four tables and the zip");
    let (size, etag) = &remote[&format!("{key_prefix}{zip_name}")];
    assert_eq!(*size, std::fs::metadata(&zip).unwrap().len());
    assert_eq!(*etag, md5_hex(&zip));
    let (content_type, _) = garage.head(garage.bucket(), &format!("{key_prefix}{zip_name}"));
    assert_eq!(content_type, "application/zip");
    // The zip follows the vignettes and precedes the manifest in the ledger.
    let ledger = std::fs::read_to_string(work.ledger_path()).unwrap();
    let position = |name: &str| ledger.find(&format!("{key_prefix}{name}")).unwrap();
    assert!(position(&zip_name) < position("manifest.csv"));
    work.succeed(&args);
    assert_eq!(work.upload_report()["state"], "already_complete");
}

#[test]
fn an_upload_api_redirect_is_not_taken_for_a_confirmation() {
    let garage = Garage::shared();
    let api = UploadApi::start(garage.client.clone());
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let moved = format!("{}/moved", api.url);
    let output = work.run(&["--api-url", &moved, "--s3-bucket", garage.bucket()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("a redirect to"), "{stdout}");
    assert!(stdout.contains("nothing was stored"), "{stdout}");
    assert!(
        work.ledger().is_empty(),
        "nothing may be recorded as confirmed"
    );
    assert!(
        api.take_requests().is_empty(),
        "the real endpoint got nothing"
    );
}

/// The upload API options of the tests below: batches of 7, two in flight.
///
/// The test service, like the real one, stores each file under `/<key>`; Garage drops
/// leading slashes from keys, so the tests find the objects under `<key>`.
fn api_args<'a>(url: &'a str, garage: &'a Garage, prefix: &'a str) -> Vec<&'a str> {
    vec![
        "--api-url",
        url,
        "--s3-bucket",
        garage.bucket(),
        "--s3-prefix",
        prefix,
        "--api-batch-size",
        "7",
        "--upload-concurrency",
        "2",
    ]
}

#[test]
fn an_upload_api_that_answers_200_but_stores_nothing_gets_nothing_recorded() {
    let garage = Garage::shared();
    let api = UploadApi::start(garage.client.clone());
    api.storing(Storing::Nothing);
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("api-stores-nothing");
    let args = api_args(&api.url, &garage, &prefix);
    let first = work.run(&args);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("answered HTTP 200 for the batch of 7 files ("),
        "{stdout}"
    );
    assert!(stdout.contains("but did not store 7 of them: "), "{stdout}");
    assert!(
        stdout.contains(&format!("{prefix}/{FIXTURE}/{FIXTURE}_")),
        "the message names the files: {stdout}"
    );
    assert!(stdout.contains("sent again on the next run"), "{stdout}");
    // Every batch was posted and answered 200; none is recorded as delivered.
    assert_eq!(api.take_requests().iter().sum::<usize>(), 102);
    assert!(
        garage
            .list(garage.bucket(), &format!("{prefix}/"))
            .is_empty()
    );
    assert!(work.ledger().is_empty(), "{:?}", work.ledger());
    assert_ne!(work.upload_status(&args), "complete");

    // The service healthy again: everything is delivered and confirmed.
    api.storing(Storing::All);
    work.succeed(&args);
    assert_all_delivered(
        &garage,
        garage.bucket(),
        &format!("{prefix}/{FIXTURE}/"),
        &work,
    );
    assert_eq!(work.ledger().len(), 106);
    assert_eq!(work.upload_status(&args), "complete");
}

#[test]
fn an_upload_api_that_stores_part_of_a_batch_gets_only_confirmed_batches_recorded() {
    let garage = Garage::shared();
    let api = UploadApi::start(garage.client.clone());
    let lost_file = format!("{FIXTURE}_8900.tif");
    api.storing(Storing::AllBut(lost_file.clone()));
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("api-stores-some");
    let args = api_args(&api.url, &garage, &prefix);
    let first = work.run(&args);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    let lost = format!("{prefix}/{FIXTURE}/{lost_file}");
    assert!(
        stdout.contains(&format!("but did not store 1 of them: {lost};")),
        "{stdout}"
    );

    // The ledger holds only objects that are there with its MD5, and not the lost one.
    let ledger = work.ledger();
    assert!(!ledger.contains_key(&lost), "{lost} is in the ledger");
    let remote = garage.list(garage.bucket(), &format!("{prefix}/"));
    assert!(!remote.contains_key(&lost));
    for (key, md5) in &ledger {
        let there = remote.get(key).map(|r| &r.1);
        assert_eq!(there, Some(md5), "{key} is in the ledger but not stored");
    }
    // Only the batch with the lost file failed (a whole batch counts as one).
    let failed_batch = 102 - ledger.len();
    assert!((1..=7).contains(&failed_batch), "{} recorded", ledger.len());
    assert_ne!(work.upload_status(&args), "complete");
    api.take_requests();

    api.storing(Storing::All);
    work.succeed(&args);
    assert_eq!(api.take_requests(), vec![failed_batch, 4]);
    assert_all_delivered(
        &garage,
        garage.bucket(),
        &format!("{prefix}/{FIXTURE}/"),
        &work,
    );
    assert_eq!(work.ledger().len(), 106);
}

#[test]
fn verify_remote_through_the_upload_api_resends_a_deleted_object() {
    let garage = Garage::shared();
    let api = UploadApi::start(garage.client.clone());
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("api-verify");
    let args = api_args(&api.url, &garage, &prefix);
    work.succeed(&args);
    let key_prefix = format!("{prefix}/{FIXTURE}/");
    let deleted = format!("{key_prefix}{FIXTURE}_8900.tif");
    garage.delete(garage.bucket(), &deleted);
    api.take_requests();

    let mut verify_args = args.clone();
    verify_args.push("--verify-remote");
    work.succeed(&verify_args);
    let upload = work.upload_report();
    assert_eq!(upload["items"]["ran"], 1, "{upload}");
    assert_eq!(upload["items"]["skipped"], 101, "{upload}");
    // Only the deleted vignette is sent; the tables are still there.
    assert_eq!(api.take_requests(), vec![1]);
    assert_all_delivered(&garage, garage.bucket(), &key_prefix, &work);
    assert_eq!(work.ledger().len(), 106);
    assert_eq!(work.upload_status(&args), "complete");

    // A lost ledger: the service gives no sizes or checksums to rebuild it from, so
    // everything is sent again.
    std::fs::remove_file(work.ledger_path()).unwrap();
    work.succeed(&verify_args);
    assert_eq!(api.take_requests().iter().sum::<usize>(), 106);
    assert_eq!(work.ledger().len(), 106);
}

#[test]
fn an_upload_api_without_check_file_exist_is_named_and_nothing_is_recorded() {
    let garage = Garage::shared();
    let api = UploadApi::start(garage.client.clone());
    api.check_endpoint(false);
    let work = Workplace::with_fixture(&garage, FIXTURE);
    let prefix = unique_prefix("api-no-check");
    // Given as the upload URL, with user information and a query that must not be shown.
    let url = format!(
        "{}/upload/?token=t0ken",
        api.url.replace("http://", "http://user:pa55word@")
    );
    let args = api_args(&url, &garage, &prefix);
    let output = work.run(&args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("has no check-file-exist endpoint (HTTP 404"),
        "{stdout}"
    );
    assert!(stdout.contains("cannot confirm deliveries"), "{stdout}");
    // Told once, not once per batch.
    assert_eq!(
        stdout.matches("check-file-exist endpoint").count(),
        1,
        "{stdout}"
    );
    let all = text(&output);
    let report = std::fs::read_to_string(work.session_out().join("run-report.json")).unwrap();
    for secret in ["pa55word", "t0ken"] {
        assert!(!all.contains(secret), "{secret} was printed:\n{all}");
        assert!(!report.contains(secret), "{secret} is in the run report");
    }
    assert!(work.ledger().is_empty(), "{:?}", work.ledger());
    assert_ne!(work.upload_status(&args), "complete");
}
