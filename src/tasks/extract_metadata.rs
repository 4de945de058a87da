//! ExtractMetadata: what the instrument wrote about the run -> `session.json`.
//!
//! Reads the side files (`.ctx`, run summary, notes, `.cla`; each optional), the particles
//! (`metadata.csv`, for the pixel size and to check the class lists), the folder name and
//! an optional sample sheet, and writes one versioned document (see the README's
//! "session.json"). Side files are untrusted: what cannot be read is a warning in the
//! document and the log, never a failure. The sample sheet is the user's own: a bad value
//! in this session's row fails the task, naming file, line and column.

use crate::engine::{Digest, Item, Parameters, Plan, Staging, Task, TaskRef};
use crate::flowcam::SamplePosition;
use crate::flowcam::blank::{self, Placement, Sift};
use crate::flowcam::calibration::{self, PixelSize, Witness};
use crate::flowcam::side_files::{self, ClassFile, KeyValues, Warning};
use crate::flowcam::vignette::{self, VignetteTags};
use crate::tasks::Session;
use crate::tasks::page_rows::{PageIndex, PageRows};
use crate::tasks::registry::TaskEntry;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The version of `session.json`'s structure; a change that renames or removes a field
/// raises it.
pub const SESSION_JSON_VERSION: u32 = 1;

/// The maker of the FlowCam and of VisualSpreadsheet.
pub const MANUFACTURER: &str = "Fluid Imaging Technologies";

/// `session.json`'s `format`.
pub const FORMAT: &str = "flowcam-pipeline session";

/// The side-file warnings `session.json` lists before counting the rest: a hostile file
/// of millions of bad lines must not make a document of millions of warnings.
pub const MAX_WARNINGS: usize = 200;

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// A CSV of per-session sample facts (`session` column plus `latitude`, `longitude`,
    /// `sample_date`, `depth_m`, `station`, `sample_id`).
    pub sample_sheet: Option<PathBuf>,
    /// Read the trailing number of a folder name as the depth in metres.
    pub depth_from_name: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            sample_sheet: None,
            depth_from_name: true,
        }
    }
}

pub struct ExtractMetadata {
    session: Arc<Session>,
    metadata: TaskRef,
    options: ExtractOptions,
    /// Keep each decoded page for DecollageImages of the same run (not a parameter: the
    /// outputs are the same either way).
    hand_over: bool,
}

impl ExtractMetadata {
    pub fn new(session: Arc<Session>, metadata: TaskRef, options: ExtractOptions) -> Self {
        ExtractMetadata {
            session,
            metadata,
            options,
            hand_over: false,
        }
    }

    /// Hands each page it decodes over to the task that cuts it next in this run, so
    /// that a page is decoded once instead of twice when it fits
    /// ([`crate::flowcam::kept_pages`]).
    pub fn hand_over_pages(mut self) -> Self {
        self.hand_over = true;
        self
    }

    /// Where this session's side files are, by kind. VisualSpreadsheet names them after the
    /// run, as it names the `.lst`; a folder renamed since keeps the old names inside, so
    /// the `.lst`'s name comes first and the folder's second.
    fn side_files(&self) -> [(&'static str, PathBuf); 4] {
        let dir = &self.session.input;
        let lst_stem = crate::flowcam::lst::files_in(dir)
            .ok()
            .and_then(|lists| lists.into_iter().next())
            .and_then(|lst| lst.file_stem().map(|s| s.to_string_lossy().into_owned()));
        let bases: Vec<&str> = lst_stem
            .iter()
            .map(String::as_str)
            .chain([self.session.name.name.as_str()])
            .collect();
        let find = |suffix: &str| {
            let candidates: Vec<PathBuf> = bases
                .iter()
                .map(|b| dir.join(format!("{b}{suffix}")))
                .collect();
            candidates
                .iter()
                .find(|p| p.exists())
                .unwrap_or(&candidates[0])
                .clone()
        };
        [
            ("ctx", find(".ctx")),
            ("run_summary", find("_run_summary.txt")),
            ("notes", find("_notes.txt")),
            ("cla", find(".cla")),
        ]
    }
}

impl Task for ExtractMetadata {
    fn name(&self) -> &'static str {
        "ExtractMetadata"
    }

    fn id(&self) -> String {
        format!("ExtractMetadata({})", self.session.experiment)
    }

    fn parameters(&self) -> Parameters {
        Parameters::from([
            (
                "session".to_string(),
                self.session.input.display().to_string(),
            ),
            (
                "sample_sheet".to_string(),
                self.options
                    .sample_sheet
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "depth_from_name".to_string(),
                self.options.depth_from_name.to_string(),
            ),
        ])
    }

    fn requires(&self) -> Vec<TaskRef> {
        vec![self.metadata.clone()]
    }

    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut inputs = vec![self.session.metadata_csv()];
        inputs.extend(
            self.side_files()
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| p.is_file()),
        );
        inputs.extend(self.options.sample_sheet.clone());
        // The pages, for the blank test: a page replaced or restored measures again.
        inputs.extend(
            collage_files(&self.session.metadata_csv())
                .into_iter()
                .filter_map(|name| {
                    let path = self.session.input.join(name);
                    path.is_file().then_some(path)
                }),
        );
        Ok(inputs)
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.session.session_json()]
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }

    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(Extract {
            task: self,
            particles: Particles::read(&self.session.metadata_csv())?,
        }))
    }
}

