//! DecollageImages: cut one vignette per particle out of the collage pages, with the
//! session's position and the particle's time and measurements in its EXIF.
//!
//! One work item per collage page: the page is decoded once, every particle on it is
//! cropped (bounds-checked) and encoded, and the engine commits the page's vignettes
//! together. A page that cannot be read, or holds a particle outside its bounds, fails
//! alone; the others keep their vignettes, so a rerun after the fix does only the rest.

use crate::engine::{Digest, Item, Parameters, Plan, Staging, Task, TaskRef};
use crate::flowcam::lst::{Field, FieldType, parse_timestamp};
use crate::flowcam::vignette;
use crate::flowcam::{Collage, PixelFormat};
use crate::tasks::Session;
use crate::tasks::extract_metadata::{SessionRecord, SessionTags};
use crate::tasks::manifest::{Manifest, ManifestRow, check_page_name, page_folder, vignette_path};
use crate::tasks::page_rows::{PageIndex, PageRows};
use crate::tasks::read_metadata::Schema;
use crate::tasks::registry::TaskEntry;
use crate::tasks::upload::{
    Body, Opened, Place, deliver_bodies, session_metadata, vignette_metadata,
};
use anyhow::{Context, bail};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How many bad particles one collage's error lists before summarising.
const MAX_LISTED: usize = 10;

/// How local vignettes are laid out, in the task's parameters and each page's fingerprint:
/// `vignettes/<collage>/<file>` (see [`crate::tasks::manifest::page_folder`]).
const LAYOUT: &str = "a folder per page";

#[derive(Debug, Clone, Copy)]
pub struct DecollageOptions {
    /// Put the particle's `.lst` row as JSON in ImageDescription.
    pub embed_measurements: bool,
    /// What becomes of the vignettes `session.json` names blank.
    pub blanks: BlankPolicy,
    /// Cut the vignettes of a page whose three channels are equal everywhere as 8-bit grey:
    /// the same pixels in a third of the bytes (TIFF and EcoTaxa PNG). Off by default: the
    /// vignettes already made and uploaded stay as they are (and downstream tools that
    /// expect three channels keep them).
    pub grey: bool,
}

impl Default for DecollageOptions {
    fn default() -> Self {
        DecollageOptions {
            embed_measurements: true,
            blanks: BlankPolicy::Flag,
            grey: false,
        }
    }
}

/// `--blanks`: what becomes of blank vignettes (`session.json`'s `blanks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlankPolicy {
    /// Written and uploaded like any other, not marked.
    Keep,
    /// Written and uploaded, marked blank (manifest, ImageDescription, object metadata,
    /// EcoTaxa).
    #[default]
    Flag,
    /// Neither written nor uploaded; the manifest still lists them, marked blank and with
    /// no file, so that they are counted.
    Skip,
}

impl BlankPolicy {
    pub const NAMES: [&'static str; 3] = ["keep", "flag", "skip"];

    pub fn as_str(self) -> &'static str {
        match self {
            BlankPolicy::Keep => "keep",
            BlankPolicy::Flag => "flag",
            BlankPolicy::Skip => "skip",
        }
    }
}

impl std::str::FromStr for BlankPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "keep" => Ok(BlankPolicy::Keep),
            "flag" => Ok(BlankPolicy::Flag),
            "skip" => Ok(BlankPolicy::Skip),
            other => Err(format!(
                "`{other}` is not a blank policy: keep, flag or skip"
            )),
        }
    }
}

pub struct DecollageImages {
    session: Arc<Session>,
    metadata: TaskRef,
    /// ExtractMetadata, whose `session.json` gives the particles' classes.
    record: Option<TaskRef>,
    options: DecollageOptions,
    /// `--no-local-vignettes`: where the vignettes go instead of the `vignettes/` folder.
    direct: Option<Direct>,
}

