//! Each task run alone with the stage tester (`common::stage`): ReadMetadata on the fixture
//! session, then DecollageImages and ExportEcoTaxa each on the inputs the stage before left,
//! with nothing upstream running. (UploadToS3's stage test is `stage_upload.rs`: it needs
//! S3 keys in the process environment.)

mod common;

use common::stage::{given, run_task_alone};
use common::*;
use flowcam_pipeline::engine::{TaskRef, TaskState};
use flowcam_pipeline::tasks::{DecollageImages, DecollageOptions, ExportEcoTaxa, ReadMetadata};
use std::collections::HashSet;
use std::sync::Arc;

const POSITIONED: &str = "Tank25_54.0143_-2.7770_04052023_1";

/// The names of the tasks a run reported, in order.
fn task_names(run: &common::stage::TaskRun) -> Vec<&str> {
    run.report.tasks.iter().map(|t| t.name.as_str()).collect()
}

#[test]
fn read_metadata_alone_writes_one_row_per_particle() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let session = session(&input, &dir.path().join("out"));
    let task: TaskRef = Arc::new(ReadMetadata::new(session.clone()));

    let run = run_task_alone(task.clone());
    run.assert_succeeded();
    assert_eq!(task_names(&run), ["ReadMetadata"]);
    assert_eq!(run.task("ReadMetadata").state, TaskState::Ran);
    assert_eq!(
        run.outputs,
        [session.metadata_csv(), session.metadata_schema()]
    );

    let rows = csv_rows(&session.metadata_csv());
    assert_eq!(rows.len(), 102);
    let ids: HashSet<&String> = rows.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids.len(), 102, "one row per particle");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session.metadata_schema()).unwrap()).unwrap();
    assert_eq!(schema["particles"], 102);
    let fields: Vec<&str> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let header = csv::Reader::from_path(session.metadata_csv())
        .unwrap()
        .headers()
        .unwrap()
        .clone();
    assert_eq!(header.iter().collect::<Vec<_>>(), fields);

    let again = run_task_alone(task);
    assert_eq!(again.task("ReadMetadata").state, TaskState::AlreadyComplete);
}

#[test]
fn decollage_images_alone_on_given_metadata_cuts_102_vignettes() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    // Stage 1 leaves metadata.csv and metadata.schema.json in the output folder...
    run_task_alone(Arc::new(ReadMetadata::new(session.clone()))).assert_succeeded();

    // ...and DecollageImages runs on them alone: ReadMetadata is not part of this run.
    let task: TaskRef = Arc::new(DecollageImages::new(
        session.clone(),
        given(&session),
        DecollageOptions::default(),
    ));
    let run = run_task_alone(task.clone());
    run.assert_succeeded();
    assert_eq!(task_names(&run), ["Given", "DecollageImages"]);
    let report = run.task("DecollageImages");
    assert_eq!(report.state, TaskState::Ran);
    assert_eq!((report.items.total, report.items.ran), (1, 1), "one page");
    assert_eq!(run.outputs, [session.manifest(), session.vignettes_dir()]);

    let files = vignettes(&session);
    assert_eq!(files.len(), 102);
    let manifest = manifest(&session);
    assert_eq!(manifest.len(), 102);
    for (entry, file) in manifest.iter().zip(&files) {
        assert_eq!(
            file.file_name().unwrap().to_string_lossy(),
            format!("{POSITIONED}_{}.tif", entry["particle_id"])
        );
        assert_eq!(
            std::fs::metadata(file).unwrap().len().to_string(),
            entry["bytes"]
        );
    }
    let again = run_task_alone(task);
    assert_eq!(
        again.task("DecollageImages").state,
        TaskState::AlreadyComplete
    );
}

#[test]
fn decollage_images_alone_without_its_inputs_fails_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let session = session(&input, &dir.path().join("out"));
    let task: TaskRef = Arc::new(DecollageImages::new(
        session.clone(),
        given(&session),
        DecollageOptions::default(),
    ));
    let run = run_task_alone(task);
    let report = run.task("DecollageImages");
    assert_eq!(report.state, TaskState::Failed);
    assert_eq!(
        report.errors,
        [format!(
            "input {} is missing",
            session.metadata_csv().display()
        )]
    );
    assert!(!session.manifest().exists());
    assert!(vignettes(&session).is_empty());
}

#[test]
fn export_ecotaxa_alone_on_given_vignettes() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    let metadata: TaskRef = Arc::new(ReadMetadata::new(session.clone()));
    let decollage: TaskRef = Arc::new(DecollageImages::new(
        session.clone(),
        metadata,
        DecollageOptions::default(),
    ));
    let upstream = run_task_alone(decollage);
    upstream.assert_succeeded();
    assert_eq!(task_names(&upstream), ["ReadMetadata", "DecollageImages"]);

    let export = Arc::new(ExportEcoTaxa::new(session.clone(), given(&session)));
    let run = run_task_alone(export.clone());
    run.assert_succeeded();
    assert_eq!(task_names(&run), ["Given", "ExportEcoTaxa"]);
    assert_eq!(run.task("ExportEcoTaxa").state, TaskState::Ran);
    assert_eq!(
        run.outputs,
        [export.images_dir(), export.tsv(), export.zip()]
    );
    let pngs = std::fs::read_dir(export.images_dir()).unwrap().count();
    assert_eq!(pngs, 102);
    let lines = std::fs::read_to_string(export.tsv())
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 2 + 102, "header, type row and one row per particle");
    let zip = zip::ZipArchive::new(std::fs::File::open(export.zip()).unwrap()).unwrap();
    assert_eq!(zip.len(), 1 + 102);
}
