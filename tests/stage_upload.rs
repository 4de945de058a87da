//! UploadToS3 run alone with the stage tester (`common::stage`) against the shared Garage:
//! on the vignettes and tables an earlier stage left, with nothing upstream running. (Its
//! own test binary with a single test: it sets the AWS variables of this process, which
//! the S3 client's credential chain reads, before any other thread runs.)

mod common;

use common::garage::Garage;
use common::stage::{given, run_task_alone};
use common::*;
use flowcam_pipeline::engine::{TaskRef, TaskState};
use flowcam_pipeline::tasks::{
    DecollageImages, DecollageOptions, ExportEcoTaxa, ReadMetadata, UploadOptions, UploadToS3,
};
use flowcam_pipeline::upload::{DestinationConfig, S3Settings};
use std::collections::BTreeSet;
use std::sync::Arc;

const POSITIONED: &str = "Tank25_54.0143_-2.7770_04052023_1";

#[test]
fn upload_to_s3_alone_sends_every_vignette_and_table() {
    let garage = Garage::shared();
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
        // SAFETY: the only test in this binary, and no other thread reads the environment.
        unsafe { std::env::set_var(name, &garage.vars[name]) };
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("AWS_EC2_METADATA_DISABLED", "true") };

    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    // The earlier stages leave the tables and the vignettes in place.
    let metadata: TaskRef = Arc::new(ReadMetadata::new(session.clone()));
    let decollage: TaskRef = Arc::new(DecollageImages::new(
        session.clone(),
        metadata,
        DecollageOptions::default(),
    ));
    run_task_alone(decollage).assert_succeeded();

    let prefix = format!(
        "stage-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let destination = || {
        let mut s3 = S3Settings::new(garage.bucket());
        s3.endpoint = Some(garage.endpoint().to_string());
        DestinationConfig::S3(s3)
    };
    let options = UploadOptions {
        prefix: Some(prefix.clone()),
        ..UploadOptions::default()
    };
    let upload = Arc::new(UploadToS3::new(
        session.clone(),
        given(&session),
        destination(),
        options.clone(),
    ));
    let run = run_task_alone(upload.clone());
    run.assert_succeeded();
    let names: Vec<&str> = run.report.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Given", "UploadToS3"]);
    let report = run.task("UploadToS3");
    assert_eq!(report.state, TaskState::Ran);
    assert_eq!(
        (report.items.ran, report.items.failed),
        (102, 0),
        "one item per vignette"
    );
    assert_eq!(run.outputs, [upload.ledger_path()]);

    let keys_prefix = format!("{prefix}/{POSITIONED}/");
    let listed = garage.list(garage.bucket(), &keys_prefix);
    let mut expected: BTreeSet<String> = vignettes(&session)
        .iter()
        .map(|p| format!("{keys_prefix}{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(expected.len(), 102);
    for table in ["metadata.csv", "metadata.schema.json", "manifest.csv"] {
        expected.insert(format!("{keys_prefix}{table}"));
    }
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (key, (size, _)) in &listed {
        let name = key.strip_prefix(&keys_prefix).unwrap();
        let local = if name.ends_with(".tif") {
            common::vignette(&session.vignettes_dir(), name)
        } else {
            session.output.join(name)
        };
        assert_eq!(*size, std::fs::metadata(&local).unwrap().len(), "{key}");
    }
    let manifest_key = format!("{keys_prefix}manifest.csv");
    assert_eq!(
        garage.get(garage.bucket(), &manifest_key),
        std::fs::read(session.manifest()).unwrap()
    );

    // Run alone again: complete, nothing sent.
    let again = run_task_alone(upload);
    assert_eq!(again.task("UploadToS3").state, TaskState::AlreadyComplete);

    // With the EcoTaxa zip given too, only the zip is new.
    let export = Arc::new(ExportEcoTaxa::new(session.clone(), given(&session)));
    run_task_alone(export.clone()).assert_succeeded();
    let with_zip = Arc::new(UploadToS3::new(
        session.clone(),
        given(&session),
        destination(),
        UploadOptions {
            extra: Some(export.zip()),
            ..options
        },
    ));
    let run = run_task_alone(with_zip);
    run.assert_succeeded();
    let report = run.task("UploadToS3");
    assert_eq!(report.state, TaskState::Ran);
    let listed = garage.list(garage.bucket(), &keys_prefix);
    let zip_key = format!("{keys_prefix}ecotaxa_{POSITIONED}.zip");
    expected.insert(zip_key.clone());
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        garage.get(garage.bucket(), &zip_key),
        std::fs::read(export.zip()).unwrap()
    );
    assert_eq!(report.items.ran, 0, "the vignettes were not sent again");

    for key in listed.keys() {
        garage.delete(garage.bucket(), key);
    }
}