/// One work item per collage page: the blank test on its particles' crops, whose findings
/// are kept in `.state/sift/` (so a page is measured once, resumes after a kill, and runs
/// on the engine's workers); then `finish` reads the side files and writes the record.
struct Extract<'a> {
    task: &'a ExtractMetadata,
    particles: Particles,
}

/// Changes when the blank test does: every page is measured again.
const SIFT_VERSION: &str = "blank-test-1";

impl Extract<'_> {
    /// Where a page's findings are kept.
    fn page_findings(&self, collage: &str) -> PathBuf {
        let name = Digest::new().str(collage).hex();
        self.task
            .session
            .state_dir()
            .join("sift")
            .join(format!("{name}.json"))
    }
}

impl Plan for Extract<'_> {
    fn items(&self) -> Vec<Item> {
        self.particles
            .pages
            .iter()
            .map(|page| Item {
                key: page.collage.clone(),
                inputs: vec![self.task.session.input.join(&page.collage)],
                fingerprint: page.fingerprint.clone(),
            })
            .collect()
    }

    fn run_item(&self, index: usize, out: &mut Staging) -> anyhow::Result<()> {
        let page = &self.particles.pages[index];
        let placements = self.particles.placements(page)?;
        let sift = blank::sift_page(
            &self.task.session.input,
            &page.collage,
            &placements,
            self.task.hand_over,
        );
        out.write(
            self.page_findings(&page.collage),
            &serde_json::to_vec(&sift)?,
        )?;
        Ok(())
    }

    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let mut sift = Sift::default();
        for page in &self.particles.pages {
            let (collage, path) = (&page.collage, self.page_findings(&page.collage));
            let page: Sift = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?))
                .with_context(|| format!("{}: the blank test of {collage}", path.display()))?;
            sift.add(page);
        }
        let record = SessionRecord::read(
            &self.task.session,
            &self.task.options,
            &self.particles,
            &sift,
            |kind| {
                self.task
                    .side_files()
                    .into_iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, p)| p)
                    .expect("a known kind")
            },
        )?;
        for warning in &record.warnings {
            tracing::warn!(session = %self.task.session.experiment, "{warning}");
        }
        let mut json = serde_json::to_vec_pretty(&record)?;
        json.push(b'\n');
        out.write(self.task.session.session_json(), &json)?;
        Ok(())
    }
}

/// `session.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub format: String,
    pub version: u32,
    pub session: String,
    /// The side files read, by kind (`ctx`, `run_summary`, `notes`, `cla`).
    pub sources: BTreeMap<String, PathBuf>,
    pub instrument: Instrument,
    pub calibration: Calibration,
    pub run: Run,
    pub sample: Sample,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub notes: Option<String>,
    pub classes: Vec<ClassListRecord>,
    /// The particles whose vignettes are blank (see `flowcam::blank`).
    #[serde(default)]
    pub blanks: Blanks,
    /// Every key of the `.ctx` and the run summary, raw, by section.
    pub raw: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// What could not be read, each naming file, line and key.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Instrument {
    /// Who made it: Fluid Imaging Technologies, when VisualSpreadsheet wrote the files.
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub software: Option<String>,
    pub software_version: Option<String>,
    pub firmware: Option<String>,
    pub camera: Option<String>,
    pub magnification: Option<f64>,
    pub flow_cell: Option<String>,
    pub flow_cell_depth_um: Option<f64>,
    pub flow_cell_width_um: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Calibration {
    pub um_per_pixel: Option<f64>,
    /// How it was obtained (see `calibration::PixelSizeSource`), with the evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<PixelSize>,
    /// What the side files say, as written.
    pub ctx_calibration_constant: Option<f64>,
    pub run_summary_calibration_factor: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    pub start: Option<String>,
    pub end: Option<String>,
    pub duration_s: Option<i64>,
    pub sampling_time_s: Option<i64>,
    pub mode: Option<String>,
    pub stop_reason: Option<String>,
    pub images_total: Option<f64>,
    pub images_used: Option<f64>,
    pub frame_rate_fps: Option<f64>,
    pub auto_image_rate: Option<f64>,
    /// Particles the instrument counted (the run summary's).
    pub particle_count: Option<f64>,
    /// Particles in the `.lst` (fewer when the operator removed some).
    pub particles_listed: usize,
    pub fluid_volume_imaged_ml: Option<f64>,
    /// `run_summary` or `ctx`: the `.ctx` often says 0 where the summary has the volume.
    pub fluid_volume_source: Option<String>,
    pub min_esd_um: Option<f64>,
    pub max_esd_um: Option<f64>,
}

/// Where a sample fact came from, by precedence: sample sheet, folder name, `.ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactSource {
    SampleSheet,
    FolderName,
    Ctx,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    /// The sample (sheet, else the folder name without its replicate number), so that
    /// replicate runs of one jar share it.
    pub id: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub date: Option<String>,
    pub depth_m: Option<f64>,
    pub station: Option<String>,
    pub location_name: Option<String>,
    /// Where each fact above came from.
    pub sources: BTreeMap<String, FactSource>,
}

/// A class list of the `.cla`, and whether it fits the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassListRecord {
    pub name: String,
    /// `blank` when every class of it names blanks, else `taxa`.
    pub kind: ClassListKind,
    pub applied: bool,
    /// Why it was or was not applied.
    pub reason: String,
    pub classes: Vec<side_files::Class>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassListKind {
    Taxa,
    Blank,
}

