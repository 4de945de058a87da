//! What the dashboard shows, read from the root without running anything: the sessions
//! under it with their status (the same [`SessionStatus`] as `status --json`), and one
//! session's record, history, log and the particle data the plots are drawn from.
//!
//! Names in URLs are never joined onto a path: a name is looked up among the sessions
//! found under the root, so `..`, absolute paths and symlinks out of the root cannot name
//! anything.

use super::source::Tiff;
use crate::history;
use crate::ingest::Lookup;
use crate::status::{SessionState, SessionStatus, StatusQuery, session_status};
use crate::tasks::{Delivery, Manifest, ManifestRow, PipelineOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The longest session name a URL may carry.
pub const MAX_NAME: usize = 255;

/// Where the sessions are and how the pipeline would run on them (for their status).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub root: PathBuf,
    pub output_root: PathBuf,
    pub recursive: bool,
    pub options: PipelineOptions,
    pub delivery: Option<Delivery>,
    pub settle: Duration,
    /// Statuses already computed, reused while nothing they depend on changed.
    pub cache: StatusCache,
    /// What every request asks for, computed once a [`SNAPSHOT_TTL`] for all of them.
    pub snapshots: Snapshots,
}

/// How old the list of sessions (and of their statuses) a request is answered from may be.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// A value computed at most once per [`SNAPSHOT_TTL`] and shared by every request in
/// between; requests that arrive while it is being computed wait for it instead of each
/// computing it again.
#[derive(Debug)]
pub struct Snapshot<T> {
    inner: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, T)>>>,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot {
            inner: Default::default(),
        }
    }
}

impl<T: Clone> Snapshot<T> {
    fn get(&self, compute: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, value)) = &*guard
            && at.elapsed() < SNAPSHOT_TTL
        {
            return Ok(value.clone());
        }
        let value = compute()?;
        *guard = Some((std::time::Instant::now(), value.clone()));
        Ok(value)
    }
}

/// A manifest's size and time, and the vignette files it lists with their page and size.
type KnownManifest = (
    u64,
    Option<std::time::SystemTime>,
    std::sync::Arc<std::collections::HashMap<String, (String, u64)>>,
);

/// The snapshots a [`Catalog`] keeps.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    folders: Snapshot<std::sync::Arc<Vec<PathBuf>>>,
    sessions: Snapshot<std::sync::Arc<Vec<SessionStatus>>>,
    /// Each session's vignette file names, by manifest, with the manifest's size and time.
    manifests: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, KnownManifest>>>,
}

/// How long a cached status is trusted even when no folder it watches changed (a file
/// rewritten in place does not touch its folder's time).
pub const STATUS_TTL: Duration = Duration::from_secs(30);

/// A session's status costs a look at every one of its outputs (thousands of vignettes);
/// the dashboard asks for all of them on every page. So each status is kept with the
/// modification times of the folders whose change would change it (the session folder,
/// its output folder, the vignettes folder and each page's folder in it, the state
/// folder), and computed again only when one of them moved or [`STATUS_TTL`] passed.
#[derive(Debug, Clone, Default)]
pub struct StatusCache {
    entries: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, Cached>>>,
}

#[derive(Debug, Clone)]
struct Cached {
    signal: Vec<Option<std::time::SystemTime>>,
    at: std::time::Instant,
    status: SessionStatus,
}

impl StatusCache {
    fn signal(
        folder: &std::path::Path,
        out: Option<&std::path::Path>,
    ) -> Vec<Option<std::time::SystemTime>> {
        let time = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut signal = vec![time(folder)];
        if let Some(out) = out {
            let vignettes = out.join("vignettes");
            signal.extend([
                time(out),
                time(&vignettes),
                time(&out.join(".state")),
                time(&out.join("uploads")),
            ]);
            // A vignette deleted from its page's folder moves only that folder's time: one
            // look per page, where the status looks at every vignette.
            let pages = crate::tasks::manifest::page_folders(&vignettes).unwrap_or_default();
            signal.extend(pages.iter().map(|p| time(p)));
        }
        signal
    }

    fn get(
        &self,
        folder: &std::path::Path,
        compute: impl FnOnce() -> SessionStatus,
    ) -> SessionStatus {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = entries.get(folder)
            && hit.at.elapsed() < STATUS_TTL
            && hit.signal == Self::signal(folder, hit.status.output.as_deref())
        {
            return hit.status.clone();
        }
        let before = entries
            .get(folder)
            .map(|hit| Self::signal(folder, hit.status.output.as_deref()));
        drop(entries);
        // The folders' times as they were before the status was computed: a change made
        // while it is computed makes the next request compute it again.
        let status = compute();
        let signal = match before {
            Some(signal) => signal,
            None => Self::signal(folder, status.output.as_deref()),
        };
        entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            folder.to_path_buf(),
            Cached {
                signal,
                at: std::time::Instant::now(),
                status: status.clone(),
            },
        );
        status
    }
}

