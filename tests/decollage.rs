//! DecollageImages end to end through the library: pixels, EXIF, resume after bad input.

mod common;

use common::*;
use flowcam_pipeline::engine::TaskState;
use flowcam_pipeline::synthetic::SyntheticSession;
use flowcam_pipeline::tasks::{DecollageOptions, Session};
use std::path::Path;

const POSITIONED: &str = "Tank25_54.0143_-2.7770_20122023_1";

fn exif_of(path: &Path) -> exif::Exif {
    let file = std::fs::File::open(path).unwrap();
    exif::Reader::new()
        .read_from_container(&mut std::io::BufReader::new(file))
        .unwrap()
}

fn ascii(exif: &exif::Exif, tag: exif::Tag) -> Option<String> {
    match &exif.get_field(tag, exif::In::PRIMARY)?.value {
        exif::Value::Ascii(parts) => Some(String::from_utf8(parts[0].clone()).unwrap()),
        other => panic!("{tag} is not ASCII: {other:?}"),
    }
}

fn rationals(exif: &exif::Exif, tag: exif::Tag) -> Vec<f64> {
    match &exif.get_field(tag, exif::In::PRIMARY).unwrap().value {
        exif::Value::Rational(parts) => parts.iter().map(|r| r.to_f64()).collect(),
        other => panic!("{tag} is not rational: {other:?}"),
    }
}

/// A GPS coordinate read back as signed decimal degrees.
fn coordinate(exif: &exif::Exif, value: exif::Tag, reference: exif::Tag) -> f64 {
    let parts = rationals(exif, value);
    let degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0;
    match ascii(exif, reference).unwrap().as_str() {
        "N" | "E" => degrees,
        "S" | "W" => -degrees,
        other => panic!("bad reference {other}"),
    }
}

#[test]
fn vignette_pixels_equal_the_crop_of_the_decoded_collage() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let session = session(&input, &dir.path().join("out"));
    let report = run(&session, DecollageOptions::default());
    assert!(report.succeeded(), "{}", report.summary());

    let rows = metadata_rows(&session);
    let files = vignettes(&session);
    assert_eq!(files.len(), 102);
    assert_eq!(rows.len(), 102);
    let collage_path = input.join(format!("{FIXTURE}_images_000009.tif"));
    let (cw, _ch, channels, collage) = decode(&collage_path);
    for file in &files {
        let name = file.file_stem().unwrap().to_str().unwrap();
        let id = name.strip_prefix(&format!("{FIXTURE}_")).unwrap();
        let row = &rows[id];
        let num = |k: &str| row[k].parse::<usize>().unwrap();
        let (x, y, w, h) = (
            num("image_x"),
            num("image_y"),
            num("image_w"),
            num("image_h"),
        );
        let (vw, vh, vc, pixels) = decode(file);
        assert_eq!((vw as usize, vh as usize, vc), (w, h, channels), "{name}");
        for dy in 0..h {
            for dx in 0..w {
                for c in 0..channels {
                    let expected = collage[((y + dy) * cw as usize + x + dx) * channels + c];
                    let got = pixels[(dy * w + dx) * channels + c];
                    assert_eq!(got, expected, "{name} pixel ({dx},{dy}) channel {c}");
                }
            }
        }
    }
    // The manifest lists every vignette with its true size.
    let manifest = manifest(&session);
    assert_eq!(manifest.len(), 102);
    for entry in &manifest {
        let path = session
            .vignettes_dir()
            .join(&entry["collage"])
            .join(&entry["file"]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len().to_string(),
            entry["bytes"]
        );
        assert_eq!(entry["collage"], format!("{FIXTURE}_images_000009.tif"));
    }
}

