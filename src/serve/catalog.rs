//! What the dashboard shows, read from the root without running anything: the sessions
//! under it with their status (the same [`SessionStatus`] as `status --json`), and one
//! session's record, history, log and the particle data the plots are drawn from.
//!
//! Names in URLs are never joined onto a path: a name is looked up among the sessions
//! found under the root, so `..`, absolute paths and symlinks out of the root cannot name
//! anything.

use crate::history;
use crate::status::{SessionState, SessionStatus, StatusQuery, session_status};
use crate::tasks::{Delivery, Manifest, PipelineOptions};
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

impl Catalog {
    /// The session folders under the root (the root itself when it is one).
    pub fn folders(&self) -> std::io::Result<Vec<PathBuf>> {
        if crate::ingest::is_session(&self.root) {
            return Ok(vec![self.root.clone()]);
        }
        crate::ingest::find_sessions(&self.root, self.recursive, &self.output_root)
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
    pub fn sessions(&self, state: Option<SessionState>) -> std::io::Result<Vec<SessionStatus>> {
        let query = self.query();
        Ok(self
            .folders()?
            .iter()
            .map(|folder| session_status(folder, &query))
            .filter(|s| state.is_none_or(|wanted| s.state == wanted))
            .collect())
    }

    /// The folder of the session called `name` (its experiment name, the folder's name),
    /// if the root has one.
    pub fn find(&self, name: &str) -> std::io::Result<Option<PathBuf>> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Ok(None);
        }
        Ok(self
            .folders()?
            .into_iter()
            .find(|folder| folder.file_name().is_some_and(|n| n == name)))
    }

    /// The page of the session called `name`.
    pub fn detail(&self, name: &str) -> std::io::Result<Option<SessionDetail>> {
        let Some(folder) = self.find(name)? else {
            return Ok(None);
        };
        let status = session_status(&folder, &self.query());
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