/// Vignettes sent from memory, never written locally (`--no-local-vignettes`).
///
/// Each page is an item as before: cut, then sent in request-sized chunks, each chunk
/// recorded in the upload ledger once the destination confirmed it, and the page's marker
/// written only when all of them were. A page is done when its marker is fresh *and* the
/// ledger has every one of its objects, so a lost ledger line (or, with
/// `--verify-remote`, an object gone from the bucket) makes just that page run again;
/// objects the ledger already has with the same size and MD5 are not sent twice. The
/// objects are byte for byte what the local mode writes and UploadToS3 sends, with the
/// same metadata.
#[derive(Debug, Clone)]
pub struct Direct {
    pub place: Place,
    pub verify_remote: bool,
}

impl DecollageImages {
    pub fn new(session: Arc<Session>, metadata: TaskRef, options: DecollageOptions) -> Self {
        DecollageImages {
            session,
            metadata,
            record: None,
            options,
            direct: None,
        }
    }

    /// Sends the vignettes to `direct`'s destination instead of writing them locally.
    pub fn deliver_to(mut self, direct: Direct) -> Self {
        self.direct = Some(direct);
        self
    }

    /// Reads the particles' classes from ExtractMetadata's `session.json` (the class
    /// lists it found to fit the session).
    pub fn with_record(mut self, extract: TaskRef) -> Self {
        self.record = Some(extract);
        self
    }

    /// What cuts this session's vignettes again from its collage pages, byte for byte as
    /// the task made them: for readers of a session whose vignettes were never written
    /// locally (`--no-local-vignettes`). Reads `metadata.csv` and `session.json` once.
    pub fn cutter(&self) -> anyhow::Result<Cutter<'_>> {
        Ok(Cutter(Pages::read(self, false)?))
    }

    /// Whether the vignettes go to a destination instead of `vignettes/`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// `<experiment>_<particle id>.tif`.
    pub fn vignette_name(&self, particle_id: &str) -> String {
        format!("{}_{particle_id}.tif", self.session.experiment)
    }
}

impl Task for DecollageImages {
    fn name(&self) -> &'static str {
        "DecollageImages"
    }

    fn id(&self) -> String {
        format!("DecollageImages({})", self.session.experiment)
    }

    fn parameters(&self) -> Parameters {
        let mut parameters = Parameters::from([
            (
                "session".to_string(),
                self.session.input.display().to_string(),
            ),
            ("experiment".to_string(), self.session.experiment.clone()),
            (
                "embed_measurements".to_string(),
                self.options.embed_measurements.to_string(),
            ),
            (
                "blanks".to_string(),
                self.options.blanks.as_str().to_string(),
            ),
        ]);
        // Only when on: the stamps of every session made before it existed stay valid.
        if self.options.grey {
            parameters.insert("grey_vignettes".to_string(), "true".to_string());
        }
        match &self.direct {
            Some(direct) => {
                parameters.insert("sent_to".to_string(), direct.place.describe());
            }
            // A folder per page: the stamps of sessions cut into one flat folder are stale, so that
            // their pages are cut again into folders of their own.
            None => {
                parameters.insert("layout".to_string(), LAYOUT.to_string());
            }
        }
        parameters
    }

    fn requires(&self) -> Vec<TaskRef> {
        let mut requires = vec![self.metadata.clone()];
        requires.extend(self.record.clone());
        requires
    }

    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut inputs = vec![self.session.metadata_csv(), self.session.metadata_schema()];
        let record = self.session.session_json();
        if self.record.is_some() || record.is_file() {
            inputs.push(record);
        }
        Ok(inputs)
    }

    fn outputs(&self) -> Vec<PathBuf> {
        match self.direct {
            Some(_) => vec![self.session.manifest()],
            None => vec![self.session.manifest(), self.session.vignettes_dir()],
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }

    /// Under `--no-local-vignettes` the vignettes are complete when the ledger has every
    /// one of them: a ledger that lost lines (or was deleted) makes the task run again,
    /// and then only the pages whose objects it lacks (see [`Plan::must_run`]).
    fn rerun_reason(&self) -> Option<String> {
        let direct = self.direct.as_ref()?;
        if direct.verify_remote {
            return Some("--verify-remote asks to check the destination itself".to_string());
        }
        // Without a manifest the stamp's own check tells (its target is missing).
        let manifest = Manifest::read(&self.session.manifest()).ok()?;
        let ledger = direct.place.ledger_path();
        let known = match crate::upload::ledger::read_entries(ledger) {
            Ok(known) => known,
            Err(e) => return Some(e.to_string()),
        };
        let (mut vignettes, mut lacking) = (0, 0);
        for row in manifest.vignettes() {
            vignettes += 1;
            lacking += usize::from(!known.contains_key(&direct.place.key(&row.file)));
        }
        (lacking > 0).then(|| {
            format!(
                "the upload ledger {} lacks {lacking} of the {vignettes} vignettes",
                ledger.display()
            )
        })
    }

    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(Pages::read(self, true)?))
    }
}

