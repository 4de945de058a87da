//! ExportEcoTaxa: the session's vignettes as PNGs plus an `ecotaxa_<experiment>.tsv`, zipped
//! together, ready for EcoTaxa's import.
//!
//! One work item per collage page, as in DecollageImages: each of the page's TIFF vignettes
//! is decoded and re-encoded as a PNG of the same pixel format, carrying the same EXIF (the
//! session's position, the particle's capture time, and the TIFF's own ImageDescription,
//! read back so the two never differ) in an `eXIf` chunk built with `little_exif`. `finish`
//! writes the TSV (EcoTaxa's header row, then its `[t]`/`[f]` type row, then one row per
//! particle in manifest order) and the zip holding the TSV at its root and every PNG at the
//! path the TSV's `img_file_name` gives.
//!
//! Layout, all under the session's output folder:
//!
//! ```text
//! ecotaxa/images/<experiment>_<id>.png
//! ecotaxa/ecotaxa_<experiment>.tsv
//! ecotaxa_<experiment>.zip
//! ```

use crate::engine::{Digest, Item, Parameters, Plan, Staging, Task, TaskRef};
use crate::flowcam::SamplePosition;
use crate::flowcam::lst::{Field, parse_timestamp};
use crate::flowcam::vignette::{
    SOFTWARE, degrees_minutes_seconds, pixels_per_centimetre_of, png_color, read_pixels,
    read_resolution,
};
use crate::tasks::Session;
use crate::tasks::decollage::{Cutter, DecollageImages};
use crate::tasks::extract_metadata::SessionRecord;
use crate::tasks::manifest::{Manifest, ManifestRow};
use crate::tasks::read_metadata::Schema;
use crate::tasks::registry::TaskEntry;
use anyhow::{Context, bail};
use little_exif::exif_tag::ExifTag;
use little_exif::metadata::Metadata;
use little_exif::rational::uR64;
use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The columns every row starts with, and their EcoTaxa types; the session's numeric
/// measurements follow as `object_<name>` `[f]` columns. `object_date`/`object_time` are
/// the **sampling** date (EcoTaxa feeds them to OBIS/GBIF as the event date); the
/// particle's imaging time is `object_imaged_at`. Units are in the names (`_um`, `_ml`,
/// `_s`), except `acq_pixel`, which is EcoTaxa's own name (millimetres per pixel, the
/// `ssm.pixel` of its default biovolume formula).
pub const FIXED_COLUMNS: [(&str, &str); 49] = [
    ("img_file_name", "[t]"),
    ("object_id", "[t]"),
    ("object_lat", "[f]"),
    ("object_lon", "[f]"),
    ("object_date", "[t]"),
    ("object_time", "[t]"),
    ("object_depth_min", "[f]"),
    ("object_depth_max", "[f]"),
    ("object_imaged_at", "[t]"),
    ("object_image_id", "[t]"),
    ("object_collage", "[t]"),
    ("object_blank", "[f]"),
    ("object_annotation_category", "[t]"),
    ("object_annotation_status", "[t]"),
    ("sample_id", "[t]"),
    ("sample_date", "[t]"),
    ("sample_lat", "[f]"),
    ("sample_lon", "[f]"),
    ("sample_depth_m", "[f]"),
    ("sample_station", "[t]"),
    ("sample_location", "[t]"),
    ("sample_volume_imaged_ml", "[f]"),
    ("acq_id", "[t]"),
    ("acq_instrument", "[t]"),
    ("acq_manufacturer", "[t]"),
    ("acq_serial_number", "[t]"),
    ("acq_magnification", "[f]"),
    ("acq_flow_cell", "[t]"),
    ("acq_flow_cell_depth_um", "[f]"),
    ("acq_flow_cell_width_um", "[f]"),
    ("acq_camera", "[t]"),
    ("acq_mode", "[t]"),
    ("acq_stop_reason", "[t]"),
    ("acq_frame_rate_fps", "[f]"),
    ("acq_auto_image_rate", "[f]"),
    ("acq_min_esd_um", "[f]"),
    ("acq_max_esd_um", "[f]"),
    ("acq_run_start", "[t]"),
    ("acq_run_end", "[t]"),
    ("acq_duration_s", "[f]"),
    ("acq_images_used", "[f]"),
    ("acq_particle_count", "[f]"),
    ("acq_volume_imaged_ml", "[f]"),
    ("acq_um_per_pixel", "[f]"),
    ("acq_pixel", "[f]"),
    ("process_id", "[t]"),
    ("process_software", "[t]"),
    ("process_software_version", "[t]"),
    ("process_date", "[t]"),
];

/// The UTF-8 byte-order mark the TSV starts with.
pub const BOM: &[u8] = "\u{feff}".as_bytes();

