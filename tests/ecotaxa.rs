//! ExportEcoTaxa end to end through the library: the TSV's columns and values, the PNGs'
//! pixels and EXIF against the TIFF vignettes, the zip, and resume.

mod common;

use common::stage::{TaskRun, run_task_alone};
use common::*;
use flowcam_pipeline::engine::{TaskRef, TaskState};
use flowcam_pipeline::synthetic::SyntheticSession;
use flowcam_pipeline::tasks::ecotaxa::{ExportEcoTaxa, FIXED_COLUMNS};
use flowcam_pipeline::tasks::{DecollageImages, DecollageOptions, ReadMetadata, Session};
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const POSITIONED: &str = "Tank25_54.0143_-2.7770_04052023_1";

/// ReadMetadata -> DecollageImages -> ExportEcoTaxa for one session.
fn export_task(session: &Arc<Session>, options: DecollageOptions) -> Arc<ExportEcoTaxa> {
    let metadata: TaskRef = Arc::new(ReadMetadata::new(session.clone()));
    let decollage: TaskRef = Arc::new(DecollageImages::new(session.clone(), metadata, options));
    Arc::new(ExportEcoTaxa::new(session.clone(), decollage))
}

fn run_export(export: &Arc<ExportEcoTaxa>) -> TaskRun {
    let run = run_task_alone(export.clone());
    assert!(run.report.succeeded(), "{}", run.report.summary());
    run
}