/// The particles of one session, grouped by collage page. The rows themselves stay in
/// `metadata.csv`: a page's are read when the page is cut (and again for the manifest), so
/// that memory does not grow with the number of particles (a million rows would take
/// about 900 MB as parsed records).
struct Pages<'a> {
    task: &'a DecollageImages,
    fields: Vec<Field>,
    /// Each page's rows, in order of first appearance.
    pages: Vec<PageRows>,
    /// Rows in `metadata.csv`.
    rows: usize,
    /// Rows whose particle is marked blank.
    blank_rows: usize,
    columns: Columns,
    /// Vignette sizes by row, as written in this run ([`NOT_WRITTEN`] for the rest, which
    /// the manifest stats).
    sizes: Mutex<Vec<u64>>,
    /// What `session.json` says of the session and its particles.
    facts: Facts,
    /// Whether the rows have fields named `class` and `blank` of their own (embedded).
    own_fields: (bool, bool),
    /// Under `--no-local-vignettes`: the destination and what it is known to have.
    sending: Option<Sending<'a>>,
}

/// A vignette as (file name, TIFF bytes).
pub type CutVignette = (String, Vec<u8>);

/// The vignettes of a session, cut again from its pages ([`DecollageImages::cutter`]).
pub struct Cutter<'a>(Pages<'a>);

impl Cutter<'_> {
    /// The vignettes of the page `collage` as (file name, TIFF bytes), in row order;
    /// `None` when the session has no such page.
    pub fn cut_page(&self, collage: &str) -> anyhow::Result<Option<Vec<CutVignette>>> {
        let Some(index) = self.0.pages.iter().position(|p| p.collage == collage) else {
            return Ok(None);
        };
        let mut vignettes = Vec::new();
        self.0.cut(index, |_, row, bytes| {
            let name = self.0.task.vignette_name(&row[self.0.columns.id]);
            vignettes.push((name, bytes));
            Ok(())
        })?;
        Ok(Some(vignettes))
    }
}

/// The destination of a session whose vignettes are not written locally, opened.
struct Sending<'a> {
    place: &'a Place,
    opened: Opened,
    /// The session's object metadata, which every vignette carries first.
    position: Vec<(String, String)>,
    /// By page: whether the ledger lacks any of its objects (it must run again).
    incomplete: Vec<bool>,
    /// How many objects one `send` carries: enough to keep the destination busy.
    chunk: usize,
    /// Objects sent in this run, and those the destination had already.
    sent: std::sync::atomic::AtomicUsize,
    unchanged: std::sync::atomic::AtomicUsize,
}

impl Sending<'_> {
    fn deliver(&self, bodies: Vec<Body>) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let (sent, unchanged) = deliver_bodies(&self.opened, bodies)?;
        self.sent.fetch_add(sent, Relaxed);
        self.unchanged.fetch_add(unchanged, Relaxed);
        Ok(())
    }
}

/// A vignette size not known from this run.
const NOT_WRITTEN: u64 = u64::MAX;

/// What the vignettes carry from `session.json` (or, without one, the folder name).
#[derive(Debug, Default)]
struct Facts {
    /// What every image of the session carries.
    tags: SessionTags,
    /// Each particle's class, by id, from the class lists that fit the session.
    classes: HashMap<u64, String>,
    /// The particles marked blank (none under `--blanks keep`).
    blanks: HashSet<u64>,
}

