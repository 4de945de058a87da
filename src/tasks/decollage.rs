//! DecollageImages: cut one vignette per particle out of the collage pages, with the
//! session's position and the particle's time and measurements in its EXIF.
//!
//! One work item per collage page: the page is decoded once, every particle on it is
//! cropped (bounds-checked) and encoded, and the engine commits the page's vignettes
//! together. A page that cannot be read, or holds a particle outside its bounds, fails
//! alone; the others keep their vignettes, so a rerun after the fix does only the rest.

use crate::engine::{Digest, Item, Parameters, Plan, Staging, Task, TaskRef};
use crate::flowcam::Collage;
use crate::flowcam::lst::{Field, FieldType, check_plain_file_name, parse_timestamp};
use crate::flowcam::vignette::{self, VignetteTags};
use crate::tasks::Session;
use crate::tasks::manifest::{Manifest, ManifestRow};
use crate::tasks::read_metadata::Schema;
use crate::tasks::registry::TaskEntry;
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How many bad particles one collage's error lists before summarising.
const MAX_LISTED: usize = 10;

#[derive(Debug, Clone, Copy)]
pub struct DecollageOptions {
    /// Put the particle's `.lst` row as JSON in ImageDescription.
    pub embed_measurements: bool,
}

impl Default for DecollageOptions {
    fn default() -> Self {
        DecollageOptions {
            embed_measurements: true,
        }
    }
}

pub struct DecollageImages {
    session: Arc<Session>,
    metadata: TaskRef,
    /// ExtractMetadata, whose `session.json` gives the particles' classes.
    record: Option<TaskRef>,
    options: DecollageOptions,
}

impl DecollageImages {
    pub fn new(session: Arc<Session>, metadata: TaskRef, options: DecollageOptions) -> Self {
        DecollageImages {
            session,
            metadata,
            record: None,
            options,
        }
    }

    /// Reads the particles' classes from ExtractMetadata's `session.json` (the class
    /// lists it found to fit the session).
    pub fn with_record(mut self, extract: TaskRef) -> Self {
        self.record = Some(extract);
        self
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
        Parameters::from([
            (
                "session".to_string(),
                self.session.input.display().to_string(),
            ),
            ("experiment".to_string(), self.session.experiment.clone()),
            (
                "embed_measurements".to_string(),
                self.options.embed_measurements.to_string(),
            ),
        ])
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
        vec![self.session.manifest(), self.session.vignettes_dir()]
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }

    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(Pages::read(self)?))
    }
}

/// The particles of one session, grouped by collage page.
struct Pages<'a> {
    task: &'a DecollageImages,
    fields: Vec<Field>,
    rows: Vec<csv::StringRecord>,
    /// (collage file, indices into `rows`), in order of first appearance.
    pages: Vec<(String, Vec<usize>)>,
    columns: Columns,
    /// Vignette sizes by row, as written in this run (the manifest stats only the rest).
    sizes: Mutex<HashMap<usize, u64>>,
    /// Each particle's class, by id, from the class lists that fit the session.
    classes: HashMap<String, String>,
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
    fn read(task: &'a DecollageImages) -> anyhow::Result<Pages<'a>> {
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
        let mut rows = Vec::new();
        let mut pages: Vec<(String, Vec<usize>)> = Vec::new();
        let mut page_of: HashMap<String, usize> = HashMap::new();
        for record in reader.records() {
            let record = record.with_context(|| csv_path.display().to_string())?;
            let collage = &record[columns.collage];
            let page = *page_of.entry(collage.to_string()).or_insert_with(|| {
                pages.push((collage.to_string(), Vec::new()));
                pages.len() - 1
            });
            pages[page].1.push(rows.len());
            rows.push(record);
        }
        Ok(Pages {
            task,
            fields,
            rows,
            pages,
            columns,
            sizes: Mutex::default(),
            classes: classes_of(&session.session_json())?,
        })
    }

    fn vignette_path(&self, row: &csv::StringRecord) -> PathBuf {
        self.task
            .session
            .vignettes_dir()
            .join(self.task.vignette_name(&row[self.columns.id]))
    }
}

