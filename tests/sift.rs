//! Blanks through the whole pipeline ("sift"): crops painted uniform on a copy of the real
//! page are found by their pixels; a blank class list that agrees with the pixels is
//! applied and a stale one is not; `--blanks keep|flag|skip` writes, marks or leaves them
//! out, and the manifest, the run report and `session.json` count them every time.

mod common;

use common::blanks::{PAGE, class_file, paint_uniform, particles};
use common::{FIXTURE, copy_fixture};
use flowcam_pipeline::TOOL_VERSION;
use flowcam_pipeline::engine::{RunReport, Runner, TaskRef};
use flowcam_pipeline::tasks::{
    BlankPolicy, DecollageOptions, FlowCamPipeline, Manifest, PipelineOptions, Session,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

fn run(input: &Path, out: &Path, blanks: BlankPolicy) -> (Arc<Session>, RunReport, Value) {
    let session = Arc::new(Session::new(input, out, None).unwrap());
    let options = PipelineOptions {
        decollage: DecollageOptions {
            blanks,
            ..DecollageOptions::default()
        },
        ecotaxa: true,
        ..PipelineOptions::default()
    };
    let root: TaskRef = Arc::new(FlowCamPipeline::new(session.clone(), options, None));
    let report = Runner::new(TOOL_VERSION, 2).run(&root).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    let json = std::fs::read(session.session_json()).unwrap();
    (session, report, serde_json::from_slice(&json).unwrap())
}

fn files_in(folder: &Path) -> BTreeSet<String> {
    std::fs::read_dir(folder)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The vignettes' names, in their pages' folders.
fn vignettes_in(folder: &Path) -> BTreeSet<String> {
    common::vignette_files(folder)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn blanks_are_found_flagged_or_skipped_and_always_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let all = particles(&input);
    assert_eq!(all.len(), 102);
    // Ten crops become empty frames; an eleventh particle is only in the blank list.
    let painted: Vec<_> = all.iter().step_by(9).take(10).copied().collect();
    paint_uniform(&input.join(PAGE), &painted);
    let painted_ids: Vec<u64> = painted.iter().map(|p| p.0).collect();
    let listed_only = all.iter().find(|p| !painted_ids.contains(&p.0)).unwrap().0;
    let mut fitting = painted_ids.clone();
    fitting.push(listed_only);
    // A stale list: real particles (not painted), as a list of another numbering would be.
    let stale: Vec<u64> = all
        .iter()
        .map(|p| p.0)
        .filter(|id| !fitting.contains(id))
        .take(5)
        .collect();
    std::fs::write(
        input.join(format!("{FIXTURE}.cla")),
        class_file(&[
            ("fits", "blank images", &fitting),
            ("stale", "blank images", &stale),
        ]),
    )
    .unwrap();
    let mut blank_ids = fitting.clone();
    blank_ids.sort();

    // skip: neither written nor uploaded, but listed and counted.
    let out = dir.path().join("skip");
    let (session, report, record) = run(&input, &out, BlankPolicy::Skip);
    let blanks = &record["blanks"];
    assert_eq!(blanks["particles_measured"], 102);
    assert_eq!(blanks["by_pixels"], 10);
    assert_eq!(blanks["by_class_list"], 1);
    assert_eq!(blanks["count"], 11);
    assert_eq!(blanks["ids"], serde_json::json!(blank_ids));
    let lists = record["classes"].as_array().unwrap();
    assert_eq!(lists[0]["applied"], true, "{}", lists[0]["reason"]);
    assert_eq!(lists[1]["applied"], false);
    let reason = lists[1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("only 0 of its 5 particles measure blank"),
        "{reason}"
    );
    let manifest = Manifest::read(&session.manifest()).unwrap();
    assert_eq!(manifest.rows.len(), 102);
    for row in &manifest.rows {
        let id: u64 = row.particle_id.parse().unwrap();
        let blank = blank_ids.contains(&id);
        assert_eq!(row.blank, blank, "particle {id}");
        assert_eq!(row.file.is_empty(), blank, "particle {id}");
    }
    assert_eq!(vignettes_in(&session.vignettes_dir()).len(), 91);
    assert_eq!(files_in(&session.output.join("ecotaxa/images")).len(), 91);
    let decollage = report.task("DecollageImages").unwrap();
    assert_eq!(
        decollage.notes,
        ["11 of 102 particles skipped (listed in manifest.csv, not written)"]
    );

    // flag: every vignette written, the blanks marked in the manifest, their EXIF and the
    // EcoTaxa table. The same output folder: the pages rerun and write what skip left out.
    let (session, report, _) = run(&input, &out, BlankPolicy::Flag);
    let manifest = Manifest::read(&session.manifest()).unwrap();
    assert!(manifest.rows.iter().all(|r| !r.file.is_empty()));
    assert_eq!(manifest.rows.iter().filter(|r| r.blank).count(), 11);
    assert_eq!(vignettes_in(&session.vignettes_dir()).len(), 102);
    assert_eq!(
        report.task("DecollageImages").unwrap().notes,
        ["11 of 102 particles flagged blank"]
    );
    let description = |id: u64| {
        let path = common::vignette(&session.vignettes_dir(), &format!("{FIXTURE}_{id}.tif"));
        let mut decoder = tiff::decoder::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
        let text = decoder
            .get_tag_ascii_string(tiff::tags::Tag::ImageDescription)
            .unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };
    assert_eq!(description(listed_only)["blank"], true);
    assert_eq!(description(painted_ids[0])["blank"], true);
    assert_eq!(description(stale[0]).get("blank"), None);
    let tsv = std::fs::read_to_string(
        session
            .output
            .join(format!("ecotaxa/ecotaxa_{FIXTURE}.tsv")),
    )
    .unwrap();
    let header: Vec<&str> = tsv.lines().next().unwrap().split('\t').collect();
    let blank_col = header.iter().position(|h| *h == "object_blank").unwrap();
    let flagged = tsv
        .lines()
        .skip(2)
        .filter(|l| l.split('\t').nth(blank_col) == Some("1"))
        .count();
    assert_eq!(flagged, 11);

    // keep: written and unmarked.
    let (session, report, record) = run(&input, &dir.path().join("keep"), BlankPolicy::Keep);
    let manifest = Manifest::read(&session.manifest()).unwrap();
    assert!(manifest.rows.iter().all(|r| !r.blank && !r.file.is_empty()));
    assert!(report.task("DecollageImages").unwrap().notes.is_empty());
    // The measure is still recorded.
    assert_eq!(record["blanks"]["count"], 11);
}

#[test]
fn a_page_that_cannot_be_read_leaves_its_particles_unmeasured_not_blank() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    std::fs::write(input.join(PAGE), b"II*\0 not a tiff").unwrap();
    let session = Arc::new(Session::new(&input, &dir.path().join("out"), None).unwrap());
    let root: TaskRef = Arc::new(FlowCamPipeline::new(
        session.clone(),
        PipelineOptions::default(),
        None,
    ));
    let report = Runner::new(TOOL_VERSION, 2).run(&root).unwrap();
    // ExtractMetadata succeeds with a warning; DecollageImages fails on the page.
    let extract = report.task("ExtractMetadata").unwrap();
    assert!(extract.errors.is_empty(), "{:?}", extract.errors);
    assert!(!report.task("DecollageImages").unwrap().errors.is_empty());
    let record: Value =
        serde_json::from_slice(&std::fs::read(session.session_json()).unwrap()).unwrap();
    assert_eq!(record["blanks"]["particles_measured"], 0);
    assert_eq!(record["blanks"]["particles_unmeasured"], 102);
    assert_eq!(record["blanks"]["count"], 0);
    let warnings = record["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains(PAGE) && w.contains("102 particles not measured")
        }),
        "{warnings:?}"
    );
}
