//! UploadToS3: deliver the session's vignettes, then its tables, to an S3 bucket or the
//! upload API, resumably.
//!
//! The task's target is the destination's upload ledger, and its stamp is written only
//! after every vignette of the manifest and every table is confirmed, so "complete" means
//! "all there". Planning stats each file against the ledger (no reading), so a rerun after
//! an interruption sends only what the ledger lacks; a file whose size or time changed is
//! read and hashed, and sent again only if its content changed. `--verify-remote` lists the
//! destination first and keeps only the ledger lines the listing confirms (same size, ETag
//! equal to the recorded MD5), so objects deleted from the bucket are sent again.
//!
//! Vignettes go first, in batches the destination chooses (one object per S3 request, up
//! to 999 files per API request), many in flight; the tables follow in `finish`, the
//! manifest last, so a consumer that sees the manifest in the bucket finds every vignette
//! it lists.

use crate::engine::{
    Digest, FileFingerprint, Item, Parameters, Plan, Staging, StopTask, Task, TaskRef,
};
use crate::tasks::Session;
use crate::tasks::extract_metadata::SessionRecord;
use crate::tasks::manifest::Manifest;
use crate::tasks::registry::TaskEntry;
use crate::upload::{
    Destination, DestinationConfig, DestinationOptions, Ledger, LedgerEntry, Outgoing, S3Settings,
    UploadError,
};
use anyhow::{Context, bail};
use md5::{Digest as _, Md5};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Keys are `[<prefix>/]<experiment>/<file>`.
    pub prefix: Option<String>,
    /// Check the destination itself instead of trusting the ledger.
    pub verify_remote: bool,
    /// Also upload this EcoTaxa zip (made by the task in `UploadToS3::with_extra`), before
    /// the manifest.
    pub extra: Option<PathBuf>,
    /// `--no-local-vignettes`: DecollageImages cut the vignettes straight to the
    /// destination (and recorded them in the same ledger); this task sends only the tables.
    pub direct: bool,
}

/// Where a session's objects go: the destination, the keys' prefix and the ledger that
/// remembers what it confirmed. Shared by the two tasks that deliver (UploadToS3, and
/// DecollageImages under `--no-local-vignettes`), so that both write one ledger.
#[derive(Debug, Clone)]
pub struct Place {
    pub destination: DestinationConfig,
    key_prefix: String,
    ledger: PathBuf,
}

impl Place {
    pub fn new(session: &Session, destination: DestinationConfig, prefix: Option<&str>) -> Place {
        let prefix = prefix
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty());
        let key_prefix = match prefix {
            Some(prefix) => format!("{prefix}/{}/", session.experiment),
            None => format!("{}/", session.experiment),
        };
        let digest = Digest::new()
            .str(&destination.describe())
            .str(&key_prefix)
            .hex();
        let ledger = session
            .uploads_dir()
            .join(format!("ledger-{}.tsv", &digest[..16]));
        Place {
            destination,
            key_prefix,
            ledger,
        }
    }

    /// `[<prefix>/]<experiment>/`: every key of this session starts with it.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The key of the session's file `file` (a vignette or a table).
    pub fn key(&self, file: &str) -> String {
        format!("{}{file}", self.key_prefix)
    }

    /// One ledger per destination and key prefix, under the session's `uploads/`.
    pub fn ledger_path(&self) -> &std::path::Path {
        &self.ledger
    }

    /// The destination and the keys, as the ledger's first line and stamps name them.
    pub fn describe(&self) -> String {
        format!("{}, keys {}", self.destination.describe(), self.key_prefix)
    }

    /// Connects and checks the destination, then opens the ledger: as it is, or with
    /// `verify_remote` keeping only what the destination's own listing confirms.
    pub(crate) fn open(&self, verify_remote: bool) -> anyhow::Result<Opened> {
        let key_prefix = &self.key_prefix;
        if key_prefix.contains(['\t', '\n', '\r']) || key_prefix.split('/').any(|s| s == "..") {
            bail!("--s3-prefix {key_prefix:?}: keys may not hold tabs, line breaks or '..'");
        }
        let destination = self
            .destination
            .connect()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        destination.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        let title = self.describe();
        let (ledger, known) = if verify_remote {
            verified_ledger(destination.as_ref(), &self.ledger, &title, key_prefix)?
        } else {
            let ledger = Ledger::open(&self.ledger, &title)?;
            let known = ledger
                .entries()
                .iter()
                .map(|(key, e)| (key.clone(), Known::recorded(e)))
                .collect();
            (ledger, known)
        };
        Ok(Opened {
            destination,
            ledger,
            known,
        })
    }
}