/// EcoTaxa refuses longer text values.
pub const MAX_TEXT: usize = 250;

/// `object_annotation_status` of a particle with a class: the `.cla` does not say whether a
/// person or a VisualSpreadsheet filter set it, so EcoTaxa is told it is to be validated.
pub const CLASS_STATUS: &str = "predicted";

/// `acq_instrument`, as EcoTaxa names the instrument.
pub const INSTRUMENT: &str = "FlowCam";

/// The folder of `img_file_name` paths, inside `ecotaxa/` and inside the zip.
const IMAGES: &str = "images";

pub struct ExportEcoTaxa {
    session: Arc<Session>,
    decollage: TaskRef,
    /// Under `--no-local-vignettes`: the task whose vignettes are cut again from the
    /// collage pages, there being no TIFFs to read.
    pages: Option<Arc<DecollageImages>>,
}

impl ExportEcoTaxa {
    /// `decollage` is the session's DecollageImages task: its manifest and TIFF vignettes
    /// are what this task reads.
    pub fn new(session: Arc<Session>, decollage: TaskRef) -> ExportEcoTaxa {
        ExportEcoTaxa {
            session,
            decollage,
            pages: None,
        }
    }

    /// Reads the vignettes by cutting them again from the collage pages, as `decollage`
    /// makes them, instead of from `vignettes/` (which `--no-local-vignettes` never
    /// writes). The PNGs are the same.
    pub fn cut_from(mut self, decollage: Arc<DecollageImages>) -> ExportEcoTaxa {
        self.pages = Some(decollage);
        self
    }

    /// `<session output>/ecotaxa/`: the PNGs and the TSV.
    pub fn dir(&self) -> PathBuf {
        Self::dir_of(&self.session)
    }

    /// `<session output>/ecotaxa/images/`.
    pub fn images_dir(&self) -> PathBuf {
        self.dir().join(IMAGES)
    }

    /// `<session output>/ecotaxa/ecotaxa_<experiment>.tsv`.
    pub fn tsv(&self) -> PathBuf {
        self.dir().join(self.tsv_name())
    }

    /// `<session output>/ecotaxa_<experiment>.zip`: what is uploaded to EcoTaxa.
    pub fn zip(&self) -> PathBuf {
        Self::zip_of(&self.session)
    }

    /// `<experiment>_<particle id>.png`.
    pub fn image_name(&self, particle_id: &str) -> String {
        format!("{}_{particle_id}.png", self.session.experiment)
    }

    /// The top-level entries of a session's output folder this task writes (for `clean`).
    pub fn owned_outputs(session: &Session) -> Vec<PathBuf> {
        vec![Self::dir_of(session), Self::zip_of(session)]
    }

    fn dir_of(session: &Session) -> PathBuf {
        session.output.join("ecotaxa")
    }

    fn zip_of(session: &Session) -> PathBuf {
        session
            .output
            .join(format!("ecotaxa_{}.zip", session.experiment))
    }

    fn tsv_name(&self) -> String {
        format!("ecotaxa_{}.tsv", self.session.experiment)
    }
}

impl Task for ExportEcoTaxa {
    fn name(&self) -> &'static str {
        "ExportEcoTaxa"
    }

    fn id(&self) -> String {
        format!("ExportEcoTaxa({})", self.session.experiment)
    }

    fn parameters(&self) -> Parameters {
        Parameters::from([
            (
                "session".to_string(),
                self.session.input.display().to_string(),
            ),
            ("experiment".to_string(), self.session.experiment.clone()),
        ])
    }

    fn requires(&self) -> Vec<TaskRef> {
        vec![self.decollage.clone()]
    }

    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut inputs = vec![
            self.session.manifest(),
            self.session.metadata_csv(),
            self.session.metadata_schema(),
        ];
        if self.session.session_json().is_file() {
            inputs.push(self.session.session_json());
        }
        Ok(inputs)
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.images_dir(), self.tsv(), self.zip()]
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }

    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(Export::read(self)?))
    }
}

/// One manifest row with a vignette.
type Vignette = ManifestRow;

/// The session's vignettes grouped by collage page, with the measurements for the TSV.
struct Export<'a> {
    task: &'a ExportEcoTaxa,
    vignettes: Vec<Vignette>,
    pages: Pages,
    /// metadata.csv's rows by particle id.
    measurements: HashMap<String, csv::StringRecord>,
    /// (column in metadata.csv, TSV column name) of every numeric measurement but `id`.
    numeric: Vec<(usize, String)>,
    /// metadata.csv's `image_id` column (the particle's GUID), when it has one.
    image_id: Option<usize>,
    /// ExtractMetadata's `session.json`, when there is one.
    record: Option<SessionRecord>,
    /// Under `--no-local-vignettes`, what cuts the vignettes from the pages.
    cutter: Option<Cutter<'a>>,
}