impl Facts {
    fn read(session: &Session, policy: BlankPolicy) -> anyhow::Result<Facts> {
        let record = SessionRecord::load_for(session)?;
        let tags = SessionTags::of(session, record.as_ref());
        let Some(record) = record else {
            return Ok(Facts {
                tags,
                ..Facts::default()
            });
        };
        Ok(Facts {
            tags,
            classes: record
                .particle_classes()
                .into_iter()
                .map(|(id, class)| (id, class.to_string()))
                .collect(),
            blanks: match policy {
                BlankPolicy::Keep => HashSet::new(),
                BlankPolicy::Flag | BlankPolicy::Skip => {
                    record.blanks.ids.iter().copied().collect()
                }
            },
        })
    }

    /// What every vignette of the session carries, for the pages' fingerprints.
    fn session_digest(&self) -> String {
        self.tags.digest()
    }

    fn class(&self, id: &str) -> Option<&str> {
        self.classes
            .get(&id.parse::<u64>().ok()?)
            .map(String::as_str)
    }

    fn is_blank(&self, id: &str) -> bool {
        id.parse::<u64>().is_ok_and(|id| self.blanks.contains(&id))
    }
}

/// Where the columns we need sit in a row.
struct Columns {
    id: usize,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    collage: usize,
    timestamp: Option<usize>,
}