/// A destination ready to send to, its ledger, and what is known to be there.
pub(crate) struct Opened {
    pub destination: Box<dyn Destination>,
    pub ledger: Ledger,
    pub known: HashMap<String, Known>,
}

/// One object in memory, to deliver unless the destination has it already.
pub(crate) struct Body {
    pub key: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub metadata: Vec<(String, String)>,
    /// The local file's modification time, for the ledger (0 for an object never written
    /// locally).
    pub mtime_ns: i64,
}

/// Sends those of `bodies` that `known` does not already have with the same size and MD5,
/// in one request, then records all of them in the ledger. Returns (sent, unchanged).
pub(crate) fn deliver_bodies(opened: &Opened, bodies: Vec<Body>) -> anyhow::Result<(usize, usize)> {
    let mut outgoing = Vec::new();
    let mut entries = Vec::with_capacity(bodies.len());
    for body in bodies {
        let md5: [u8; 16] = Md5::digest(&body.body).into();
        let entry = LedgerEntry {
            md5: hex::encode(md5),
            size: body.body.len() as u64,
            mtime_ns: body.mtime_ns,
        };
        let there = opened
            .known
            .get(&body.key)
            .is_some_and(|k| k.size == entry.size && k.md5 == entry.md5);
        if !there {
            outgoing.push(Outgoing {
                key: body.key.clone(),
                body: body.body,
                md5,
                content_type: body.content_type,
                metadata: body.metadata,
            });
        }
        entries.push((body.key, entry));
    }
    if !outgoing.is_empty() {
        opened.destination.send(&outgoing).map_err(|e| match e {
            UploadError::Destination(m) => anyhow::Error::new(StopTask(m)),
            UploadError::Object(m) => anyhow::anyhow!(m),
        })?;
    }
    let records: Vec<(&str, &LedgerEntry)> = entries.iter().map(|(k, e)| (k.as_str(), e)).collect();
    opened.ledger.record(&records)?;
    Ok((outgoing.len(), entries.len() - outgoing.len()))
}

/// A vignette's object metadata: the session's (`position`), then the particle's id, time,
/// class and blank mark from its manifest row.
pub(crate) fn vignette_metadata(
    position: &[(String, String)],
    row: &crate::tasks::ManifestRow,
) -> Vec<(String, String)> {
    let mut metadata = position.to_vec();
    let mut add = |name: &str, value: &str| {
        if !value.is_empty() && is_header_safe(value) {
            metadata.push((name.to_string(), value.to_string()));
        }
    };
    add("particle-id", &row.particle_id);
    add("captured-at", &row.captured_at);
    add("class", &row.class);
    if row.blank {
        add("blank", "true");
    }
    metadata
}

pub struct UploadToS3 {
    session: Arc<Session>,
    decollage: TaskRef,
    /// The task that makes `options.extra`, when it is one of ours.
    extra_task: Option<TaskRef>,
    place: Place,
    options: UploadOptions,
}

impl UploadToS3 {
    pub fn new(
        session: Arc<Session>,
        decollage: TaskRef,
        destination: DestinationConfig,
        options: UploadOptions,
    ) -> UploadToS3 {
        UploadToS3 {
            place: Place::new(&session, destination, options.prefix.as_deref()),
            session,
            decollage,
            extra_task: None,
            options,
        }
    }

    /// Also requires `task`, which makes `options.extra` (the EcoTaxa zip).
    pub fn with_extra(mut self, task: TaskRef) -> UploadToS3 {
        self.extra_task = Some(task);
        self
    }

    /// `[<prefix>/]<experiment>/`: every key of this session starts with it.
    pub fn key_prefix(&self) -> String {
        self.place.key_prefix().to_string()
    }

    /// One ledger per destination and key prefix, under the session's `uploads/`.
    pub fn ledger_path(&self) -> PathBuf {
        self.place.ledger_path().to_path_buf()
    }
}