impl<'a> Export<'a> {
    fn read(task: &'a ExportEcoTaxa) -> anyhow::Result<Export<'a>> {
        let session = &task.session;
        let (vignettes, pages) = read_manifest(&session.manifest())?;

        let schema_path = session.metadata_schema();
        let schema: Schema = serde_json::from_slice(
            &std::fs::read(&schema_path).with_context(|| schema_path.display().to_string())?,
        )
        .with_context(|| schema_path.display().to_string())?;
        let csv_path = session.metadata_csv();
        let mut reader =
            csv::Reader::from_path(&csv_path).with_context(|| csv_path.display().to_string())?;
        let header: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
        let declared: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        if header != declared {
            bail!(
                "{} does not match {}; rerun with --force",
                csv_path.display(),
                schema_path.display()
            );
        }
        let id = schema
            .fields
            .iter()
            .position(|f| f.name == "id")
            .with_context(|| format!("{}: no id column", csv_path.display()))?;
        let mut measurements = HashMap::new();
        for record in reader.records() {
            let record = record.with_context(|| csv_path.display().to_string())?;
            measurements.insert(record[id].to_string(), record);
        }
        for v in &vignettes {
            if !measurements.contains_key(&v.particle_id) {
                bail!(
                    "{}: particle {} is not in {}; rerun with --force",
                    session.manifest().display(),
                    v.particle_id,
                    csv_path.display()
                );
            }
        }
        Ok(Export {
            task,
            vignettes,
            pages,
            measurements,
            numeric: measurement_columns(&schema.fields),
            image_id: schema.fields.iter().position(|f| f.name == "image_id"),
            record: SessionRecord::load_for(session)?,
            cutter: match &task.pages {
                Some(decollage) => Some(decollage.cutter()?),
                None => None,
            },
        })
    }

    fn tiff_path(&self, v: &Vignette) -> PathBuf {
        v.path_in(&self.task.session.vignettes_dir())
    }

    fn png_name(&self, v: &Vignette) -> String {
        self.task.image_name(&v.particle_id)
    }

    /// The TSV: a UTF-8 byte-order mark (without one EcoTaxa reads the file as Latin-1),
    /// the header row, the type row, one row per vignette in manifest order.
    fn tsv(&self) -> anyhow::Result<Vec<u8>> {
        let session = &self.task.session;
        let per_session = self.session_columns();
        let mut bytes = Vec::with_capacity(self.vignettes.len() * 900 + 3);
        bytes.extend_from_slice(BOM);
        let mut tsv = csv::WriterBuilder::new()
            .delimiter(b'\t')
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(bytes);
        let names = FIXED_COLUMNS
            .iter()
            .map(|(name, _)| *name)
            .chain(self.numeric.iter().map(|(_, name)| name.as_str()));
        tsv.write_record(names)?;
        let types = FIXED_COLUMNS
            .iter()
            .map(|(_, ty)| *ty)
            .chain(self.numeric.iter().map(|_| "[f]"));
        tsv.write_record(types)?;
        let mut record: Vec<String> = Vec::with_capacity(FIXED_COLUMNS.len() + self.numeric.len());
        for v in &self.vignettes {
            let row = &self.measurements[&v.particle_id];
            record.clear();
            record.push(format!("{IMAGES}/{}", self.png_name(v)));
            record.push(format!("{}_{}", session.experiment, v.particle_id));
            for (name, _) in &FIXED_COLUMNS[2..] {
                let value = match *name {
                    "object_imaged_at" => v.captured_at.clone(),
                    "object_image_id" => self
                        .image_id
                        .map(|c| row[c].to_string())
                        .unwrap_or_default(),
                    "object_collage" => v.collage.clone(),
                    "object_blank" => (v.blank as u8).to_string(),
                    "object_annotation_category" => v.class.clone(),
                    "object_annotation_status" if !v.class.is_empty() => CLASS_STATUS.to_string(),
                    other => per_session.get(other).cloned().unwrap_or_default(),
                };
                record.push(text(value));
            }
            record.extend(self.numeric.iter().map(|&(col, _)| number(&row[col])));
            tsv.write_record(&record)?;
        }
        Ok(tsv.into_inner()?)
    }

    /// The columns whose value is the same on every row: the sample, the acquisition (the
    /// instrument and the run) and the process, from `session.json` (without one, from the
    /// folder name).
    fn session_columns(&self) -> HashMap<&'static str, String> {
        let session = &self.task.session;
        let mut columns: HashMap<&'static str, String> = HashMap::new();
        let mut set = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                columns.insert(name, value);
            }
        };
        let float = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| v.to_string());
        let coordinate = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| decimal(v, 4));
        let depth = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| decimal(v, 0));
        let compact = |date: &str| date.replace('-', "");
        set("acq_id", Some(session.experiment.clone()));
        set("acq_instrument", Some(INSTRUMENT.to_string()));
        set(
            "process_id",
            Some(format!("flowcam-pipeline_{}", session.experiment)),
        );
        set("process_software", Some("flowcam-pipeline".to_string()));
        set(
            "process_software_version",
            Some(env!("CARGO_PKG_VERSION").to_string()),
        );
        set("process_date", Some(process_date()));
        let Some(record) = &self.record else {
            let position = session.name.position.as_ref();
            let date = position.map(|p| p.date.format("%Y%m%d").to_string());
            set("object_lat", coordinate(position.map(|p| p.latitude)));
            set("object_lon", coordinate(position.map(|p| p.longitude)));
            set("object_depth_min", depth(position.and_then(|p| p.depth_m)));
            set("object_depth_max", depth(position.and_then(|p| p.depth_m)));
            set("object_date", date.clone());
            set("sample_date", date);
            set("sample_lat", coordinate(position.map(|p| p.latitude)));
            set("sample_lon", coordinate(position.map(|p| p.longitude)));
            set("sample_depth_m", depth(position.and_then(|p| p.depth_m)));
            set(
                "sample_id",
                Some(crate::tasks::extract_metadata::sample_id_from_name(
                    &session.name,
                    true,
                )),
            );
            return columns;
        };
        let sample = &record.sample;
        let date = sample.date.as_deref().map(compact);
        set("object_lat", coordinate(sample.latitude));
        set("object_lon", coordinate(sample.longitude));
        set("object_depth_min", depth(sample.depth_m));
        set("object_depth_max", depth(sample.depth_m));
        set("object_date", date.clone());
        set(
            "sample_id",
            Some(sample.id.clone()).filter(|s| !s.is_empty()),
        );
        set("sample_date", date);
        set("sample_lat", coordinate(sample.latitude));
        set("sample_lon", coordinate(sample.longitude));
        set("sample_depth_m", depth(sample.depth_m));
        set("sample_station", sample.station.clone());
        set("sample_location", sample.location_name.clone());
        let run = &record.run;
        set("sample_volume_imaged_ml", float(run.fluid_volume_imaged_ml));
        let instrument = &record.instrument;
        set("acq_manufacturer", instrument.manufacturer.clone());
        set("acq_serial_number", instrument.serial_number.clone());
        set("acq_magnification", float(instrument.magnification));
        set("acq_flow_cell", instrument.flow_cell.clone());
        set(
            "acq_flow_cell_depth_um",
            float(instrument.flow_cell_depth_um),
        );
        set(
            "acq_flow_cell_width_um",
            float(instrument.flow_cell_width_um),
        );
        set("acq_camera", instrument.camera.clone());
        set("acq_mode", run.mode.clone());
        set("acq_stop_reason", run.stop_reason.clone());
        set("acq_frame_rate_fps", float(run.frame_rate_fps));
        set("acq_auto_image_rate", float(run.auto_image_rate));
        set("acq_min_esd_um", float(run.min_esd_um));
        set("acq_max_esd_um", float(run.max_esd_um));
        set("acq_run_start", run.start.clone());
        set("acq_run_end", run.end.clone());
        set("acq_duration_s", run.duration_s.map(|d| d.to_string()));
        set("acq_images_used", float(run.images_used));
        set("acq_particle_count", float(run.particle_count));
        set("acq_volume_imaged_ml", float(run.fluid_volume_imaged_ml));
        let um = record
            .calibration
            .um_per_pixel
            .filter(|u| u.is_finite() && *u > 0.0);
        set("acq_um_per_pixel", um.map(|u| u.to_string()));
        set("acq_pixel", um.map(|u| (u / 1000.0).to_string()));
        columns
    }

    /// The zip: the TSV at its root, then every PNG at its `img_file_name`. PNGs are already
    /// compressed, so they are stored; the TSV is deflated.
    fn zip(&self, tsv: &[u8]) -> anyhow::Result<Vec<u8>> {
        use zip::CompressionMethod::{Deflated, Stored};
        use zip::write::SimpleFileOptions;
        let images = self.task.images_dir();
        let missing = |path: &Path| format!("PNG {} is missing", path.display());
        // Sized up front, so that the archive is built in one buffer without regrowing.
        let mut total = tsv.len() + 200;
        for v in &self.vignettes {
            let path = images.join(self.png_name(v));
            let size = std::fs::metadata(&path)
                .with_context(|| missing(&path))?
                .len();
            total += size as usize + 2 * v.file.len() + 200;
        }
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(total)));
        // Entries are small; the zip crate switches to ZIP64 offsets by itself past 4 GiB.
        let options = SimpleFileOptions::default();
        zip.start_file(self.task.tsv_name(), options.compression_method(Deflated))?;
        zip.write_all(tsv)?;
        for v in &self.vignettes {
            let name = self.png_name(v);
            let path = images.join(&name);
            let bytes = std::fs::read(&path).with_context(|| missing(&path))?;
            zip.start_file(
                format!("{IMAGES}/{name}"),
                options.compression_method(Stored),
            )?;
            zip.write_all(&bytes)?;
        }
        Ok(zip.finish()?.into_inner())
    }
}