#[test]
fn exif_carries_position_depth_dates_and_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    assert!(run(&session, DecollageOptions::default()).succeeded());
    let rows = metadata_rows(&session);
    let files = vignettes(&session);
    assert_eq!(files.len(), 102);
    for file in files.iter().step_by(17) {
        let exif = exif_of(file);
        let lat = coordinate(&exif, exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef);
        let lon = coordinate(&exif, exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef);
        assert_eq!(format!("{lat:.4}"), "54.0143");
        assert_eq!(format!("{lon:.4}"), "-2.7770");
        let alt_ref = exif.get_field(exif::Tag::GPSAltitudeRef, exif::In::PRIMARY);
        assert_eq!(
            alt_ref.unwrap().value.get_uint(0),
            Some(1),
            "below sea level"
        );
        assert_eq!(rationals(&exif, exif::Tag::GPSAltitude), [1.0]);
        assert_eq!(
            ascii(&exif, exif::Tag::GPSDateStamp).as_deref(),
            Some("2023:12:20")
        );

        let description = ascii(&exif, exif::Tag::ImageDescription).unwrap();
        let json: serde_json::Value = serde_json::from_str(&description).unwrap();
        let id = json["id"].as_i64().unwrap().to_string();
        let row = &rows[&id];
        assert_eq!(json.as_object().unwrap().len(), 53);
        assert_eq!(
            json["image_w"].as_i64().unwrap().to_string(),
            row["image_w"]
        );
        assert_eq!(
            json["abd_diameter"].as_f64().unwrap(),
            row["abd_diameter"].parse::<f64>().unwrap()
        );
        assert_eq!(json["image_id"].as_str().unwrap(), row["image_id"]);

        // 2023-12-20T14:04:37.675 -> 2023:12:20 14:04:37 + 675
        let timestamp = &row["timestamp"];
        let (whole, fraction) = timestamp.split_once('.').unwrap();
        assert_eq!(
            ascii(&exif, exif::Tag::DateTimeOriginal).unwrap(),
            whole.replace('-', ":").replace('T', " ")
        );
        assert_eq!(
            ascii(&exif, exif::Tag::SubSecTimeOriginal).unwrap(),
            fraction
        );
        assert!(file.file_name().unwrap().to_str().unwrap() == format!("{POSITIONED}_{id}.tif"));
    }
}

#[test]
fn southern_and_eastern_positions_keep_their_signs() {
    let dir = tempfile::tempdir().unwrap();
    let synthetic = SyntheticSession {
        particles: 5,
        position: Some((
            -33.8568,
            151.2153,
            chrono::NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
            Some(12.5),
        )),
        prefix: "Sydney".into(),
        ..SyntheticSession::default()
    };
    let input = synthetic.write(dir.path()).unwrap();
    let session = session(&input, &dir.path().join("out"));
    assert!(run(&session, DecollageOptions::default()).succeeded());
    let files = vignettes(&session);
    assert_eq!(files.len(), 5);
    let exif = exif_of(&files[0]);
    assert_eq!(
        ascii(&exif, exif::Tag::GPSLatitudeRef).as_deref(),
        Some("S")
    );
    assert_eq!(
        ascii(&exif, exif::Tag::GPSLongitudeRef).as_deref(),
        Some("E")
    );
    let lat = coordinate(&exif, exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef);
    let lon = coordinate(&exif, exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef);
    assert_eq!(format!("{lat:.4} {lon:.4}"), "-33.8568 151.2153");
    assert_eq!(rationals(&exif, exif::Tag::GPSAltitude), [12.5]);
    assert_eq!(
        ascii(&exif, exif::Tag::GPSDateStamp).as_deref(),
        Some("2024:12:31")
    );
}

#[test]
fn no_position_in_the_name_means_no_gps_and_measurements_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let session = session(&input, &dir.path().join("out"));
    let options = DecollageOptions {
        embed_measurements: false,
        ..DecollageOptions::default()
    };
    assert!(run(&session, options).succeeded());
    let exif = exif_of(&vignettes(&session)[0]);
    assert!(
        exif.get_field(exif::Tag::GPSLatitude, exif::In::PRIMARY)
            .is_none()
    );
    assert!(
        exif.get_field(exif::Tag::GPSVersionID, exif::In::PRIMARY)
            .is_none()
    );
    assert!(
        exif.get_field(exif::Tag::ImageDescription, exif::In::PRIMARY)
            .is_none()
    );
    assert!(ascii(&exif, exif::Tag::DateTimeOriginal).is_some());

    // Switching the measurements back on is a parameter change: everything is redone.
    let report = run(&session, DecollageOptions::default());
    let decollage = report.task("DecollageImages").unwrap();
    assert_eq!(decollage.state, TaskState::Ran);
    assert!(
        decollage
            .reason
            .as_deref()
            .unwrap()
            .contains("embed_measurements"),
        "{:?}",
        decollage.reason
    );
    assert_eq!(decollage.items.ran, 1);
    let exif = exif_of(&vignettes(&session)[0]);
    assert!(ascii(&exif, exif::Tag::ImageDescription).is_some());
}