/// One session's page: its status, its `session.json`, its last runs and its log.
#[derive(Debug, Clone, Serialize)]
pub struct SessionDetail {
    pub status: SessionStatus,
    /// `session.json` as written, when ExtractMetadata has run.
    pub record: Option<serde_json::Value>,
    /// The runs that did work or failed, newest first.
    pub runs: Vec<RunLine>,
    #[serde(skip)]
    pub log: Option<String>,
}

/// One run of the history.
#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    pub started_at: String,
    pub duration_ms: u64,
    pub succeeded: bool,
    pub interrupted: bool,
    /// Each task that did not simply find itself complete: (task, state, first error).
    pub tasks: Vec<(String, String, Option<String>)>,
}

/// What the plots are drawn from: one entry per particle.
#[derive(Debug, Clone, Default)]
pub struct ParticleData {
    /// Equivalent spherical diameter, micrometres.
    pub esd_um: Vec<f64>,
    /// Seconds since the run started.
    pub elapsed_s: Vec<f64>,
    /// Particles per class (`""`: none).
    pub per_class: BTreeMap<String, usize>,
    pub blanks: usize,
}

/// One particle of the gallery: its manifest row and its size.
#[derive(Debug, Clone, Serialize)]
pub struct Particle {
    #[serde(flatten)]
    pub row: ManifestRow,
    /// Equivalent spherical diameter, micrometres (from metadata.csv).
    pub esd_um: Option<f64>,
}

/// How the gallery is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// In manifest order (by page, then as listed).
    #[default]
    Manifest,
    /// Largest first.
    Size,
    /// Smallest first.
    SizeAscending,
    Class,
}

/// Which particles the gallery shows, and which page of them. An empty value (as a form
/// sends for "any") is no filter.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParticleQuery {
    /// 1-based.
    #[serde(deserialize_with = "empty_is_none")]
    pub page: Option<usize>,
    #[serde(deserialize_with = "empty_is_none")]
    pub per_page: Option<usize>,
    pub sort: Sort,
    /// Only this class; [`NO_CLASS`] for only those without one.
    #[serde(deserialize_with = "empty_is_none")]
    pub class: Option<String>,
    /// Only blank (`true`) or only not blank (`false`) ones.
    #[serde(deserialize_with = "empty_is_none")]
    pub blank: Option<bool>,
    #[serde(deserialize_with = "empty_is_none")]
    pub min_um: Option<f64>,
    #[serde(deserialize_with = "empty_is_none")]
    pub max_um: Option<f64>,
}

/// The `class` filter for particles without a class.
pub const NO_CLASS: &str = "(none)";

/// `""` as no value, anything else parsed (and refused when it does not parse).
fn empty_is_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// The most particles one page holds.
pub const MAX_PER_PAGE: usize = 500;
/// Particles per page unless asked otherwise.
pub const PER_PAGE: usize = 100;

/// One page of a session's particles.
#[derive(Debug, Clone, Serialize)]
pub struct ParticlePage {
    pub page: usize,
    pub per_page: usize,
    /// Particles that pass the filters, on every page.
    pub matching: usize,
    pub particles: Vec<Particle>,
}

impl ParticleQuery {
    /// The page after filtering and sorting `all`.
    pub fn select(&self, all: Vec<Particle>) -> ParticlePage {
        let mut chosen: Vec<Particle> = all
            .into_iter()
            .filter(|p| {
                self.class
                    .as_deref()
                    .is_none_or(|c| p.row.class == c || (c == NO_CLASS && p.row.class.is_empty()))
            })
            .filter(|p| self.blank.is_none_or(|b| p.row.blank == b))
            .filter(|p| {
                // A bound that is not a number is no bound.
                let size = p.esd_um.unwrap_or(f64::NAN);
                let bound = |b: Option<f64>| b.filter(|v| !v.is_nan());
                bound(self.min_um).is_none_or(|m| size >= m)
                    && bound(self.max_um).is_none_or(|m| size <= m)
            })
            .collect();
        let size = |p: &Particle| p.esd_um.unwrap_or(f64::NEG_INFINITY);
        match self.sort {
            Sort::Manifest => {}
            Sort::Size => chosen.sort_by(|a, b| size(b).total_cmp(&size(a))),
            Sort::SizeAscending => chosen.sort_by(|a, b| size(a).total_cmp(&size(b))),
            Sort::Class => chosen.sort_by(|a, b| a.row.class.cmp(&b.row.class)),
        }
        let per_page = self.per_page.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE);
        let page = self.page.unwrap_or(1).max(1);
        let matching = chosen.len();
        let particles = chosen
            .into_iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .collect();
        ParticlePage {
            page,
            per_page,
            matching,
            particles,
        }
    }
}