impl<'a> Pages<'a> {
    /// `send`: open the destination of `--no-local-vignettes` (the task itself); a
    /// [`Cutter`] only reads.
    fn read(task: &'a DecollageImages, send: bool) -> anyhow::Result<Pages<'a>> {
        let session = &task.session;
        let schema_path = session.metadata_schema();
        let schema: Schema = serde_json::from_slice(
            &std::fs::read(&schema_path).with_context(|| schema_path.display().to_string())?,
        )
        .with_context(|| schema_path.display().to_string())?;
        let fields = schema.fields;
        let csv_path = session.metadata_csv();
        let mut reader =
            csv::Reader::from_path(&csv_path).with_context(|| csv_path.display().to_string())?;
        let header: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
        let declared: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        if header != declared {
            bail!(
                "{} does not match {}; rerun with --force",
                csv_path.display(),
                schema_path.display()
            );
        }
        let column = |name: &str| {
            fields
                .iter()
                .position(|f| f.name == name)
                .with_context(|| format!("{}: no {name} column", csv_path.display()))
        };
        let columns = Columns {
            id: column("id")?,
            x: column("image_x")?,
            y: column("image_y")?,
            w: column("image_w")?,
            h: column("image_h")?,
            collage: column("collage_file")?,
            timestamp: fields
                .iter()
                .position(|f| f.name == "timestamp" && f.ty == FieldType::Timestamp),
        };
        let facts = Facts::read(session, task.options.blanks)?;
        let opened = match &task.direct {
            Some(direct) if send => Some(direct.place.open(direct.verify_remote)?),
            _ => None,
        };
        let skip_blanks = task.options.blanks == BlankPolicy::Skip;
        // Pages with an object the ledger lacks (under --no-local-vignettes).
        let mut lacking: HashSet<String> = HashSet::new();
        // One pass: each page's runs of rows and its digest, as the rows go by.
        let mut base = Digest::new().str(&facts.session_digest());
        if task.direct.is_none() {
            base = base.str(LAYOUT);
        }
        let mut index = PageIndex::new(base);
        let mut record = csv::StringRecord::new();
        let (mut rows, mut blank_rows) = (0, 0);
        loop {
            let position = reader.position().clone();
            if !reader
                .read_record(&mut record)
                .with_context(|| csv_path.display().to_string())?
            {
                break;
            }
            let digest = index.add(&record[columns.collage], &position, rows);
            for value in &record {
                digest.update(value.as_bytes());
            }
            let id = &record[columns.id];
            let blank = facts.is_blank(id);
            if let (Some(opened), Some(direct)) = (&opened, &task.direct)
                && !(blank && skip_blanks)
                // The ledger's record, not what a listing showed: a page is done when the
                // ledger has every object of it, so that the next run trusts it too.
                && !opened
                    .ledger
                    .entries()
                    .contains_key(&direct.place.key(&task.vignette_name(id)))
            {
                lacking.insert(record[columns.collage].to_string());
            }
            digest.update(facts.class(id).unwrap_or_default().as_bytes());
            digest.update(if blank { b"blank" } else { b"" });
            blank_rows += usize::from(blank);
            rows += 1;
        }
        let pages = index.into_pages();
        let sending = match (opened, &task.direct) {
            (Some(opened), Some(direct)) => Some(Sending {
                place: &direct.place,
                position: session_metadata(session)?,
                incomplete: pages.iter().map(|p| lacking.contains(&p.collage)).collect(),
                chunk: opened
                    .destination
                    .batch_size()
                    .max(opened.destination.concurrency())
                    .max(1),
                opened,
                sent: Default::default(),
                unchanged: Default::default(),
            }),
            _ => None,
        };
        Ok(Pages {
            sending,
            task,
            pages,
            rows,
            blank_rows,
            columns,
            sizes: Mutex::new(vec![NOT_WRITTEN; rows]),
            facts,
            own_fields: (
                task.options.embed_measurements && fields.iter().any(|f| f.name == "class"),
                task.options.embed_measurements && fields.iter().any(|f| f.name == "blank"),
            ),
            fields,
        })
    }

    /// The rows of `page`, read from `metadata.csv` where the plan found them, each with
    /// its index among all rows.
    fn page_rows(&self, page: &PageRows) -> anyhow::Result<Vec<(usize, csv::StringRecord)>> {
        page.read(&self.task.session.metadata_csv(), self.columns.collage)
    }

    /// The manifest's line for one row of `page`, `written` its vignette's size if this
    /// run wrote it ([`NOT_WRITTEN`] otherwise).
    fn manifest_row(
        &self,
        page: &PageRows,
        row: &csv::StringRecord,
        written: u64,
    ) -> anyhow::Result<ManifestRow> {
        let c = &self.columns;
        let path = self.vignette_path(&page.collage, row);
        let blank = self.facts.is_blank(&row[c.id]);
        let kept = !(blank && self.task.options.blanks == BlankPolicy::Skip);
        let bytes = match (written, &self.sending) {
            (NOT_WRITTEN, _) if !kept => 0,
            (NOT_WRITTEN, Some(sending)) => {
                let key = sending.place.key(&self.task.vignette_name(&row[c.id]));
                sending
                    .opened
                    .known
                    .get(&key)
                    .with_context(|| format!("object {key} is not in the upload ledger"))?
                    .size
            }
            (NOT_WRITTEN, None) => std::fs::metadata(&path)
                .with_context(|| format!("vignette {} is missing", path.display()))?
                .len(),
            (bytes, _) => bytes,
        };
        let captured_at = c
            .timestamp
            .and_then(|t| parse_timestamp(&row[t]))
            .map(|t| {
                let whole = t.date_time.format("%Y-%m-%dT%H:%M:%S");
                match t.fraction {
                    Some(fraction) => format!("{whole}.{fraction}"),
                    None => whole.to_string(),
                }
            })
            .unwrap_or_default();
        let file = match kept {
            true => path.file_name().unwrap_or_default().to_string_lossy(),
            false => Default::default(),
        };
        Ok(ManifestRow {
            file: file.into_owned(),
            particle_id: row[c.id].to_string(),
            collage: page.collage.clone(),
            width: row[c.w].parse().unwrap_or_default(),
            height: row[c.h].parse().unwrap_or_default(),
            bytes,
            captured_at,
            class: self.facts.class(&row[c.id]).unwrap_or_default().to_string(),
            blank,
        })
    }

    /// Cuts page `index` and encodes each of its vignettes, in row order, handing each to
    /// `each` with the row's index among all rows: the one place a vignette's bytes are
    /// made, whether they are then written, sent or converted (EcoTaxa, the dashboard).
    fn cut(
        &self,
        index: usize,
        mut each: impl FnMut(usize, &csv::StringRecord, Vec<u8>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let page = &self.pages[index];
        let collage_file = &page.collage;
        // metadata.csv is ours, but may have been edited: never follow a path out of the
        // session folder (nor name a page's folder like a temporary).
        check_page_name(collage_file).map_err(anyhow::Error::msg)?;
        tracing::debug!(
            session = %self.task.session.experiment,
            task = "DecollageImages",
            collage = %collage_file,
            particles = page.count,
            "cutting vignettes"
        );
        let session = &self.task.session;
        let collage = Collage::open(&session.input.join(collage_file), &session.input)?;
        let grey = self.task.options.grey
            && collage.format != PixelFormat::Gray8
            && collage.channels_equal();
        let format = if grey {
            PixelFormat::Gray8
        } else {
            collage.format
        };
        let rows = self.page_rows(page)?;
        let c = &self.columns;
        let mut outside = Vec::new();
        // Every rectangle is checked before any vignette is made; then each particle is
        // cut, encoded and written in turn, so that a page holds one crop at a time beside
        // its pixels, whatever its number of particles.
        let mut rects = Vec::with_capacity(rows.len());
        for (i, row) in &rows {
            let i = *i;
            let number = |col: usize| row[col].parse::<u32>().ok();
            match (number(c.x), number(c.y), number(c.w), number(c.h)) {
                (Some(x), Some(y), Some(w), Some(h)) if collage.contains(x, y, w, h) => {
                    rects.push((i, row, (x, y, w, h)))
                }
                _ => outside.push(format!(
                    "particle {} (x={} y={} w={} h={}) lies outside the {}x{} page",
                    &row[c.id],
                    &row[c.x],
                    &row[c.y],
                    &row[c.w],
                    &row[c.h],
                    collage.width,
                    collage.height
                )),
            }
        }
        if !outside.is_empty() {
            let more = outside.len().saturating_sub(MAX_LISTED);
            outside.truncate(MAX_LISTED);
            if more > 0 {
                outside.push(format!("and {more} more"));
            }
            bail!("{}", outside.join("; "));
        }
        let facts = &self.facts;
        let skip_blanks = self.task.options.blanks == BlankPolicy::Skip;
        let mut description = String::new();
        for (i, row, (x, y, w, h)) in rects {
            let blank = facts.is_blank(&row[c.id]);
            if blank && skip_blanks {
                continue;
            }
            let mut pixels = collage
                .crop(x, y, w, h)
                .context("a checked rectangle left the page")?;
            if grey {
                let channels = collage.format.channels();
                pixels = pixels.chunks_exact(channels).map(|p| p[0]).collect();
            }
            let time = c.timestamp.and_then(|t| parse_timestamp(&row[t]));
            let taken = time.map(|t| t.date_time.format("%Y:%m:%d %H:%M:%S").to_string());
            description.clear();
            let class = facts.class(&row[c.id]);
            if self.task.options.embed_measurements {
                row_json(&self.fields, row, &mut description);
            }
            // A `.lst` field of the same name keeps its place (JSON keys must be unique).
            annotate(
                &mut description,
                class.filter(|_| !self.own_fields.0),
                blank && !self.own_fields.1,
            );
            let tags = facts.tags.vignette_tags(
                (!description.is_empty()).then_some(description.as_str()),
                taken.as_deref(),
                time.and_then(|t| t.fraction),
            );
            let bytes = vignette::encode(&pixels, w, h, format, &tags)
                .with_context(|| format!("particle {}: encoding vignette", &row[c.id]))?;
            each(i, row, bytes)?;
        }
        Ok(())
    }

    /// Removes the vignettes of the flat layout (`vignettes/<experiment>_<id>.tif`) that a
    /// run of an earlier build left: each page's marker lists them until the page is cut
    /// into its folder, which removes them as orphans, but a run killed between the two
    /// would leave them listed nowhere. No file of the page-folder layout lies there.
    fn remove_flat_vignettes(&self, folder: &std::path::Path) -> anyhow::Result<()> {
        let prefix = format!("{}_", self.task.session.experiment);
        let entries = std::fs::read_dir(folder).with_context(|| folder.display().to_string())?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let flat = entry.file_type().is_ok_and(|t| !t.is_dir())
                && name.starts_with(&prefix)
                && name.ends_with(".tif");
            if flat {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    fn vignette_path(&self, collage: &str, row: &csv::StringRecord) -> PathBuf {
        vignette_path(
            &self.task.session.vignettes_dir(),
            collage,
            &self.task.vignette_name(&row[self.columns.id]),
        )
    }
}

/// The pages ExtractMetadata kept for this task and it did not take (their items were
/// done already) go when the task ends.
impl Drop for Pages<'_> {
    fn drop(&mut self) {
        crate::flowcam::kept_pages::discard(&self.task.session.input);
    }
}

impl Plan for Pages<'_> {
    fn items(&self) -> Vec<Item> {
        self.pages
            .iter()
            .map(|page| Item {
                key: page.collage.clone(),
                inputs: vec![self.task.session.input.join(&page.collage)],
                fingerprint: page.fingerprint.clone(),
            })
            .collect()
    }

    /// Locally, each page's vignettes fill a folder of their own.
    fn owned_folder(&self, index: usize) -> Option<PathBuf> {
        self.task.direct.is_none().then(|| {
            page_folder(
                &self.task.session.vignettes_dir(),
                &self.pages[index].collage,
            )
        })
    }

    fn must_run(&self, index: usize) -> bool {
        self.sending.as_ref().is_some_and(|s| s.incomplete[index])
    }

    fn run_item(&self, index: usize, out: &mut Staging) -> anyhow::Result<()> {
        let page = &self.pages[index];
        let mut sizes = Vec::new();
        let mut bodies = Vec::new();
        self.cut(index, |i, row, bytes| {
            sizes.push((i, bytes.len() as u64));
            match &self.sending {
                None => out.write(self.vignette_path(&page.collage, row), &bytes)?,
                Some(sending) => {
                    let line = self.manifest_row(page, row, bytes.len() as u64)?;
                    bodies.push(Body {
                        key: sending.place.key(&line.file),
                        metadata: vignette_metadata(&sending.position, &line),
                        body: bytes,
                        content_type: "image/tiff",
                        mtime_ns: 0,
                    });
                    if bodies.len() >= sending.chunk {
                        sending.deliver(std::mem::take(&mut bodies))?;
                    }
                }
            }
            Ok(())
        })?;
        if let Some(sending) = &self.sending
            && !bodies.is_empty()
        {
            sending.deliver(bodies)?;
        }
        let mut known = self.sizes.lock().expect("no panics under the lock");
        for (i, bytes) in sizes {
            known[i] = bytes;
        }
        Ok(())
    }

    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        // A list without particles has no vignettes, but its (empty) folder is a target
        // all the same: without it the task would never be complete.
        if let Some(sending) = &self.sending {
            sending.opened.ledger.sync()?;
        } else {
            let folder = self.task.session.vignettes_dir();
            std::fs::create_dir_all(&folder).with_context(|| folder.display().to_string())?;
            self.remove_flat_vignettes(&folder)?;
        }
        let sizes = self.sizes.lock().expect("no panics under the lock");
        // Streamed, a page at a time: never the whole manifest in memory.
        out.stream(self.task.session.manifest(), |w| {
            let mut writer = Manifest::writer(w).map_err(std::io::Error::other)?;
            for page in &self.pages {
                let rows = self
                    .page_rows(page)
                    .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
                for (i, row) in &rows {
                    let line = self
                        .manifest_row(page, row, sizes[*i])
                        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
                    writer.serialize(line).map_err(std::io::Error::other)?;
                }
            }
            writer.flush()
        })?;
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(sending) = &self.sending {
            use std::sync::atomic::Ordering::Relaxed;
            notes.push(format!(
                "{} vignettes sent from memory, {} already at the destination (none written \
                 locally)",
                sending.sent.load(Relaxed),
                sending.unchanged.load(Relaxed)
            ));
        }
        let blanks = self.blank_rows;
        if blanks == 0 {
            return notes;
        }
        let what = match self.task.options.blanks {
            BlankPolicy::Skip => "skipped (listed in manifest.csv, not written)",
            _ => "flagged blank",
        };
        notes.push(format!("{blanks} of {} particles {what}", self.rows));
        notes
    }
}

/// The row as a JSON object in field order: numbers as numbers, everything else as strings,
/// all in ASCII (TIFF's ImageDescription is ASCII).
fn row_json(fields: &[Field], row: &csv::StringRecord, out: &mut String) {
    out.push('{');
    for (i, (field, value)) in fields.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&field.name, out);
        out.push(':');
        if field.ty.is_numeric() {
            json_number(value, out);
        } else {
            json_string(value, out);
        }
    }
    out.push('}');
}