/// The particles whose vignettes are blank: those whose crop measures blank
/// (`flowcam::blank`), and those of the blank class lists that fit the session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Blanks {
    /// The pixel test's threshold: the widest luma spread, in grey levels, of a blank crop.
    pub max_spread: u8,
    /// Particles whose crop was measured, and those that could not be.
    pub particles_measured: usize,
    pub particles_unmeasured: usize,
    /// Blank by their pixels.
    pub by_pixels: usize,
    /// Blank only by an applied blank class list (its pixels passed as not blank).
    pub by_class_list: usize,
    /// `ids.len()`.
    pub count: usize,
    /// Every blank particle, ascending.
    pub ids: Vec<u64>,
}

/// What every image cut from a session carries, whichever part of a page it shows (a
/// particle's vignette, a region an order asked for): the sample's position, the
/// instrument and the pixel size, from `session.json` or, without one, the folder name.
#[derive(Debug, Default, Clone)]
pub struct SessionTags {
    pub position: Option<SamplePosition>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub um_per_pixel: Option<f64>,
}

impl SessionTags {
    pub fn of(session: &Session, record: Option<&SessionRecord>) -> SessionTags {
        let position = SessionRecord::vignette_position(session, record);
        let Some(record) = record else {
            return SessionTags {
                position,
                ..SessionTags::default()
            };
        };
        let instrument = &record.instrument;
        SessionTags {
            position,
            make: instrument.manufacturer.clone(),
            model: instrument.model.clone(),
            serial_number: instrument.serial_number.clone(),
            um_per_pixel: record.calibration.um_per_pixel,
        }
    }

    /// All of it in one string, for the fingerprints of what carries it.
    pub fn digest(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            self.position, self.make, self.model, self.serial_number, self.um_per_pixel
        )
    }

    /// The tags of one image: these, with its own description and capture time.
    pub fn vignette_tags<'a>(
        &'a self,
        description: Option<&'a str>,
        taken: Option<&'a str>,
        taken_subsec: Option<&'a str>,
    ) -> VignetteTags<'a> {
        VignetteTags {
            description,
            taken,
            taken_subsec,
            position: self.position.as_ref(),
            software: vignette::SOFTWARE,
            make: self.make.as_deref(),
            model: self.model.as_deref(),
            serial_number: self.serial_number.as_deref(),
            um_per_pixel: self.um_per_pixel,
        }
    }
}

/// Whether a class name names blank images.
pub fn is_blank_class(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("blank") || name.contains("empty")
}