impl Plan for Export<'_> {
    fn items(&self) -> Vec<Item> {
        self.pages
            .iter()
            .map(|(collage, indices)| {
                let mut digest = Digest::new();
                for &i in indices {
                    let row = serde_json::to_string(&self.vignettes[i]).unwrap_or_default();
                    digest = digest.str(&row);
                }
                Item {
                    key: collage.clone(),
                    inputs: match self.cutter {
                        // The page is what the vignettes are cut from.
                        Some(_) => vec![self.task.session.input.join(collage)],
                        None => indices
                            .iter()
                            .map(|&i| self.tiff_path(&self.vignettes[i]))
                            .collect(),
                    },
                    fingerprint: digest.hex(),
                }
            })
            .collect()
    }

    fn run_item(&self, index: usize, out: &mut Staging) -> anyhow::Result<()> {
        let (collage, indices) = &self.pages[index];
        let mut cut: HashMap<String, Vec<u8>> = match &self.cutter {
            Some(cutter) => cutter
                .cut_page(collage)?
                .with_context(|| format!("metadata.csv has no page {collage}"))?
                .into_iter()
                .collect(),
            None => HashMap::new(),
        };
        // As the TIFFs have them (their bytes are this item's inputs, so a change reruns it).
        let position = SessionRecord::vignette_position(&self.task.session, self.record.as_ref());
        let serial = self
            .record
            .as_ref()
            .and_then(|r| r.instrument.serial_number.as_deref())
            .filter(|s| crate::flowcam::vignette::is_tag_text(s));
        let images = self.task.images_dir();
        for &i in indices {
            let v = &self.vignettes[i];
            let (tiff, source) = match &self.cutter {
                Some(_) => (
                    cut.remove(&v.file).with_context(|| {
                        format!(
                            "particle {}: the manifest's vignette {} is not cut from {collage}; rerun with --force",
                            v.particle_id, v.file
                        )
                    })?,
                    format!("{} cut from {collage}", v.file),
                ),
                None => {
                    let path = self.tiff_path(v);
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read vignette {}", path.display()))?;
                    (bytes, path.display().to_string())
                }
            };
            let png = to_png(&tiff, &source, &v.captured_at, position.as_ref(), serial)
                .with_context(|| format!("particle {}", v.particle_id))?;
            out.write(images.join(self.png_name(v)), &png)?;
        }
        Ok(())
    }

    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let tsv = self.tsv()?;
        let zip = self.zip(&tsv)?;
        out.write(self.task.tsv(), &tsv)?;
        out.write(self.task.zip(), &zip)?;
        Ok(())
    }
}