impl Task for UploadToS3 {
    fn name(&self) -> &'static str {
        "UploadToS3"
    }

    fn id(&self) -> String {
        format!("UploadToS3({})", self.session.experiment)
    }

    fn parameters(&self) -> Parameters {
        let mut parameters = Parameters::from([
            ("destination".to_string(), self.place.destination.describe()),
            ("key_prefix".to_string(), self.key_prefix()),
            (
                "extra".to_string(),
                self.options
                    .extra
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ]);
        // Only when on: the stamps of every session made before it existed stay valid.
        if self.options.direct {
            parameters.insert(
                "vignettes".to_string(),
                "sent by DecollageImages".to_string(),
            );
        }
        parameters
    }

    fn requires(&self) -> Vec<TaskRef> {
        let mut requires = vec![self.decollage.clone()];
        requires.extend(self.extra_task.clone());
        requires
    }

    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut inputs = vec![
            self.session.manifest(),
            self.session.metadata_csv(),
            self.session.metadata_schema(),
        ];
        inputs.extend(self.options.extra.clone());
        let record = self.session.session_json();
        if record.is_file() {
            inputs.push(record);
        }
        Ok(inputs)
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.ledger_path()]
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }

    fn rerun_reason(&self) -> Option<String> {
        self.options
            .verify_remote
            .then(|| "--verify-remote asks to check the destination itself".to_string())
    }

    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(Deliveries::plan(self)?))
    }
}

/// One file to deliver unless the destination already has it.
struct Candidate {
    path: PathBuf,
    key: String,
    content_type: &'static str,
    metadata: Vec<(String, String)>,
}

/// What is known to be at the destination: from the ledger, or from the destination's own
/// listing (then without a local time, so the file must be hashed to compare).
pub(crate) struct Known {
    pub size: u64,
    md5: String,
    mtime_ns: Option<i64>,
}

impl Known {
    /// What a ledger line says, local time included.
    fn recorded(entry: &LedgerEntry) -> Known {
        Known {
            size: entry.size,
            md5: entry.md5.clone(),
            mtime_ns: Some(entry.mtime_ns),
        }
    }
}

struct Deliveries<'a> {
    task: &'a UploadToS3,
    opened: Opened,
    /// Vignettes not known to be delivered, in request-sized batches.
    batches: Vec<Vec<Candidate>>,
    /// Vignettes the ledger vouches for without reading them.
    already_done: usize,
    /// metadata.csv, its schema, then the manifest.
    tables: Vec<Candidate>,
    sent: AtomicUsize,
    unchanged: AtomicUsize,
}

impl<'a> Deliveries<'a> {
    fn plan(task: &'a UploadToS3) -> anyhow::Result<Deliveries<'a>> {
        let opened = task.place.open(task.options.verify_remote)?;
        let session = &task.session;
        let place = &task.place;
        let position = session_metadata(session)?;
        let mut vignettes = Vec::new();
        let manifest_path = session.manifest();
        let manifest = Manifest::read(&manifest_path)?;
        // Under --no-local-vignettes, DecollageImages sent them and vouched for each page.
        for row in manifest.vignettes().filter(|_| !task.options.direct) {
            let file = &row.file;
            vignettes.push(Candidate {
                path: row.path_in(&session.vignettes_dir()),
                key: place.key(file),
                content_type: "image/tiff",
                metadata: vignette_metadata(&position, row),
            });
        }

        // Planning only stats: a vignette whose size and time match its ledger line is done.
        let total = vignettes.len();
        vignettes.retain(|c| !vouched_for(&opened.known, c));
        let already_done = total - vignettes.len();
        let batch_size = opened.destination.batch_size().max(1);
        let mut batches = Vec::new();
        let mut rest = vignettes.into_iter().peekable();
        while rest.peek().is_some() {
            batches.push(rest.by_ref().take(batch_size).collect());
        }

        let table = |path: PathBuf, content_type| {
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            Candidate {
                key: place.key(&file),
                path,
                content_type,
                metadata: position.clone(),
            }
        };
        let mut tables = vec![
            table(session.metadata_csv(), "text/csv"),
            table(session.metadata_schema(), "application/json"),
        ];
        // What the instrument wrote about the run travels with the tables.
        if session.session_json().is_file() {
            tables.push(table(session.session_json(), "application/json"));
        }
        if let Some(extra) = &task.options.extra {
            tables.push(table(extra.clone(), "application/zip"));
        }
        tables.push(table(session.manifest(), "text/csv"));
        Ok(Deliveries {
            task,
            opened,
            batches,
            already_done,
            tables,
            sent: AtomicUsize::new(0),
            unchanged: AtomicUsize::new(0),
        })
    }

    /// Reads each candidate, sends those the destination lacks in one request, and records
    /// all of them in the ledger once confirmed.
    fn deliver(&self, batch: &[Candidate]) -> anyhow::Result<()> {
        let mut bodies = Vec::with_capacity(batch.len());
        for candidate in batch {
            let path = &candidate.path;
            // Stat before reading: if the file changes in between, the recorded time is
            // older than the content and the next run hashes it again.
            let fingerprint = FileFingerprint::of(path)
                .with_context(|| path.display().to_string())?
                .with_context(|| format!("{} is missing; rerun with --force", path.display()))?;
            bodies.push(Body {
                key: candidate.key.clone(),
                body: std::fs::read(path).with_context(|| path.display().to_string())?,
                content_type: candidate.content_type,
                metadata: candidate.metadata.clone(),
                mtime_ns: fingerprint.mtime_ns,
            });
        }
        let (sent, unchanged) = deliver_bodies(&self.opened, bodies)?;
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.unchanged.fetch_add(unchanged, Ordering::Relaxed);
        Ok(())
    }
}

impl Plan for Deliveries<'_> {
    fn items(&self) -> Vec<Item> {
        self.batches
            .iter()
            .map(|batch| {
                let first = &batch[0].key;
                let key = match batch.last() {
                    Some(last) if batch.len() > 1 => {
                        format!("{} files {first} .. {}", batch.len(), last.key)
                    }
                    _ => first.clone(),
                };
                Item {
                    key,
                    inputs: Vec::new(),
                    fingerprint: String::new(),
                }
            })
            .collect()
    }