impl SessionRecord {
    /// Reads a `session.json` back; `None` when there is none. A file that is not one, or
    /// is of a later version than this program knows, is an error naming it.
    pub fn load(path: &Path) -> anyhow::Result<Option<SessionRecord>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let record: SessionRecord = serde_json::from_slice(&bytes).with_context(|| {
            format!("{}: not a session.json; rerun with --force", path.display())
        })?;
        if record.format != FORMAT || record.version > SESSION_JSON_VERSION {
            bail!(
                "{}: {} version {} is not a session.json this program can read (version {})",
                path.display(),
                record.format,
                record.version,
                SESSION_JSON_VERSION
            );
        }
        Ok(Some(record))
    }

    /// This session's `session.json`, if it has one: as [`SessionRecord::load`], and it
    /// must be the record of this session (a file staged from another run is refused).
    pub fn load_for(session: &Session) -> anyhow::Result<Option<SessionRecord>> {
        let path = session.session_json();
        let record = SessionRecord::load(&path)?;
        if let Some(record) = &record
            && record.session != session.experiment
        {
            bail!(
                "{}: the record of session {}, not of {}; rerun with --force",
                path.display(),
                record.session,
                session.experiment
            );
        }
        Ok(record)
    }

    /// The sample's position for the vignettes' GPS tags: latitude, longitude and date
    /// must all be known and possible (a hand-edited file may say otherwise).
    pub fn position(&self) -> Option<SamplePosition> {
        let s = &self.sample;
        let date = chrono::NaiveDate::parse_from_str(s.date.as_deref()?, "%Y-%m-%d").ok()?;
        Some(SamplePosition {
            latitude: s.latitude.filter(|v| (-90.0..=90.0).contains(v))?,
            longitude: s.longitude.filter(|v| (-180.0..=180.0).contains(v))?,
            date,
            depth_m: s.depth_m.filter(|v| v.is_finite() && *v >= 0.0),
        })
    }

    /// The position the vignettes carry: `record`'s sample when there is a record (sample
    /// sheet, folder name or `.ctx`, by precedence), else the folder name's.
    pub fn vignette_position(
        session: &Session,
        record: Option<&SessionRecord>,
    ) -> Option<SamplePosition> {
        match record {
            Some(record) => record.position(),
            None => session.name.position,
        }
    }

    /// Each particle's class, by id, from the taxa lists that were applied (a particle in
    /// two applied lists takes the first's class).
    pub fn particle_classes(&self) -> HashMap<u64, &str> {
        let mut classes = HashMap::new();
        for list in self
            .classes
            .iter()
            .filter(|l| l.applied && l.kind == ClassListKind::Taxa)
        {
            for class in &list.classes {
                for id in &class.ids {
                    classes.entry(*id).or_insert(class.name.as_str());
                }
            }
        }
        classes
    }

    /// Reads everything for `session`; `side_file(kind)` says where each side file is.
    fn read(
        session: &Session,
        options: &ExtractOptions,
        particles: &Particles,
        sift: &Sift,
        side_file: impl Fn(&str) -> PathBuf,
    ) -> anyhow::Result<SessionRecord> {
        let mut warnings: Vec<Warning> = Vec::new();
        let mut sources = BTreeMap::new();
        let mut unread: Vec<Warning> = Vec::new();
        // A side file that cannot be read at all (a FIFO, a link out of the folder, too
        // large) is left out with a warning, like a value that cannot be read.
        let mut text_of = |kind: &'static str| -> anyhow::Result<Option<String>> {
            let path = side_file(kind);
            let text = match side_files::read_text(&path) {
                Ok(text) => text,
                Err(e) => {
                    unread.push(Warning::new(&path, 0, None, format!("not read: {e:#}")));
                    None
                }
            };
            if text.is_some() {
                sources.insert(kind.to_string(), path);
            }
            Ok(text)
        };
        let empty = KeyValues::default();
        let ctx = match text_of("ctx")? {
            Some(text) => {
                let (ini, w) = side_files::parse_ini(&side_file("ctx"), &text);
                warnings.extend(w);
                ini
            }
            None => empty.clone(),
        };
        let summary = match text_of("run_summary")? {
            Some(text) => {
                let (s, w) = side_files::parse_run_summary(&side_file("run_summary"), &text);
                warnings.extend(w);
                s
            }
            None => empty.clone(),
        };
        let notes = text_of("notes")?
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let cla = match text_of("cla")? {
            Some(text) => {
                let (cla, w) = side_files::parse_cla(&side_file("cla"), &text);
                warnings.extend(w);
                Some(cla)
            }
            None => None,
        };
        warnings.append(&mut unread);
        if particles.pages.is_empty() && particles.count > 0 {
            warnings.push(Warning::new(
                &session.metadata_csv(),
                0,
                None,
                "no particle has a place on a collage page: blanks not measured".to_string(),
            ));
        }
        for problem in &sift.problems {
            warnings.push(Warning::new(
                &session.metadata_csv(),
                0,
                None,
                format!("blanks: {problem}"),
            ));
        }

        let mut w = Vec::new();
        let text = |kv: &KeyValues, s: &str, k: &str| kv.get(s, k).map(str::to_string);
        let (software, software_version) = match text(&ctx, "Software", "SoftwareName") {
            Some(name) => (Some(name), text(&ctx, "Software", "SoftwareVersion")),
            None => match text(&summary, "Environment", "Software") {
                Some(both) => match both.rsplit_once(' ') {
                    Some((name, version)) => (Some(name.to_string()), Some(version.to_string())),
                    None => (Some(both), None),
                },
                None => (None, None),
            },
        };
        let serial = text(&ctx, "Software", "SerialNo")
            .or_else(|| text(&summary, "Environment", "SerialNo"))
            .filter(|s| !s.eq_ignore_ascii_case("NA"));
        let instrument = Instrument {
            manufacturer: software
                .as_deref()
                .filter(|s| s.to_ascii_lowercase().contains("visualspreadsheet"))
                .map(|_| MANUFACTURER.to_string()),
            model: software.as_ref().map(|_| "FlowCam".to_string()),
            serial_number: serial,
            software,
            software_version,
            firmware: text(&ctx, "Software", "GumStixFirmwareVersion"),
            camera: text(&ctx, "Camera", "CameraName"),
            magnification: ctx
                .number("Software", "CameraMagnification", &mut w)
                .or_else(|| summary.number("Environment", "Magnification", &mut w)),
            flow_cell: text(&ctx, "Fluid", "FlowCellType"),
            flow_cell_depth_um: ctx.number("Fluid", "FlowCellDepth", &mut w),
            flow_cell_width_um: ctx.number("Fluid", "FlowCellWidth", &mut w),
        };

        let ctx_cal = ctx.number("Fluid", "CalibrationConstant", &mut w);
        let summary_cal = summary.number("Environment", "Calibration Factor", &mut w);
        let finding = particles.survey.establish(
            |row| {
                particles
                    .id_at(row)
                    .unwrap_or_else(|e| format!("in row {} ({e:#})", row + 1))
            },
            ctx_cal,
            summary_cal,
        );
        let calibration = Calibration {
            um_per_pixel: finding.pixel_size.as_ref().map(|p| p.um_per_pixel),
            proof: finding.pixel_size.clone(),
            ctx_calibration_constant: ctx_cal,
            run_summary_calibration_factor: summary_cal,
        };

        let start =
            text(&ctx, "General", "RunStartTime").or_else(|| text(&summary, "Date/Time", "Start"));
        let end =
            text(&ctx, "General", "RunEndTime").or_else(|| text(&summary, "Date/Time", "End"));
        let parse_time = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
        };
        let duration_s = match (parse_time(&start), parse_time(&end)) {
            (Some(a), Some(b)) if b >= a => Some((b - a).num_seconds()),
            _ => None,
        };
        let summary_volume = summary
            .number("Run", "Fluid Volume Imaged", &mut w)
            .filter(|v| *v > 0.0);
        let ctx_volume = ctx
            .number("Fluid", "FluidVolumeImaged_ml", &mut w)
            .filter(|v| *v > 0.0);
        let (volume, volume_source) = match (summary_volume, ctx_volume) {
            (Some(v), _) => (Some(v), Some("run_summary".to_string())),
            (None, Some(v)) => (Some(v), Some("ctx".to_string())),
            (None, None) => (None, None),
        };
        let mut notes_of_disagreement: Vec<String> = finding.warnings.clone();
        if let (Some(a), Some(b)) = (summary_volume, ctx_volume)
            && (a - b).abs() > 1e-6 * a
        {
            notes_of_disagreement.push(format!(
                "the run summary's fluid volume imaged is {a} ml, the .ctx's {b} ml; using {a}"
            ));
        }
        let run = Run {
            start: start.map(|t| t.replace(' ', "T")),
            end: end.map(|t| t.replace(' ', "T")),
            duration_s,
            sampling_time_s: summary
                .get("Date/Time", "Sampling Time")
                .and_then(hms_seconds),
            mode: text(&summary, "Run", "Mode"),
            stop_reason: text(&summary, "Run", "Stop Reason"),
            images_total: summary.number("Images", "Total", &mut w),
            images_used: summary.number("Images", "Used", &mut w),
            frame_rate_fps: summary.number("Images", "Frame Rate", &mut w),
            auto_image_rate: ctx.number("CameraBehavior", "AutoImageRate", &mut w),
            particle_count: summary.number("Run", "Particle Count", &mut w),
            particles_listed: particles.count,
            fluid_volume_imaged_ml: volume,
            fluid_volume_source: volume_source,
            min_esd_um: ctx.number("CaptureParameters", "MinESD", &mut w),
            max_esd_um: ctx.number("CaptureParameters", "MaxESD", &mut w),
        };
        warnings.extend(w);

        let sample = sample_facts(session, options, &ctx)?;
        let classes = match &cla {
            Some(cla) => {
                let named = cla
                    .lists
                    .iter()
                    .flat_map(|l| l.classes.iter())
                    .flat_map(|c| c.ids.iter().copied())
                    .collect();
                check_class_lists(cla, &particles.present(&named)?, sift)
            }
            None => Vec::new(),
        };
        let blanks = blanks_of(sift, &classes);
        let mut raw = BTreeMap::new();
        if sources.contains_key("ctx") {
            raw.insert("ctx".to_string(), ctx.raw());
        }
        if sources.contains_key("run_summary") {
            raw.insert("run_summary".to_string(), summary.raw());
        }
        let mut all_warnings: Vec<String> = warnings
            .iter()
            .take(MAX_WARNINGS)
            .map(|w| w.to_string())
            .collect();
        if warnings.len() > MAX_WARNINGS {
            all_warnings.push(format!(
                "and {} more warnings like these",
                warnings.len() - MAX_WARNINGS
            ));
        }
        all_warnings.extend(notes_of_disagreement);
        Ok(SessionRecord {
            format: FORMAT.to_string(),
            version: SESSION_JSON_VERSION,
            session: session.experiment.clone(),
            sources,
            instrument,
            calibration,
            run,
            sample,
            notes,
            classes,
            blanks,
            raw,
            warnings: all_warnings,
        })
    }
}

