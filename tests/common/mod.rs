//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod blanks;
pub mod garage;
pub mod serve;
pub mod stage;
pub mod upload_api;
pub mod workplace;

use flowcam_pipeline::TOOL_VERSION;
use flowcam_pipeline::engine::{RunReport, Runner, TaskRef};
use flowcam_pipeline::tasks::{DecollageOptions, FlowCamPipeline, Session};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FIXTURE: &str = "19_10_Tank25_blanksremoved";

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(FIXTURE)
}

/// The full real session beside the repository, if this machine has it.
pub fn shared_session() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/flowcam")
        .join(FIXTURE);
    dir.is_dir().then_some(dir)
}

/// Copies the fixture session into `parent/<name>` (renaming nothing inside it).
pub fn copy_fixture(parent: &Path, name: &str) -> PathBuf {
    let dest = parent.join(name);
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
    dest
}

pub fn session(input: &Path, output_root: &Path) -> Arc<Session> {
    Arc::new(Session::new(input, output_root, None).unwrap())
}

/// Runs the whole pipeline on one session through the library.
pub fn run(session: &Arc<Session>, options: DecollageOptions) -> RunReport {
    let root: TaskRef = Arc::new(FlowCamPipeline::new(session.clone(), options, None));
    Runner::new(TOOL_VERSION, 2).run(&root).unwrap()
}

/// The session's vignettes (in their pages' folders), sorted by file name.
pub fn vignettes(session: &Session) -> Vec<PathBuf> {
    vignette_files(&session.vignettes_dir())
}

/// The `.tif` files in the page folders of a `vignettes` folder, sorted by file name (no
/// temporaries: their names end in `.partial`).
pub fn vignette_files(vignettes: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for page in std::fs::read_dir(vignettes).into_iter().flatten() {
        let page = page.unwrap().path();
        if !page.is_dir() || page.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        for entry in std::fs::read_dir(&page).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "tif") {
                files.push(path);
            }
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files
}

/// The vignette named `file` in whichever page folder of `vignettes` holds it.
pub fn find_vignette(vignettes: &Path, file: &str) -> Option<PathBuf> {
    std::fs::read_dir(vignettes)
        .ok()?
        .map(|e| e.unwrap().path().join(file))
        .find(|p| p.is_file())
}

/// The vignette named `file` under `vignettes`; panics naming it when there is none.
pub fn vignette(vignettes: &Path, file: &str) -> PathBuf {
    find_vignette(vignettes, file)
        .unwrap_or_else(|| panic!("no vignette {file} under {}", vignettes.display()))
}

/// Decodes a TIFF with the `tiff` crate: (width, height, samples per pixel, bytes).
pub fn decode(path: &Path) -> (u32, u32, usize, Vec<u8>) {
    let mut decoder = tiff::decoder::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let (w, h) = decoder.dimensions().unwrap();
    let channels = match decoder.colortype().unwrap() {
        tiff::ColorType::Gray(8) => 1,
        tiff::ColorType::RGB(8) => 3,
        other => panic!("unexpected colour type {other:?}"),
    };
    match decoder.read_image().unwrap() {
        tiff::decoder::DecodingResult::U8(pixels) => (w, h, channels, pixels),
        _ => panic!("not 8-bit"),
    }
}

/// Decodes an 8-bit PNG: (width, height, samples per pixel, bytes).
pub fn decode_png_bytes(png: &[u8]) -> (u32, u32, usize, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    pixels.truncate(info.buffer_size());
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    (info.width, info.height, channels, pixels)
}

/// A CSV file's rows as maps from column name to value.
pub fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .zip(r.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

pub fn manifest(session: &Session) -> Vec<HashMap<String, String>> {
    csv_rows(&session.manifest())
}

/// The rows of a session's metadata.csv, keyed by particle id.
pub fn metadata_rows(session: &Session) -> HashMap<String, HashMap<String, String>> {
    csv_rows(&session.metadata_csv())
        .into_iter()
        .map(|row| (row["id"].clone(), row))
        .collect()
}

/// Everything about a finished command, for assertion messages.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The built binary, with `RUST_LOG` cleared so its output is what a user sees.
pub fn bin() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowcam-pipeline"));
    command.env_remove("RUST_LOG");
    command
}

pub fn run_bin(args: &[&str]) -> std::process::Output {
    bin().args(args).output().unwrap()
}

/// `status --json` of a root (or one session) and its outputs, with no settle time.
pub fn status_json(directory: &Path, out: &Path) -> serde_json::Value {
    let output = run_bin(&[
        "status",
        "--json",
        "-d",
        directory.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--settle-seconds",
        "0",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// One task of a run report (JSON), by task name.
pub fn task<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {report}"))
}