/// The TSV's rows, header and type rows included (after the byte-order mark it must start
/// with).
fn tsv_rows(path: &Path) -> Vec<Vec<String>> {
    let bytes = std::fs::read(path).unwrap();
    let text = bytes
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or_else(|| panic!("{} has no UTF-8 byte-order mark", path.display()));
    csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .has_headers(false)
        .from_reader(text)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// The TSV's data rows as maps from column name to value.
fn tsv_maps(path: &Path) -> Vec<HashMap<String, String>> {
    let rows = tsv_rows(path);
    rows[2..]
        .iter()
        .map(|row| rows[0].iter().cloned().zip(row.iter().cloned()).collect())
        .collect()
}

/// Decodes a PNG file: (width, height, samples per pixel, bytes).
fn decode_png(path: &Path) -> (u32, u32, usize, Vec<u8>) {
    common::decode_png_bytes(&std::fs::read(path).unwrap())
}

fn exif_of(path: &Path) -> exif::Exif {
    let file = std::fs::File::open(path).unwrap();
    exif::Reader::new()
        .read_from_container(&mut std::io::BufReader::new(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every tag the TIFF vignettes carry besides the image structure, as text.
const EXIF_TAGS: [exif::Tag; 25] = [
    exif::Tag::Model,
    exif::Tag::XResolution,
    exif::Tag::YResolution,
    exif::Tag::ResolutionUnit,
    exif::Tag::BodySerialNumber,
    exif::Tag::ImageDescription,
    exif::Tag::Software,
    exif::Tag::DateTime,
    exif::Tag::ExifVersion,
    exif::Tag::DateTimeOriginal,
    exif::Tag::SubSecTimeOriginal,
    exif::Tag::FlashpixVersion,
    exif::Tag::ColorSpace,
    exif::Tag::GPSVersionID,
    exif::Tag::GPSLatitudeRef,
    exif::Tag::GPSLatitude,
    exif::Tag::GPSLongitudeRef,
    exif::Tag::GPSLongitude,
    exif::Tag::GPSAltitudeRef,
    exif::Tag::GPSAltitude,
    exif::Tag::GPSProcessingMethod,
    exif::Tag::GPSDateStamp,
    exif::Tag::GPSTimeStamp,
    exif::Tag::Make,
    exif::Tag::Artist,
];

fn tag_values(exif: &exif::Exif) -> Vec<(exif::Tag, Option<String>)> {
    EXIF_TAGS
        .iter()
        .map(|&tag| {
            let value = exif
                .get_field(tag, exif::In::PRIMARY)
                .map(|f| match &f.value {
                    // Its Debug form shows where in the file it sits.
                    exif::Value::Undefined(bytes, _) => format!("Undefined({bytes:?})"),
                    other => format!("{other:?}"),
                });
            (tag, value)
        })
        .collect()
}

fn ascii(exif: &exif::Exif, tag: exif::Tag) -> Option<String> {
    match &exif.get_field(tag, exif::In::PRIMARY)?.value {
        exif::Value::Ascii(parts) => Some(String::from_utf8(parts[0].clone()).unwrap()),
        other => panic!("{tag} is not ASCII: {other:?}"),
    }
}

/// A GPS coordinate read back as signed decimal degrees.
fn coordinate(exif: &exif::Exif, value: exif::Tag, reference: exif::Tag) -> f64 {
    let parts = match &exif.get_field(value, exif::In::PRIMARY).unwrap().value {
        exif::Value::Rational(parts) => parts.iter().map(|r| r.to_f64()).collect::<Vec<_>>(),
        other => panic!("{value} is not rational: {other:?}"),
    };
    let degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0;
    match ascii(exif, reference).unwrap().as_str() {
        "N" | "E" => degrees,
        "S" | "W" => -degrees,
        other => panic!("bad reference {other}"),
    }
}

/// The fixture's numeric `.lst` fields but `id`, in list order.
const FIXTURE_MEASUREMENTS: [&str; 49] = [
    "image_x",
    "image_y",
    "image_w",
    "image_h",
    "src_x",
    "src_y",
    "src_image",
    "cal_image",
    "ppc",
    "camera",
    "cal_const",
    "fringe_size",
    "sphere_count",
    "raw_sphere_volume",
    "raw_sphere_complement",
    "raw_sphere_unknown",
    "raw_area",
    "raw_feret_max",
    "raw_feret_min",
    "raw_feret_mean",
    "raw_perimeter",
    "raw_convex_perimeter",
    "raw_legendre_major",
    "raw_legendre_minor",
    "abd_area",
    "abd_diameter",
    "length",
    "width",
    "esd_diameter",
    "fd_diameter",
    "perimeter",
    "convex_perimeter",
    "intensity",
    "sigma_intensity",
    "sum_intensity",
    "compactness",
    "elongation",
    "roughness",
    "edge_gradient",
    "elapsed_time",
    "circle_fit",
    "symmetry",
    "circularity_hu",
    "intensity_calimage",
    "raw_convex_hull_area",
    "raw_filled_area",
    "filled_area",
    "feret_max_angle",
    "feret_min_angle",
];

#[test]
fn the_tsv_has_ecotaxas_header_type_row_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    let export = export_task(&session, DecollageOptions::default());
    let run = run_export(&export);
    assert_eq!(
        run.outputs,
        [export.images_dir(), export.tsv(), export.zip()]
    );
    assert_eq!(
        export.tsv(),
        session
            .output
            .join("ecotaxa")
            .join(format!("ecotaxa_{POSITIONED}.tsv"))
    );
    assert_eq!(
        export.zip(),
        session.output.join(format!("ecotaxa_{POSITIONED}.zip"))
    );
    let task = run.report.task("ExportEcoTaxa").unwrap();
    assert_eq!(task.id, format!("ExportEcoTaxa({POSITIONED})"));
    assert_eq!((task.state, task.items.ran), (TaskState::Ran, 1));

    let rows = tsv_rows(&export.tsv());
    let mut header: Vec<&str> = FIXED_COLUMNS.iter().map(|(name, _)| *name).collect();
    // EcoTaxa's own names come first; the rest are prefixed by their table.
    assert_eq!(
        header[..8],
        [
            "img_file_name",
            "object_id",
            "object_lat",
            "object_lon",
            "object_date",
            "object_time",
            "object_depth_min",
            "object_depth_max",
        ]
    );
    assert!(header[1..].iter().all(|h| {
        ["object_", "sample_", "acq_", "process_"]
            .iter()
            .any(|p| h.starts_with(p))
    }));
    assert!(header.iter().filter(|h| h.starts_with("acq_")).count() <= 30);
    let measured: Vec<String> = FIXTURE_MEASUREMENTS
        .iter()
        .map(|m| format!("object_{m}"))
        .collect();
    header.extend(measured.iter().map(String::as_str));
    assert_eq!(rows[0], header);
    let mut types: Vec<&str> = FIXED_COLUMNS.iter().map(|(_, ty)| *ty).collect();
    assert_eq!(
        types[..8],
        ["[t]", "[t]", "[f]", "[f]", "[t]", "[t]", "[f]", "[f]"]
    );
    types.extend([("[f]"); 49]);
    assert_eq!(rows[1], types);
    assert_eq!(rows.len(), 2 + 102);
    assert!(rows.iter().all(|r| r.len() == header.len()));

    let metadata = metadata_rows(&session);
    let manifest = manifest(&session);
    let tsv = tsv_maps(&export.tsv());
    assert_eq!(tsv.len(), manifest.len());
    for (row, entry) in tsv.iter().zip(&manifest) {
        // Rows in manifest order.
        let id = &entry["particle_id"];
        assert_eq!(row["object_id"], format!("{POSITIONED}_{id}"));
        assert_eq!(
            row["img_file_name"],
            format!("images/{POSITIONED}_{id}.png")
        );
        assert_eq!(row["object_lat"], "54.0143");
        assert_eq!(row["object_lon"], "-2.7770");
        assert_eq!(row["object_lat"].parse::<f64>().unwrap(), 54.0143);
        assert_eq!(row["object_lon"].parse::<f64>().unwrap(), -2.777);
        assert_eq!(row["object_depth_min"], "1");
        assert_eq!(row["object_depth_max"], "1");
        // Without ExtractMetadata, the sample is still the folder name less its trailing
        // number (here a depth, so it stays).
        assert_eq!(row["sample_id"], POSITIONED);
        assert_eq!(row["acq_id"], POSITIONED);
        assert_eq!(row["acq_instrument"], "FlowCam");
        assert_eq!(row["process_software"], "flowcam-pipeline");

        // object_date is the sampling date, from the folder name (EcoTaxa's event date);
        // the particle's own time (2023-12-20T14:04:37.675 ...) has its own column.
        let raw = &metadata[id];
        let timestamp = &raw["timestamp"];
        assert_eq!(row["object_date"], "20230504");
        assert_eq!(row["sample_date"], "20230504");
        assert_eq!(row["object_time"], "");
        assert_eq!(row["object_imaged_at"], entry["captured_at"]);
        assert_eq!(
            row["object_imaged_at"][..19],
            timestamp[..19].replace(' ', "T")
        );
        assert_eq!(row["object_collage"], entry["collage"]);
        assert_eq!(row["object_image_id"], raw["image_id"]);
        assert_eq!(row["object_blank"], "0");

        for m in FIXTURE_MEASUREMENTS {
            let cell = &row[&format!("object_{m}")];
            assert_eq!(
                cell.parse::<f64>().unwrap(),
                raw[m].parse::<f64>().unwrap(),
                "particle {id} {m}"
            );
        }
        assert_eq!(row["object_abd_diameter"], raw["abd_diameter"]);
    }
    let first = &tsv[0];
    let id = &manifest[0]["particle_id"];
    assert_eq!(first["object_id"], format!("{POSITIONED}_{id}"));
}

#[test]
fn pngs_have_the_tiffs_pixels_and_exif_and_the_zip_holds_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    let export = export_task(&session, DecollageOptions::default());
    run_export(&export);

    let manifest = manifest(&session);
    assert_eq!(manifest.len(), 102);
    let mut names = Vec::new();
    for entry in &manifest {
        let id = &entry["particle_id"];
        let tiff = session
            .vignettes_dir()
            .join(&entry["collage"])
            .join(&entry["file"]);
        let png = export.images_dir().join(format!("{POSITIONED}_{id}.png"));
        assert_eq!(decode_png(&png), decode(&tiff), "particle {id} pixels");

        let (png_exif, tiff_exif) = (exif_of(&png), exif_of(&tiff));
        assert_eq!(
            tag_values(&png_exif),
            tag_values(&tiff_exif),
            "particle {id}"
        );
        let lat = coordinate(&png_exif, exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef);
        let lon = coordinate(
            &png_exif,
            exif::Tag::GPSLongitude,
            exif::Tag::GPSLongitudeRef,
        );
        assert_eq!(format!("{lat:.4} {lon:.4}"), "54.0143 -2.7770");
        assert_eq!(
            ascii(&png_exif, exif::Tag::GPSLatitudeRef).as_deref(),
            Some("N")
        );
        assert_eq!(
            ascii(&png_exif, exif::Tag::GPSLongitudeRef).as_deref(),
            Some("W")
        );
        assert_eq!(
            ascii(&png_exif, exif::Tag::GPSDateStamp).as_deref(),
            Some("2023:05:04")
        );
        let description = ascii(&png_exif, exif::Tag::ImageDescription).unwrap();
        let json: serde_json::Value = serde_json::from_str(&description).unwrap();
        assert_eq!(json["id"].as_i64().unwrap().to_string(), *id);
        let original = ascii(&png_exif, exif::Tag::DateTimeOriginal).unwrap();
        assert_eq!(
            original,
            entry["captured_at"][..19]
                .replace('-', ":")
                .replace('T', " ")
        );
        names.push(format!("images/{POSITIONED}_{id}.png"));
    }

    // The zip: the TSV at its root and every PNG at its img_file_name, byte for byte.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(export.zip()).unwrap()).unwrap();
    let listed: BTreeSet<String> = zip
        .file_names()
        .map(|name| name.unwrap().into_owned())
        .collect();
    let tsv_name = format!("ecotaxa_{POSITIONED}.tsv");
    let mut expected: BTreeSet<String> = names.iter().cloned().collect();
    expected.insert(tsv_name.clone());
    assert_eq!(listed, expected);
    assert_eq!(zip.len(), 103);
    let referenced: BTreeSet<String> = tsv_maps(&export.tsv())
        .into_iter()
        .map(|row| row["img_file_name"].clone())
        .collect();
    assert_eq!(referenced, names.iter().cloned().collect());
    for name in names.iter().take(5).chain([&tsv_name]) {
        let mut bytes = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(export.dir().join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_rerun_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    let export = export_task(&session, DecollageOptions::default());
    run_export(&export);
    let zip_before = std::fs::metadata(export.zip()).unwrap().modified().unwrap();

    let run = run_export(&export);
    assert!(!run.report.did_work(), "{}", run.report.summary());
    let task = run.report.task("ExportEcoTaxa").unwrap();
    assert_eq!(task.state, TaskState::AlreadyComplete);
    assert_eq!(
        std::fs::metadata(export.zip()).unwrap().modified().unwrap(),
        zip_before
    );
}

#[test]
fn a_page_that_lost_a_png_is_redone_alone_and_the_zip_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let synthetic = SyntheticSession {
        particles: 30,
        pages: 3,
        prefix: "three".into(),
        ..SyntheticSession::default()
    };
    let input = synthetic.write(dir.path()).unwrap();
    let session = session(&input, &dir.path().join("out"));
    let export = export_task(&session, DecollageOptions::default());
    let run = run_export(&export);
    assert_eq!(run.report.task("ExportEcoTaxa").unwrap().items.ran, 3);
    let experiment = &session.experiment;

    // Every page's PNGs have their TIFFs' pixels.
    let manifest = manifest(&session);
    assert_eq!(manifest.len(), 30);
    for entry in &manifest {
        let png = export
            .images_dir()
            .join(format!("{experiment}_{}.png", entry["particle_id"]));
        let tiff = session
            .vignettes_dir()
            .join(&entry["collage"])
            .join(&entry["file"]);
        assert_eq!(decode_png(&png), decode(&tiff));
    }

    let victim = manifest
        .iter()
        .find(|e| e["collage"] == synthetic.collage_name(1))
        .unwrap();
    let png = export
        .images_dir()
        .join(format!("{experiment}_{}.png", victim["particle_id"]));
    let bytes = std::fs::read(&png).unwrap();
    let zip_before = std::fs::read(export.zip()).unwrap();
    // A PNG alone going missing is not noticed (the task's targets are the folder, the TSV
    // and the zip, as DecollageImages' are its folder and manifest); with the zip gone too,
    // the task reruns and redoes only the page that lost a file.
    std::fs::remove_file(&png).unwrap();
    std::fs::remove_file(export.zip()).unwrap();

    let run = run_export(&export);
    let task = run.report.task("ExportEcoTaxa").unwrap();
    assert_eq!(task.state, TaskState::Ran);
    assert_eq!((task.items.ran, task.items.skipped), (1, 2));
    assert_eq!(
        run.report.task("DecollageImages").unwrap().state,
        TaskState::AlreadyComplete
    );
    assert_eq!(std::fs::read(&png).unwrap(), bytes, "same PNG again");
    assert_eq!(std::fs::read(export.zip()).unwrap(), zip_before, "same zip");
}

#[test]
fn without_a_position_lat_lon_and_depth_are_empty_and_gps_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let session = session(&input, &dir.path().join("out"));
    let options = DecollageOptions {
        embed_measurements: false,
        ..DecollageOptions::default()
    };
    let export = export_task(&session, options);
    run_export(&export);
    let row = &tsv_maps(&export.tsv())[0];
    for column in [
        "object_lat",
        "object_lon",
        "object_depth_min",
        "object_depth_max",
    ] {
        assert_eq!(row[column], "", "{column}");
    }
    // No sampling date either: the particle's imaging time is not one.
    assert_eq!(row["object_date"], "");
    assert!(row["object_imaged_at"].starts_with("2023-12-20T"));
    assert_eq!(row["sample_id"], FIXTURE);

    let entry = &manifest(&session)[0];
    let png = export
        .images_dir()
        .join(format!("{FIXTURE}_{}.png", entry["particle_id"]));
    let tiff = session
        .vignettes_dir()
        .join(&entry["collage"])
        .join(&entry["file"]);
    let exif = exif_of(&png);
    assert_eq!(tag_values(&exif), tag_values(&exif_of(&tiff)));
    for absent in [
        exif::Tag::GPSLatitude,
        exif::Tag::GPSVersionID,
        exif::Tag::ImageDescription,
    ] {
        assert!(
            exif.get_field(absent, exif::In::PRIMARY).is_none(),
            "{absent}"
        );
    }
    assert!(ascii(&exif, exif::Tag::DateTimeOriginal).is_some());
}

#[test]
fn exiftool_validates_the_pngs_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let session = session(&input, &dir.path().join("out"));
    let export = export_task(&session, DecollageOptions::default());
    run_export(&export);
    let mut files: Vec<PathBuf> = std::fs::read_dir(export.images_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 102);
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

#[test]
fn an_edited_manifest_cannot_point_outside_the_vignettes() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), FIXTURE);
    let session = session(&input, &dir.path().join("out"));
    let export = export_task(&session, DecollageOptions::default());
    run_export(&export);
    let text = std::fs::read_to_string(session.manifest()).unwrap();
    let first = &manifest(&session)[0]["file"];
    std::fs::write(
        session.manifest(),
        text.replacen(first.as_str(), "../metadata.csv", 1),
    )
    .unwrap();

    // Run the export on the edited manifest as it is: with DecollageImages as its
    // requirement the edit would be repaired first (the manifest is its target).
    struct AsItIs;
    impl flowcam_pipeline::engine::Task for AsItIs {
        fn name(&self) -> &'static str {
            "AsItIs"
        }
        fn outputs(&self) -> Vec<std::path::PathBuf> {
            Vec::new()
        }
        fn state_dir(&self) -> std::path::PathBuf {
            std::path::PathBuf::from("/nonexistent")
        }
    }
    let hostile = Arc::new(ExportEcoTaxa::new(session.clone(), Arc::new(AsItIs)));
    let run = run_task_alone(hostile);
    let task = run.report.task("ExportEcoTaxa").unwrap();
    assert_eq!(task.state, TaskState::Failed);
    let errors = task.errors.join("\n");
    assert!(errors.contains("manifest.csv:2"), "{errors}");
    assert!(errors.contains("../metadata.csv"), "{errors}");
}