/// (collage file, indices into the vignettes), in order of first appearance.
type Pages = Vec<(String, Vec<usize>)>;

/// The manifest's rows that have a vignette, and their indices grouped by collage page.
fn read_manifest(path: &Path) -> anyhow::Result<(Vec<Vignette>, Pages)> {
    let manifest = Manifest::read(path)?;
    let mut vignettes = Vec::new();
    let mut pages = crate::flowcam::ByPage::default();
    for row in manifest.rows.into_iter().filter(ManifestRow::has_vignette) {
        pages.push(&row.collage, vignettes.len());
        vignettes.push(row);
    }
    Ok((vignettes, pages.into_pages()))
}

/// `object_<name>` for every numeric field but `id` (already `object_id`): lowercased,
/// anything but ASCII letters and digits as `_`, and made unique against the fixed columns
/// and each other with a `_2`, `_3`, ... suffix.
fn measurement_columns(fields: &[Field]) -> Vec<(usize, String)> {
    let mut taken: HashSet<String> = FIXED_COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
    let mut columns = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        if !field.ty.is_numeric() || field.name == "id" {
            continue;
        }
        let clean: String = field
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("object_{clean}");
        let mut name = base.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        columns.push((i, name));
    }
    columns
}

/// A text cell EcoTaxa accepts: at most [`MAX_TEXT`] characters, and no tab or line break
/// (control characters become spaces: a value read from a side file is one line).
fn text(value: String) -> String {
    let clean = |c: char| if c.is_control() { ' ' } else { c };
    if value.chars().count() <= MAX_TEXT && !value.chars().any(char::is_control) {
        return value;
    }
    value.chars().map(clean).take(MAX_TEXT).collect()
}