/// `00:01:30` -> 90.
fn hms_seconds(text: &str) -> Option<i64> {
    let parts: Vec<i64> = text
        .split(':')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [h, m, s] if *m < 60 && *s < 60 && *h >= 0 => Some(h * 3600 + m * 60 + s),
        _ => None,
    }
}

/// What ExtractMetadata needs of `metadata.csv`, from one pass over it: the calibration
/// survey and where each page's rows are, never the rows themselves (a million particles'
/// would take hundreds of MB).
struct Particles {
    path: PathBuf,
    id: usize,
    /// `collage_file`, then `image_x`, `image_y`, `image_w`, `image_h` (none when the list
    /// has no placement columns).
    place: Option<(usize, [usize; 4])>,
    count: usize,
    survey: calibration::Survey,
    /// Each collage page's rows that have a place on it, in order of first appearance.
    pages: Vec<PageRows>,
}

impl Particles {
    fn read(path: &Path) -> anyhow::Result<Particles> {
        let mut reader =
            csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
        let header = reader.headers()?.clone();
        let column = |name: &str| header.iter().position(|h| h == name);
        let Some(id) = column("id") else {
            bail!("{}: no id column", path.display());
        };
        let (perimeter, raw, cal) = (
            column("perimeter"),
            column("raw_perimeter"),
            column("cal_const"),
        );
        let place = match (
            column("collage_file"),
            column("image_x"),
            column("image_y"),
            column("image_w"),
            column("image_h"),
        ) {
            (Some(c), Some(x), Some(y), Some(w), Some(h)) => Some((c, [x, y, w, h])),
            _ => None,
        };
        let mut particles = Particles {
            path: path.to_path_buf(),
            id,
            place,
            count: 0,
            survey: calibration::Survey::default(),
            pages: Vec::new(),
        };
        let mut index = PageIndex::new(
            Digest::new()
                .str(SIFT_VERSION)
                .str(&blank::BLANK_MAX_SPREAD.to_string()),
        );
        let mut record = csv::StringRecord::new();
        loop {
            let position = reader.position().clone();
            if !reader
                .read_record(&mut record)
                .with_context(|| path.display().to_string())?
            {
                break;
            }
            let row = particles.count;
            particles.count += 1;
            let number = |c: Option<usize>| c.and_then(|c| record[c].parse::<f64>().ok());
            particles.survey.add(
                row,
                Witness {
                    perimeter: number(perimeter),
                    raw_perimeter: number(raw),
                    cal_const: number(cal),
                },
            );
            // A particle without a numeric id or rectangle is left unmeasured:
            // DecollageImages reports it when it cuts the page.
            if let Some(p) = particles.placement(&record) {
                let collage = &record[place.expect("a placement has columns").0];
                index
                    .add(collage, &position, row)
                    .update(format!("{} {} {} {} {}", p.id, p.x, p.y, p.w, p.h).as_bytes());
            }
        }
        particles.pages = index.into_pages();
        Ok(particles)
    }