#[test]
fn exiftool_validates_vignettes_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    assert!(run(&session, DecollageOptions::default()).succeeded());
    let files = vignettes(&session);
    let output = std::process::Command::new("exiftool")
        .args(["-validate", "-warning", "-a"])
        .args(&files[..10])
        .output()
        .expect("exiftool is needed for this test: apt-get install libimage-exiftool-perl");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let validations: Vec<&str> = text.lines().filter(|l| l.starts_with("Validate")).collect();
    assert_eq!(validations.len(), 10, "{text}");
    assert!(validations.iter().all(|l| l.ends_with(": OK")), "{text}");
    assert!(!text.contains("Warning"), "{text}");
}

/// A session of three pages: page 2's problems fail its item only.
fn three_pages(parent: &Path) -> (SyntheticSession, std::path::PathBuf) {
    let synthetic = SyntheticSession {
        particles: 60,
        pages: 3,
        prefix: "three".into(),
        ..SyntheticSession::default()
    };
    let input = synthetic.write(parent).unwrap();
    (synthetic, input)
}

#[test]
fn a_missing_collage_fails_alone_and_a_rerun_after_the_fix_does_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let (synthetic, input) = three_pages(dir.path());
    let page2 = input.join(synthetic.collage_name(1));
    let saved = dir.path().join("saved.tif");
    std::fs::rename(&page2, &saved).unwrap();

    let session = session(&input, &dir.path().join("out"));
    let report = run(&session, DecollageOptions::default());
    assert!(!report.succeeded());
    let decollage = report.task("DecollageImages").unwrap();
    assert_eq!(decollage.state, TaskState::Failed);
    assert_eq!(decollage.errors.len(), 1, "{:?}", decollage.errors);
    assert!(
        decollage.errors[0].contains(&synthetic.collage_name(1)),
        "{:?}",
        decollage.errors
    );
    assert_eq!(
        report.task("FlowCamPipeline").unwrap().state,
        TaskState::Blocked
    );
    assert!(
        !session.manifest().exists(),
        "no manifest for a failed task"
    );
    let layout = synthetic.layout().unwrap();
    let good = layout.placements.iter().filter(|p| p.page != 1).count();
    assert_eq!(
        vignettes(&session).len(),
        good,
        "good pages keep their vignettes"
    );

    std::fs::rename(&saved, &page2).unwrap();
    let report = run(&session, DecollageOptions::default());
    assert!(report.succeeded(), "{}", report.summary());
    let decollage = report.task("DecollageImages").unwrap();
    assert_eq!((decollage.items.ran, decollage.items.skipped), (1, 2));
    assert_eq!(vignettes(&session).len(), 60);
    assert_eq!(manifest(&session).len(), 60);
}

