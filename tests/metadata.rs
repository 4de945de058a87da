//! ExtractMetadata: `session.json` from the side files, on the real session and on
//! synthetic damaged ones.

mod common;

use common::{FIXTURE, copy_fixture, shared_session};
use flowcam_pipeline::TOOL_VERSION;
use flowcam_pipeline::engine::{Runner, TaskRef, TaskState};
use flowcam_pipeline::tasks::{
    ExtractOptions, FlowCamPipeline, Manifest, PipelineOptions, Session,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Runs the pipeline (no upload) and returns the session and its `session.json`.
fn extract(input: &Path, out: &Path, extract: ExtractOptions) -> (Arc<Session>, Value) {
    let options = PipelineOptions {
        extract,
        ..PipelineOptions::default()
    };
    run_pipeline(input, out, options)
}

fn run_pipeline(input: &Path, out: &Path, options: PipelineOptions) -> (Arc<Session>, Value) {
    let session = Arc::new(Session::new(input, out, None).unwrap());
    let root: TaskRef = Arc::new(FlowCamPipeline::new(session.clone(), options, None));
    let report = Runner::new(TOOL_VERSION, 2).run(&root).unwrap();
    for task in &report.tasks {
        assert!(
            matches!(task.state, TaskState::Ran | TaskState::AlreadyComplete),
            "{}: {:?} {:?}",
            task.id,
            task.state,
            task.errors
        );
    }
    let json = std::fs::read(session.session_json()).unwrap();
    (session, serde_json::from_slice(&json).unwrap())
}

#[test]
fn the_real_sessions_record_matches_its_side_files() {
    let Some(real) = shared_session() else {
        eprintln!("../shared is not here; skipped");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let options = PipelineOptions {
        ecotaxa: true,
        ..PipelineOptions::default()
    };
    let (session, record) = run_pipeline(&real, out.path(), options);
    assert_eq!(record["version"], 1);
    // No real particle is blank: not by its pixels, and the stale list marks none.
    assert_eq!(record["blanks"]["particles_measured"], 8976);
    assert_eq!(record["blanks"]["count"], 0);
    assert_the_facts_travel(&session);
    // The classes of known particles reach the manifest; the stale blank list marks none.
    let manifest = Manifest::read(&session.manifest()).unwrap();
    let class_of = |id: &str| {
        manifest
            .rows
            .iter()
            .find(|r| r.particle_id == id)
            .map(|r| r.class.clone())
            .unwrap()
    };
    assert_eq!(class_of("6648"), "Cyclops");
    assert_eq!(class_of("5835"), "Chydorid");
    assert_eq!(class_of("49"), "");
    assert_eq!(
        manifest.rows.iter().filter(|r| !r.class.is_empty()).count(),
        2
    );
    assert_eq!(manifest.rows.len(), 8976);
    let instrument = &record["instrument"];
    assert_eq!(instrument["software"], "VisualSpreadsheet");
    assert_eq!(instrument["software_version"], "4.10.8");
    assert_eq!(instrument["magnification"], 12.0);
    assert_eq!(instrument["flow_cell"], "FC2000X2MM");
    assert_eq!(instrument["camera"], "SenTech");
    // "NA" is no serial number.
    assert_eq!(instrument["serial_number"], Value::Null);
    let run = &record["run"];
    assert_eq!(run["start"], "2023-12-20T14:03:06");
    assert_eq!(run["end"], "2023-12-20T14:04:37");
    assert_eq!(run["duration_s"], 91);
    assert_eq!(run["sampling_time_s"], 90);
    assert_eq!(run["mode"], "AutoImage");
    assert_eq!(run["stop_reason"], "User Terminated");
    assert_eq!(run["particle_count"], 10381.0);
    assert_eq!(run["particles_listed"], 8976);
    // The .ctx says 0; the run summary has the volume.
    assert_eq!(run["fluid_volume_imaged_ml"], 289.6065);
    assert_eq!(run["fluid_volume_source"], "run_summary");
    assert_eq!(
        record["raw"]["ctx"]["Fluid"]["FluidVolumeImaged_ml"],
        "0.0000"
    );
    // The pixel size, proven on every particle.
    let calibration = &record["calibration"];
    assert_eq!(calibration["um_per_pixel"], 9.25);
    assert_eq!(calibration["proof"]["source"], "particle_measurements");
    assert_eq!(calibration["proof"]["particles_checked"], 8976);
    assert_eq!(calibration["proof"]["particles_agreeing"], 8976);
    assert_eq!(record["notes"], "19_10_Tank25");
    // The class lists as the file has them: 16 taxa, and a blank list of 1,675 ids that
    // refers to another numbering, so it is not applied.
    let lists = record["classes"].as_array().unwrap();
    assert_eq!(lists.len(), 2);
    let taxa = &lists[0];
    assert_eq!(taxa["kind"], "taxa");
    assert_eq!(taxa["applied"], true, "{}", taxa["reason"]);
    let names: Vec<&str> = taxa["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 16);
    assert_eq!(names[0], "Asplancha");
    assert_eq!(names[15], "Ephippia");
    let cyclops = taxa["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Cyclops")
        .unwrap();
    assert_eq!(cyclops["ids"], serde_json::json!([6648]));
    let blank = &lists[1];
    assert_eq!(blank["kind"], "blank");
    assert_eq!(blank["applied"], false);
    assert_eq!(blank["classes"][0]["name"], "blank images");
    let ids = blank["classes"][0]["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1675);
    assert_eq!(ids[..3], [49, 50, 52]);
    assert_eq!(ids[1674], 10378);
    assert!(
        blank["reason"]
            .as_str()
            .unwrap()
            .starts_with("211 of its 1675 ids are not particles of the .lst"),
        "{}",
        blank["reason"]
    );
    assert_eq!(record["warnings"], serde_json::json!([]));
}

#[test]
fn damaged_side_files_are_warnings_that_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let ctx = input.join(format!("{FIXTURE}.ctx"));
    // Latin-1, CRLF and lone CR, a key before any section, a duplicate, garbage numbers.
    let mut bytes = b"Orphan=1\r\n[Software]\r\nSoftwareName=VisualSpreadsheet\r\n".to_vec();
    bytes.extend_from_slice(b"CameraMagnification=twelve\r[General]\r\n");
    bytes.extend_from_slice(b"LocationName=Plymouth Sound \xe9\r\n");
    bytes.extend_from_slice(b"LocationLatitude=50.3\r\nLocationLatitude=50.4\r\n");
    bytes.extend_from_slice(b"LocationLongitude=-4.1\r\nnot a line\r\n[Fluid\r\n");
    bytes.extend_from_slice(
        b"[Fluid]\r\nCalibrationConstant=1.0000\r\nFluidVolumeImaged_ml=12.5\r\n",
    );
    std::fs::write(&ctx, &bytes).unwrap();
    std::fs::write(
        input.join(format!("{FIXTURE}_run_summary.txt")),
        "Run:\n\tFluid Volume Imaged: lots ml\n",
    )
    .unwrap();
    // A class list cut short, with a non-numeric id.
    std::fs::write(
        input.join(format!("{FIXTURE}.cla")),
        "v3\n1\nlist\n1\nDaphnia\nOR\n0\n5\n1\nx7\n2\n",
    )
    .unwrap();
    // Notes that are a FIFO: never read (it would block), a warning, not a failure.
    let notes = input.join(format!("{FIXTURE}_notes.txt"));
    std::fs::remove_file(&notes).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&notes)
        .status()
        .unwrap();
    assert!(made.success());
    let out = tempfile::tempdir().unwrap();
    let (_, record) = extract(&input, out.path(), ExtractOptions::default());
    assert_eq!(record["notes"], Value::Null);
    assert_eq!(record["sources"].get("notes"), None);
    let warnings: Vec<&str> = record["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let has = |text: &str| {
        assert!(
            warnings.iter().any(|w| w.contains(text)),
            "no warning with {text:?} in {warnings:#?}"
        )
    };
    let ctx_name = ctx.display().to_string();
    has(&format!(
        "{ctx_name}:1: key `Orphan`: comes before any [section]"
    ));
    has(&format!(
        "{ctx_name}:4: key `CameraMagnification`: \"twelve\" is not a number"
    ));
    has(&format!(
        "{ctx_name}:8: key `LocationLatitude`: given again in [General] (first on line 7"
    ));
    has(&format!(
        "{ctx_name}:10: \"not a line\" is not a key=value line"
    ));
    has(&format!(
        "{ctx_name}:11: \"[Fluid\" is not a [section] header"
    ));
    has("_run_summary.txt:2: key `Fluid Volume Imaged`: \"lots ml\" is not a number");
    has(".cla:10: class \"Daphnia\": \"x7\" is not a particle id");
    has("class \"Daphnia\" announces 5 particles but the file ends after 2");
    has(&format!("{}:0: not read: ", notes.display()));
    // What could be read is there: Latin-1 decoded, the last duplicate, the .ctx's volume
    // when the summary has none, the 1.0 placeholder not taken for a pixel size.
    assert_eq!(record["sample"]["location_name"], "Plymouth Sound é");
    assert_eq!(record["sample"]["latitude"], 50.4);
    assert_eq!(record["sample"]["longitude"], -4.1);
    assert_eq!(record["sample"]["sources"]["latitude"], "ctx");
    assert_eq!(record["run"]["fluid_volume_imaged_ml"], 12.5);
    assert_eq!(record["run"]["fluid_volume_source"], "ctx");
    assert_eq!(record["instrument"]["magnification"], Value::Null);
    assert_eq!(record["calibration"]["um_per_pixel"], 9.25);
    assert_eq!(record["calibration"]["ctx_calibration_constant"], 1.0);
    assert_eq!(record["raw"]["ctx"][""]["Orphan"], "1");
    let daphnia = &record["classes"][0]["classes"][0];
    assert_eq!(daphnia["ids"], serde_json::json!([1, 2]));

    // A .ctx of 100,000 bad lines: the warnings are counted, not all listed.
    std::fs::write(
        &ctx,
        "[General]\n".to_string() + &"garbage\n".repeat(100_000),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let (_, record) = extract(&input, out.path(), ExtractOptions::default());
    let warnings = record["warnings"].as_array().unwrap();
    assert!(warnings.len() <= 210, "{}", warnings.len());
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("and 998")),
        "{warnings:?}"
    );
}

#[test]
fn without_side_files_the_record_has_only_what_the_particles_and_name_say() {
    let dir = tempfile::tempdir().unwrap();
    let name = "Tank_54.0143_-2.7770_04052023_3";
    let input = copy_fixture(dir.path(), name);
    for entry in std::fs::read_dir(&input).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(file.ends_with(".lst") || file.ends_with(".tif")) {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let out = tempfile::tempdir().unwrap();
    let (session, record) = extract(&input, out.path(), ExtractOptions::default());
    assert_eq!(record["sources"], serde_json::json!({}));
    assert_eq!(record["instrument"]["software"], Value::Null);
    assert_eq!(record["run"]["fluid_volume_imaged_ml"], Value::Null);
    assert_eq!(record["classes"], serde_json::json!([]));
    assert_eq!(record["calibration"]["um_per_pixel"], 9.25);
    let sample = &record["sample"];
    assert_eq!(sample["latitude"], 54.0143);
    assert_eq!(sample["date"], "2023-05-04");
    assert_eq!(sample["depth_m"], 3.0);
    assert_eq!(sample["sources"]["depth_m"], "folder_name");
    assert_eq!(sample["id"], name);
    // The vignettes are as without ExtractMetadata but for the pixel size, which the rows
    // prove: no instrument, no class, no blank mark.
    let vignettes = common::vignettes(&session);
    assert_eq!(vignettes.len(), 102);
    for path in &vignettes {
        let exif = exif_of(path);
        assert_eq!(exif_text(&exif, exif::Tag::Make), None);
        assert_eq!(exif_text(&exif, exif::Tag::Model), None);
        let description = exif_text(&exif, exif::Tag::ImageDescription).unwrap();
        let description: Value = serde_json::from_str(&description).unwrap();
        assert_eq!(description.get("class"), None);
        assert_eq!(description.get("blank"), None);
        let unit = exif
            .get_field(exif::Tag::ResolutionUnit, exif::In::PRIMARY)
            .unwrap();
        assert_eq!(unit.value.get_uint(0), Some(3));
    }

    // The trailing number read as a replicate: no depth, and the sample drops it.
    let out = tempfile::tempdir().unwrap();
    let options = ExtractOptions {
        depth_from_name: false,
        ..ExtractOptions::default()
    };
    let (_, record) = extract(&input, out.path(), options);
    assert_eq!(record["sample"]["depth_m"], Value::Null);
    assert_eq!(record["sample"]["id"], "Tank_54.0143_-2.7770_04052023");
}

#[test]
fn a_sample_sheet_comes_first_and_its_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let name = "Tank_54.0143_-2.7770_04052023_3";
    let input = copy_fixture(dir.path(), name);
    let sheet = dir.path().join("sheet.csv");
    std::fs::write(
        &sheet,
        format!(
            "session,latitude,longitude,sample_date,depth_m,station,sample_id\n\
             other,1,1,2020-01-01,1,A,x\n\
             {name},50.25,-4.5,2023-05-03,0.5,L4,JAR-7\n"
        ),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = ExtractOptions {
        sample_sheet: Some(sheet.clone()),
        ..ExtractOptions::default()
    };
    let (_, record) = extract(&input, out.path(), options.clone());
    let sample = &record["sample"];
    assert_eq!(sample["latitude"], 50.25);
    assert_eq!(sample["longitude"], -4.5);
    assert_eq!(sample["date"], "2023-05-03");
    assert_eq!(sample["depth_m"], 0.5);
    assert_eq!(sample["station"], "L4");
    assert_eq!(sample["id"], "JAR-7");
    for field in ["latitude", "longitude", "date", "depth_m", "station", "id"] {
        assert_eq!(sample["sources"][field], "sample_sheet", "{field}");
    }

    // A bad value in this session's row fails the task, naming file, line and column;
    // the record already written is kept.
    std::fs::write(
        &sheet,
        format!("session,latitude\nother,nonsense\n{name},95\n"),
    )
    .unwrap();
    let session = Arc::new(Session::new(&input, out.path(), None).unwrap());
    let before = std::fs::read(session.session_json()).unwrap();
    let pipeline = PipelineOptions {
        extract: options,
        ..PipelineOptions::default()
    };
    let root: TaskRef = Arc::new(FlowCamPipeline::new(session.clone(), pipeline, None));
    let report = Runner::new(TOOL_VERSION, 1).run(&root).unwrap();
    let task = report
        .tasks
        .iter()
        .find(|t| t.name == "ExtractMetadata")
        .unwrap();
    assert_eq!(task.state, TaskState::Failed);
    let error = task.errors.join("\n");
    assert!(
        error.contains(&format!(
            "sample sheet {}:3: column `latitude`: \"95\" is outside -90..90",
            sheet.display()
        )),
        "{error}"
    );
    assert_eq!(std::fs::read(session.session_json()).unwrap(), before);
}

fn exif_of(path: &Path) -> exif::Exif {
    let file = std::fs::File::open(path).unwrap();
    exif::Reader::new()
        .read_from_container(&mut std::io::BufReader::new(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn exif_text(exif: &exif::Exif, tag: exif::Tag) -> Option<String> {
    match &exif.get_field(tag, exif::In::PRIMARY)?.value {
        exif::Value::Ascii(parts) => Some(String::from_utf8(parts[0].clone()).unwrap()),
        other => panic!("{tag} is not ASCII: {other:?}"),
    }
}

/// The real session's facts in a vignette's EXIF (TIFF and EcoTaxa PNG alike) and in the
/// EcoTaxa table.
fn assert_the_facts_travel(session: &Session) {
    let experiment = &session.experiment;
    let tiff = common::vignette(&session.vignettes_dir(), &format!("{experiment}_6648.tif"));
    let png = session
        .output
        .join("ecotaxa/images")
        .join(format!("{experiment}_6648.png"));
    for path in [&tiff, &png] {
        let exif = exif_of(path);
        let what = path.display();
        assert_eq!(
            exif_text(&exif, exif::Tag::Make).as_deref(),
            Some("Fluid Imaging Technologies"),
            "{what}"
        );
        assert_eq!(
            exif_text(&exif, exif::Tag::Model).as_deref(),
            Some("FlowCam")
        );
        // 9.25 um per pixel = 1081.08 pixels per centimetre, exactly 10^8 / 92500.
        for tag in [exif::Tag::XResolution, exif::Tag::YResolution] {
            let field = exif.get_field(tag, exif::In::PRIMARY).unwrap();
            let exif::Value::Rational(r) = &field.value else {
                panic!("{what}: {tag} is {:?}", field.value);
            };
            assert_eq!((r[0].num, r[0].denom), (100_000_000, 92_500), "{what}");
            assert!((10_000.0 / r[0].to_f64() - 9.25).abs() < 1e-9);
        }
        let unit = exif
            .get_field(exif::Tag::ResolutionUnit, exif::In::PRIMARY)
            .unwrap();
        assert_eq!(unit.value.get_uint(0), Some(3), "{what}: centimetres");
        let description = exif_text(&exif, exif::Tag::ImageDescription).unwrap();
        let description: Value = serde_json::from_str(&description)
            .unwrap_or_else(|e| panic!("{what}: {e}: {description}"));
        assert_eq!(description["id"], 6648);
        assert_eq!(description["class"], "Cyclops", "{what}");
        assert_eq!(description.get("blank"), None);
    }
    // A particle without a class has none in its description.
    let other = exif_of(&common::vignette(
        &session.vignettes_dir(),
        &format!("{experiment}_49.tif"),
    ));
    let description = exif_text(&other, exif::Tag::ImageDescription).unwrap();
    assert!(!description.contains("class"), "{description}");

    // The EcoTaxa table: a BOM, then EcoTaxa's header and type rows.
    let tsv = std::fs::read(
        session
            .output
            .join(format!("ecotaxa/ecotaxa_{experiment}.tsv")),
    )
    .unwrap();
    assert!(tsv.starts_with("\u{feff}img_file_name\t".as_bytes()));
    let text = String::from_utf8(tsv[3..].to_vec()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let types: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(header.len(), types.len());
    let rows: Vec<std::collections::HashMap<&str, &str>> = lines
        .map(|l| header.iter().copied().zip(l.split('\t')).collect())
        .collect();
    assert_eq!(rows.len(), 8976);
    // At most 30 acq_ columns; every type is EcoTaxa's.
    assert!(header.iter().filter(|h| h.starts_with("acq_")).count() <= 30);
    assert!(types.iter().all(|t| *t == "[t]" || *t == "[f]"));
    let row = rows
        .iter()
        .find(|r| r["object_id"] == format!("{experiment}_6648"))
        .unwrap();
    // The folder name has no position or date; the sample is the session (no replicate
    // number to drop).
    assert_eq!(row["object_date"], "");
    assert_eq!(row["object_lat"], "");
    assert_eq!(row["object_imaged_at"], "2023-12-20T14:04:12.986");
    assert_eq!(
        row["object_collage"],
        format!("{experiment}_images_000007.tif")
    );
    assert_eq!(
        row["object_image_id"],
        "CDCD7FBF-AF9D-4FF7-AA6D-DD8B78E590A5"
    );
    assert_eq!(row["object_annotation_category"], "Cyclops");
    assert_eq!(row["object_annotation_status"], "predicted");
    assert_eq!(row["object_blank"], "0");
    assert_eq!(row["sample_id"], experiment.as_str());
    assert_eq!(row["sample_volume_imaged_ml"], "289.6065");
    assert_eq!(row["acq_id"], experiment.as_str());
    assert_eq!(row["acq_instrument"], "FlowCam");
    assert_eq!(row["acq_magnification"], "12");
    assert_eq!(row["acq_flow_cell"], "FC2000X2MM");
    assert_eq!(row["acq_camera"], "SenTech");
    assert_eq!(row["acq_run_start"], "2023-12-20T14:03:06");
    assert_eq!(row["acq_volume_imaged_ml"], "289.6065");
    assert_eq!(row["acq_um_per_pixel"], "9.25");
    assert_eq!(row["acq_pixel"], "0.00925");
    assert_eq!(row["process_software"], "flowcam-pipeline");
    let unclassified = rows
        .iter()
        .find(|r| r["object_id"] == format!("{experiment}_49"))
        .unwrap();
    assert_eq!(unclassified["object_annotation_category"], "");
    assert_eq!(unclassified["object_annotation_status"], "");
    for row in &rows {
        assert!(row.values().all(|v| v.chars().count() <= 250));
    }
}

/// A GPS coordinate read back as signed decimal degrees.
fn gps(exif: &exif::Exif, value: exif::Tag, reference: exif::Tag) -> f64 {
    let field = exif.get_field(value, exif::In::PRIMARY).unwrap();
    let exif::Value::Rational(dms) = &field.value else {
        panic!("{value} is {:?}", field.value);
    };
    let degrees = dms[0].to_f64() + dms[1].to_f64() / 60.0 + dms[2].to_f64() / 3600.0;
    match exif_text(exif, reference).as_deref() {
        Some("S") | Some("W") => -degrees,
        _ => degrees,
    }
}

#[test]
fn a_sheets_position_and_the_serial_number_reach_tiff_png_and_table_alike() {
    let dir = tempfile::tempdir().unwrap();
    // A folder name with no position: only the sheet gives one.
    let name = "Tank25_run7";
    let input = copy_fixture(dir.path(), name);
    let ctx = input.join(format!("{FIXTURE}.ctx"));
    let text = std::fs::read_to_string(&ctx).unwrap();
    std::fs::write(&ctx, text.replace("SerialNo=NA", "SerialNo=FC8000-0420")).unwrap();
    let sheet = dir.path().join("sheet.csv");
    std::fs::write(
        &sheet,
        format!("session,latitude,longitude,sample_date,depth_m\n{name},50.25,-4.5,2023-05-03,2\n"),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let options = PipelineOptions {
        extract: ExtractOptions {
            sample_sheet: Some(sheet.clone()),
            ..ExtractOptions::default()
        },
        ecotaxa: true,
        ..PipelineOptions::default()
    };
    let (session, record) = run_pipeline(&input, out.path(), options.clone());
    assert_eq!(record["instrument"]["serial_number"], "FC8000-0420");
    let manifest = Manifest::read(&session.manifest()).unwrap();
    let id = &manifest.rows[0].particle_id;
    let tiff = manifest.rows[0].path_in(&session.vignettes_dir());
    let png = session
        .output
        .join("ecotaxa/images")
        .join(format!("{name}_{id}.png"));
    for path in [&tiff, &png] {
        let exif = exif_of(path);
        let what = path.display();
        let lat = gps(&exif, exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef);
        let lon = gps(&exif, exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef);
        assert!((lat - 50.25).abs() < 1e-6, "{what}: {lat}");
        assert!((lon + 4.5).abs() < 1e-6, "{what}: {lon}");
        assert_eq!(
            exif_text(&exif, exif::Tag::GPSDateStamp).as_deref(),
            Some("2023:05:03"),
            "{what}"
        );
        assert_eq!(
            exif_text(&exif, exif::Tag::BodySerialNumber).as_deref(),
            Some("FC8000-0420"),
            "{what}"
        );
    }
    let tsv = std::fs::read_to_string(session.output.join(format!("ecotaxa/ecotaxa_{name}.tsv")))
        .unwrap();
    let mut lines = tsv.trim_start_matches('\u{feff}').lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let row: Vec<&str> = lines.nth(1).unwrap().split('\t').collect();
    let cell = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("object_lat"), "50.2500");
    assert_eq!(cell("object_lon"), "-4.5000");
    assert_eq!(cell("object_date"), "20230503");
    assert_eq!(cell("object_depth_min"), "2");
    assert_eq!(cell("acq_serial_number"), "FC8000-0420");

    // A new sheet value: the record is written again, but no page is measured again.
    std::fs::write(
        &sheet,
        format!("session,latitude,longitude,sample_date\n{name},50.5,-4.5,2023-05-03\n"),
    )
    .unwrap();
    let root: TaskRef = Arc::new(FlowCamPipeline::new(session.clone(), options.clone(), None));
    let report = Runner::new(TOOL_VERSION, 2).run(&root).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    let extract = report.task("ExtractMetadata").unwrap();
    assert_eq!(extract.state, TaskState::Ran);
    assert_eq!((extract.items.ran, extract.items.skipped), (0, 1));
    let exif = exif_of(&tiff);
    let lat = gps(&exif, exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef);
    assert!((lat - 50.5).abs() < 1e-6, "{lat}");

    // Another session's record, staged here by mistake, is refused by name.
    let json = std::fs::read_to_string(session.session_json()).unwrap();
    std::fs::write(
        session.session_json(),
        json.replace(
            &format!("\"session\": \"{name}\""),
            "\"session\": \"other\"",
        ),
    )
    .unwrap();
    let decollage: TaskRef = Arc::new(flowcam_pipeline::tasks::DecollageImages::new(
        session.clone(),
        Arc::new(flowcam_pipeline::tasks::ReadMetadata::new(session.clone())),
        Default::default(),
    ));
    let report = Runner::new(TOOL_VERSION, 1)
        .force(true)
        .run(&decollage)
        .unwrap();
    let errors = report.task("DecollageImages").unwrap().errors.join("\n");
    assert!(
        errors.contains("the record of session other, not of Tank25_run7"),
        "{errors}"
    );
}