    /// A row's place on its page, when it has a numeric id and rectangle.
    fn placement(&self, record: &csv::StringRecord) -> Option<Placement> {
        let (_, rect) = self.place?;
        let int = |c: usize| record[c].parse::<u32>().ok();
        let (Ok(id), [Some(x), Some(y), Some(w), Some(h)]) =
            (record[self.id].parse::<u64>(), rect.map(int))
        else {
            return None;
        };
        Some(Placement { id, x, y, w, h })
    }

    /// The particles of `page`, read back from `metadata.csv`.
    fn placements(&self, page: &PageRows) -> anyhow::Result<Vec<Placement>> {
        let (collage, _) = self.place.context("no placement columns")?;
        page.read(&self.path, collage)?
            .iter()
            .map(|(_, record)| {
                self.placement(record).with_context(|| {
                    format!(
                        "{} changed while the task ran; run again",
                        self.path.display()
                    )
                })
            })
            .collect()
    }

    /// The id of the particle in row `row` (from 0), read again.
    fn id_at(&self, row: usize) -> anyhow::Result<String> {
        let mut reader =
            csv::Reader::from_path(&self.path).with_context(|| self.path.display().to_string())?;
        let record = reader
            .records()
            .nth(row)
            .with_context(|| {
                format!(
                    "{}: row {} is not there any more",
                    self.path.display(),
                    row + 1
                )
            })?
            .with_context(|| self.path.display().to_string())?;
        Ok(record[self.id].to_string())
    }

    /// Which of the `named` ids are particles' ids.
    fn present(&self, named: &HashSet<u64>) -> anyhow::Result<HashSet<u64>> {
        let mut present = HashSet::new();
        if named.is_empty() {
            return Ok(present);
        }
        let mut reader =
            csv::Reader::from_path(&self.path).with_context(|| self.path.display().to_string())?;
        let mut record = csv::StringRecord::new();
        while reader
            .read_record(&mut record)
            .with_context(|| self.path.display().to_string())?
        {
            if let Ok(id) = record[self.id].parse::<u64>()
                && named.contains(&id)
            {
                present.insert(id);
            }
        }
        Ok(present)
    }
}

/// The distinct plain collage file names of a `metadata.csv`, in order of first appearance
/// (none when it cannot be read yet).
fn collage_files(metadata_csv: &Path) -> Vec<String> {
    let Ok(mut reader) = csv::Reader::from_path(metadata_csv) else {
        return Vec::new();
    };
    let Some(column) = reader
        .headers()
        .ok()
        .and_then(|h| h.iter().position(|name| name == "collage_file"))
    else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for record in reader.records().map_while(Result::ok) {
        let name = &record[column];
        if crate::flowcam::lst::check_plain_file_name(name).is_ok() && seen.insert(name.to_string())
        {
            names.push(name.to_string());
        }
    }
    names
}

/// The blank particles: by pixels, and by the blank class lists that were applied.
fn blanks_of(sift: &Sift, classes: &[ClassListRecord]) -> Blanks {
    let mut ids = sift.blank.clone();
    let mut by_class_list = 0;
    for list in classes
        .iter()
        .filter(|l| l.applied && l.kind == ClassListKind::Blank)
    {
        for id in list.classes.iter().flat_map(|c| c.ids.iter()) {
            if ids.insert(*id) {
                by_class_list += 1;
            }
        }
    }
    Blanks {
        max_spread: blank::BLANK_MAX_SPREAD,
        particles_measured: sift.measured,
        particles_unmeasured: sift.unmeasured,
        by_pixels: sift.blank.len(),
        by_class_list,
        count: ids.len(),
        ids: ids.into_iter().collect(),
    }
}

/// Each class list, applied only when it fits: every id it names is a particle of the
/// `.lst`, and no particle is in two of its classes. (A list saved before particles were
/// removed and the rest renumbered names ids that are gone, or other particles.)
fn check_class_lists(cla: &ClassFile, known: &HashSet<u64>, sift: &Sift) -> Vec<ClassListRecord> {
    cla.lists
        .iter()
        .map(|list| {
            let kind = if !list.classes.is_empty()
                && list.classes.iter().all(|c| is_blank_class(&c.name))
            {
                ClassListKind::Blank
            } else {
                ClassListKind::Taxa
            };
            let named: usize = list.classes.iter().map(|c| c.ids.len()).sum();
            let missing: Vec<u64> = list
                .classes
                .iter()
                .flat_map(|c| c.ids.iter().copied())
                .filter(|id| !known.contains(id))
                .collect();
            let mut seen = HashSet::new();
            let twice = list
                .classes
                .iter()
                .flat_map(|c| c.ids.iter().copied())
                .find(|id| !seen.insert(*id));
            let (applied, reason) = if let Some(first) = missing.first() {
                (
                    false,
                    format!(
                        "{} of its {named} ids are not particles of the .lst (the first: \
                         {first}): it refers to another numbering of the run's particles \
                         (made before some were removed), so applying it would mark the \
                         wrong particles",
                        missing.len()
                    ),
                )
            } else if let Some(id) = twice {
                (
                    false,
                    format!(
                        "particle {id} is in two of its classes; which one is meant cannot be told"
                    ),
                )
            } else if kind == ClassListKind::Blank {
                // A blank list must also agree with the pixels: its particles exist, but
                // the list may still be of another numbering of the same count.
                let check = blank::list_agrees(
                    list.classes
                        .iter()
                        .flat_map(|c| c.ids.iter())
                        .map(|id| sift.blank.contains(id)),
                );
                if sift.measured == 0 {
                    (
                        false,
                        "its particles' pixels could not be measured, so whether they are \
                         blank cannot be told"
                            .to_string(),
                    )
                } else if check.agrees {
                    (
                        true,
                        format!(
                            "all {named} of its ids are particles of the .lst, and {} of them \
                             measure blank by their pixels",
                            check.blank
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "its ids are particles of the .lst, but only {} of its {} \
                             particles measure blank by their pixels ({}% needed): it does \
                             not fit this session",
                            check.blank,
                            check.listed,
                            (blank::LIST_MIN_BLANK_SHARE * 100.0).round()
                        ),
                    )
                }
            } else {
                (
                    true,
                    format!("all {named} of its ids are particles of the .lst"),
                )
            };
            ClassListRecord {
                name: list.name.clone(),
                kind,
                applied,
                reason,
                classes: list.classes.clone(),
            }
        })
        .collect()
}