#[test]
fn a_corrupt_collage_and_an_out_of_bounds_particle_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (synthetic, input) = three_pages(dir.path());
    // Page 1: truncated. Page 3: one particle pushed off the page.
    let page1 = input.join(synthetic.collage_name(0));
    let lst = input.join(format!("{}.lst", synthetic.folder_name()));
    let good_lst = std::fs::read(&lst).unwrap();
    let bytes = std::fs::read(&page1).unwrap();
    std::fs::write(&page1, &bytes[..bytes.len() / 3]).unwrap();
    let text = std::fs::read_to_string(&lst).unwrap();
    let layout = synthetic.layout().unwrap();
    let victim = layout.placements.iter().find(|p| p.page == 2).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let mut values: Vec<&str> = line.split('|').collect();
            if values.len() > 5 && values[0] == victim.id.to_string() {
                values[1] = "5000";
            }
            values.join("|")
        })
        .collect();
    std::fs::write(&lst, edited.join("\n") + "\n").unwrap();

    let session = session(&input, &dir.path().join("out"));
    let report = run(&session, DecollageOptions::default());
    let decollage = report.task("DecollageImages").unwrap();
    assert_eq!(decollage.state, TaskState::Failed);
    let errors = decollage.errors.join("\n");
    assert_eq!(decollage.errors.len(), 2, "{errors}");
    assert!(errors.contains(&synthetic.collage_name(0)), "{errors}");
    assert!(errors.contains("decode"), "{errors}");
    assert!(
        errors.contains(&format!("particle {} (x=5000", victim.id)),
        "{errors}"
    );
    assert!(errors.contains(&synthetic.collage_name(2)), "{errors}");
    let page2 = layout.placements.iter().filter(|p| p.page == 1).count();
    assert_eq!(vignettes(&session).len(), page2);

    // Fix both; the rerun redoes ReadMetadata (the .lst changed) but only the two bad pages.
    std::fs::write(&page1, &bytes).unwrap();
    std::fs::write(&lst, &good_lst).unwrap();
    let report = run(&session, DecollageOptions::default());
    assert!(report.succeeded(), "{}", report.summary());
    let decollage = report.task("DecollageImages").unwrap();
    assert_eq!((decollage.items.ran, decollage.items.skipped), (2, 1));
    assert_eq!(vignettes(&session).len(), 60);
}

#[test]
fn the_input_folder_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let listing = |p: &Path| {
        let mut v: Vec<(String, u64, std::time::SystemTime)> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(&input);
    let dir_mtime = std::fs::metadata(&input).unwrap().modified().unwrap();
    let session = session(&input, &dir.path().join("out"));
    assert!(run(&session, DecollageOptions::default()).succeeded());
    assert_eq!(listing(&input), before);
    assert_eq!(
        std::fs::metadata(&input).unwrap().modified().unwrap(),
        dir_mtime
    );

    // An output folder inside the input folder is refused outright.
    let err = Session::new(&input, &input.join("out"), None).unwrap_err();
    assert!(err.to_string().contains("never written"), "{err}");
}

#[test]
fn unsafe_collage_names_in_the_list_are_rejected_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let lst = input.join(format!("{FIXTURE}.lst"));
    let text = std::fs::read_to_string(&lst).unwrap();
    let edited = text.replacen(
        &format!("{FIXTURE}_images_000009.tif"),
        "../../etc/passwd",
        1,
    );
    std::fs::write(&lst, edited).unwrap();
    let session = session(&input, &dir.path().join("out"));
    let report = run(&session, DecollageOptions::default());
    let read = report.task("ReadMetadata").unwrap();
    assert_eq!(read.state, TaskState::Failed);
    let error = read.errors.join("\n");
    assert!(error.contains(":56: field collage_file"), "{error}");
    assert!(error.contains("../../etc/passwd"), "{error}");
    assert!(!session.metadata_csv().exists());
}

#[test]
fn a_session_without_a_single_lst_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    std::fs::copy(
        input.join(format!("{FIXTURE}.lst")),
        input.join("second.lst"),
    )
    .unwrap();
    let session = session(&input, &dir.path().join("out"));
    let report = run(&session, DecollageOptions::default());
    let error = report.task("ReadMetadata").unwrap().errors.join("\n");
    assert!(error.contains("several .lst files"), "{error}");
    assert!(error.contains("second.lst"), "{error}");

    std::fs::remove_file(input.join("second.lst")).unwrap();
    std::fs::remove_file(input.join(format!("{FIXTURE}.lst"))).unwrap();
    let report = run(&session, DecollageOptions::default());
    let error = report.task("ReadMetadata").unwrap().errors.join("\n");
    assert!(error.contains("no .lst particle list"), "{error}");
    assert!(error.contains(&input.display().to_string()), "{error}");
}