/// `process_date`: today (UTC), or the day of `SOURCE_DATE_EPOCH` when it is set, so that
/// an export can be reproduced byte for byte (the reproducible-builds convention).
fn process_date() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .unwrap_or_else(chrono::Utc::now);
    now.format("%Y%m%d").to_string()
}

/// A measurement cell: the value as written when it is a finite number, else empty.
fn number(value: &str) -> String {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => value.trim().to_string(),
        _ => String::new(),
    }
}

/// `value` in its shortest exact form, padded to at least `min_decimals` decimals
/// (`-2.777` -> `-2.7770`; `54.01432` stays as it is).
fn decimal(value: f64, min_decimals: usize) -> String {
    let shortest = value.to_string();
    let decimals = shortest.split_once('.').map_or(0, |(_, f)| f.len());
    if decimals >= min_decimals {
        shortest
    } else {
        format!("{value:.min_decimals$}")
    }
}

/// Decodes a TIFF vignette and encodes it as a PNG of the same pixel format with the same
/// EXIF. `captured_at` is the manifest's ISO timestamp (empty when the list has none).
/// `source` names the vignette in errors.
fn to_png(
    bytes: &[u8],
    source: &str,
    captured_at: &str,
    position: Option<&SamplePosition>,
    serial_number: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    use tiff::decoder::Decoder;
    let decoded = (|| -> anyhow::Result<_> {
        let mut decoder = Decoder::new(Cursor::new(bytes))?;
        let mut ascii = |tag| -> anyhow::Result<Option<String>> {
            Ok(match decoder.find_tag(tag)? {
                Some(value) => Some(value.into_string()?),
                None => None,
            })
        };
        let instrument = Instrument {
            description: ascii(tiff::tags::Tag::ImageDescription)?,
            make: ascii(tiff::tags::Tag::Make)?,
            model: ascii(tiff::tags::Tag::Model)?,
            // In the EXIF directory, which the decoder does not read: as the TIFF's writer
            // was given it.
            serial_number: serial_number.map(str::to_string),
            resolution: read_resolution(&mut decoder)?,
        };
        let image = read_pixels(&mut decoder)?;
        Ok((
            image.width,
            image.height,
            png_color(image.format),
            instrument,
            image.pixels,
        ))
    })();
    let (width, height, color, instrument, pixels) =
        decoded.with_context(|| format!("cannot decode vignette {source}"))?;

    let time = parse_timestamp(captured_at);
    let taken = time.map(|t| t.date_time.format("%Y:%m:%d %H:%M:%S").to_string());
    let exif = exif(&ExifValues {
        instrument: &instrument,
        taken: taken.as_deref(),
        taken_subsec: time.and_then(|t| t.fraction),
        position,
    })
    .context("encoding EXIF")?;

    let mut info = png::Info::with_size(width, height);
    info.color_type = color;
    info.bit_depth = png::BitDepth::Eight;
    info.exif_metadata = Some(exif.into());
    if let Some(per_cm) = pixels_per_centimetre_of(instrument.resolution) {
        // pHYs, for viewers that read no EXIF: pixels per metre.
        let per_metre = (100.0 * per_cm).round();
        if per_metre >= 1.0 && per_metre <= u32::MAX as f64 {
            info.pixel_dims = Some(png::PixelDimensions {
                xppu: per_metre as u32,
                yppu: per_metre as u32,
                unit: png::Unit::Meter,
            });
        }
    }
    let mut png_bytes = Vec::with_capacity(pixels.len() / 2 + 4096);
    let mut writer = png::Encoder::with_info(&mut png_bytes, info)?.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(png_bytes)
}

/// What the TIFF vignette says of the particle and the instrument, as it reads back.
#[derive(Debug, Default)]
struct Instrument {
    description: Option<String>,
    make: Option<String>,
    model: Option<String>,
    serial_number: Option<String>,
    /// ResolutionUnit and X/YResolution (numerator, denominator) as the TIFF has them;
    /// unit 3 (centimetres) when it carries the pixel size.
    resolution: Option<(u16, u32, u32)>,
}

/// What goes into a PNG's EXIF besides the Software tag.
struct ExifValues<'a> {
    instrument: &'a Instrument,
    /// `YYYY:MM:DD HH:MM:SS`.
    taken: Option<&'a str>,
    taken_subsec: Option<&'a str>,
    position: Option<&'a SamplePosition>,
}