impl Catalog {
    /// The catalog of the sessions under `root` (made absolute and canonical, so that `.`
    /// names its folder) whose outputs are under `output_root`.
    pub fn new(
        root: &std::path::Path,
        output_root: &std::path::Path,
        recursive: bool,
        options: PipelineOptions,
        delivery: Option<Delivery>,
        settle: Duration,
    ) -> Catalog {
        Catalog {
            root: root
                .canonicalize()
                .unwrap_or_else(|_| crate::tasks::absolute(root)),
            output_root: crate::tasks::absolute(output_root),
            recursive,
            options,
            delivery,
            settle,
            cache: StatusCache::default(),
            snapshots: Snapshots::default(),
        }
    }

    /// The session folders under the root (the root itself when it is one).
    pub fn folders(&self) -> std::io::Result<Vec<PathBuf>> {
        if crate::ingest::is_session(&self.root) {
            return Ok(vec![self.root.clone()]);
        }
        crate::ingest::find_sessions(&self.root, self.recursive, &self.output_root)
    }

    /// [`Catalog::folders`], as of at most [`SNAPSHOT_TTL`] ago.
    fn recent_folders(&self) -> std::io::Result<std::sync::Arc<Vec<PathBuf>>> {
        self.snapshots
            .folders
            .get(|| self.folders().map(std::sync::Arc::new))
    }