fn json_string(value: &str, out: &mut String) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Writes the value as written in the `.lst` when it is already valid JSON (keeping its
/// precision and formatting), else its parsed value, and `null` for NaN and infinities.
fn json_number(value: &str, out: &mut String) {
    // `1e999` is JSON by its syntax but no reader takes it (it overflows a double).
    let finite = value.parse::<f64>().is_ok_and(f64::is_finite);
    if finite && is_json_number(value) {
        out.push_str(value);
    } else {
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                let _ = write!(out, "{v}");
            }
            _ => out.push_str("null"),
        }
    }
}

fn is_json_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int)
        && (int == "0" || !int.starts_with('0'))
        && frac.is_none_or(digits)
        && exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// Adds the particle's class and blank mark to the ImageDescription JSON: into the `.lst`
/// row's object when there is one (`"class"` and `"blank"`, after the row's own fields),
/// else as an object of their own; nothing when there is neither.
fn annotate(description: &mut String, class: Option<&str>, blank: bool) {
    if class.is_none() && !blank {
        return;
    }
    if description.ends_with('}') {
        description.pop();
        if description.len() > 1 {
            description.push(',');
        }
    } else {
        description.clear();
        description.push('{');
    }
    if let Some(class) = class {
        json_string("class", description);
        description.push(':');
        json_string(class, description);
        if blank {
            description.push(',');
        }
    }
    if blank {
        description.push_str("\"blank\":true");
    }
    description.push('}');
}