    fn item_markers(&self) -> bool {
        false
    }

    fn already_done(&self) -> usize {
        self.already_done
    }

    fn concurrency(&self) -> Option<usize> {
        Some(self.opened.destination.concurrency())
    }

    fn run_item(&self, index: usize, _out: &mut Staging) -> anyhow::Result<()> {
        self.deliver(&self.batches[index])
    }

    fn finish(&self, _out: &mut Staging) -> anyhow::Result<()> {
        for batch in self
            .tables
            .chunks(self.opened.destination.batch_size().max(1))
        {
            self.deliver(batch)?;
        }
        self.opened.ledger.sync()?;
        tracing::info!(
            session = %self.task.session.experiment,
            sent = self.sent.load(Ordering::Relaxed),
            unchanged = self.unchanged.load(Ordering::Relaxed),
            already_done = self.already_done,
            ledger = %self.opened.ledger.path().display(),
            "upload complete"
        );
        Ok(())
    }
}

/// A candidate whose size and modification time match what the ledger recorded.
fn vouched_for(known: &HashMap<String, Known>, candidate: &Candidate) -> bool {
    let Some(k) = known.get(&candidate.key) else {
        return false;
    };
    let Some(mtime_ns) = k.mtime_ns else {
        return false;
    };
    matches!(
        FileFingerprint::of(&candidate.path),
        Ok(Some(f)) if f.size == k.size && f.mtime_ns == mtime_ns
    )
}

/// For `--verify-remote`: lists the destination, keeps the ledger lines its listing
/// confirms (rewriting the ledger with only those, before anything else happens), and
/// knows the other listed objects by size and ETag so that unchanged files are not sent.
///
/// A destination that cannot list (the upload API) is asked whether each ledger key
/// exists instead, and the ledger keeps the lines of the keys that do. That confirms
/// presence only: the API reports neither size nor ETag, so an object that is there but
/// differs from what the ledger recorded is not noticed. Nothing is known beyond the
/// ledger either, so with a lost ledger every file is sent again.
fn verified_ledger(
    destination: &dyn Destination,
    path: &std::path::Path,
    title: &str,
    key_prefix: &str,
) -> anyhow::Result<(Ledger, HashMap<String, Known>)> {
    let listed = destination
        .list(key_prefix)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(listed) = listed else {
        return confirmed_ledger(destination, path, title);
    };
    let old = Ledger::open(path, title)?;
    let mut keep = Vec::new();
    let mut known = HashMap::new();
    for remote in listed {
        let etag = remote.etag.to_ascii_lowercase();
        let recorded = old
            .entries()
            .get(&remote.key)
            .filter(|e| e.size == remote.size && e.md5 == etag);
        let mtime_ns = recorded.map(|e| e.mtime_ns);
        if let Some(entry) = recorded {
            keep.push((remote.key.clone(), entry.clone()));
        }
        known.insert(
            remote.key,
            Known {
                size: remote.size,
                md5: etag,
                mtime_ns,
            },
        );
    }
    drop(old);
    let dropped = known.len().abs_diff(keep.len());
    tracing::info!(
        kept = keep.len(),
        listed_only = dropped,
        "verified the ledger against the destination"
    );
    Ok((Ledger::rewrite(path, title, &keep)?, known))
}