    fn query(&self) -> StatusQuery<'_> {
        StatusQuery {
            output_root: &self.output_root,
            experiment: None,
            options: self.options.clone(),
            delivery: self.delivery.clone(),
            settle: self.settle,
        }
    }

    /// Every session's status, in folder order; with `state`, only those in it.
    /// (As of at most [`SNAPSHOT_TTL`] ago.)
    pub fn sessions(&self, state: Option<SessionState>) -> std::io::Result<Vec<SessionStatus>> {
        let all = self.snapshots.sessions.get(|| {
            let query = self.query();
            Ok(std::sync::Arc::new(
                self.recent_folders()?
                    .iter()
                    .map(|folder| self.cache.get(folder, || session_status(folder, &query)))
                    .collect(),
            ))
        })?;
        Ok(all
            .iter()
            .filter(|s| state.is_none_or(|wanted| s.state == wanted))
            .cloned()
            .collect())
    }

    /// The folder of the session called `name` (its experiment name, the folder's name),
    /// if the root has one.
    /// A name two folders share (at different depths, under `--recursive`) is no one
    /// session's: both would write the same output folder.
    pub fn find(&self, name: &str) -> std::io::Result<Option<PathBuf>> {
        Ok(self.lookup(name)?.one())
    }

    /// The folders called `name` under the root, as of at most [`SNAPSHOT_TTL`] ago.
    pub fn lookup(&self, name: &str) -> std::io::Result<Lookup> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Ok(Lookup::Missing);
        }
        Ok(Lookup::among(&self.recent_folders()?, name))
    }

    /// The status of the session called `name`.
    pub fn status(&self, name: &str) -> std::io::Result<Option<SessionStatus>> {
        let query = self.query();
        Ok(self
            .find(name)?
            .map(|folder| self.cache.get(&folder, || session_status(&folder, &query))))
    }

    /// The page of the session called `name`.
    pub fn detail(&self, name: &str) -> std::io::Result<Option<SessionDetail>> {
        let Some(folder) = self.find(name)? else {
            return Ok(None);
        };
        let query = self.query();
        let status = self.cache.get(&folder, || session_status(&folder, &query));
        let Some(out) = status.output.clone() else {
            return Ok(Some(SessionDetail {
                status,
                record: None,
                runs: Vec::new(),
                log: None,
            }));
        };
        let record = std::fs::read(out.join("session.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let runs = history::runs(&out)
            .into_iter()
            .rev()
            .map(|r| RunLine {
                succeeded: r.succeeded(),
                interrupted: r.interrupted,
                started_at: r.started_at,
                duration_ms: r.duration_ms,
                tasks: r
                    .tasks
                    .iter()
                    .filter(|t| t.state != crate::engine::TaskState::AlreadyComplete)
                    .map(|t| {
                        (
                            t.name.clone(),
                            format!("{:?}", t.state).to_lowercase(),
                            t.errors.first().cloned(),
                        )
                    })
                    .collect(),
            })
            .collect();
        Ok(Some(SessionDetail {
            status,
            record,
            runs,
            log: history::last_log(&out),
        }))
    }

    /// Every particle of the manifest with its size; empty before DecollageImages ran.
    pub fn particle_list(&self, out: &std::path::Path) -> Vec<Particle> {
        let Ok(manifest) = Manifest::read(&out.join("manifest.csv")) else {
            return Vec::new();
        };
        let mut sizes: std::collections::HashMap<String, f64> = Default::default();
        if let Ok(mut reader) = csv::Reader::from_path(out.join("metadata.csv")) {
            let header = reader.headers().cloned().unwrap_or_default();
            let column = |name: &str| header.iter().position(|h| h == name);
            if let (Some(id), Some(esd)) = (column("id"), column("esd_diameter")) {
                for record in reader.records().map_while(Result::ok) {
                    if let (Some(i), Some(v)) = (record.get(id), record.get(esd))
                        && let Ok(v) = v.trim().parse::<f64>()
                    {
                        sizes.insert(i.to_string(), v);
                    }
                }
            }
        }
        manifest
            .rows
            .into_iter()
            .map(|row| Particle {
                esd_um: sizes.get(&row.particle_id).copied(),
                row,
            })
            .collect()
    }

    /// The TIFF of the vignette `file` of the session `name` (output folder `out`), if
    /// the manifest lists it (never a path from the request: the name must be one of the
    /// manifest's): its file, or, when `vignettes/` has none (`--no-local-vignettes`), its
    /// page.
    pub fn vignette(&self, name: &str, out: &std::path::Path, file: &str) -> Option<Tiff> {
        let path = out.join("manifest.csv");
        let meta = std::fs::metadata(&path).ok()?;
        let stamp = (meta.len(), meta.modified().ok());
        let files = {
            let known = self
                .snapshots
                .manifests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&path)
                .filter(|(size, time, _)| (*size, *time) == stamp)
                .map(|(_, _, files)| files.clone());
            match known {
                Some(files) => files,
                None => {
                    let manifest = Manifest::read(&path).ok()?;
                    let files = std::sync::Arc::new(
                        manifest
                            .vignettes()
                            .map(|r| (r.file.clone(), (r.collage.clone(), r.bytes)))
                            .collect::<std::collections::HashMap<_, _>>(),
                    );
                    self.snapshots
                        .manifests
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(path, (stamp.0, stamp.1, files.clone()));
                    files
                }
            }
        };
        let (collage, bytes) = files.get(file)?;
        let local = crate::tasks::manifest::vignette_path(&out.join("vignettes"), collage, file);
        if std::fs::symlink_metadata(&local).is_ok() {
            return Some(Tiff::File(local));
        }
        Some(Tiff::Page {
            folder: self.find(name).ok()??,
            collage: collage.clone(),
            file: file.to_string(),
            bytes: *bytes,
        })
    }

    /// The output folder of the session called `name`, without computing its status.
    pub fn output(&self, name: &str) -> std::io::Result<Option<PathBuf>> {
        Ok(self.find(name)?.and_then(|folder| {
            crate::tasks::Session::new(&folder, &self.output_root, None)
                .ok()
                .map(|s| s.output)
        }))
    }

    /// The particle's row of `metadata.csv`, as (field, value) in field order.
    pub fn measurements(&self, out: &std::path::Path, id: &str) -> Vec<(String, String)> {
        let Ok(mut reader) = csv::Reader::from_path(out.join("metadata.csv")) else {
            return Vec::new();
        };
        let header = reader.headers().cloned().unwrap_or_default();
        let Some(column) = header.iter().position(|h| h == "id") else {
            return Vec::new();
        };
        reader
            .records()
            .map_while(Result::ok)
            .find(|r| r.get(column) == Some(id))
            .map(|r| {
                header
                    .iter()
                    .zip(r.iter())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The particle data of a session's outputs (empty before ReadMetadata ran).
    pub fn particles(&self, status: &SessionStatus) -> ParticleData {
        let mut data = ParticleData::default();
        let Some(out) = &status.output else {
            return data;
        };
        if let Ok(mut reader) = csv::Reader::from_path(out.join("metadata.csv")) {
            let header = reader.headers().cloned().unwrap_or_default();
            let column = |name: &str| header.iter().position(|h| h == name);
            let (esd, elapsed) = (column("esd_diameter"), column("elapsed_time"));
            for record in reader.records().map_while(Result::ok) {
                let number = |c: Option<usize>| {
                    c.and_then(|c| record.get(c))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|v| v.is_finite())
                };
                data.esd_um.extend(number(esd));
                data.elapsed_s.extend(number(elapsed));
            }
        }
        if let Ok(manifest) = Manifest::read(&out.join("manifest.csv")) {
            for row in &manifest.rows {
                *data.per_class.entry(row.class.clone()).or_default() += 1;
                data.blanks += row.blank as usize;
            }
        }
        data
    }
}