/// `grey`: the bundled session's pages are RGB with equal channels, so every vignette and
/// PNG is 8-bit grey, holds the RGB one's pixels (its first channel, and the other two are
/// equal to it) and its EXIF, in fewer bytes.
#[test]
fn grey_vignettes_hold_the_same_pixels_and_exif_in_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), POSITIONED);
    let rgb_session = session(&input, &dir.path().join("rgb"));
    let grey_session = session(&input, &dir.path().join("grey"));
    let rgb = export_task(&rgb_session, DecollageOptions::default());
    let grey = export_task(
        &grey_session,
        DecollageOptions {
            grey: true,
            ..DecollageOptions::default()
        },
    );
    run_export(&rgb);
    run_export(&grey);
    let manifest = manifest(&rgb_session);
    assert_eq!(manifest.len(), 102);
    // Bytes of TIFFs, then of PNGs: (RGB, grey).
    let mut bytes = [(0, 0); 2];
    for entry in &manifest {
        let id = &entry["particle_id"];
        let png = format!("{POSITIONED}_{id}.png");
        for (kind, (rgb_file, grey_file)) in [
            (
                rgb_session
                    .vignettes_dir()
                    .join(&entry["collage"])
                    .join(&entry["file"]),
                grey_session
                    .vignettes_dir()
                    .join(&entry["collage"])
                    .join(&entry["file"]),
            ),
            (rgb.images_dir().join(&png), grey.images_dir().join(&png)),
        ]
        .into_iter()
        .enumerate()
        {
            let decode_any = |path: &Path| {
                if path.extension().is_some_and(|e| e == "png") {
                    decode_png(path)
                } else {
                    decode(path)
                }
            };
            let (w, h, channels, pixels) = decode_any(&rgb_file);
            let (gw, gh, grey_channels, grey_pixels) = decode_any(&grey_file);
            assert_eq!((channels, grey_channels), (3, 1), "particle {id}");
            assert_eq!((w, h), (gw, gh), "particle {id}");
            assert!(pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
            let first: Vec<u8> = pixels.chunks(3).map(|p| p[0]).collect();
            assert!(first == grey_pixels, "particle {id}: pixels differ");
            assert_eq!(
                tag_values(&exif_of(&rgb_file)),
                tag_values(&exif_of(&grey_file)),
                "particle {id}"
            );
            let (rgb_size, grey_size) = (
                std::fs::metadata(&rgb_file).unwrap().len(),
                std::fs::metadata(&grey_file).unwrap().len(),
            );
            assert!(grey_size < rgb_size, "particle {id}");
            bytes[kind].0 += rgb_size;
            bytes[kind].1 += grey_size;
        }
    }
    eprintln!("TIFF and PNG bytes, RGB and grey: {bytes:?}");
    // The pixels take a third; the EXIF and measurements, the same in both, do not shrink.
    let [(rgb_tiff, grey_tiff), (rgb_png, grey_png)] = bytes;
    assert!(grey_tiff * 10 < rgb_tiff * 6, "{bytes:?}");
    assert!(grey_png < rgb_png, "{bytes:?}");
}