/// The sample's facts by precedence: sample sheet, folder name, `.ctx`.
fn sample_facts(
    session: &Session,
    options: &ExtractOptions,
    ctx: &KeyValues,
) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    let sheet = match &options.sample_sheet {
        Some(path) => sheet_row(path, &session.name.name)?,
        None => None,
    };
    let set_number = |field: &'static str,
                      slot: &mut Option<f64>,
                      candidates: [(Option<f64>, FactSource); 3],
                      sources: &mut BTreeMap<&'static str, FactSource>| {
        if let Some((value, source)) = candidates.into_iter().find_map(|(v, s)| v.map(|v| (v, s))) {
            *slot = Some(value);
            sources.insert(field, source);
        }
    };
    let sheet_number = |key: &str| sheet.as_ref().and_then(|s| s.numbers.get(key).copied());
    let position = session.name.position.as_ref();
    let mut w = Vec::new();
    // An impossible position in the .ctx is left out, and 0, 0 is what an unset one reads
    // as rather than a place in the Gulf of Guinea.
    let ctx_position = match (
        ctx.number("General", "LocationLatitude", &mut w),
        ctx.number("General", "LocationLongitude", &mut w),
    ) {
        (Some(lat), Some(lon))
            if (-90.0..=90.0).contains(&lat)
                && (-180.0..=180.0).contains(&lon)
                && (lat, lon) != (0.0, 0.0) =>
        {
            Some((lat, lon))
        }
        _ => None,
    };
    let (ctx_lat, ctx_lon) = (ctx_position.map(|p| p.0), ctx_position.map(|p| p.1));
    let mut sources = BTreeMap::new();
    set_number(
        "latitude",
        &mut sample.latitude,
        [
            (sheet_number("latitude"), FactSource::SampleSheet),
            (position.map(|p| p.latitude), FactSource::FolderName),
            (ctx_lat, FactSource::Ctx),
        ],
        &mut sources,
    );
    set_number(
        "longitude",
        &mut sample.longitude,
        [
            (sheet_number("longitude"), FactSource::SampleSheet),
            (position.map(|p| p.longitude), FactSource::FolderName),
            (ctx_lon, FactSource::Ctx),
        ],
        &mut sources,
    );
    set_number(
        "depth_m",
        &mut sample.depth_m,
        [
            (sheet_number("depth_m"), FactSource::SampleSheet),
            (
                position
                    .and_then(|p| p.depth_m)
                    .filter(|_| options.depth_from_name),
                FactSource::FolderName,
            ),
            (None, FactSource::Ctx),
        ],
        &mut sources,
    );
    let sheet_text = |key: &str| sheet.as_ref().and_then(|s| s.texts.get(key).cloned());
    if let Some(date) = sheet_text("sample_date") {
        sample.date = Some(date);
        sources.insert("date", FactSource::SampleSheet);
    } else if let Some(p) = position {
        sample.date = Some(p.date.format("%Y-%m-%d").to_string());
        sources.insert("date", FactSource::FolderName);
    }
    if let Some(station) = sheet_text("station") {
        sample.station = Some(station);
        sources.insert("station", FactSource::SampleSheet);
    }
    if let Some(name) = ctx.get("General", "LocationName") {
        sample.location_name = Some(name.to_string());
        sources.insert("location_name", FactSource::Ctx);
    }
    sample.id = match sheet_text("sample_id") {
        Some(id) => {
            sources.insert("id", FactSource::SampleSheet);
            id
        }
        None => {
            sources.insert("id", FactSource::FolderName);
            sample_id_from_name(&session.name, options.depth_from_name)
        }
    };
    sample.sources = sources
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Ok(sample)
}

/// The sample a folder name names: without a trailing replicate or session number
/// (`..._04052023_1` -> `..._04052023`) unless that number is a depth.
pub fn sample_id_from_name(parsed: &crate::flowcam::SessionName, depth_from_name: bool) -> String {
    let name = parsed.name.as_str();
    if depth_from_name && parsed.position.is_some_and(|p| p.depth_m.is_some()) {
        return name.to_string();
    }
    match name.rsplit_once('_') {
        Some((stem, tail))
            if !tail.is_empty() && tail.len() <= 3 && tail.bytes().all(|b| b.is_ascii_digit()) =>
        {
            stem.to_string()
        }
        _ => name.to_string(),
    }
}