/// `--verify-remote` for a destination that cannot list: keeps the ledger lines whose key
/// the destination says it has, and forgets the rest so that they are sent again.
fn confirmed_ledger(
    destination: &dyn Destination,
    path: &std::path::Path,
    title: &str,
) -> anyhow::Result<(Ledger, HashMap<String, Known>)> {
    let old = Ledger::open(path, title)?;
    let mut recorded: Vec<(String, LedgerEntry)> = old
        .entries()
        .iter()
        .map(|(key, entry)| (key.clone(), entry.clone()))
        .collect();
    drop(old);
    recorded.sort_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<String> = recorded.iter().map(|(key, _)| key.clone()).collect();
    let there = destination.exists(&keys).map_err(|e| {
        anyhow::anyhow!("--verify-remote could not check the ledger's objects: {e}")
    })?;
    let before = recorded.len();
    let keep: Vec<(String, LedgerEntry)> = recorded
        .into_iter()
        .zip(there)
        .filter_map(|(line, there)| there.then_some(line))
        .collect();
    tracing::info!(
        kept = keep.len(),
        missing = before - keep.len(),
        "verified the ledger against the destination, by key only (it cannot list)"
    );
    let known = keep
        .iter()
        .map(|(key, e)| (key.clone(), Known::recorded(e)))
        .collect();
    Ok((Ledger::rewrite(path, title, &keep)?, known))
}

/// The session's position, date and pixel size as object metadata: from `session.json`
/// when ExtractMetadata wrote one (sample sheet, folder name or `.ctx`, by precedence),
/// else from the folder name.
pub(crate) fn session_metadata(session: &Session) -> anyhow::Result<Vec<(String, String)>> {
    let mut metadata = Vec::new();
    let mut text = |name: &str, value: Option<String>| {
        if let Some(value) = value.filter(|v| is_header_safe(v)) {
            metadata.push((name.to_string(), value));
        }
    };
    text("experiment", Some(session.experiment.clone()));
    let Some(record) = SessionRecord::load_for(session)? else {
        if let Some(p) = &session.name.position {
            text("latitude", Some(format!("{:.4}", p.latitude)));
            text("longitude", Some(format!("{:.4}", p.longitude)));
            text("sample-date", Some(p.date.to_string()));
            text("depth-m", p.depth_m.map(|d| d.to_string()));
        }
        return Ok(metadata);
    };
    let sample = &record.sample;
    let finite = |v: Option<f64>| v.filter(|n| n.is_finite());
    if let (Some(lat), Some(lon)) = (finite(sample.latitude), finite(sample.longitude)) {
        text("latitude", Some(format!("{lat:.4}")));
        text("longitude", Some(format!("{lon:.4}")));
    }
    text("sample-date", sample.date.clone());
    text("depth-m", finite(sample.depth_m).map(|d| d.to_string()));
    text("sample-id", Some(sample.id.clone()));
    text(
        "um-per-pixel",
        finite(record.calibration.um_per_pixel).map(|d| d.to_string()),
    );
    Ok(metadata)
}

/// Printable ASCII only: what an HTTP header value can carry unencoded.
fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// UploadToS3 in the registry: alone, it uploads the vignettes of the manifest given.
pub(super) const ENTRY: TaskEntry = TaskEntry {
    name: "UploadToS3",
    source: include_str!("../../tasks/UploadToS3.json"),
    session_input: "manifest",
    check: |bridge| bridge.check_vignettes(),
    build: |bridge| {
        let session = bridge.session()?;
        bridge.stage_tables(true)?;
        let destination = DestinationConfig::new(DestinationOptions {
            bucket: bridge.text("s3-bucket").unwrap_or_default(),
            api_url: bridge.text("api-url"),
            endpoint: S3Settings::endpoint_from(bridge.text("s3-endpoint").as_deref()),
            api_batch_size: bridge.number("api-batch-size"),
            concurrency: bridge.number("upload-concurrency"),
            create_bucket: bridge.flag("create-bucket"),
        });
        let options = UploadOptions {
            prefix: bridge.text("s3-prefix"),
            verify_remote: bridge.flag("verify-remote"),
            extra: bridge.files("ecotaxa").first().map(PathBuf::from),
            direct: false,
        };
        Ok(Arc::new(UploadToS3::new(
            session,
            bridge.provided(),
            destination,
            options,
        )))
    },
    owned: |session| vec![session.uploads_dir()],
};