/// The EXIF the TIFF vignette carries (see `flowcam::vignette`), as the TIFF structure
/// that a PNG `eXIf` chunk holds: IFD0 with ImageDescription, Software and DateTime; the
/// EXIF directory with ExifVersion, DateTimeOriginal, SubSecTimeOriginal, FlashpixVersion
/// and ColorSpace; and, when the session name gives a position, the GPS directory.
fn exif(values: &ExifValues) -> std::io::Result<Vec<u8>> {
    let mut m = Metadata::new();
    let instrument = values.instrument;
    if let Some(description) = &instrument.description {
        m.set_tag(ExifTag::ImageDescription(description.clone()));
    }
    if let Some(make) = &instrument.make {
        m.set_tag(ExifTag::Make(make.clone()));
    }
    if let Some(model) = &instrument.model {
        m.set_tag(ExifTag::Model(model.clone()));
    }
    if let Some((unit, nominator, denominator)) = instrument.resolution {
        let r = || uR64 {
            nominator,
            denominator,
        };
        m.set_tag(ExifTag::XResolution(vec![r()]));
        m.set_tag(ExifTag::YResolution(vec![r()]));
        m.set_tag(ExifTag::ResolutionUnit(vec![unit]));
    }
    if let Some(serial) = &instrument.serial_number {
        m.set_tag(ExifTag::SerialNumber(serial.clone()));
    }
    m.set_tag(ExifTag::Software(SOFTWARE.to_string()));
    if let Some(taken) = values.taken {
        m.set_tag(ExifTag::ModifyDate(taken.to_string()));
        m.set_tag(ExifTag::DateTimeOriginal(taken.to_string()));
        if let Some(subsec) = values.taken_subsec {
            m.set_tag(ExifTag::SubSecTimeOriginal(subsec.to_string()));
        }
    }
    m.set_tag(ExifTag::ExifVersion(b"0232".to_vec()));
    m.set_tag(ExifTag::FlashpixVersion(b"0100".to_vec()));
    m.set_tag(ExifTag::ColorSpace(vec![1])); // sRGB
    if let Some(p) = values.position {
        m.set_tag(ExifTag::GPSVersionID(vec![2, 3, 0, 0]));
        let lat_ref = if p.latitude < 0.0 { "S" } else { "N" };
        let lon_ref = if p.longitude < 0.0 { "W" } else { "E" };
        m.set_tag(ExifTag::GPSLatitudeRef(lat_ref.to_string()));
        m.set_tag(ExifTag::GPSLatitude(degrees(p.latitude).to_vec()));
        m.set_tag(ExifTag::GPSLongitudeRef(lon_ref.to_string()));
        m.set_tag(ExifTag::GPSLongitude(degrees(p.longitude).to_vec()));
        if let Some(depth) = p.depth_m {
            m.set_tag(ExifTag::GPSAltitudeRef(vec![1])); // below sea level
            m.set_tag(ExifTag::GPSAltitude(vec![uR64 {
                nominator: (depth * 1000.0).round() as u32,
                denominator: 1000,
            }]));
        }
        // The position was typed into the folder name, not measured by a receiver.
        m.set_tag(ExifTag::GPSProcessingMethod(b"ASCII\0\0\0MANUAL".to_vec()));
        m.set_tag(ExifTag::GPSDateStamp(p.date.format("%Y:%m:%d").to_string()));
    }
    m.encode()
}

/// |value| as degrees, minutes and seconds, exactly as `flowcam::vignette` writes it into
/// the TIFF.
fn degrees(value: f64) -> [uR64; 3] {
    degrees_minutes_seconds(value).map(|(nominator, denominator)| uR64 {
        nominator,
        denominator,
    })
}