/// DecollageImages in the registry: alone, it cuts the pages given from the tables given.
pub(super) const ENTRY: TaskEntry = TaskEntry {
    name: "DecollageImages",
    source: include_str!("../../tasks/DecollageImages.json"),
    session_input: "collages",
    check: |bridge| {
        let folders: std::collections::BTreeSet<&std::path::Path> = bridge
            .files("collages")
            .into_iter()
            .filter_map(|f| std::path::Path::new(f).parent())
            .collect();
        if folders.len() > 1 {
            return vec![format!(
                "input `collages`: all pages must be in one folder (the session folder), got {}",
                folders.len()
            )];
        }
        Vec::new()
    },
    build: |bridge| {
        let session = bridge.session()?;
        bridge.stage_tables(false)?;
        let options = DecollageOptions {
            embed_measurements: bridge.flag("embed-measurements"),
            blanks: bridge
                .text("blanks")
                .and_then(|b| b.parse().ok())
                .unwrap_or_default(),
            grey: bridge.flag("grey-vignettes"),
        };
        Ok(Arc::new(DecollageImages::new(
            session,
            bridge.provided(),
            options,
        )))
    },
    owned: |session| vec![session.manifest(), session.vignettes_dir()],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_valid_json() {
        for (text, json) in [
            ("9.2500", "9.2500"),
            ("-65", "-65"),
            ("007", "7"),
            ("+3.5", "3.5"),
            (".5", "0.5"),
            ("1e5", "1e5"),
            ("NaN", "null"),
            ("inf", "null"),
            ("1e999", "null"),
            ("-1e400", "null"),
        ] {
            let mut out = String::new();
            json_number(text, &mut out);
            assert_eq!(out, json, "{text}");
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
        }
    }

    #[test]
    fn row_json_types_and_escapes() {
        let fields = vec![
            Field {
                name: "id".into(),
                ty: FieldType::Int32,
            },
            Field {
                name: "note".into(),
                ty: FieldType::String,
            },
        ];
        let row = csv::StringRecord::from(vec!["12", "Bl\u{e5} \"x\""]);
        let mut out = String::new();
        row_json(&fields, &row, &mut out);
        assert!(out.is_ascii(), "{out}");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["id"], 12);
        assert_eq!(value["note"], "Bl\u{e5} \"x\"");
    }
}