/// This session's row of a sample sheet.
struct SheetRow {
    numbers: BTreeMap<String, f64>,
    texts: BTreeMap<String, String>,
}

/// The columns a sample sheet may have besides `session`.
pub const SHEET_COLUMNS: &[&str] = &[
    "latitude",
    "longitude",
    "sample_date",
    "depth_m",
    "station",
    "sample_id",
];

fn sheet_row(path: &Path, session: &str) -> anyhow::Result<Option<SheetRow>> {
    let bytes = std::fs::read(path).with_context(|| format!("sample sheet {}", path.display()))?;
    let text = side_files::decode(&bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .with_context(|| format!("sample sheet {}", path.display()))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let Some(session_column) = header.iter().position(|h| h == "session") else {
        bail!(
            "sample sheet {}: no `session` column (it names each session folder; other \
             columns: {})",
            path.display(),
            SHEET_COLUMNS.join(", ")
        );
    };
    let mut found: Option<(u64, SheetRow)> = None;
    for record in reader.records() {
        let record = record.with_context(|| format!("sample sheet {}", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        if record[session_column].trim() != session {
            continue;
        }
        if let Some((first, _)) = &found {
            bail!(
                "sample sheet {}:{line}: session {session} is listed again (first on line {first})",
                path.display()
            );
        }
        let mut row = SheetRow {
            numbers: BTreeMap::new(),
            texts: BTreeMap::new(),
        };
        for (column, value) in header.iter().zip(record.iter()) {
            let value = value.trim();
            if value.is_empty() || !SHEET_COLUMNS.contains(&column.as_str()) {
                continue;
            }
            let bad = |why: &str| {
                anyhow::anyhow!(
                    "sample sheet {}:{line}: column `{column}`: {value:?} {why}",
                    path.display()
                )
            };
            match column.as_str() {
                "latitude" | "longitude" | "depth_m" => {
                    let n: f64 = value
                        .parse()
                        .ok()
                        .filter(|n: &f64| n.is_finite())
                        .ok_or_else(|| bad("is not a number"))?;
                    let ok = match column.as_str() {
                        "latitude" => (-90.0..=90.0).contains(&n),
                        "longitude" => (-180.0..=180.0).contains(&n),
                        _ => n >= 0.0,
                    };
                    if !ok {
                        return Err(bad(match column.as_str() {
                            "latitude" => "is outside -90..90",
                            "longitude" => "is outside -180..180",
                            _ => "is negative",
                        }));
                    }
                    row.numbers.insert(column.clone(), n);
                }
                "sample_date" => {
                    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
                        .map_err(|_| bad("is not a date (YYYY-MM-DD)"))?;
                    row.texts.insert(column.clone(), value.to_string());
                }
                _ => {
                    row.texts.insert(column.clone(), value.to_string());
                }
            }
        }
        found = Some((line, row));
    }
    Ok(found.map(|(_, row)| row))
}

/// ExtractMetadata in the registry: alone, it reads the side files beside its `lst` input
/// and the particles of its `metadata` input.
pub(super) const ENTRY: TaskEntry = TaskEntry {
    name: "ExtractMetadata",
    source: include_str!("../../tasks/ExtractMetadata.json"),
    session_input: "lst",
    check: |bridge| {
        // As absolute paths: `./x.lst` and `x_000001.tif` are in one folder.
        let folder = |f: &Path| f.parent().map(crate::tasks::session::absolute);
        let lst = folder(&crate::tasks::session::absolute(&bridge.first_file("lst")));
        let folder = |f: &str| folder(&crate::tasks::session::absolute(Path::new(f)));
        let elsewhere = bridge
            .files("collages")
            .into_iter()
            .filter(|f| folder(f) != lst)
            .count();
        if elsewhere > 0 {
            return vec![format!(
                "input `collages`: {elsewhere} pages are not in the folder of the `lst` (the \
                 session folder)"
            )];
        }
        Vec::new()
    },
    build: |bridge| {
        let session = bridge.session()?;
        bridge.stage_tables(false)?;
        let options = ExtractOptions {
            sample_sheet: bridge.text("sample-sheet").map(PathBuf::from),
            depth_from_name: bridge.flag("depth-from-name"),
        };
        Ok(Arc::new(ExtractMetadata::new(
            session,
            bridge.provided(),
            options,
        )))
    },
    owned: |session| vec![session.session_json()],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicate_number_is_not_part_of_the_sample() {
        let sample_id_from_name = |name: &str, depth_from_name| {
            super::sample_id_from_name(
                &crate::flowcam::SessionName::parse(name).unwrap(),
                depth_from_name,
            )
        };
        assert_eq!(
            sample_id_from_name("Tank_54.0_-2.0_04052023_1", false),
            "Tank_54.0_-2.0_04052023"
        );
        assert_eq!(
            sample_id_from_name("Tank_54.0_-2.0_04052023_1", true),
            "Tank_54.0_-2.0_04052023_1"
        );
        assert_eq!(
            sample_id_from_name("19_10_Tank25_blanksremoved", true),
            "19_10_Tank25_blanksremoved"
        );
        assert_eq!(hms_seconds("00:01:30"), Some(90));
        assert_eq!(hms_seconds("00:61:30"), None);
    }
}