/// ExportEcoTaxa in the registry: alone, it exports the vignettes of the manifest given.
pub(super) const ENTRY: TaskEntry = TaskEntry {
    name: "ExportEcoTaxa",
    source: include_str!("../../tasks/ExportEcoTaxa.json"),
    session_input: "manifest",
    check: |bridge| bridge.check_vignettes(),
    build: |bridge| {
        let session = bridge.session()?;
        bridge.stage_tables(true)?;
        Ok(Arc::new(ExportEcoTaxa::new(session, bridge.provided())))
    },
    owned: ExportEcoTaxa::owned_outputs,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowcam::FieldType;

    fn field(name: &str, ty: FieldType) -> Field {
        Field {
            name: name.into(),
            ty,
        }
    }

    #[test]
    fn measurement_columns_are_clean_unique_and_numeric_only() {
        let fields = vec![
            field("id", FieldType::Int32),
            field("ABD Diameter", FieldType::Double),
            field("abd-diameter", FieldType::Float),
            field("lat", FieldType::Double),
            field("collage_file", FieldType::String),
            field("timestamp", FieldType::Timestamp),
            field("image_w", FieldType::Int64),
        ];
        let names: Vec<(usize, String)> = measurement_columns(&fields);
        assert_eq!(
            names,
            [
                (1, "object_abd_diameter".to_string()),
                (2, "object_abd_diameter_2".to_string()),
                (3, "object_lat_2".to_string()),
                (6, "object_image_w".to_string()),
            ]
        );
    }

    #[test]
    fn numbers_and_decimals() {
        assert_eq!(number("9.2500"), "9.2500");
        assert_eq!(number("-65"), "-65");
        for bad in ["NaN", "inf", "-infinity", "", "x"] {
            assert_eq!(number(bad), "", "{bad}");
        }
        assert_eq!(decimal(54.0143, 4), "54.0143");
        assert_eq!(decimal(-2.777, 4), "-2.7770");
        assert_eq!(decimal(151.21534, 4), "151.21534");
        assert_eq!(decimal(0.0, 4), "0.0000");
        assert_eq!(decimal(1.0, 0), "1");
        assert_eq!(decimal(12.5, 0), "12.5");
    }

    #[test]
    fn degrees_match_the_tiff_encoder() {
        let [d, m, s] = degrees(-2.7770);
        assert_eq!((d.nominator, m.nominator), (2, 46));
        let back = d.nominator as f64
            + m.nominator as f64 / 60.0
            + s.nominator as f64 / s.denominator as f64 / 3600.0;
        assert!((back - 2.777).abs() < 1e-7);
    }

    #[test]
    fn exif_without_position_has_no_gps() {
        let instrument = Instrument {
            description: Some("{\"id\":1}".to_string()),
            ..Instrument::default()
        };
        let bytes = exif(&ExifValues {
            instrument: &instrument,
            taken: Some("2023:12:20 14:04:37"),
            taken_subsec: Some("675"),
            position: None,
        })
        .unwrap();
        assert!(bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*"));
        let metadata = Metadata::new_from_vec(
            &png_with_exif(bytes),
            little_exif::filetype::FileExtension::PNG {
                as_zTXt_chunk: false,
            },
        )
        .unwrap();
        let tags: Vec<u16> = metadata.into_iter().map(|t| t.as_u16()).collect();
        assert!(tags.contains(&0x9003), "{tags:x?}"); // DateTimeOriginal
        assert!(!tags.contains(&0x0002), "{tags:x?}"); // GPSLatitude
    }

    #[test]
    fn every_pixel_format_keeps_its_layout_and_pixels() {
        use crate::flowcam::PixelFormat;
        use crate::flowcam::vignette::{self, VignetteTags};
        let (w, h) = (5u32, 3u32);
        for (format, channels, color) in [
            (PixelFormat::Gray8, 1, png::ColorType::Grayscale),
            (PixelFormat::Rgb8, 3, png::ColorType::Rgb),
            (PixelFormat::Rgba8, 4, png::ColorType::Rgba),
        ] {
            let pixels: Vec<u8> = (0..w * h * channels).map(|i| (i * 7 % 251) as u8).collect();
            let tags = VignetteTags {
                description: Some("{\"id\":7}"),
                software: SOFTWARE,
                ..VignetteTags::default()
            };
            let tiff = vignette::encode(&pixels, w, h, format, &tags).unwrap();
            let bytes = to_png(&tiff, "test", "", None, None).unwrap();

            let mut reader = png::Decoder::new(Cursor::new(&bytes)).read_info().unwrap();
            let mut decoded = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut decoded).unwrap();
            decoded.truncate(info.buffer_size());
            assert_eq!((info.width, info.height), (w, h), "{format:?}");
            assert_eq!(info.color_type, color, "{format:?}");
            assert_eq!(info.bit_depth, png::BitDepth::Eight, "{format:?}");
            assert_eq!(decoded, pixels, "{format:?}");
            let exif = reader.info().exif_metadata.as_deref().unwrap();
            assert!(exif.starts_with(b"II*\0"), "{format:?}");
        }
    }

    fn png_with_exif(exif: Vec<u8>) -> Vec<u8> {
        let mut info = png::Info::with_size(1, 1);
        info.exif_metadata = Some(exif.into());
        let mut out = Vec::new();
        let mut writer = png::Encoder::with_info(&mut out, info)
            .unwrap()
            .write_header()
            .unwrap();
        writer.write_image_data(&[0]).unwrap();
        writer.finish().unwrap();
        out
    }
}