impl Plan for Pages<'_> {
    fn items(&self) -> Vec<Item> {
        self.pages
            .iter()
            .map(|(collage, indices)| {
                let mut digest = Digest::new();
                for &i in indices {
                    for value in &self.rows[i] {
                        digest = digest.str(value);
                    }
                }
                Item {
                    key: collage.clone(),
                    inputs: vec![self.task.session.input.join(collage)],
                    fingerprint: digest.hex(),
                }
            })
            .collect()
    }

    fn run_item(&self, index: usize, out: &mut Staging) -> anyhow::Result<()> {
        let (collage_file, indices) = &self.pages[index];
        // metadata.csv is ours, but may have been edited: never follow a path out of the
        // session folder.
        check_plain_file_name(collage_file).map_err(anyhow::Error::msg)?;
        tracing::debug!(
            session = %self.task.session.experiment,
            task = "DecollageImages",
            collage = %collage_file,
            particles = indices.len(),
            "cutting vignettes"
        );
        let session = &self.task.session;
        let collage = Collage::open(&session.input.join(collage_file), &session.input)?;
        let c = &self.columns;
        let mut outside = Vec::new();
        // Every rectangle is checked before any vignette is made; then each particle is
        // cut, encoded and written in turn, so that a page holds one crop at a time beside
        // its pixels, whatever its number of particles.
        let mut rects = Vec::with_capacity(indices.len());
        for &i in indices {
            let row = &self.rows[i];
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
        let position = self.task.session.name.position;
        let mut description = String::new();
        let mut sizes = Vec::with_capacity(rects.len());
        for (i, row, (x, y, w, h)) in rects {
            let pixels = collage
                .crop(x, y, w, h)
                .context("a checked rectangle left the page")?;
            let time = c.timestamp.and_then(|t| parse_timestamp(&row[t]));
            let taken = time.map(|t| t.date_time.format("%Y:%m:%d %H:%M:%S").to_string());
            if self.task.options.embed_measurements {
                description.clear();
                row_json(&self.fields, row, &mut description);
            }
            let tags = VignetteTags {
                description: self
                    .task
                    .options
                    .embed_measurements
                    .then_some(description.as_str()),
                taken: taken.as_deref(),
                taken_subsec: time.and_then(|t| t.fraction),
                position: position.as_ref(),
                software: vignette::SOFTWARE,
            };
            let bytes = vignette::encode(&pixels, w, h, collage.format, &tags)
                .with_context(|| format!("particle {}: encoding vignette", &row[c.id]))?;
            out.write(self.vignette_path(row), &bytes)?;
            sizes.push((i, bytes.len() as u64));
        }
        self.sizes
            .lock()
            .expect("no panics under the lock")
            .extend(sizes);
        Ok(())
    }

    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        // A list without particles has no vignettes, but its (empty) folder is a target
        // all the same: without it the task would never be complete.
        let folder = self.task.session.vignettes_dir();
        std::fs::create_dir_all(&folder).with_context(|| folder.display().to_string())?;
        let c = &self.columns;
        let sizes = self.sizes.lock().expect("no panics under the lock");
        let mut manifest = Vec::with_capacity(self.rows.len());
        for (collage, indices) in &self.pages {
            for &i in indices {
                let row = &self.rows[i];
                let path = self.vignette_path(row);
                let bytes = match sizes.get(&i) {
                    Some(&bytes) => bytes,
                    None => std::fs::metadata(&path)
                        .with_context(|| format!("vignette {} is missing", path.display()))?
                        .len(),
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
                manifest.push(ManifestRow {
                    file: path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    particle_id: row[c.id].to_string(),
                    collage: collage.clone(),
                    width: row[c.w].parse().unwrap_or_default(),
                    height: row[c.h].parse().unwrap_or_default(),
                    bytes,
                    captured_at,
                    class: self.classes.get(&row[c.id]).cloned().unwrap_or_default(),
                    blank: false,
                });
            }
        }
        out.write(self.task.session.manifest(), &Manifest::encode(&manifest)?)?;
        Ok(())
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

/// Each particle's class, by id, from the taxa lists `session.json` applied (none when
/// there is no `session.json`). A particle in two applied lists takes the first's class.
fn classes_of(record: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let mut classes = HashMap::new();
    let bytes = match std::fs::read(record) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(classes),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", record.display())),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not JSON; rerun with --force", record.display()))?;
    let lists = value["classes"].as_array().cloned().unwrap_or_default();
    for list in lists
        .iter()
        .filter(|l| l["applied"] == true && l["kind"] == "taxa")
    {
        for class in list["classes"].as_array().into_iter().flatten() {
            let name = class["name"].as_str().unwrap_or_default();
            for id in class["ids"].as_array().into_iter().flatten() {
                if let Some(id) = id.as_u64() {
                    classes
                        .entry(id.to_string())
                        .or_insert_with(|| name.to_string());
                }
            }
        }
    }
    Ok(classes)
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
